package ipvs

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
	"github.com/svcnet/svcnet/internal/proxy/list"
)

const testNode = "node-a"

var (
	testNodeIPs      = []netip.Addr{netip.MustParseAddr("192.168.0.10"), netip.MustParseAddr("fd00::10")}
	testClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/48")}
	testServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd96::/112")}
)

type testEnv struct {
	b    *Backend
	h    *FakeHandle
	link *FakeLink
	nft  map[v1.IPFamily]*knftables.Fake
	sys  map[string]string
	ct   *conntrack.Fake
}

func newTestEnv(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{
		h: NewFakeHandle(), link: &FakeLink{}, sys: map[string]string{}, ct: &conntrack.Fake{},
		nft: map[v1.IPFamily]*knftables.Fake{
			v1.IPv4Protocol: knftables.NewFake(knftables.IPv4Family, TableName),
			v1.IPv6Protocol: knftables.NewFake(knftables.IPv6Family, TableName),
		},
	}
	cfg := Config{
		NodeName: testNode, NodeIPs: testNodeIPs, ClusterCIDRs: testClusterCIDRs, ServiceCIDRs: testServiceCIDRs,
		Handle: e.h, Link: e.link,
		NFT:    map[v1.IPFamily]knftables.Interface{v1.IPv4Protocol: e.nft[v1.IPv4Protocol], v1.IPv6Protocol: e.nft[v1.IPv6Protocol]},
		Sysctl: func(n, v string) error { e.sys[n] = v; return nil },
		Logger: slog.New(slog.DiscardHandler), Conntrack: e.ct,
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	return e
}

func (e *testEnv) sync(t testing.TB, st *proxy.State) {
	t.Helper()
	if err := e.b.Sync(context.Background(), st); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// listing renders the fake kernel state as ipvsadm -Ln, without the three
// header lines and with trailing padding trimmed.
func (e *testEnv) listing(t testing.TB) string {
	t.Helper()
	tbl, err := ListTable(e.h)
	if err != nil {
		t.Fatal(err)
	}
	return renderBody(t, tbl)
}

func renderBody(t testing.TB, tbl *list.Table) string {
	t.Helper()
	var buf bytes.Buffer
	if err := tbl.Render(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	var out []string
	for _, l := range lines[3:] {
		out = append(out, strings.TrimRight(l, " "))
	}
	return strings.Join(out, "\n")
}

// svc is a compact ServicePort builder.
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
	alg            string
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
		Name:        proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: s.ns, Name: s.name}, Port: s.port, Protocol: s.proto},
		ClusterIPs:  addrs(s.cip),
		Port:        s.svcPort,
		Protocol:    s.proto,
		NodePort:    s.nodePort,
		ExternalIPs: addrs(s.externalIPs), LoadBalancerIPs: addrs(s.lbIPs),
		AffinityTimeout:     s.affinity,
		ExternalPolicyLocal: s.etpLocal, InternalPolicyLocal: s.itpLocal,
		LBAlgorithm: s.alg,
	}
	for _, r := range s.sourceRanges {
		sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
	}
	return sp
}

// ep: cond "ready", "terminating" (serving+terminating) or "dead"; node
// testNode makes it local.
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

// next returns a copy of st whose Changed holds only the given names.
func next(st *proxy.State, changed ...proxy.ServicePortName) *proxy.State {
	n := *st
	n.Services = map[proxy.ServicePortName]*proxy.ServicePort{}
	for k, v := range st.Services {
		n.Services[k] = v
	}
	n.Endpoints = map[proxy.ServicePortName][]proxy.Endpoint{}
	for k, v := range st.Endpoints {
		n.Endpoints[k] = v
	}
	n.Changed = map[proxy.ServicePortName]struct{}{}
	for _, c := range changed {
		n.Changed[c] = struct{}{}
	}
	n.Full = false
	return &n
}
