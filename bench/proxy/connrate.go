package main

// Connection-rate mode (-connrate): issue 7 acceptance 5's "new-connection
// rate through a ClusterIP vs direct, and to a non-service address with 10
// and 10k services installed", for the nftables or iptables backend.
//
// Inside a private network namespace (unshare --net --mount) the root
// namespace is the node, with two pod namespaces routed through it:
//
//	cli (10.244.1.100) ── node (forwarding; the backend's rules) ── srv (10.244.2.2:8080)
//
// A client goroutine locked into cli opens TCP connections one after the
// other (connect, then close with RST so neither side keeps TIME_WAIT) to
// srv directly — a non-service destination, which must not pay for the
// installed services — and to a ClusterIP whose one endpoint is srv. With
// the services installed, the rate is measured for -connrate-seconds per
// round, rounds alternating between the two targets; the median is
// reported.

import (
	"context"
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
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"golang.org/x/sys/unix"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
)

const (
	crClient   = "10.244.1.100"
	crServer   = "10.244.2.2"
	crPort     = 8080
	crVIP      = "10.96.200.1"
	crGateway  = "169.254.1.1"
	crRounds   = 5
	crNodeName = "node-0"
)

// runConnRateParent re-executes the binary under unshare and relays its
// output.
func runConnRateParent(backend, variant, scales string, seconds float64) int {
	if os.Geteuid() != 0 {
		fmt.Println("connection-rate bench: skipped (needs root: it builds network namespaces inside unshare --net)")
		return 0
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", self,
		"-child", "connrate", "-backend", backend, "-iptables-variant", variant,
		"-connrate-services", scales, "-connrate-seconds", fmt.Sprint(seconds))
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "connection-rate bench:", err)
		return 1
	}
	return 0
}

// connRateChild runs the measurement (inside the private namespace).
func connRateChild(backend, variant string, scales []int, seconds float64) error {
	if os.Getenv(netnsEnv) == "" {
		return fmt.Errorf("must run inside unshare --net")
	}
	if err := crLab(); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	ln, err := crListen()
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
			c.Close()
		}
	}()

	ctx := context.Background()
	b, name, err := crBackend(ctx, backend, variant)
	if err != nil {
		return err
	}
	defer b.Cleanup(ctx)

	type row struct {
		services       int
		direct, viaVIP float64
		errs           int
	}
	var rows []row
	dur := time.Duration(seconds * float64(time.Second))
	for _, n := range scales {
		fmt.Fprintf(os.Stderr, "bench/proxy: connection rate, %s, %d services ...\n", name, n)
		start := time.Now()
		if err := b.Sync(ctx, crState(n)); err != nil {
			return fmt.Errorf("sync %d services: %w", n, err)
		}
		fmt.Fprintf(os.Stderr, "bench/proxy:   synced in %s\n", time.Since(start).Round(time.Millisecond))
		var d, v []float64
		errs := 0
		// Warm-up (caches, conntrack, the scheduler), not counted.
		if _, _, err := crRate(netip.AddrPortFrom(netip.MustParseAddr(crServer), crPort), dur/2); err != nil {
			return err
		}
		for range crRounds {
			for _, target := range []string{crServer, crVIP} {
				port := crPort
				if target == crVIP {
					port = 80
				}
				rate, e, err := crRate(netip.AddrPortFrom(netip.MustParseAddr(target), uint16(port)), dur)
				if err != nil {
					return err
				}
				errs += e
				if target == crServer {
					d = append(d, rate)
				} else {
					v = append(v, rate)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "bench/proxy:   rounds: direct %.0f, ClusterIP %.0f conn/s\n", d, v)
		rows = append(rows, row{services: n, direct: median(d), viaVIP: median(v), errs: errs})
	}

	w := os.Stdout
	fmt.Fprintf(w, "\n== %s: new-connection rate (issue 7 acceptance 5; median of %d rounds of %s) ==\n", name, crRounds, dur)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "services\tdirect conn/s\tClusterIP conn/s\tClusterIP/direct\tdirect vs first row\tfailed dials\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t%.3f\t%d\t\n", r.services, r.direct, r.viaVIP, r.viaVIP/r.direct, r.direct/rows[0].direct, r.errs)
	}
	tw.Flush()
	// Goals: the largest installation against the smallest (the mean of
	// its rows: the default 10,10000,10 brackets the big one to show
	// drift).
	big, small := rows[0], rows[0]
	for _, r := range rows {
		if r.services > big.services {
			big = r
		}
		if r.services < small.services {
			small = r
		}
	}
	if big.services != small.services {
		var base float64
		var k int
		for _, r := range rows {
			if r.services == small.services {
				base += r.direct
				k++
			}
		}
		base /= float64(k)
		fmt.Fprintf(w, "goal: ClusterIP >= 95%% of direct at %d services: %.2f %s; non-service connections at %d services <= 5%% slower than at %d: %.3f %s\n",
			big.services, big.viaVIP/big.direct, verdict(big.viaVIP/big.direct >= 0.95),
			big.services, small.services, big.direct/base, verdict(big.direct/base >= 0.95))
		fmt.Fprintln(w, "(single client loop on a shared 2-CPU machine: rounds vary by ~10%; see the per-round figures on stderr)")
	}
	return nil
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
		b, err := iptables.New(iptables.Config{NodeName: crNodeName, ClusterCIDRs: cidrs, ServiceCIDRs: scidrs, Logger: logger},
			iptables.NewExec(v1.IPv4Protocol, v))
		return b, "iptables (" + string(v) + ")", err
	}
	return nil, "", fmt.Errorf("unknown backend %q", backend)
}

// crState is n services: n-1 fillers of 10 remote endpoints each and the
// target ClusterIP whose endpoint is the server.
func crState(n int) *proxy.State {
	st := proxy.NewState(crNodeName)
	st.Full = true
	add := func(name, vip string, eps []string) {
		pn := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: name}, Port: "p", Protocol: v1.ProtocolTCP}
		st.Services[pn] = &proxy.ServicePort{Name: pn, Protocol: v1.ProtocolTCP, Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr(vip)}}
		for _, e := range eps {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[pn] = append(st.Endpoints[pn], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-b"})
		}
		st.Changed[pn] = struct{}{}
	}
	add("target", crVIP, []string{fmt.Sprintf("%s:%d", crServer, crPort)})
	for i := range n - 1 {
		var eps []string
		for j := range 10 {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d:8080", 128+j, i/250, i%250+1))
		}
		add(fmt.Sprintf("svc-%05d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), eps)
	}
	return st
}

// crLab builds cli and srv, routed through this namespace.
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
	cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, p := range []struct{ ns, ip string }{{"cli", crClient}, {"srv", crServer}} {
		host := "v" + p.ns
		cmds = append(cmds,
			[]string{"ip", "netns", "add", p.ns},
			[]string{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.ns},
			[]string{"ip", "-n", p.ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", p.ns, "addr", "add", p.ip + "/32", "dev", "eth0"},
			[]string{"ip", "-n", p.ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", p.ns, "route", "add", crGateway + "/32", "dev", "eth0", "scope", "link"},
			[]string{"ip", "-n", p.ns, "route", "add", "default", "via", crGateway, "dev", "eth0", "onlink"},
			[]string{"ip", "addr", "add", crGateway + "/32", "dev", host},
			[]string{"ip", "link", "set", host, "up"},
			[]string{"ip", "route", "add", p.ip + "/32", "dev", host, "scope", "link"},
		)
	}
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
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

func crListen() (net.Listener, error) {
	var ln net.Listener
	err := inNetns("srv", func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", crServer, crPort))
		return err
	})
	return ln, err
}

// crRate dials target from cli for d and returns connections per second
// and the number of failed dials.
func crRate(target netip.AddrPort, d time.Duration) (float64, int, error) {
	// The backend's records of 10k services live in this process: keep
	// the garbage collector from marking them on the client's CPU time.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var n, fails int
	var elapsed time.Duration
	err := inNetns("cli", func() error {
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
