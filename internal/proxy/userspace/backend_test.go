package userspace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
)

// These tests run without privileges: the backend writes into a
// knftables.Fake, its listeners bind 127.0.0.1, and the test connects to
// the listener port directly (what the redirect rule would do).

// tcpServer is a backend on 127.0.0.1 that greets every connection with
// its name and then echoes until the client closes.
type tcpServer struct {
	name   string
	ln     net.Listener
	active atomic.Int64
	total  atomic.Int64
}

func startTCP(t *testing.T, name string) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{name: name, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.active.Add(1)
			s.total.Add(1)
			go func() {
				defer s.active.Add(-1)
				defer c.Close()
				fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return s
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func udpServer(t *testing.T, name string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s", name, buf[:n])), from)
		}
	}()
	return pc.LocalAddr().String()
}

type svcSpec struct {
	name     string
	proto    v1.Protocol
	eps      []string // ip:port, all ready and local
	alg      string
	affinity time.Duration
	nodePort int32
	lb       []string
	ranges   []string
	etpLocal bool
	remote   []string // ready endpoints on another node
}

func (s svcSpec) portName() proxy.ServicePortName {
	p := s.proto
	if p == "" {
		p = v1.ProtocolTCP
	}
	return proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: s.name}, Port: "p", Protocol: p}
}

// stateOf is a whole State with svcs; it is Full, as it names no changes
// (syncs_test.go takes the backend through partial syncs).
func stateOf(svcs ...svcSpec) *proxy.State {
	st := proxy.NewState("node-a")
	st.Full = true
	st.NodeIPs = []netip.Addr{netip.MustParseAddr("192.168.0.2")}
	for i, s := range svcs {
		n := s.portName()
		sp := &proxy.ServicePort{
			Name: n, Protocol: n.Protocol, Port: 80, NodePort: s.nodePort,
			ClusterIPs:          []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(10 + i)})},
			AffinityTimeout:     s.affinity,
			LBAlgorithm:         s.alg,
			ExternalPolicyLocal: s.etpLocal,
		}
		for _, a := range s.lb {
			sp.LoadBalancerIPs = append(sp.LoadBalancerIPs, netip.MustParseAddr(a))
		}
		for _, r := range s.ranges {
			sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
		}
		st.Services[n] = sp
		for _, e := range s.eps {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-a", IsLocal: true})
		}
		for _, e := range s.remote {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-b"})
		}
	}
	return st
}

func newLoopbackBackend(t *testing.T, alg Algorithm) *Backend {
	t.Helper()
	b, err := New(Config{
		NodeName:     "node-a",
		ListenAddr:   netip.MustParseAddr("127.0.0.1"),
		Algorithm:    alg,
		EjectBackoff: time.Minute,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
	}, NewFake(v1.IPv4Protocol))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return b
}

func mustSync(t *testing.T, b *Backend, st *proxy.State) {
	t.Helper()
	if err := b.Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

func listenerAddr(t *testing.T, b *Backend, s svcSpec) string {
	t.Helper()
	port, ok := b.ListenerPort(s.portName(), false)
	if !ok {
		t.Fatalf("no listener for %s", s.name)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// hello connects to addr and returns the greeting's backend name, keeping
// the connection open when keep is set.
func hello(t *testing.T, addr string, keep bool) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("reading the greeting through %s: %v", addr, err)
	}
	if !keep {
		c.Close()
		return strings.Fields(line)[0], nil
	}
	_ = c.SetDeadline(time.Time{})
	return strings.Fields(line)[0], c
}

func TestRetryPastADeadEndpoint(t *testing.T) {
	a, b2 := startTCP(t, "a"), startTCP(t, "b")
	dead := deadAddr(t)
	b := newLoopbackBackend(t, RoundRobin)
	svc := svcSpec{name: "web", eps: []string{a.addr(), dead, b2.addr()}}
	mustSync(t, b, stateOf(svc))
	addr := listenerAddr(t, b, svc)
	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		name, _ := hello(t, addr, false)
		seen[name]++
	}
	if seen["a"] == 0 || seen["b"] == 0 || len(seen) != 2 {
		t.Fatalf("200 connections went to %v, want both live endpoints", seen)
	}
	l := b.listeners[lnKey{name: svc.portName()}]
	ep := l.byAddr[netip.MustParseAddrPort(dead)]
	if ep.failures.Load() != 1 || !ep.ejected(time.Now()) {
		t.Errorf("dead endpoint: %d failures, ejected %v; want 1 failure (then ejected, never retried)", ep.failures.Load(), ep.ejected(time.Now()))
	}
}

func TestAllEndpointsDeadResetsTheClient(t *testing.T) {
	b := newLoopbackBackend(t, RoundRobin)
	svc := svcSpec{name: "web", eps: []string{deadAddr(t), deadAddr(t)}}
	mustSync(t, b, stateOf(svc))
	// The proxy accepts, fails to reach any endpoint and resets: the
	// client sees the reset at connect or at the first read, never a hang.
	c, err := net.DialTimeout("tcp4", listenerAddr(t, b, svc), 5*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want the connection reset or closed", err)
	}
}

func TestLeastConnectionsThroughTheListener(t *testing.T) {
	srv := []*tcpServer{startTCP(t, "a"), startTCP(t, "b"), startTCP(t, "c")}
	b := newLoopbackBackend(t, RoundRobin) // the annotation selects least-connections
	svc := svcSpec{name: "lc", alg: "least-connections", eps: []string{srv[0].addr(), srv[1].addr(), srv[2].addr()}}
	mustSync(t, b, stateOf(svc))
	addr := listenerAddr(t, b, svc)
	held := map[string][]net.Conn{}
	defer func() {
		for _, cs := range held {
			for _, c := range cs {
				c.Close()
			}
		}
	}()
	for i := 0; i < 6; i++ {
		name, c := hello(t, addr, true)
		held[name] = append(held[name], c)
	}
	for _, n := range []string{"a", "b", "c"} {
		if len(held[n]) != 2 {
			t.Fatalf("6 held connections: %v each, want 2 per backend", counts(held))
		}
	}
	// Free b: the next two new connections go to the idlest, b.
	for _, c := range held["b"] {
		c.Close()
	}
	held["b"] = nil
	waitFor(t, func() bool { return srv[1].active.Load() == 0 && activeOn(b, svc, srv[1].addr()) == 0 })
	for i := 0; i < 2; i++ {
		name, c := hello(t, addr, true)
		held[name] = append(held[name], c)
		if name != "b" {
			t.Fatalf("new connection %d went to %s, want the idlest b (%v)", i, name, counts(held))
		}
	}
}

func activeOn(b *Backend, s svcSpec, addr string) int64 {
	return b.listeners[lnKey{name: s.portName()}].byAddr[netip.MustParseAddrPort(addr)].active.Load()
}

func counts(m map[string][]net.Conn) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSplicedStreamBothWays(t *testing.T) {
	s := startTCP(t, "a")
	b := newLoopbackBackend(t, RoundRobin)
	svc := svcSpec{name: "echo", eps: []string{s.addr()}}
	mustSync(t, b, stateOf(svc))
	c, err := net.Dial("tcp4", listenerAddr(t, b, svc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	go func() {
		_, _ = io.WriteString(c, payload)
		_ = c.(*net.TCPConn).CloseWrite() // half-close passes through
	}()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	greeting, rest, _ := strings.Cut(string(got), "\n")
	if !strings.HasPrefix(greeting, "a ") || rest != payload {
		t.Fatalf("echo through the proxy: greeting %q, %d bytes back, want %d", greeting, len(rest), len(payload))
	}
}

func TestUDPSessionsFollowEndpointChanges(t *testing.T) {
	x, y := udpServer(t, "x"), udpServer(t, "y")
	b := newLoopbackBackend(t, RoundRobin)
	svc := svcSpec{name: "dns", proto: v1.ProtocolUDP, eps: []string{x}}
	mustSync(t, b, stateOf(svc))
	c, err := net.Dial("udp4", listenerAddr(t, b, svc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange := func(msg string) string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("exchange %q: %v", msg, err)
		}
		return string(buf[:n])
	}
	for i := 0; i < 3; i++ {
		if got := exchange(fmt.Sprint("ping", i)); got != fmt.Sprint("x ping", i) {
			t.Fatalf("reply %q, want from x", got)
		}
	}
	// Adding y keeps the client's session on x (sessions stick) …
	svc.eps = []string{x, y}
	mustSync(t, b, stateOf(svc))
	if got := exchange("again"); got != "x again" {
		t.Fatalf("after adding y: %q, want the session to stay on x", got)
	}
	// … removing x moves it at the next datagram.
	svc.eps = []string{y}
	mustSync(t, b, stateOf(svc))
	if got := exchange("moved"); got != "y moved" {
		t.Fatalf("after removing x: %q, want y", got)
	}
}

func TestUDPIdleSessionsEnd(t *testing.T) {
	x := udpServer(t, "x")
	b, err := New(Config{ListenAddr: netip.MustParseAddr("127.0.0.1"), UDPIdleTimeout: 200 * time.Millisecond}, NewFake(v1.IPv4Protocol))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup(context.Background())
	svc := svcSpec{name: "dns", proto: v1.ProtocolUDP, eps: []string{x}}
	mustSync(t, b, stateOf(svc))
	c, err := net.Dial("udp4", listenerAddr(t, b, svc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	u := b.listeners[lnKey{name: svc.portName()}].udp
	sessions := func() int {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.sessions)
	}
	if sessions() != 1 {
		t.Fatalf("%d sessions, want 1", sessions())
	}
	waitFor(t, func() bool { return sessions() == 0 })
	if n := activeOn(b, svc, x); n != 0 {
		t.Errorf("endpoint still counts %d active sessions", n)
	}
}

func TestRulesAndListenerLifecycle(t *testing.T) {
	fake := NewFake(v1.IPv4Protocol)
	b, err := New(Config{ListenAddr: netip.MustParseAddr("127.0.0.1"), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}, fake)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup(context.Background())
	web := svcSpec{name: "web", eps: []string{"10.244.1.2:8080"}, nodePort: 30080, lb: []string{"192.0.2.20"}, ranges: []string{"203.0.113.0/24"}}
	empty := svcSpec{name: "empty", nodePort: 30081}
	local := svcSpec{name: "local", nodePort: 30082, etpLocal: true, remote: []string{"10.244.2.2:8080"}}
	dns := svcSpec{name: "dns", proto: v1.ProtocolUDP, eps: []string{"10.244.1.2:5353"}}
	mustSync(t, b, stateOf(web, empty, local, dns))
	webPort, _ := b.ListenerPort(web.portName(), false)
	webExtPort, _ := b.ListenerPort(web.portName(), true)
	localPort, _ := b.ListenerPort(local.portName(), false)
	dnsPort, _ := b.ListenerPort(dns.portName(), false)
	if _, ok := b.listeners[lnKey{name: local.portName(), external: true}]; ok {
		t.Error("local: an external listener without local endpoints")
	}
	if webPort == webExtPort {
		t.Error("web: ClusterIP and external traffic share a listener")
	}
	if _, ok := b.ListenerPort(empty.portName(), false); ok {
		t.Error("empty: a listener without endpoints")
	}
	dump := fake.Dump()
	for _, want := range []string{
		fmt.Sprintf("add element ip svcnet-userspace service-ips { 10.96.0.10 . tcp . 80 : %d }", webPort),
		fmt.Sprintf("add element ip svcnet-userspace service-ips { 192.0.2.20 . tcp . 80 : %d }", webExtPort),
		fmt.Sprintf("add element ip svcnet-userspace service-nodeports { tcp . 30080 : %d }", webExtPort),
		fmt.Sprintf("add element ip svcnet-userspace service-ips { 10.96.0.12 . tcp . 80 : %d }", localPort),
		fmt.Sprintf("add element ip svcnet-userspace service-ips { 10.96.0.13 . udp . 80 : %d }", dnsPort),
		"add element ip svcnet-userspace no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }",
		"add element ip svcnet-userspace no-endpoint-nodeports { tcp . 30081 : goto reject-chain }",
		"add element ip svcnet-userspace no-endpoint-nodeports { tcp . 30082 : drop }",
		"add element ip svcnet-userspace nodeport-ips { 192.168.0.2 }",
		"add element ip svcnet-userspace firewall-ips { 192.0.2.20 . tcp . 80 }",
		"add element ip svcnet-userspace firewall-allow { 192.0.2.20 . tcp . 80 . 203.0.113.0/24 }",
		"add rule ip svcnet-userspace redirects meta l4proto tcp redirect to : ip daddr . meta l4proto . th dport map @service-ips",
		"add rule ip svcnet-userspace cluster-ips-check ip daddr { 10.96.0.0/16 } drop",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("missing %q in\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "30082 :") && strings.Contains(dump, fmt.Sprintf("tcp . 30082 : %d", localPort)) {
		t.Error("local: the NodePort is redirected although no endpoint is local")
	}

	// The listener keeps its port across syncs; a removed service's
	// listener closes after its rules are gone.
	mustSync(t, b, stateOf(web, empty, local, dns))
	if p, _ := b.ListenerPort(web.portName(), false); p != webPort {
		t.Errorf("web's listener moved from %d to %d", webPort, p)
	}
	mustSync(t, b, stateOf(web))
	if _, ok := b.ListenerPort(dns.portName(), false); ok {
		t.Error("dns listener still open after the service left")
	}
	if strings.Contains(fake.Dump(), "udp . 80") {
		t.Error("dns redirect still in the table")
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(b.listeners) != 0 {
		t.Errorf("%d listeners after Cleanup", len(b.listeners))
	}
	if _, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", webPort)); err == nil {
		t.Error("web's listener still accepts after Cleanup")
	}
}

func TestAnnotationSelectsTheAlgorithm(t *testing.T) {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: map[string]string{proxy.AnnotationLBAlgorithm: " source-hash "}},
		Spec: v1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []v1.ServicePort{{Name: "p", Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	for _, sp := range proxy.ServicePorts(svc) {
		if sp.LBAlgorithm != "source-hash" {
			t.Fatalf("ServicePorts: LBAlgorithm %q, want source-hash", sp.LBAlgorithm)
		}
	}
	b := newLoopbackBackend(t, LeastConnections)
	for _, tc := range []struct {
		annotation string
		want       Algorithm
	}{{"", LeastConnections}, {"sh", SourceHash}, {"random", Random}, {"bogus", LeastConnections}} {
		s := svcSpec{name: "x", alg: tc.annotation, eps: []string{"127.0.0.1:1"}}
		mustSync(t, b, stateOf(s))
		if got := b.listeners[lnKey{name: s.portName()}].cfg.Load().alg; got != tc.want {
			t.Errorf("annotation %q: algorithm %s, want %s", tc.annotation, got, tc.want)
		}
	}
}

func TestIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "v6 %s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	b, err := New(Config{Family: v1.IPv6Protocol, ListenAddr: netip.IPv6Loopback()}, NewFake(v1.IPv6Protocol))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup(context.Background())
	n := svcSpec{name: "v6"}.portName()
	st := proxy.NewState("node-a")
	ep := netip.MustParseAddrPort(ln.Addr().String())
	st.Services[n] = &proxy.ServicePort{Name: n, Protocol: v1.ProtocolTCP, Port: 80,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:10:96::10")}}
	st.Endpoints[n] = []proxy.Endpoint{{IP: ep.Addr(), Port: int32(ep.Port()), Ready: true, Serving: true}}
	mustSync(t, b, st)
	port, ok := b.ListenerPort(n, false)
	if !ok {
		t.Fatal("no listener")
	}
	if name, _ := hello(t, fmt.Sprintf("[::1]:%d", port), false); name != "v6" {
		t.Fatalf("answered by %q", name)
	}
	if d := b.nft.(interface{ Dump() string }).Dump(); !strings.Contains(d, fmt.Sprintf("add element ip6 svcnet-userspace service-ips { fd00:10:96::10 . tcp . 80 : %d }", port)) || strings.Contains(d, "10.96.0.10") {
		t.Errorf("ip6 table: want only the IPv6 ClusterIP redirected:\n%s", d)
	}
}
