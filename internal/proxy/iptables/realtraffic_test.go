package iptables_test

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// realNodeBackend returns the iptables backend (variant v) for the node in
// namespace ns. iptables-restore runs in the namespace of the calling
// thread: RunRealTraffic syncs inside ns.Do, and Cleanup does so here.
func realNodeBackend(t *testing.T, v iptables.Variant, ns *proxytest.NetNS, node string, nodeIPs []netip.Addr) proxy.Backend {
	t.Helper()
	b, err := iptables.New(iptables.Config{
		Family:       v1.IPv4Protocol,
		NodeName:     node,
		NodeIPs:      nodeIPs,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ServiceCIDR)},
		Conntrack:    conntrack.Netlink{},
	}, iptables.NewExec(v1.IPv4Protocol, v))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Do(func() error { return b.Cleanup(context.Background()) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b
}

// TestRealTraffic is issue 7 acceptance 2 for --proxy-mode=iptables: the
// real-traffic scenarios of the nftables backend (one shared matrix,
// proxytest.RunRealTraffic), with the nft-based and the legacy binaries.
func TestRealTraffic(t *testing.T) {
	for _, v := range []iptables.Variant{iptables.VariantNFT, iptables.VariantLegacy} {
		t.Run(string(v), func(t *testing.T) {
			proxytest.RequireSandbox(t, "iptables-"+string(v)+"-restore")
			waitLabGone(t)
			proxytest.RunRealTraffic(t, func(t *testing.T, ns *proxytest.NetNS, node string, nodeIPs []netip.Addr) proxy.Backend {
				return realNodeBackend(t, v, ns, node, nodeIPs)
			})
		})
	}
}

// waitLabGone waits until the node-a ends of the previous lab's veth pairs
// are gone: the kernel destroys a deleted namespace's devices (and so
// their peers) asynchronously, and the next lab reuses the names.
func waitLabGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := false
		for _, dev := range []string{"ext0", "nodeb0", "uplink0"} {
			if exec.Command("ip", "link", "show", dev).Run() == nil {
				busy = true
			}
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the previous lab's interfaces are still there after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
