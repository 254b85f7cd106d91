package iptables_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestMain runs the package's tests inside a private network namespace when
// root (see proxytest.Main); the kernel tests skip otherwise.
func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

func joinLines(ls []string) string { return strings.Join(ls, "\n") }

// standardConfig is the backend config for the standard topology of the
// packet-flow table (IPv4 or its IPv6 map).
func standardConfig(fam v1.IPFamily) iptables.Config {
	mapP := func(p netip.Prefix) netip.Prefix { return p }
	nodeIPs := proxytest.NodeIPs()
	if fam == v1.IPv6Protocol {
		mapP, nodeIPs = proxytest.IPv6Prefix, proxytest.NodeIPsIPv6()
	}
	return iptables.Config{
		Family:       fam,
		NodeName:     proxytest.NodeName,
		NodeIPs:      nodeIPs,
		ClusterCIDRs: []netip.Prefix{mapP(netip.MustParsePrefix(proxytest.ClusterCIDR))},
		ServiceCIDRs: []netip.Prefix{mapP(netip.MustParsePrefix(proxytest.ServiceCIDR))},
	}
}
