package podnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

// testLogger logs through t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fakePod is a pod sandbox stand-in: "unshare --net sleep", whose network
// namespace is /proc/<pid>/ns/net.
type fakePod struct {
	uid   string
	netns string
	cmd   *exec.Cmd
}

func startPod(t *testing.T, uid string) *fakePod {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "sleep", "1000")
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &fakePod{uid: uid, netns: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Wait until unshare has left our namespace.
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ns, err := os.Readlink(p.netns)
		if err == nil && ns != self {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: no new netns (%v)", uid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inNS runs fn on a thread switched into the namespace at path. Sockets fn
// creates stay in that namespace.
func inNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return err // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// whoServer answers every TCP connection with the client's address.
func whoServer(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	listen := func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = inNS(ns, listen)
	}
	if err != nil {
		t.Fatalf("listen %s in %q: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
}

// who dials addr from ns ("" = the test's namespace) and returns the
// client IP the server saw.
func who(ns, addr string) (string, error) {
	var c net.Conn
	dial := func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}
	var err error
	if ns == "" {
		err = dial()
	} else {
		err = inNS(ns, dial)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	host, _, err := net.SplitHostPort(strings.TrimSpace(line))
	return host, err
}

// addNodeIP gives the current namespace an address on a veth whose peer
// also stays in it (the kernel may lack the dummy driver): the "node IP"
// pods talk to. Removed at cleanup.
func addNodeIP(t *testing.T, name, cidr string) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", name, "type", "veth", "peer", "name", name + "p"},
		{"addr", "add", cidr, "dev", name},
		{"link", "set", name + "p", "up"},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
}

func newNetwork(t *testing.T, cidr, state string) *Network {
	t.Helper()
	n, err := New(Config{PodCIDR: netip.MustParsePrefix(cidr), StateFile: state, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return n
}

// svcnetState describes the svcnet veths and routes of the current
// namespace, for "nothing is left" checks.
func svcnetState(t *testing.T) string {
	t.Helper()
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veths, err := hostVeths(h)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, l := range veths {
		s = append(s, "veth "+l.Attrs().Name)
	}
	routes, err := listRoutes(h, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		s = append(s, "route "+r.String())
	}
	return strings.Join(s, "\n")
}

// hostRoute returns the svcnet route to dst ("" if none).
func hostRoute(t *testing.T, dst netip.Addr) string {
	t.Helper()
	out, err := exec.Command("ip", "route", "show", "exact", dst.String()+"/32", "proto", "115").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAttachDetach(t *testing.T) {
	proxytest.RequireSandbox(t, "unshare", "sleep")
	ctx := context.Background()
	addNodeIP(t, "node0", "10.0.0.1/32")
	state := filepath.Join(t.TempDir(), "ipam.json")
	n := newNetwork(t, "10.244.1.0/24", state)
	pod := startPod(t, "uid-a")

	ip, err := n.Allocate(pod.uid)
	if err != nil {
		t.Fatal(err)
	}
	if ip != netip.MustParseAddr("10.244.1.2") {
		t.Fatalf("first IP = %v, want 10.244.1.2", ip)
	}
	for i := range 2 { // Attach is idempotent
		if err := n.Attach(ctx, pod.uid, pod.netns, ip); err != nil {
			t.Fatalf("attach #%d: %v", i+1, err)
		}
	}
	name := HostVethName(pod.uid)
	host, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if host.Attrs().Alias != pod.uid || host.Attrs().HardwareAddr.String() != HostMAC.String() {
		t.Errorf("host veth alias %q mac %v", host.Attrs().Alias, host.Attrs().HardwareAddr)
	}
	if r := hostRoute(t, ip); !strings.Contains(r, "dev "+name) || !strings.Contains(r, "scope link") {
		t.Errorf("node route to %v = %q", ip, r)
	}
	if v, _ := getSysctl("net/ipv4/conf/" + name + "/proxy_arp"); v != "1" {
		t.Errorf("proxy_arp = %q", v)
	}
	if v, _ := getSysctl("net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward = %q", v)
	}

	// Node → pod and pod → node over TCP, no NAT: each side sees the
	// other's real address.
	whoServer(t, pod.netns, ip.String()+":8080")
	whoServer(t, "", "10.0.0.1:8081")
	if got, err := who("", ip.String()+":8080"); err != nil || got != "10.0.0.1" {
		t.Fatalf("node → pod: client seen as %q, %v", got, err)
	}
	if got, err := who(pod.netns, "10.0.0.1:8081"); err != nil || got != ip.String() {
		t.Fatalf("pod → node: client seen as %q, %v", got, err)
	}

	// ARP resolved the pod's real MAC on the node side.
	var podMAC string
	if err := inNS(pod.netns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			podMAC = l.Attrs().HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	neighs, err := netlink.NeighList(host.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, nb := range neighs {
		if nb.IP.Equal(ip.AsSlice()) && nb.HardwareAddr.String() == podMAC {
			found = true
		}
	}
	if !found {
		t.Errorf("node has no neighbour entry %v → %s: %v", ip, podMAC, neighs)
	}

	// Without its permanent neighbour entry the pod still reaches the
	// node: the host veth answers ARP for the gateway by proxy ARP (given
	// a route to it, as every real node has through its default route).
	t.Run("proxy ARP", func(t *testing.T) {
		addNodeIP(t, "uplink0", "10.0.9.1/32")
		if out, err := exec.Command("ip", "route", "add", "default", "dev", "uplink0").CombinedOutput(); err != nil {
			t.Fatalf("default route: %v: %s", err, out)
		}
		if err := inNS(pod.netns, func() error {
			out, err := exec.Command("ip", "neigh", "flush", "dev", "eth0", "nud", "all").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got, err := who(pod.netns, "10.0.0.1:8081"); err != nil || got != ip.String() {
			t.Fatalf("pod → node by proxy ARP: client seen as %q, %v", got, err)
		}
		var learned string
		if err := inNS(pod.netns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
			for _, nb := range ns {
				if nb.IP.String() == PodGateway {
					learned = fmt.Sprintf("%s state %#x", nb.HardwareAddr, nb.State)
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(learned, HostMAC.String()) || strings.Contains(learned, fmt.Sprintf("%#x", netlink.NUD_PERMANENT)) {
			t.Errorf("pod learned gateway as %q, want %s by ARP", learned, HostMAC)
		}
		// Attach restores the permanent entry.
		if err := n.Attach(ctx, pod.uid, pod.netns, ip); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("nsenter", "--net="+pod.netns, "ip", "neigh", "show", PodGateway).CombinedOutput(); err != nil || !strings.Contains(string(out), "PERMANENT") {
			t.Errorf("after re-attach: %s %v", out, err)
		}
	})

	// Detach removes veth and route, twice is fine; Release frees the IP.
	for i := range 2 {
		if err := n.Detach(ctx, pod.uid); err != nil {
			t.Fatalf("detach #%d: %v", i+1, err)
		}
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Error("host veth still there after Detach")
	}
	if r := hostRoute(t, ip); r != "" {
		t.Errorf("route left after Detach: %q", r)
	}
	if err := inNS(pod.netns, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return errors.New("pod still has eth0")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := n.Release(pod.uid); err != nil {
		t.Fatal(err)
	}
	if len(n.Allocated()) != 0 {
		t.Errorf("allocations after release: %v", n.Allocated())
	}
}

// TestReattachNewSandbox: the pod's sandbox was recreated (new netns), and
// Attach moves the pod's network to it; an earlier IP's route goes away.
func TestReattachNewSandbox(t *testing.T) {
	proxytest.RequireSandbox(t, "unshare", "sleep")
	ctx := context.Background()
	addNodeIP(t, "node0", "10.0.0.1/32")
	n := newNetwork(t, "10.244.1.0/24", "")
	first := startPod(t, "uid-r")
	ip := netip.MustParseAddr("10.244.1.20")
	if err := n.Attach(ctx, first.uid, first.netns, ip); err != nil {
		t.Fatal(err)
	}
	second := startPod(t, "uid-r")
	ip2 := netip.MustParseAddr("10.244.1.21")
	if err := n.Attach(ctx, second.uid, second.netns, ip2); err != nil {
		t.Fatal(err)
	}
	whoServer(t, second.netns, ip2.String()+":8080")
	if got, err := who("", ip2.String()+":8080"); err != nil || got != "10.0.0.1" {
		t.Fatalf("node → new sandbox: %q, %v", got, err)
	}
	if r := hostRoute(t, ip); r != "" {
		t.Errorf("old IP's route left: %q", r)
	}
	if err := inNS(first.netns, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return errors.New("old sandbox still has eth0")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestIPStableAcrossRestart(t *testing.T) {
	proxytest.RequireSandbox(t)
	state := filepath.Join(t.TempDir(), "ipam.json")
	n := newNetwork(t, "10.244.1.0/24", state)
	want := map[string]netip.Addr{}
	for _, uid := range []string{"a", "b", "c"} {
		ip, err := n.Allocate(uid)
		if err != nil {
			t.Fatal(err)
		}
		want[uid] = ip
	}
	if again, _ := n.Allocate("b"); again != want["b"] {
		t.Fatalf("Allocate(b) twice: %v then %v", want["b"], again)
	}
	if got, ok := n.Lookup("b"); !ok || got != want["b"] {
		t.Fatalf("Lookup(b) = %v, %v", got, ok)
	}
	if err := n.Release("b"); err != nil {
		t.Fatal(err)
	}
	delete(want, "b")

	// A "restarted agent": a new Network on the same state file.
	n2 := newNetwork(t, "10.244.1.0/24", state)
	got := n2.Allocated()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after restart: %v, want %v", got, want)
	}
	for uid, ip := range want {
		if again, err := n2.Allocate(uid); err != nil || again != ip {
			t.Errorf("Allocate(%s) after restart = %v, %v; want %v", uid, again, err, ip)
		}
	}
	// The released address is not reused at once.
	d, err := n2.Allocate("d")
	if err != nil {
		t.Fatal(err)
	}
	if d != netip.MustParseAddr("10.244.1.5") {
		t.Errorf("next IP = %v, want 10.244.1.5 (after the last handed out)", d)
	}
}

// TestTwoNodes: node-a (the sandbox's namespace) and node-b (a netns
// linked to it by a veth) each run a Network for their podCIDR; after
// SyncNodeRoutes their pods reach each other by pod IP, without NAT.
func TestTwoNodes(t *testing.T) {
	proxytest.RequireSandbox(t, "unshare", "sleep")
	ctx := context.Background()
	lab := proxytest.NewLab(t)
	nodeB := lab.NewNetNS("node-b")
	aIP, bIP := netip.MustParseAddr("192.168.1.2"), netip.MustParseAddr("192.168.1.3")
	lab.Link(lab.Root(), "nodeb0", aIP, nodeB, "eth0", bIP)

	na := newNetwork(t, "10.244.1.0/24", filepath.Join(t.TempDir(), "a.json"))
	var nb *Network
	if err := nodeB.Do(func() error {
		var err error
		nb, err = New(Config{PodCIDR: netip.MustParsePrefix("10.244.2.0/24"), StateFile: filepath.Join(t.TempDir(), "b.json"), Log: testLogger(t)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	podA, podB := startPod(t, "uid-pa"), startPod(t, "uid-pb")
	ipA, err := na.Allocate(podA.uid)
	if err != nil {
		t.Fatal(err)
	}
	if err := na.Attach(ctx, podA.uid, podA.netns, ipA); err != nil {
		t.Fatal(err)
	}
	var ipB netip.Addr
	if err := nodeB.Do(func() error {
		var err error
		if ipB, err = nb.Allocate(podB.uid); err != nil {
			return err
		}
		return nb.Attach(ctx, podB.uid, podB.netns, ipB)
	}); err != nil {
		t.Fatal(err)
	}
	nodes := []NodeRoute{
		{Name: "node-a", PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), NodeIP: aIP},
		{Name: "node-b", PodCIDR: netip.MustParsePrefix("10.244.2.0/24"), NodeIP: bIP},
	}
	for range 2 { // idempotent
		if err := na.SyncNodeRoutes(ctx, nodes); err != nil {
			t.Fatal(err)
		}
		if err := nodeB.Do(func() error { return nb.SyncNodeRoutes(ctx, nodes) }); err != nil {
			t.Fatal(err)
		}
	}
	whoServer(t, podA.netns, ipA.String()+":8080")
	whoServer(t, podB.netns, ipB.String()+":8080")
	if got, err := who(podA.netns, ipB.String()+":8080"); err != nil || got != ipA.String() {
		t.Fatalf("pod a → pod b: client seen as %q, %v", got, err)
	}
	if got, err := who(podB.netns, ipA.String()+":8080"); err != nil || got != ipB.String() {
		t.Fatalf("pod b → pod a: client seen as %q, %v", got, err)
	}

	// A foreign route is never touched; a node that leaves loses its route.
	if out, err := exec.Command("ip", "route", "add", "10.99.0.0/24", "via", bIP.String(), "proto", "static").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := na.SyncNodeRoutes(ctx, nodes[:1]); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "route", "show", "proto", "115").CombinedOutput()
	if strings.Contains(string(out), "10.244.2.0/24") {
		t.Errorf("route of the removed node left:\n%s", out)
	}
	if out, _ := exec.Command("ip", "route", "show", "10.99.0.0/24").CombinedOutput(); !strings.Contains(string(out), "via "+bIP.String()) {
		t.Errorf("foreign route touched: %q", out)
	}
	_ = exec.Command("ip", "route", "del", "10.99.0.0/24").Run()
	if got, err := who(podA.netns, ipB.String()+":8080"); err == nil {
		t.Errorf("pod a still reaches pod b without the node route (client %s)", got)
	}

	// Both nodes clean up completely.
	if err := na.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if s := svcnetState(t); s != "" {
		t.Errorf("node-a after Cleanup:\n%s", s)
	}
	var left string
	if err := nodeB.Do(func() error {
		if err := nb.Cleanup(ctx); err != nil {
			return err
		}
		left = svcnetState(t)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left != "" {
		t.Errorf("node-b after Cleanup:\n%s", left)
	}
}

func TestGCAndCleanup(t *testing.T) {
	proxytest.RequireSandbox(t, "unshare", "sleep")
	ctx := context.Background()
	n := newNetwork(t, "10.244.1.0/24", filepath.Join(t.TempDir(), "ipam.json"))
	keep, drop := startPod(t, "uid-keep"), startPod(t, "uid-drop")
	for _, p := range []*fakePod{keep, drop} {
		ip, err := n.Allocate(p.uid)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Attach(ctx, p.uid, p.netns, ip); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Allocate("uid-never-attached"); err != nil {
		t.Fatal(err)
	}
	if err := n.SyncNodeRoutes(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := n.GC(ctx, func(uid string) bool { return uid == keep.uid }); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(HostVethName(keep.uid)); err != nil {
		t.Errorf("kept pod's veth: %v", err)
	}
	if _, err := netlink.LinkByName(HostVethName(drop.uid)); err == nil {
		t.Error("dropped pod's veth survived GC")
	}
	if got := n.Allocated(); len(got) != 1 || !got[keep.uid].IsValid() {
		t.Errorf("allocations after GC: %v", got)
	}

	if err := n.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if s := svcnetState(t); s != "" {
		t.Errorf("after Cleanup:\n%s", s)
	}
	if err := n.Cleanup(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
}

// TestNodeSafety: the node's own namespace is never attached as a pod's,
// and a foreign route for the podCIDR is left alone by New and Cleanup.
func TestNodeSafety(t *testing.T) {
	proxytest.RequireSandbox(t)
	ctx := context.Background()
	n := newNetwork(t, "10.244.1.0/24", "")
	out, _ := exec.Command("ip", "route", "show", "exact", "10.244.1.0/24").CombinedOutput()
	if !strings.Contains(string(out), "unreachable 10.244.1.0/24 proto 115") {
		t.Errorf("podCIDR route: %q, want the unreachable svcnet route", out)
	}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	if err := n.Attach(ctx, "uid-self", self, netip.MustParseAddr("10.244.1.9")); err == nil || !strings.Contains(err.Error(), "node's own") {
		t.Errorf("Attach into the node's namespace: %v", err)
	}
	if _, err := netlink.LinkByName(HostVethName("uid-self")); err == nil {
		t.Error("a veth was created for the node's own namespace")
	}
	if err := n.Attach(ctx, "uid-x", "/proc/self/ns/net", netip.MustParseAddr("10.250.0.1")); err == nil {
		t.Error("Attach accepted an IP outside the podCIDR")
	}
	if err := n.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}

	addNodeIP(t, "cni0", "10.0.0.1/32")
	if out, err := exec.Command("ip", "route", "add", "10.244.7.0/24", "dev", "cni0", "proto", "static").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	m := newNetwork(t, "10.244.7.0/24", "")
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "route", "show", "exact", "10.244.7.0/24").CombinedOutput()
	if got := strings.TrimSpace(string(out)); got != "10.244.7.0/24 dev cni0 proto static scope link" {
		t.Errorf("foreign podCIDR route became %q", got)
	}
}

// TestConcurrentPods: pods are allocated and attached concurrently (as the
// agent's pod workers do); every one gets its own IP and is reachable, and
// the state file holds them all.
func TestConcurrentPods(t *testing.T) {
	proxytest.RequireSandbox(t, "unshare", "sleep")
	ctx := context.Background()
	addNodeIP(t, "node0", "10.0.0.1/32")
	state := filepath.Join(t.TempDir(), "ipam.json")
	n := newNetwork(t, "10.244.1.0/24", state)
	const count = 12
	pods := make([]*fakePod, count)
	for i := range pods {
		pods[i] = startPod(t, fmt.Sprintf("uid-%02d", i))
	}
	ips := make([]netip.Addr, count)
	errs := make(chan error, count)
	for i, p := range pods {
		go func() {
			ip, err := n.Allocate(p.uid)
			if err == nil {
				ips[i] = ip
				err = n.Attach(ctx, p.uid, p.netns, ip)
			}
			errs <- err
		}()
	}
	for range pods {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]bool{}
	for i, p := range pods {
		if seen[ips[i]] {
			t.Fatalf("IP %v handed out twice", ips[i])
		}
		seen[ips[i]] = true
		whoServer(t, p.netns, ips[i].String()+":8080")
		if got, err := who("", ips[i].String()+":8080"); err != nil || got != "10.0.0.1" {
			t.Errorf("node → pod %d (%v): %q, %v", i, ips[i], got, err)
		}
	}
	i, _, err := loadIPAM(state, n.PodCIDR())
	if err != nil || len(i.byUID) != count {
		t.Fatalf("state file has %d allocations (%v), want %d", len(i.byUID), err, count)
	}
}
