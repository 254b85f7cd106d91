package userspace

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
)

// port is one service port of the partial-sync test, with its own
// addresses (so a step can change one port without moving the others).
type port struct {
	svc, port string
	proto     v1.Protocol
	ip        string // ClusterIP
	num       int32
	nodePort  int32
	ext       []string // externalIPs
	lb        []string // LoadBalancer IPs
	ranges    []string // loadBalancerSourceRanges
	eps       []string // ready local endpoints, ip:port
}

func (p port) name() proxy.ServicePortName {
	proto := p.proto
	if proto == "" {
		proto = v1.ProtocolTCP
	}
	return proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: p.svc}, Port: p.port, Protocol: proto}
}

// stateWith is the State of ports; changed names the ports (present or
// gone) that differ from the previous step, nil for a full State.
func stateWith(ports []port, changed []proxy.ServicePortName) *proxy.State {
	st := proxy.NewState("node-a")
	st.NodeIPs = []netip.Addr{netip.MustParseAddr("192.168.0.2")}
	st.Full = changed == nil
	for _, n := range changed {
		st.Changed[n] = struct{}{}
	}
	addrs := func(ss []string) (out []netip.Addr) {
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, p := range ports {
		n := p.name()
		sp := &proxy.ServicePort{Name: n, Protocol: n.Protocol, Port: p.num, NodePort: p.nodePort,
			ClusterIPs: addrs([]string{p.ip}), ExternalIPs: addrs(p.ext), LoadBalancerIPs: addrs(p.lb)}
		for _, r := range p.ranges {
			sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
		}
		st.Services[n] = sp
		for _, e := range p.eps {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()),
				Ready: true, Serving: true, NodeName: "node-a", IsLocal: true})
		}
	}
	return st
}

// changes lists the ports that differ between two steps.
func changes(prev, next []port) []proxy.ServicePortName {
	byName := func(ps []port) map[proxy.ServicePortName]string {
		m := map[proxy.ServicePortName]string{}
		for _, p := range ps {
			m[p.name()] = fmt.Sprintf("%+v", p)
		}
		return m
	}
	a, b := byName(prev), byName(next)
	var out []proxy.ServicePortName
	for n, v := range a {
		if b[n] != v {
			out = append(out, n)
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// tableOf is b's table as sorted lines, with each redirect's listener port
// replaced by the listener it belongs to (two backends pick different
// ports).
func tableOf(t *testing.T, b *Backend, fake *knftables.Fake) []string {
	t.Helper()
	owner := map[string]string{}
	for k, l := range b.listeners {
		owner[strconv.Itoa(int(l.port))] = k.String()
	}
	var out []string
	for _, s := range []string{clusterIPsSet, nodePortIPsSet, firewallIPsSet, firewallAllowSet} {
		es, err := fake.ListElements(context.Background(), "set", s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out = append(out, s+" "+strings.Join(e.Key, " . "))
		}
	}
	for _, m := range []string{serviceIPsMap, serviceNodePortsMap, noEndpointServicesMap, noEndpointNodePortsMap} {
		es, err := fake.ListElements(context.Background(), "map", m)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			v := strings.Join(e.Value, " ")
			if m == serviceIPsMap || m == serviceNodePortsMap {
				o, ok := owner[v]
				if !ok {
					t.Errorf("%s %v redirects to port %s, which no listener has", m, e.Key, v)
				}
				v = o
			}
			out = append(out, m+" "+strings.Join(e.Key, " . ")+" : "+v)
		}
	}
	rules, err := fake.ListRules(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		out = append(out, "rule "+r.Chain+" "+r.Rule)
	}
	slices.Sort(out)
	return out
}

// serving lists b's listeners that have endpoints, with them.
func serving(b *Backend) []string {
	var out []string
	for k, l := range b.listeners {
		var eps []string
		for _, e := range l.cfg.Load().eps {
			eps = append(eps, e.addr.String())
		}
		if len(eps) > 0 {
			out = append(out, k.String()+" → "+strings.Join(eps, ","))
		}
	}
	slices.Sort(out)
	return out
}

func newFakeBackend(t *testing.T) (*Backend, *knftables.Fake) {
	t.Helper()
	fake := NewFake(v1.IPv4Protocol)
	b, err := New(Config{NodeName: "node-a", ListenAddr: netip.MustParseAddr("127.0.0.1"),
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}, fake)
	if err != nil {
		t.Fatal(err)
	}
	return b, fake
}

// TestPartialSyncsMatchFullSyncs takes one backend through partial syncs
// and, after each, compares its table and serving listeners with a fresh
// backend's full sync of the same State. The steps cover what partial
// syncs must get right: endpoint changes that leave the table alone, a
// service port flipping between redirect and no-endpoint verdicts, the
// ClusterIP element shared by the ports of one Service, and two Services
// claiming one external address and port (a conflict, which falls back to
// a full sync).
func TestPartialSyncsMatchFullSyncs(t *testing.T) {
	webHTTP := port{svc: "web", port: "http", ip: "10.96.1.1", num: 80, eps: []string{"127.0.0.1:8080"}}
	webHTTPS := port{svc: "web", port: "https", ip: "10.96.1.1", num: 443, eps: []string{"127.0.0.1:8443"}}
	np := port{svc: "np", port: "p", ip: "10.96.1.2", num: 80, nodePort: 30100, eps: []string{"127.0.0.1:9001"}}
	empty := port{svc: "empty", port: "p", ip: "10.96.1.3", num: 80, nodePort: 30101}
	lb := port{svc: "lb", port: "p", ip: "10.96.1.4", num: 80, ext: []string{"192.0.2.9"}, lb: []string{"192.0.2.20"},
		ranges: []string{"203.0.113.0/24"}, eps: []string{"127.0.0.1:9002"}}
	dns := port{svc: "dns", port: "p", proto: v1.ProtocolUDP, ip: "10.96.1.5", num: 53, eps: []string{"127.0.0.1:5353"}}

	with := func(ps []port, f func(p *port)) []port {
		out := slices.Clone(ps)
		for i := range out {
			f(&out[i])
		}
		return out
	}
	without := func(ps []port, drop ...port) []port {
		return slices.DeleteFunc(slices.Clone(ps), func(p port) bool {
			return slices.ContainsFunc(drop, func(d port) bool { return d.name() == p.name() })
		})
	}

	s0 := []port{webHTTP, webHTTPS, np, empty, lb, dns}
	s1 := with(s0, func(p *port) {
		if p.svc == "np" {
			p.eps = []string{"127.0.0.1:9003"}
		}
	})
	s2 := with(s1, func(p *port) {
		if p.svc == "empty" {
			p.eps = []string{"127.0.0.1:9004"}
		}
	})
	s3 := without(s2, webHTTPS)
	s4 := without(s3, webHTTP)
	s5 := with(s4, func(p *port) {
		if p.svc == "np" {
			p.eps = nil
		}
	})
	// "alb" sorts before "lb" and claims lb's external address and port.
	clash := port{svc: "alb", port: "p", ip: "10.96.1.6", num: 80, ext: []string{"192.0.2.9"}, eps: []string{"127.0.0.1:9005"}}
	s6 := append(slices.Clone(s5), clash)
	s7 := without(s6, clash)
	s8 := append(without(s7, dns), port{svc: "new", port: "p", ip: "10.96.1.7", num: 8080, nodePort: 30102, eps: []string{"127.0.0.1:9006"}})

	steps := []struct {
		name      string
		ports     []port
		partial   bool // the sync must be partial
		writes    bool // it must write the table
		stillOpen []proxy.ServicePortName
	}{
		{name: "endpoint change only", ports: s1, partial: true, writes: false},
		{name: "no endpoints to endpoints", ports: s2, partial: true, writes: true},
		{name: "one port of two sharing a ClusterIP removed", ports: s3, partial: true, writes: true},
		{name: "the other port removed", ports: s4, partial: true, writes: true},
		{name: "endpoints to none", ports: s5, partial: true, writes: true},
		{name: "a second owner of an external address and port", ports: s6, partial: false, writes: true},
		{name: "the conflict resolved", ports: s7, partial: false, writes: true},
		{name: "a service added, another removed", ports: s8, partial: true, writes: true},
	}

	b, fake := newFakeBackend(t)
	defer b.Cleanup(context.Background())
	mustSync(t, b, stateWith(s0, nil))
	prev := s0
	for _, step := range steps {
		before := fake.LastTransaction
		mustSync(t, b, stateWith(step.ports, changes(prev, step.ports)))
		if partial, _ := b.LastSyncStats(); partial != step.partial {
			t.Errorf("%s: partial = %v, want %v", step.name, partial, step.partial)
		}
		if wrote := fake.LastTransaction != before; wrote != step.writes {
			t.Errorf("%s: wrote the table = %v, want %v", step.name, wrote, step.writes)
		}

		fresh, freshFake := newFakeBackend(t)
		mustSync(t, fresh, stateWith(step.ports, nil))
		if got, want := tableOf(t, b, fake), tableOf(t, fresh, freshFake); !slices.Equal(got, want) {
			t.Errorf("%s: table after partial syncs differs from a full sync:\n got %s\nwant %s",
				step.name, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
		if got, want := serving(b), serving(fresh); !slices.Equal(got, want) {
			t.Errorf("%s: serving listeners %v, want %v", step.name, got, want)
		}
		_, rules := b.LastSyncStats()
		if _, freshRules := fresh.LastSyncStats(); rules != freshRules {
			t.Errorf("%s: %d rules and elements counted, a full sync counts %d", step.name, rules, freshRules)
		}
		if err := fresh.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		// A removed service's listeners are closed.
		for k := range b.listeners {
			if !slices.ContainsFunc(step.ports, func(p port) bool { return p.name() == k.name }) {
				t.Errorf("%s: listener %s of a removed service still open", step.name, k)
			}
		}
		prev = step.ports
	}
}
