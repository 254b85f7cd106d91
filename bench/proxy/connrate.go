package main

// Connection-rate mode (-what connrate): issue 7 acceptance 5's
// "new-connection rate and throughput through a ClusterIP vs direct, and
// the new-connection rate to a non-service address with 10 and 10k
// services installed", for the nftables, iptables or userspace backend.
//
// Inside a private network namespace (unshare --net --mount) the root
// namespace is the node, with two pod namespaces routed through it:
//
//	cli (10.244.1.100) ── node (forwarding; the backend's rules) ── srv (10.244.2.2:8080, :8081, :8082)
//
// The server in srv is a process of its own (this binary, -child
// crserver), as a pod would be. It used to be goroutines of the measuring
// process: one Go scheduler then woke both ends, and its wake-ups, more
// than the packet path, made the difference between the targets (a
// ClusterIP connection cost 1.9-2.9 µs more than a direct one there;
// 0.8-1.6 µs with the server apart, where one bare DNAT rule costs 1.0 µs).
//
// A client goroutine locked into cli opens TCP connections one after the
// other (connect, then close with RST so neither side keeps TIME_WAIT) to
// srv directly (port 8082) — a non-service destination, which must not pay
// for the installed services — and to a ClusterIP whose one endpoint is
// srv:8080. The two targets are different server ports on purpose: the
// dead conntrack entries one target's connections leave (CLOSE, 10 s; the
// client cycles through its ephemeral ports in about a second) would
// otherwise hold the reply tuples (srv:8080 → cli:port) the other
// target's new connections need, and netfilter would source-port-remap
// them. Measured with one port for both: half of all entries remapped,
// ClusterIP connections twice as often as direct ones, a cost no real
// client pays and one that skewed the ratio against the ClusterIP. With
// the services installed, the rate is measured for -connrate-seconds per
// round, rounds alternating between the two targets; the median is
// reported. A third round in each, the control, dials the same server
// address from ccli, a copy of cli, through cnode, a copy of the node
// without rules, to csrv, a copy of srv: the installations of 10 and 10k
// services are minutes apart, and on a VM the machine's speed drifts
// between them (seen: every rate 20% lower for a minute, with no CPU
// steal reported), so the non-service verdict compares direct/control. With the first installation, one bulk TCP stream (256 KiB
// writes; the server discards) runs for the same time per round, to
// srv:8081 directly and through the ClusterIP's port 81 (crTputRounds
// each, alternating; the median is reported). The client, the server and
// the node share the machine's CPUs, so throughput is CPU-bound: for the
// userspace mode the agent's splicing competes with both ends.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"golang.org/x/sys/unix"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
	"github.com/svcnet/svcnet/internal/proxy/userspace"
)

const (
	crClient     = "10.244.1.100"
	crServer     = "10.244.2.2"
	crPort       = 8080 // the ClusterIP's endpoint
	crBulkPort   = 8081
	crDirectPort = 8082 // the direct target (see the package comment)
	crVIP        = "10.96.200.1"
	crGateway    = "169.254.1.1"
	// crTputRounds bulk-stream rounds per target. Single rounds vary by
	// ±10% (where the scheduler puts the two ends); 9 rounds left the
	// median ratio swinging between 0.92 and 1.07.
	crTputRounds = 15
	crNodeName   = "node-0"
)

// crRow is the connection rate with one installation of services.
type crRow struct {
	Services int     `json:"services"`
	Direct   float64 `json:"direct"` // conn/s to the server itself (a non-service address)
	ViaVIP   float64 `json:"via_vip"`
	Errs     int     `json:"errs"`
	// PairRatio is the median over rounds of ClusterIP/direct, each
	// ClusterIP round against the direct round just before it: the two
	// share the machine's load of the moment, so the ratio is steadier
	// than the ratio of the medians.
	PairRatio float64 `json:"pair_ratio"`
	// DirectPerControl is the median over rounds of direct/control, each
	// direct round against the control round of the same round (ccli →
	// cnode → csrv, no rules): the non-service rate in units of the
	// machine's speed of the moment.
	DirectPerControl float64 `json:"direct_per_control"`
	// Rounds are the per-round rates: direct, ClusterIP and control.
	DirectRounds  []float64 `json:"direct_rounds"`
	VIPRounds     []float64 `json:"vip_rounds"`
	ControlRounds []float64 `json:"control_rounds"`
}

// connRateResult is what the connrate child reports (JSON on stdout).
type connRateResult struct {
	Backend string  `json:"backend"` // with the iptables variant
	Seconds float64 `json:"seconds"` // per round
	Rounds  int     `json:"rounds"`
	Rows    []crRow `json:"rows"`
	// Throughput of one bulk TCP stream, bytes/s (median of the rounds),
	// with the first row's services installed.
	TputServices int     `json:"tput_services"`
	TputDirect   float64 `json:"tput_direct"`
	TputVIP      float64 `json:"tput_vip"`
	TputRatio    float64 `json:"tput_ratio"` // median of the per-round ratios (see crRow.PairRatio)
	// LoadAvg is /proc/loadavg's 1-minute figure before and after: other
	// work on the machine skews every figure.
	LoadBefore, LoadAfter float64
	// StealPct is the share of CPU time the hypervisor took from this
	// machine while the rows ran (/proc/stat's steal): on a VM, the
	// neighbours' load shows up here and swings the rates.
	StealPct float64 `json:"steal_pct"`
}

// runConnRateParent re-executes the binary under unshare and decodes the
// child's result. A nil result with a nil error means skipped (not root).
func runConnRateParent(backend, variant, scales string, seconds float64, rounds int) (*connRateResult, error) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "connection-rate bench: skipped (needs root: it builds network namespaces inside unshare --net)")
		return nil, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", self,
		"-child", "connrate", "-backend", backend, "-iptables-variant", variant,
		"-connrate-services", scales, "-connrate-seconds", fmt.Sprint(seconds), "-connrate-rounds", fmt.Sprint(rounds))
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var r connRateResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("child output: %w", err)
	}
	return &r, nil
}

// connRateChild runs the measurement (inside the private namespace).
func connRateChild(backend, variant string, scales []int, seconds float64, rounds int) (*connRateResult, error) {
	if os.Getenv(netnsEnv) == "" {
		return nil, fmt.Errorf("must run inside unshare --net")
	}
	if err := crLab(); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	stopServer, err := crStartServer("srv")
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	defer stopServer()
	stopControl, err := crStartServer("csrv")
	if err != nil {
		return nil, fmt.Errorf("control server: %w", err)
	}
	defer stopControl()

	ctx := context.Background()
	b, name, err := crBackend(ctx, backend, variant)
	if err != nil {
		return nil, err
	}
	defer b.Cleanup(ctx)

	res := &connRateResult{Backend: name, Seconds: seconds, Rounds: rounds, LoadBefore: loadAvg()}
	steal0, total0 := cpuSteal()
	defer func() {
		res.LoadAfter = loadAvg()
		if steal1, total1 := cpuSteal(); total1 > total0 {
			res.StealPct = 100 * float64(steal1-steal0) / float64(total1-total0)
		}
	}()
	dur := time.Duration(seconds * float64(time.Second))
	direct := netip.AddrPortFrom(netip.MustParseAddr(crServer), crDirectPort)
	viaVIP := netip.AddrPortFrom(netip.MustParseAddr(crVIP), 80)
	for i, n := range scales {
		fmt.Fprintf(os.Stderr, "bench/proxy: connection rate, %s, %d services ...\n", name, n)
		start := time.Now()
		if err := b.Sync(ctx, crState(n)); err != nil {
			return nil, fmt.Errorf("sync %d services: %w", n, err)
		}
		fmt.Fprintf(os.Stderr, "bench/proxy:   synced in %s\n", time.Since(start).Round(time.Millisecond))
		var d, v, c []float64
		errs := 0
		// Each round dials direct and via the ClusterIP from cli, then
		// direct from ccli (the control: no rules on its path).
		targets := []struct {
			ns     string
			target netip.AddrPort
			rates  *[]float64
		}{{"cli", direct, &d}, {"cli", viaVIP, &v}, {"ccli", direct, &c}}
		// Warm-up (caches, conntrack, the scheduler), not counted.
		for _, t := range targets {
			if _, _, err := crRate(t.ns, t.target, dur/4); err != nil {
				return nil, err
			}
		}
		for range rounds {
			for _, t := range targets {
				rate, e, err := crRate(t.ns, t.target, dur)
				if err != nil {
					return nil, err
				}
				*t.rates = append(*t.rates, rate)
				errs += e
			}
		}
		fmt.Fprintf(os.Stderr, "bench/proxy:   rounds: direct %.0f, ClusterIP %.0f, control %.0f conn/s\n", d, v, c)
		res.Rows = append(res.Rows, crRow{Services: n, Direct: median(d), ViaVIP: median(v), Errs: errs,
			PairRatio: median(ratios(v, d)), DirectPerControl: median(ratios(d, c)),
			DirectRounds: d, VIPRounds: v, ControlRounds: c})
		if i == 0 {
			// Throughput does not depend on the number of services:
			// measured once, with the first installation.
			var td, tv []float64
			for range crTputRounds {
				for _, target := range []netip.AddrPort{
					netip.AddrPortFrom(netip.MustParseAddr(crServer), crBulkPort),
					netip.AddrPortFrom(netip.MustParseAddr(crVIP), 81),
				} {
					bps, err := crThroughput(target, dur)
					if err != nil {
						return nil, fmt.Errorf("throughput to %s: %w", target, err)
					}
					if target.Port() == crBulkPort {
						td = append(td, bps)
					} else {
						tv = append(tv, bps)
					}
				}
			}
			fmt.Fprintf(os.Stderr, "bench/proxy:   throughput rounds: direct %.2f, ClusterIP %.2f GB/s\n", scale(td, 1e-9), scale(tv, 1e-9))
			res.TputServices, res.TputDirect, res.TputVIP = n, median(td), median(tv)
			res.TputRatio = median(ratios(tv, td))
		}
	}
	return res, nil
}

// ratios returns a[i]/b[i].
func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

// loadAvg is the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	_, _ = fmt.Sscan(string(b), &l)
	return l
}

// cpuSteal returns the steal and the total ticks of all CPUs
// (/proc/stat's first line).
func cpuSteal() (steal, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest time is
	// already counted in user and nice)
	for i, f := range fields[1:9] {
		var v uint64
		_, _ = fmt.Sscan(f, &v)
		total += v
		if i == 7 {
			steal = v
		}
	}
	return steal, total
}

func scale(xs []float64, f float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * f
	}
	return out
}

func crBackend(ctx context.Context, backend, variant string) (proxy.Backend, string, error) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cidrs := mustPrefixes("10.244.0.0/16")
	scidrs := mustPrefixes("10.96.0.0/16")
	switch backend {
	case "nftables":
		nft, err := nftables.NewInterface(v1.IPv4Protocol)
		if err != nil {
			return nil, "", err
		}
		b, err := nftables.New(nftables.Config{NodeName: crNodeName, ClusterCIDRs: cidrs, ServiceCIDRs: scidrs, Logger: logger}, nft)
		return b, "nftables", err
	case "iptables":
		v := iptables.Variant(variant)
		if v == "" {
			var err error
			if v, err = iptables.DetectVariant(ctx); err != nil {
				return nil, "", err
			}
		}
		b, err := iptables.New(iptables.Config{NodeName: crNodeName, ClusterCIDRs: cidrs, ServiceCIDRs: scidrs, Logger: logger,
			MaxChainsPerRestore: iptables.ChainsPerRestore(v)},
			iptables.NewExec(v1.IPv4Protocol, v))
		return b, "iptables (" + string(v) + ")", err
	case "userspace":
		nft, err := userspace.NewInterface(v1.IPv4Protocol)
		if err != nil {
			return nil, "", err
		}
		// Transparent, as the agent runs it: the server sees the client.
		b, err := userspace.New(userspace.Config{Family: v1.IPv4Protocol, NodeName: crNodeName, ClusterCIDRs: cidrs,
			ServiceCIDRs: scidrs, Transparent: true, Logger: logger}, nft)
		return b, "userspace", err
	case "bare-nat":
		b, err := newBareNAT()
		return b, "bare-nat (reference: one DNAT rule)", err
	}
	return nil, "", fmt.Errorf("unknown backend %q", backend)
}

// crState is n services: n-2 fillers of 10 remote endpoints each, the
// target ClusterIP (port 80) whose endpoint is the server's connection
// port, and the bulk service on the same ClusterIP (port 81) whose
// endpoint is the server's discard port.
func crState(n int) *proxy.State {
	st := proxy.NewState(crNodeName)
	st.Full = true
	add := func(name, vip string, eps []string) {
		port := int32(80)
		if name == "bulk" {
			port = 81
		}
		pn := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: name}, Port: "p", Protocol: v1.ProtocolTCP}
		st.Services[pn] = &proxy.ServicePort{Name: pn, Protocol: v1.ProtocolTCP, Port: port, ClusterIPs: []netip.Addr{netip.MustParseAddr(vip)}}
		for _, e := range eps {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[pn] = append(st.Endpoints[pn], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-b"})
		}
		st.Changed[pn] = struct{}{}
	}
	add("target", crVIP, []string{fmt.Sprintf("%s:%d", crServer, crPort)})
	add("bulk", crVIP, []string{fmt.Sprintf("%s:%d", crServer, crBulkPort)})
	for i := range n - 2 {
		var eps []string
		for j := range 10 {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d:8080", 128+j, i/250, i%250+1))
		}
		add(fmt.Sprintf("svc-%05d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), eps)
	}
	return st
}

// crStartServer runs a server (crServe): this binary as `-child crserver`,
// entered into network namespace netns (srv, or the control's csrv). The
// returned stop closes its stdin, which ends it.
func crStartServer(netns string) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+netns, self, "-child", "crserver")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() { stdin.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		stop()
		return nil, fmt.Errorf("did not start (%q, %v)", line, err)
	}
	return stop, nil
}

// crServe is a server (-child crserver): on crServer it accepts and closes
// connections on the ClusterIP endpoint's port and the direct port,
// discards bulk streams on crBulkPort, prints "ready" once listening, and
// returns when its stdin closes.
func crServe() error {
	for _, port := range []int{crPort, crDirectPort, crBulkPort} {
		ln, err := net.Listen("tcp", net.JoinHostPort(crServer, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if port != crBulkPort {
					c.Close()
					continue
				}
				go func() {
					defer c.Close()
					_, _ = io.Copy(io.Discard, c)
				}()
			}
		}()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// crLab builds cli and srv, routed through this namespace, and the
// control: ccli and csrv, the same pods with the same addresses, routed
// through cnode, which has no rules.
func crLab() error {
	run := func(args ...string) error {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount /run/netns: %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		// The control: the same two pods behind a node of their own
		// that has no rules.
		{"ip", "netns", "add", "cnode"},
		{"ip", "-n", "cnode", "link", "set", "lo", "up"},
		{"nsenter", "--net=/run/netns/cnode", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	}
	cmds = append(cmds, crPods("", "")...)
	cmds = append(cmds, crPods("cnode", "c")...)
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}

// crPods returns the commands that attach pods prefix+"cli" and
// prefix+"srv" to the node namespace node ("" for this one).
func crPods(node, prefix string) [][]string {
	onNode := func(args ...string) []string {
		if node == "" {
			return append([]string{"ip"}, args...)
		}
		return append([]string{"ip", "-n", node}, args...)
	}
	var cmds [][]string
	for _, p := range []struct{ ns, ip string }{{prefix + "cli", crClient}, {prefix + "srv", crServer}} {
		host := "v" + p.ns
		cmds = append(cmds,
			[]string{"ip", "netns", "add", p.ns},
			onNode("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.ns),
			[]string{"ip", "-n", p.ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", p.ns, "addr", "add", p.ip + "/32", "dev", "eth0"},
			[]string{"ip", "-n", p.ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", p.ns, "route", "add", crGateway + "/32", "dev", "eth0", "scope", "link"},
			[]string{"ip", "-n", p.ns, "route", "add", "default", "via", crGateway, "dev", "eth0", "onlink"},
			onNode("addr", "add", crGateway+"/32", "dev", host),
			onNode("link", "set", host, "up"),
			onNode("route", "add", p.ip+"/32", "dev", host, "scope", "link"),
		)
	}
	return cmds
}

// inNetns runs fn on a thread switched into netns name; the thread is
// left locked and dies with its goroutine if switching back fails.
func inNetns(name string, fn func() error) error {
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	runtime.UnlockOSThread()
	return ferr
}

// crThroughput sends bulk data on one connection from cli to target for d
// and returns bytes per second (the server discards them).
func crThroughput(target netip.AddrPort, d time.Duration) (float64, error) {
	var c net.Conn
	if err := inNetns("cli", func() error {
		var err error
		c, err = net.DialTimeout("tcp", target.String(), time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		k, err := c.Write(buf)
		n += int64(k)
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// crRate dials target from cli for d and returns connections per second
// and the number of failed dials.
func crRate(ns string, target netip.AddrPort, d time.Duration) (float64, int, error) {
	// The backend's records of 10k services live in this process: keep
	// the garbage collector from marking them on the client's CPU time.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var n, fails int
	var elapsed time.Duration
	err := inNetns(ns, func() error {
		start := time.Now()
		for time.Since(start) < d {
			c, err := net.DialTimeout("tcp", target.String(), time.Second)
			if err != nil {
				fails++
				continue
			}
			_ = c.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT, conntrack entry short-lived
			c.Close()
			n++
		}
		elapsed = time.Since(start)
		return nil
	})
	return float64(n) / elapsed.Seconds(), fails, err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
