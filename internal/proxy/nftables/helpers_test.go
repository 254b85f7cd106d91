package nftables

import (
	"context"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

const testNode = "node-a"

var (
	testNodeIPs      = []netip.Addr{netip.MustParseAddr("192.168.0.10"), netip.MustParseAddr("fd00::10")}
	testClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/48")}
	testServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd96::/112")}
)

func testConfig(fam v1.IPFamily) Config {
	return Config{
		Family:       fam,
		NodeName:     testNode,
		NodeIPs:      testNodeIPs,
		ClusterCIDRs: testClusterCIDRs,
		ServiceCIDRs: testServiceCIDRs,
	}
}

func newTestBackend(t testing.TB, cfg Config) (*Backend, *knftables.Fake, *conntrack.Fake) {
	t.Helper()
	fake := NewFake(cfg.Family)
	ct := &conntrack.Fake{}
	cfg.Conntrack = ct
	b, err := New(cfg, fake)
	if err != nil {
		t.Fatal(err)
	}
	return b, fake, ct
}

// svc is a compact ServicePort builder for tests.
type svc struct {
	ns, name, port string
	proto          v1.Protocol
	cip            []string
	svcPort        int32
	nodePort       int32
	externalIPs    []string
	lbIPs          []string
	sourceRanges   []string
	affinity       time.Duration
	etpLocal       bool
	itpLocal       bool
	hcNodePort     int32
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func (s svc) build() *proxy.ServicePort {
	if s.proto == "" {
		s.proto = v1.ProtocolTCP
	}
	if s.ns == "" {
		s.ns = "ns1"
	}
	sp := &proxy.ServicePort{
		Name:                proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: s.ns, Name: s.name}, Port: s.port, Protocol: s.proto},
		ClusterIPs:          addrs(s.cip),
		Port:                s.svcPort,
		Protocol:            s.proto,
		NodePort:            s.nodePort,
		ExternalIPs:         addrs(s.externalIPs),
		LoadBalancerIPs:     addrs(s.lbIPs),
		AffinityTimeout:     s.affinity,
		ExternalPolicyLocal: s.etpLocal,
		InternalPolicyLocal: s.itpLocal,
		HealthCheckNodePort: s.hcNodePort,
	}
	for _, r := range s.sourceRanges {
		sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
	}
	return sp
}

// ep builds an endpoint: "ready", "terminating" (serving+terminating),
// "dead" (not serving, terminating); node "" means remote.
func ep(ip string, port int32, node, cond string) proxy.Endpoint {
	e := proxy.Endpoint{IP: netip.MustParseAddr(ip), Port: port, NodeName: node, IsLocal: node == testNode}
	switch cond {
	case "ready":
		e.Ready, e.Serving = true, true
	case "terminating":
		e.Serving, e.Terminating = true, true
	case "dead":
		e.Terminating = true
	}
	return e
}

type svcWithEps struct {
	svc svc
	eps []proxy.Endpoint
}

func buildState(items ...svcWithEps) *proxy.State {
	st := proxy.NewState(testNode)
	for _, it := range items {
		sp := it.svc.build()
		st.Services[sp.Name] = sp
		if len(it.eps) > 0 {
			st.Endpoints[sp.Name] = it.eps
		}
		st.Changed[sp.Name] = struct{}{}
	}
	return st
}

func mustSync(t testing.TB, b *Backend, st *proxy.State) {
	t.Helper()
	if err := b.Sync(context.Background(), st); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}
