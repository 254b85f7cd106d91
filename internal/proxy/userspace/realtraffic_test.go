package userspace_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
	"github.com/svcnet/svcnet/internal/proxy/userspace"
)

// TestMain runs the package's tests inside a private network namespace when
// root (see proxytest.Main); the real-traffic tests skip otherwise.
func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

// rtSvc describes one service port of the real-traffic tests.
type rtSvc struct {
	name      string
	proto     v1.Protocol
	clusterIP string
	port      int32
	nodePort  int32
	external  []string
	lb        []string
	ranges    []string
	affinity  time.Duration
	etpLocal  bool
	alg       string
	eps       []string // "ip:port@node"
}

func (s rtSvc) portName() proxy.ServicePortName {
	proto := s.proto
	if proto == "" {
		proto = v1.ProtocolTCP
	}
	return proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: s.name}, Port: "p", Protocol: proto}
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func buildState(gen uint64, svcs []rtSvc, nodeIPs []netip.Addr) *proxy.State {
	st := proxy.NewState(proxytest.NodeName)
	st.Generation, st.NodeIPs = gen, nodeIPs
	for _, s := range svcs {
		n := s.portName()
		sp := &proxy.ServicePort{
			Name: n, Protocol: n.Protocol, Port: s.port, NodePort: s.nodePort,
			ClusterIPs:          addrs([]string{s.clusterIP}),
			ExternalIPs:         addrs(s.external),
			LoadBalancerIPs:     addrs(s.lb),
			AffinityTimeout:     s.affinity,
			ExternalPolicyLocal: s.etpLocal,
			LBAlgorithm:         s.alg,
		}
		for _, r := range s.ranges {
			sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
		}
		st.Services[n] = sp
		st.Changed[n] = struct{}{}
		for _, e := range s.eps {
			addr, node, _ := strings.Cut(e, "@")
			ap := netip.MustParseAddrPort(addr)
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{
				IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true,
				NodeName: node, IsLocal: node == proxytest.NodeName,
			})
		}
		sort.Slice(st.Endpoints[n], func(i, j int) bool {
			return st.Endpoints[n][i].AddrPort().Compare(st.Endpoints[n][j].AddrPort()) < 0
		})
	}
	return st
}

// newBackend is a proxytest.NewBackendFunc: the userspace backend for the
// node in ns (created inside ns, so its sockets live there), with
// transparent proxying.
func newBackend(t *testing.T, ns *proxytest.NetNS, node string, nodeIPs []netip.Addr) proxy.Backend {
	t.Helper()
	var b *userspace.Backend
	err := ns.Do(func() error {
		nft, err := userspace.NewInterface(v1.IPv4Protocol)
		if err != nil {
			return err
		}
		b, err = userspace.New(userspace.Config{
			NodeName:     node,
			NodeIPs:      nodeIPs,
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ServiceCIDR)},
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)},
			Transparent:  true,
			DialTimeout:  time.Second,
			Logger:       testLogger(),
		}, nft)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Close also lets go of ns, so the lab can delete it.
		if err := ns.Do(func() error { return b.Close(context.Background()) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b
}

// TestSharedRealTraffic is the real-traffic matrix every mode passes
// (proxytest.RunRealTraffic, issue 7 acceptance 2) for the userspace mode.
func TestSharedRealTraffic(t *testing.T) {
	proxytest.RequireSandbox(t, "nft")
	awaitLabTeardown(t)
	proxytest.RunRealTraffic(t, newBackend)
}

// testLogger logs at debug level when SVCNET_TEST_DEBUG is set.
func testLogger() *slog.Logger {
	if os.Getenv("SVCNET_TEST_DEBUG") == "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// awaitLabTeardown makes t's cleanup wait (after the lab's, which it
// must precede in registration) until the lab's veths are gone from the
// sandbox's namespace: the kernel destroys deleted namespaces, and with
// them their veth peers, asynchronously, and the next test's lab reuses
// the names.
func awaitLabTeardown(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
			if err == nil && strings.TrimSpace(string(out)) == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("lab veths still present 10s after teardown: %s %v", out, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// killServers kills the backend servers running in the pod namespace name
// (processes this test started; found by "ip netns pids").
func killServers(t *testing.T, name string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", name, err)
	}
	pids := strings.Fields(string(out))
	if len(pids) == 0 {
		t.Fatalf("no process in %s", name)
	}
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	// Wait until they are gone (their sockets closed): a server dying
	// while the kernel completes a handshake for it resets a connection
	// already made, which no proxy can retry.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err == nil && strings.TrimSpace(string(out)) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the servers in %s did not exit: %s %v", name, out, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRealTraffic runs the userspace backend in node-a of the netns
// cluster (the sandbox's own namespace: real nft rules, real listeners)
// and sends real connections from pods, node-b, the outside client and
// node-a itself.
func TestRealTraffic(t *testing.T) {
	proxytest.RequireSandbox(t, "nft")
	ctx := context.Background()
	awaitLabTeardown(t)
	c := proxytest.NewCluster(t)

	client := c.AddPod(c.NodeA, "client", "10.244.1.100")
	a1 := c.AddPod(c.NodeA, "a1", "10.244.1.2")
	a2 := c.AddPod(c.NodeA, "a2", "10.244.1.4")
	b1 := c.AddPod(c.NodeB, "b1", "10.244.2.2")
	b2 := c.AddPod(c.NodeB, "b2", "10.244.2.3")
	b3 := c.AddPod(c.NodeB, "b3", "10.244.2.7")
	k1 := c.AddPod(c.NodeB, "k1", "10.244.2.11")
	k2 := c.AddPod(c.NodeB, "k2", "10.244.2.12")
	k3 := c.AddPod(c.NodeA, "k3", "10.244.1.13")
	c.StartServer(a1, "a1", []int{8080}, []int{5353})
	c.StartServer(a2, "a2", []int{80}, nil)
	c.StartServer(b1, "b1", []int{8080}, []int{5353})
	c.StartServer(b2, "b2", []int{8080}, nil)
	c.StartServer(b3, "b3", []int{80}, nil)
	c.StartServer(k1, "k1", []int{8080}, nil)
	c.StartServer(k2, "k2", []int{8080}, nil)
	c.StartServer(k3, "k3", []int{8080}, nil)

	three := []string{"10.244.1.2:8080@node-a", "10.244.2.2:8080@node-b", "10.244.2.3:8080@node-b"}
	dns := rtSvc{name: "dns", proto: v1.ProtocolUDP, clusterIP: "10.96.0.10", port: 53, eps: []string{"10.244.1.2:5353@node-a"}}
	svcs := []rtSvc{
		{name: "web", clusterIP: "10.96.0.10", port: 80, nodePort: 30080,
			external: []string{"192.0.2.10"}, lb: []string{"192.0.2.20"}, eps: three},
		{name: "sticky", clusterIP: "10.96.0.11", port: 80, affinity: 2 * time.Second, eps: three},
		{name: "fragile", clusterIP: "10.96.0.12", port: 80,
			eps: []string{"10.244.2.11:8080@node-b", "10.244.2.12:8080@node-b", "10.244.1.13:8080@node-a"}},
		{name: "hashed", clusterIP: "10.96.0.13", port: 80, alg: "source-hash", eps: three},
		{name: "local", clusterIP: "10.96.0.14", port: 80, nodePort: 30082, lb: []string{"192.0.2.21"},
			etpLocal: true, eps: []string{"10.244.1.4:80@node-a", "10.244.2.7:80@node-b"}},
		{name: "remote-only", clusterIP: "10.96.0.15", port: 80, nodePort: 30083,
			etpLocal: true, eps: []string{"10.244.2.7:80@node-b"}},
		{name: "fw-open", clusterIP: "10.96.0.16", port: 80, lb: []string{"192.0.2.22"},
			ranges: []string{proxytest.ExternalIP + "/32"}, eps: three},
		{name: "fw-closed", clusterIP: "10.96.0.17", port: 80, lb: []string{"192.0.2.23"},
			ranges: []string{"198.51.100.0/24"}, eps: three},
		{name: "empty", clusterIP: "10.96.0.18", port: 80, nodePort: 30084},
		dns,
	}
	// Registered first, so it runs after the backend's Cleanup.
	t.Cleanup(func() {
		if err := exec.Command("nft", "list", "table", "ip", userspace.TableName).Run(); err == nil {
			t.Error("the table is still there after Cleanup")
		}
		if out, _ := exec.Command("ip", "rule", "show").CombinedOutput(); strings.Contains(string(out), "7723") {
			t.Errorf("the policy rule is still there after Cleanup:\n%s", out)
		}
	})
	b := newBackend(t, &proxytest.NetNS{}, proxytest.NodeName, c.NodeAIPs())
	if err := b.Sync(ctx, buildState(1, svcs, c.NodeAIPs())); err != nil {
		t.Fatal(err)
	}
	// Where the proxy does not bind the client's address, it connects from
	// node-a: the backend sees PodGateway (its own pods) or NodeAIP2
	// (node-b's).
	nodeAddrs := []string{proxytest.PodGateway, proxytest.NodeAIP2}
	webBackends := []string{"a1", "b1", "b2"}

	t.Run("clusterIP round-robins over 3 backends", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 30; i++ {
			r, err := client.HTTPGet(ctx, "10.96.0.10:80")
			if err != nil {
				t.Fatal(err)
			}
			if r.ClientIP() != "10.244.1.100" {
				t.Errorf("backend %s saw client %s, want the pod IP (transparent proxying)", r.Backend, r.ClientIP())
			}
			seen[r.Backend]++
		}
		for _, be := range webBackends {
			if seen[be] != 10 {
				t.Fatalf("30 requests: %v, want 10 on each of %v (round-robin)", seen, webBackends)
			}
		}
	})

	t.Run("one of three backends killed: 1000 sequential requests all succeed", func(t *testing.T) {
		killServers(t, "k2")
		seen := map[string]int{}
		for i := 0; i < 1000; i++ {
			r, err := client.HTTPGet(ctx, "10.96.0.12:80")
			if err != nil {
				t.Fatalf("request %d failed: %v (seen so far %v)", i, err, seen)
			}
			seen[r.Backend]++
		}
		if seen["k2"] != 0 || seen["k1"] == 0 || seen["k3"] == 0 {
			t.Fatalf("1000 requests: %v, want k1 and k3 only", seen)
		}
		t.Logf("1000 requests with k2 dead: %v", seen)
	})

	t.Run("session affinity sticks, then expires", func(t *testing.T) {
		seen := map[string]int{}
		var first string
		for i := 0; i < 30; i++ {
			r, err := client.HTTPGet(ctx, "10.96.0.11:80")
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = r.Backend
			}
			seen[r.Backend]++
		}
		if len(seen) != 1 {
			t.Fatalf("affinity: 30 requests went to %v, want one backend", seen)
		}
		// Other clients are balanced independently.
		other := map[string]int{}
		for i := 0; i < 6; i++ {
			r, err := c.Ext.HTTPGet(ctx, "10.96.0.11:80")
			if err != nil {
				t.Fatal(err)
			}
			other[r.Backend]++
		}
		if len(other) != 1 {
			t.Fatalf("a second client's 6 requests: %v, want one backend", other)
		}
		for try := 0; try < 6; try++ {
			time.Sleep(2*time.Second + 300*time.Millisecond)
			r, err := client.HTTPGet(ctx, "10.96.0.11:80")
			if err != nil {
				t.Fatal(err)
			}
			if r.Backend != first {
				t.Logf("affinity expired: %s after %s, following %d expiries", r.Backend, first, try+1)
				return
			}
		}
		t.Errorf("affinity never expired: always %s", first)
	})

	t.Run("source-hash annotation keeps a client on one backend", func(t *testing.T) {
		for _, from := range []*proxytest.NetNS{client, c.Ext, c.NodeB} {
			seen := map[string]int{}
			for i := 0; i < 20; i++ {
				r, err := from.HTTPGet(ctx, "10.96.0.13:80")
				if err != nil {
					t.Fatal(err)
				}
				seen[r.Backend]++
			}
			if len(seen) != 1 {
				t.Errorf("from %q: 20 requests went to %v, want one backend", from.Name, seen)
			}
		}
	})

	t.Run("nodePort answers on node-a's IPs from everywhere", func(t *testing.T) {
		for _, from := range []*proxytest.NetNS{c.Ext, c.NodeB, client, c.NodeA} {
			for _, ip := range c.NodeAIPs() {
				addr := netip.AddrPortFrom(ip, 30080).String()
				r, err := from.HTTPGet(ctx, addr)
				if err != nil {
					t.Errorf("from %q to %s: %v", from.Name, addr, err)
					continue
				}
				if !slices.Contains(webBackends, r.Backend) {
					t.Errorf("from %q to %s: answered by %s", from.Name, addr, r.Backend)
				}
				// Cluster policy: as masquerading, the endpoint sees node-a.
				if !slices.Contains(nodeAddrs, r.ClientIP()) {
					t.Errorf("from %q to %s: %s saw %s, want a node-a address %v", from.Name, addr, r.Backend, r.ClientIP(), nodeAddrs)
				}
			}
		}
	})

	t.Run("node-a itself reaches the ClusterIP", func(t *testing.T) {
		r, err := c.NodeA.HTTPGet(ctx, "10.96.0.10:80")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(webBackends, r.Backend) {
			t.Errorf("answered by %s", r.Backend)
		}
	})

	t.Run("externalIP and LoadBalancer IP answer", func(t *testing.T) {
		for _, addr := range []string{"192.0.2.10:80", "192.0.2.20:80", "192.0.2.22:80"} {
			r, err := c.Ext.HTTPGet(ctx, addr)
			if err != nil {
				t.Errorf("%s: %v", addr, err)
				continue
			}
			if !slices.Contains(webBackends, r.Backend) {
				t.Errorf("%s answered by %s", addr, r.Backend)
			}
		}
	})

	t.Run("loadBalancerSourceRanges drop other sources", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err := c.Ext.Dial(dctx, "tcp", "192.0.2.23:80")
		if err == nil {
			conn.Close()
			t.Fatal("connected to a LoadBalancer IP whose ranges exclude the client")
		}
		if !proxytest.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want a silent drop (timeout)", err)
		}
		// The ClusterIP of the same service is not firewalled.
		if _, err := client.HTTPGet(ctx, "10.96.0.17:80"); err != nil {
			t.Errorf("ClusterIP of the firewalled service: %v", err)
		}
	})

	t.Run("no endpoints: connection refused", func(t *testing.T) {
		for _, x := range []struct {
			from *proxytest.NetNS
			addr string
		}{{client, "10.96.0.18:80"}, {c.Ext, proxytest.NodeIP + ":30084"}, {c.NodeA, "10.96.0.18:80"}, {client, "10.96.0.10:81"}} {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			conn, err := x.from.Dial(dctx, "tcp", x.addr)
			cancel()
			if err == nil {
				conn.Close()
				t.Errorf("from %q to %s: connected, want refused", x.from.Name, x.addr)
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("from %q to %s: %v, want connection refused (not a timeout)", x.from.Name, x.addr, err)
			}
		}
	})

	t.Run("ETP Local: external traffic only to local endpoints", func(t *testing.T) {
		for _, addr := range []string{proxytest.NodeIP + ":30082", "192.0.2.21:80"} {
			for i := 0; i < 6; i++ {
				r, err := c.Ext.HTTPGet(ctx, addr)
				if err != nil {
					t.Fatalf("%s: %v", addr, err)
				}
				if r.Backend != "a2" || r.ClientIP() != proxytest.ExternalIP {
					t.Fatalf("%s: answered by %s seeing %s, want the local a2 seeing %s (transparent)",
						addr, r.Backend, r.ClientIP(), proxytest.ExternalIP)
				}
			}
		}
		// The ClusterIP uses both endpoints.
		seen := map[string]int{}
		for i := 0; i < 4; i++ {
			r, err := client.HTTPGet(ctx, "10.96.0.14:80")
			if err != nil {
				t.Fatal(err)
			}
			seen[r.Backend]++
		}
		if len(seen) != 2 {
			t.Errorf("ClusterIP of the ETP Local service: %v, want a2 and b3", seen)
		}
		// No local endpoint: external traffic is dropped, not refused.
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if conn, err := c.Ext.Dial(dctx, "tcp", proxytest.NodeIP+":30083"); err == nil {
			conn.Close()
			t.Error("remote-only NodePort connected, want dropped")
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			t.Error("remote-only NodePort refused, want dropped (endpoints exist elsewhere)")
		}
	})

	t.Run("UDP proxied, and moves to the new backend after a change", func(t *testing.T) {
		u, err := client.UDPDial("10.96.0.10:53")
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		for i := 0; i < 3; i++ {
			r, err := u.Exchange(2 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.Backend != "a1" {
				t.Fatalf("udp before the change: %s, want a1", r.Backend)
			}
		}
		moved := dns
		moved.eps = []string{"10.244.2.2:5353@node-b"}
		var next []rtSvc
		for _, s := range svcs {
			if s.name == "dns" {
				s = moved
			}
			next = append(next, s)
		}
		if err := b.Sync(ctx, buildState(2, next, c.NodeAIPs())); err != nil {
			t.Fatal(err)
		}
		synced := time.Now()
		var last string
		for time.Since(synced) < time.Second {
			r, err := u.Exchange(200 * time.Millisecond)
			if err == nil && r.Backend == "b1" {
				t.Logf("udp flow moved to b1 %s after the sync returned", time.Since(synced))
				return
			}
			if err == nil {
				last = r.Backend
			} else {
				last = err.Error()
			}
		}
		t.Errorf("udp flow still not on b1 1s after the change (last answer: %s)", last)
	})
}

// TestCleanupKeepsEstablishedConnections is what a live mode switch needs
// from this mode: Cleanup removes the redirects and listeners, but
// connections already proxied keep working — including transparent ones,
// whose return path (mangle chain and policy route) stays until the last
// of them ends and then goes too.
func TestCleanupKeepsEstablishedConnections(t *testing.T) {
	proxytest.RequireSandbox(t, "nft")
	ctx := context.Background()
	awaitLabTeardown(t)
	c := proxytest.NewCluster(t)
	client := c.AddPod(c.NodeA, "client", "10.244.1.100")
	a1 := c.AddPod(c.NodeA, "a1", "10.244.1.2")
	c.StartServer(a1, "a1", []int{8080}, nil)
	b := newBackend(t, &proxytest.NetNS{}, proxytest.NodeName, c.NodeAIPs()).(*userspace.Backend)
	svcs := []rtSvc{{name: "web", clusterIP: "10.96.0.10", port: 80, eps: []string{"10.244.1.2:8080@node-a"}}}
	if err := b.Sync(ctx, buildState(1, svcs, c.NodeAIPs())); err != nil {
		t.Fatal(err)
	}
	type conn struct {
		from     *proxytest.NetNS
		c        net.Conn
		r        *bufio.Reader
		wantSeen string
	}
	// A pod client (transparent) and an outside client (node address).
	conns := []*conn{{from: c.Ext, wantSeen: proxytest.PodGateway}, {from: client, wantSeen: "10.244.1.100"}}
	get := func(x *conn) {
		t.Helper()
		_ = x.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(x.c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			t.Fatalf("from %q: %v", x.from.Name, err)
		}
		resp, err := http.ReadResponse(x.r, nil)
		if err != nil {
			t.Fatalf("from %q: %v", x.from.Name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("from %q: %v", x.from.Name, err)
		}
		if f := strings.Fields(string(body)); len(f) != 2 || f[0] != "a1" || !strings.HasPrefix(f[1], x.wantSeen+":") {
			t.Fatalf("from %q: reply %q, want a1 seeing %s", x.from.Name, body, x.wantSeen)
		}
	}
	for _, x := range conns {
		nc, err := x.from.Dial(ctx, "tcp", "10.96.0.10:80")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		x.c, x.r = nc, bufio.NewReader(nc)
		get(x)
	}

	// A short connection from the pod client that the client closes: the
	// proxy closes its side to the endpoint first, so its socket, bound to
	// the client's address, sits in TIME_WAIT in the node's namespace.
	// Cleanup must remove such sockets (destroyTransparentTimeWait): a
	// kernel mode would forward the client's next connection on that
	// 4-tuple, and the endpoint's SYN-ACK would meet the socket and be
	// dropped.
	timeWait := func() string {
		t.Helper()
		out, err := exec.Command("ss", "-Htan", "state", "time-wait", "src", "10.244.1.100").CombinedOutput()
		if err != nil {
			t.Fatalf("ss: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	short := &conn{from: client, wantSeen: "10.244.1.100"}
	nc, err := client.Dial(ctx, "tcp", "10.96.0.10:80")
	if err != nil {
		t.Fatal(err)
	}
	short.c, short.r = nc, bufio.NewReader(nc)
	get(short)
	nc.Close()
	for deadline := time.Now().Add(5 * time.Second); timeWait() == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no TIME_WAIT socket of the proxy's transparent connection: the test does not exercise their removal")
		}
	}

	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if tw := timeWait(); tw != "" {
		t.Errorf("TIME_WAIT sockets bound to the client's address after Cleanup:\n%s", tw)
	}
	table := func() string {
		out, err := exec.Command("nft", "list", "table", "ip", userspace.TableName).CombinedOutput()
		if err != nil {
			return ""
		}
		return string(out)
	}
	rules := func() string {
		out, _ := exec.Command("ip", "rule", "show").CombinedOutput()
		return string(out)
	}
	if tb := table(); strings.Contains(tb, "redirect") || !strings.Contains(tb, "mangle-prerouting") || !strings.Contains(tb, "nat-prerouting") {
		t.Errorf("after Cleanup with open connections the table is:\n%s\nwant only the mangle chain and an empty nat chain", tb)
	}
	if !strings.Contains(rules(), "lookup 7723") {
		t.Errorf("the policy rule went while a transparent connection is open:\n%s", rules())
	}
	// Both connections still work, several times.
	for i := 0; i < 3; i++ {
		for _, x := range conns {
			get(x)
		}
	}
	for _, x := range conns {
		x.c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for table() != "" || strings.Contains(rules(), "lookup 7723") {
		if time.Now().After(deadline) {
			t.Fatalf("10s after the last connection closed: table %q, rules:\n%s", table(), rules())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The drained connection's own TIME_WAIT socket went with the rest.
	if tw := timeWait(); tw != "" {
		t.Errorf("TIME_WAIT sockets bound to the client's address after the drain:\n%s", tw)
	}
}
