package proxytest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Environment variables of the re-exec protocol.
const (
	// envSandbox is set in the copy of the test binary that runs inside the
	// private network and mount namespaces.
	envSandbox = "SVCNET_PROXYTEST_SANDBOX"
	// envServe makes the test binary a backend server (see serve).
	envServe = "SVCNET_PROXYTEST_SERVE"
)

// Main is the TestMain of a package with network-namespace tests:
//
//	func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }
//
// As root, it re-executes the test binary under
// "unshare --net --mount --propagation private", so that every packet,
// netns, veth, nftables table and conntrack entry the tests create lives in
// a private network namespace with no route out of the machine, and vanishes
// with it. Inside, /run/netns is a private tmpfs (for "ip netns add") and
// loopback is up. Not as root, it just runs the tests, and the netns tests
// skip (RequireSandbox). The binary also serves as the backend server that
// Lab.StartServer runs inside pod namespaces.
func Main(m *testing.M) int {
	if spec := os.Getenv(envServe); spec != "" {
		if err := serve(spec); err != nil {
			fmt.Fprintln(os.Stderr, "proxytest server:", err)
			return 1
		}
		return 0
	}
	if os.Getenv(envSandbox) != "" {
		if err := setupSandbox(); err != nil {
			fmt.Fprintln(os.Stderr, "proxytest: setting up the sandbox:", err)
			return 1
		}
		return m.Run()
	}
	if os.Geteuid() != 0 {
		return m.Run()
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return m.Run()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxytest:", err)
		return 1
	}
	cmd := exec.Command(unshare, append([]string{"--net", "--mount", "--propagation", "private", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envSandbox+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "proxytest: re-exec under unshare:", err)
		return 1
	}
	return 0
}

// setupSandbox prepares the private namespaces: a tmpfs on /run/netns, and
// loopback up.
func setupSandbox() error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run/netns: %w", err)
	}
	return runCmd("ip", "link", "set", "lo", "up")
}

// WillReexec reports whether Main is about to re-execute the test binary in
// the sandbox (so one-time setup such as building binaries belongs in the
// re-executed process, not this one).
func WillReexec() bool {
	if os.Getenv(envServe) != "" || InSandbox() || os.Geteuid() != 0 {
		return false
	}
	_, err := exec.LookPath("unshare")
	return err == nil
}

// InSandbox reports whether the process runs in the private namespaces set
// up by Main.
func InSandbox() bool { return os.Getenv(envSandbox) != "" }

// RequireSandbox skips t unless it runs in the private namespaces (root
// with unshare, through Main), and unless the named tools are installed.
func RequireSandbox(t testing.TB, tools ...string) {
	t.Helper()
	if !InSandbox() {
		t.Skip("needs root: the test re-executes itself in a private network namespace (proxytest.Main)")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// run runs a command and includes its output in the error.
func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// NetNS is a network namespace of a Lab: a node or a pod. The zero-named
// NetNS is the sandbox's own namespace (the node the proxy under test runs
// in).
type NetNS struct {
	Name string
}

// IsRoot reports whether n is the sandbox's own namespace.
func (n *NetNS) IsRoot() bool { return n.Name == "" }

// Run runs a command inside n.
func (n *NetNS) Run(name string, args ...string) error {
	if n.IsRoot() {
		return runCmd(name, args...)
	}
	return runCmd("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Command returns an exec.Cmd that runs inside n.
func (n *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if n.IsRoot() {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs fn on an OS thread switched into n. Sockets fn creates belong to
// n and keep working after Do returns; fn must not start goroutines that
// create sockets.
func (n *NetNS) Do(fn func() error) error {
	if n.IsRoot() {
		return fn()
	}
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: own namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine ends, so no other goroutine runs in the wrong netns.
		return fmt.Errorf("netns: leave %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Lab builds nodes and pods as network namespaces inside the sandbox:
// veth pairs with /32 addresses and explicit routes, no bridge, so every
// pod packet crosses its node's routing and netfilter. Everything is removed
// by t.Cleanup.
type Lab struct {
	t    testing.TB
	root *NetNS

	mu    sync.Mutex // guards the fields below
	names map[string]bool
	procs []*exec.Cmd
	// rootLinks are the interfaces the Lab created in the sandbox's own
	// namespace; cleanup deletes them synchronously (a namespace is torn
	// down asynchronously, and its veth peers with it, so the next test
	// could find the old names still taken).
	rootLinks []string
}

// PodGateway is the link-local address every pod routes through: each
// pod's veth peer on the node carries it (as Calico does), so pods need no
// per-node subnet and the node needs no bridge.
const PodGateway = "169.254.1.1"

// NewLab returns a Lab; the test is skipped outside the sandbox.
func NewLab(t testing.TB) *Lab {
	t.Helper()
	RequireSandbox(t)
	l := &Lab{t: t, root: &NetNS{}, names: map[string]bool{}}
	// Earlier tests in this process ran in the same root namespace: their
	// conntrack entries (TIME_WAIT for two minutes, CLOSE for ten seconds)
	// hold the NAT bindings of the modes and listeners they used, and a new
	// pod with a reused address picks the same source ports in the same
	// order. A SYN that meets such an entry in CLOSE state is not a new
	// connection to conntrack: it takes the old binding (say, a REDIRECT to
	// a userspace listener long closed) and is refused. Each lab starts
	// with an empty table, as a fresh node would.
	l.must(flushConntrack())
	t.Cleanup(l.cleanup)
	return l
}

// flushConntrack empties the conntrack table of the calling thread's
// namespace, both families.
func flushConntrack() error {
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, matchAllFlows{}); err != nil {
			return fmt.Errorf("flush conntrack: %w", err)
		}
	}
	return nil
}

type matchAllFlows struct{}

func (matchAllFlows) MatchConntrackFlow(*netlink.ConntrackFlow) bool { return true }

// Root returns the sandbox's own namespace.
func (l *Lab) Root() *NetNS { return l.root }

// must fails the test on err.
func (l *Lab) must(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
}

// NewNetNS creates a namespace with loopback up.
func (l *Lab) NewNetNS(name string) *NetNS {
	l.t.Helper()
	l.must(runCmd("ip", "netns", "add", name))
	l.mu.Lock()
	l.names[name] = true
	l.mu.Unlock()
	ns := &NetNS{Name: name}
	l.must(ns.Run("ip", "link", "set", "lo", "up"))
	return ns
}

// EnableForwarding turns on IPv4 forwarding in n (a node).
func (l *Lab) EnableForwarding(n *NetNS) {
	l.t.Helper()
	l.must(n.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}))
}

// Link joins a and b with a veth pair (aIf in a, bIf in b), gives each end
// its /32 address and a host route to the other end.
func (l *Lab) Link(a *NetNS, aIf string, aIP netip.Addr, b *NetNS, bIf string, bIP netip.Addr) {
	l.t.Helper()
	// Create each end directly in its namespace, so interface names only
	// need to be unique per namespace.
	args := []string{"link", "add", aIf}
	if !a.IsRoot() {
		args = append(args, "netns", a.Name)
	}
	args = append(args, "type", "veth", "peer", "name", bIf)
	if !b.IsRoot() {
		args = append(args, "netns", b.Name)
	}
	l.must(runCmd("ip", args...))
	l.mu.Lock()
	if a.IsRoot() {
		l.rootLinks = append(l.rootLinks, aIf)
	} else if b.IsRoot() {
		l.rootLinks = append(l.rootLinks, bIf)
	}
	l.mu.Unlock()
	for _, end := range []struct {
		ns       *NetNS
		dev      string
		ip, peer netip.Addr
	}{{a, aIf, aIP, bIP}, {b, bIf, bIP, aIP}} {
		if end.ip.IsValid() {
			l.must(end.ns.Run("ip", "addr", "add", end.ip.String()+"/32", "dev", end.dev))
		}
		l.must(end.ns.Run("ip", "link", "set", end.dev, "up"))
		if end.peer.IsValid() {
			l.must(end.ns.Run("ip", "route", "add", end.peer.String()+"/32", "dev", end.dev, "scope", "link"))
		}
	}
}

// Route adds "ip route add dst via gw" in n (gw must be a Link peer).
func (l *Lab) Route(n *NetNS, dst string, gw netip.Addr) {
	l.t.Helper()
	l.must(n.Run("ip", "route", "add", dst, "via", gw.String()))
}

// AddPod creates a pod namespace attached to node: eth0 with ip/32 in the
// pod, a veth "v<name>" on the node carrying PodGateway, a /32 route to the
// pod on the node and a default route via PodGateway in the pod.
func (l *Lab) AddPod(node *NetNS, name string, ip netip.Addr) *NetNS {
	l.t.Helper()
	pod := l.NewNetNS(name)
	hostIf := "v" + name
	if len(hostIf) > 15 {
		l.t.Fatalf("pod name %q too long for an interface name", name)
	}
	gw := netip.MustParseAddr(PodGateway)
	l.must(runCmd("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name))
	if !node.IsRoot() {
		l.must(runCmd("ip", "link", "set", hostIf, "netns", node.Name))
	} else {
		l.mu.Lock()
		l.rootLinks = append(l.rootLinks, hostIf)
		l.mu.Unlock()
	}
	l.must(pod.Run("ip", "addr", "add", ip.String()+"/32", "dev", "eth0"))
	l.must(pod.Run("ip", "link", "set", "eth0", "up"))
	l.must(pod.Run("ip", "route", "add", PodGateway+"/32", "dev", "eth0", "scope", "link"))
	l.must(pod.Run("ip", "route", "add", "default", "via", gw.String(), "dev", "eth0", "onlink"))
	l.must(node.Run("ip", "addr", "add", PodGateway+"/32", "dev", hostIf))
	l.must(node.Run("ip", "link", "set", hostIf, "up"))
	l.must(node.Run("ip", "route", "add", ip.String()+"/32", "dev", hostIf, "scope", "link"))
	return pod
}

// track records a started process for cleanup.
func (l *Lab) track(cmd *exec.Cmd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, cmd)
}

// cleanup kills the processes and deletes the namespaces (with their
// veths) the Lab created.
func (l *Lab) cleanup() {
	l.mu.Lock()
	procs, names, links := l.procs, l.names, l.rootLinks
	l.procs, l.names, l.rootLinks = nil, map[string]bool{}, nil
	l.mu.Unlock()
	for _, link := range links {
		// Gone already if its peer's namespace went first: ignore errors.
		_ = exec.Command("ip", "link", "del", link).Run()
	}
	for _, p := range procs {
		if p.Process != nil {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	for name := range names {
		if err := runCmd("ip", "netns", "delete", name); err != nil {
			l.t.Errorf("cleanup: %v", err)
		}
	}
}
