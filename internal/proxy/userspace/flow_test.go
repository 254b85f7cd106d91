package userspace

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// flowTracer answers the packet-flow table for the userspace backend: it
// walks the table's fixed hook order (firewall-check before DNAT, the
// redirects, then the filter checks) over the set and map elements the
// backend wrote into its knftables.Fake, and for a redirected packet asks
// the listener behind the redirect port which endpoints it may connect to.
// The fixed rules themselves are checked textually by
// TestRulesAndListenerLifecycle.
type flowTracer struct {
	b       *Backend
	fake    *knftables.Fake
	nodeIPs []netip.Addr
	cidrs   []netip.Prefix
}

func (t *flowTracer) elems(kind, name string) ([]*knftables.Element, error) {
	es, err := t.fake.ListElements(context.Background(), kind, name)
	if err != nil && !knftables.IsNotFound(err) {
		return nil, err
	}
	return es, nil
}

// lookup returns the value of the element of map name with key, if any.
func (t *flowTracer) lookup(name string, key ...string) (string, bool, error) {
	es, err := t.elems("map", name)
	if err != nil {
		return "", false, err
	}
	for _, e := range es {
		if slices.Equal(e.Key, key) {
			return strings.Join(e.Value, " "), true, nil
		}
	}
	return "", false, nil
}

func (t *flowTracer) inSet(name string, match func(key []string) bool) (bool, error) {
	es, err := t.elems("set", name)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(es, func(e *knftables.Element) bool { return match(e.Key) }), nil
}

func (t *flowTracer) Trace(src, dst netip.Addr, proto string, port int) (proxytest.Result, error) {
	p := strconv.Itoa(port)
	var trail []string
	done := func(v proxytest.Verdict) (proxytest.Result, error) {
		return proxytest.Result{Paths: []proxytest.Path{{Verdict: v, Trail: trail}}}, nil
	}
	// 1. firewall-check (dstnat-10).
	fw, err := t.inSet(firewallIPsSet, func(k []string) bool { return slices.Equal(k, []string{dst.String(), proto, p}) })
	if err != nil {
		return proxytest.Result{}, err
	}
	if fw {
		allowed, err := t.inSet(firewallAllowSet, func(k []string) bool {
			if len(k) != 4 || !slices.Equal(k[:3], []string{dst.String(), proto, p}) {
				return false
			}
			pre, err := netip.ParsePrefix(k[3])
			return err == nil && pre.Contains(src)
		})
		if err != nil {
			return proxytest.Result{}, err
		}
		if !allowed {
			trail = append(trail, "firewall-check: source not in firewall-allow")
			return done(proxytest.Drop)
		}
	}
	// 2. redirects (dstnat).
	if proto == "tcp" || proto == "udp" {
		lport, ok, err := t.lookup(serviceIPsMap, dst.String(), proto, p)
		if err != nil {
			return proxytest.Result{}, err
		}
		if !ok && slices.Contains(t.nodeIPs, dst) {
			isNP, err := t.inSet(nodePortIPsSet, func(k []string) bool { return k[0] == dst.String() })
			if err != nil {
				return proxytest.Result{}, err
			}
			if isNP {
				lport, ok, err = t.lookup(serviceNodePortsMap, proto, p)
				if err != nil {
					return proxytest.Result{}, err
				}
			}
		}
		if ok {
			trail = append(trail, "redirect to listener :"+lport)
			return t.listenerPaths(src, proto, lport, trail)
		}
	}
	// 3. filter: service-endpoints-check, nodeport-endpoints-check (input).
	if v, ok, err := t.lookup(noEndpointServicesMap, dst.String(), proto, p); err != nil {
		return proxytest.Result{}, err
	} else if ok {
		trail = append(trail, "no-endpoint-services: "+v)
		return done(verdictOf(v))
	}
	if slices.Contains(t.nodeIPs, dst) {
		if v, ok, err := t.lookup(noEndpointNodePortsMap, proto, p); err != nil {
			return proxytest.Result{}, err
		} else if ok {
			trail = append(trail, "no-endpoint-nodeports: "+v)
			return done(verdictOf(v))
		}
		return done(proxytest.Accept) // input: not ours
	}
	// 4. cluster-ips-check (forward, output).
	cip, err := t.inSet(clusterIPsSet, func(k []string) bool { return k[0] == dst.String() })
	if err != nil {
		return proxytest.Result{}, err
	}
	if cip {
		trail = append(trail, "cluster-ips-check: unused port of a ClusterIP")
		return done(proxytest.Reject)
	}
	for _, c := range t.cidrs {
		if c.Contains(dst) {
			trail = append(trail, "cluster-ips-check: unallocated service address")
			return done(proxytest.Drop)
		}
	}
	return done(proxytest.Accept)
}

func verdictOf(v string) proxytest.Verdict {
	if v == "drop" {
		return proxytest.Drop
	}
	return proxytest.Reject
}

func (t *flowTracer) listener(proto, lport string) (*listener, error) {
	for _, l := range t.b.listeners {
		if strings.EqualFold(string(l.proto), proto) && strconv.Itoa(int(l.port)) == lport {
			return l, nil
		}
	}
	return nil, fmt.Errorf("redirect to port %s/%s, where no listener is", lport, proto)
}

// listenerPaths are the endpoints the listener may pick for src: the
// affinity endpoint alone when src has a live record, else every
// endpoint. Masquerade means the endpoint sees a node address.
func (t *flowTracer) listenerPaths(src netip.Addr, proto, lport string, trail []string) (proxytest.Result, error) {
	l, err := t.listener(proto, lport)
	if err != nil {
		return proxytest.Result{}, err
	}
	cands := l.candidates(src, time.Now())
	if len(cands) == 0 {
		return proxytest.Result{}, fmt.Errorf("listener %s has no endpoints but traffic is redirected to it", l.key)
	}
	cfg := l.cfg.Load()
	if cfg.affinity > 0 {
		l.affMu.Lock()
		_, sticky := l.aff[src]
		l.affMu.Unlock()
		if sticky {
			cands = cands[:1]
		}
	}
	var res proxytest.Result
	for _, ep := range cands {
		// The endpoint sees the client when the listener binds its
		// address, unless that is one of the node's own addresses.
		masq := !l.transparentFor(src, ep.addr) || slices.Contains(t.nodeIPs, src)
		res.Paths = append(res.Paths, proxytest.Path{Verdict: proxytest.DNAT, Endpoint: ep.addr, Masquerade: masq,
			Trail: append(slices.Clone(trail), "listener "+l.key.String()+" connects to "+ep.addr.String())})
	}
	return res, nil
}

func (t *flowTracer) Follow(src, dst netip.Addr, proto string, port int, ep netip.AddrPort) error {
	res, err := t.Trace(src, dst, proto, port)
	if err != nil {
		return err
	}
	if len(res.Paths) == 0 || res.Paths[0].Verdict != proxytest.DNAT {
		return fmt.Errorf("%s:%d is not proxied", dst, port)
	}
	lport := strings.TrimPrefix(res.Paths[0].Trail[len(res.Paths[0].Trail)-2], "redirect to listener :")
	l, err := t.listener(proto, lport)
	if err != nil {
		return err
	}
	e := l.byAddr[ep]
	if e == nil {
		return fmt.Errorf("%s is not an endpoint of %s", ep, l.key)
	}
	l.chosen(src, e, time.Now())
	return nil
}

func (t *flowTracer) Reset() {
	for _, l := range t.b.listeners {
		l.affMu.Lock()
		clear(l.aff)
		l.affMu.Unlock()
	}
}

// userspaceCases is the standard table with the rows where the userspace
// mode differs by nature (see the package doc), each with its reason.
func userspaceCases(ipv6, transparent bool) []proxytest.Case {
	cases := proxytest.StandardCases()
	m := func(s string) string { return s }
	if ipv6 {
		cases = proxytest.StandardCasesIPv6()
		m = func(s string) string {
			ap := netip.MustParseAddrPort(s)
			return netip.AddrPortFrom(proxytest.IPv6Addr(ap.Addr()), ap.Port()).String()
		}
	}
	differs := map[string]string{
		// Go has no SCTP sockets: SCTP services are not proxied.
		"clusterIP sctp": "REJECT",
		// No short-circuit of pod/node traffic to the external entry
		// points of ETP Local services: the external listener serves
		// local endpoints only.
		"ETP local: pod to LB IP short-circuits to cluster":       "DNAT " + m("10.244.1.4:80"),
		"ETP local: node to nodeport short-circuits, masqueraded": "DNAT " + m("10.244.1.4:80"),
	}
	for i := range cases {
		c := &cases[i]
		if w, ok := differs[c.Name]; ok {
			c.Want = w
			c.Name += " (userspace differs)"
		}
		if !transparent {
			// Without transparent proxying the endpoint sees the node's
			// address on every path.
			c.Masq = strings.HasPrefix(c.Want, "DNAT")
		}
	}
	return cases
}

// TestUserspacePacketFlow runs the shared packet-flow table through the
// userspace backend (issue 7 acceptance 1), in both families, with and
// without transparent proxying. With it, the Masq column is exactly the
// nftables mode's; without, every proxied path is masqueraded.
func TestUserspacePacketFlow(t *testing.T) {
	for _, x := range []struct {
		fam         v1.IPFamily
		transparent bool
	}{{v1.IPv4Protocol, true}, {v1.IPv6Protocol, true}, {v1.IPv4Protocol, false}, {v1.IPv6Protocol, false}} {
		fam := x.fam
		t.Run(fmt.Sprintf("%s transparent=%v", fam, x.transparent), func(t *testing.T) {
			ipv6 := fam == v1.IPv6Protocol
			nodeIPs, cidr, listen := proxytest.NodeIPs(), netip.MustParsePrefix(proxytest.ServiceCIDR), netip.MustParseAddr("127.0.0.1")
			ccidr := netip.MustParsePrefix(proxytest.ClusterCIDR)
			st := proxytest.StandardState()
			if ipv6 {
				nodeIPs, cidr, listen = proxytest.NodeIPsIPv6(), proxytest.IPv6Prefix(cidr), netip.IPv6Loopback()
				ccidr = proxytest.IPv6Prefix(ccidr)
				st = proxytest.StandardStateIPv6()
			}
			fake := NewFake(fam)
			b, err := New(Config{Family: fam, NodeName: proxytest.NodeName, NodeIPs: nodeIPs,
				ServiceCIDRs: []netip.Prefix{cidr}, ListenAddr: listen,
				Transparent: x.transparent, ClusterCIDRs: []netip.Prefix{ccidr}}, fake)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Cleanup(context.Background())
			if err := b.Sync(context.Background(), st); err != nil {
				if ipv6 && strings.Contains(err.Error(), "listen") {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				t.Fatal(err)
			}
			proxytest.Run(t, &flowTracer{b: b, fake: fake, nodeIPs: nodeIPs, cidrs: []netip.Prefix{cidr}}, userspaceCases(ipv6, x.transparent))
		})
	}
}
