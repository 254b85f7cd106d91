// Command proxy benchmarks the nftables proxy backend (issue 5, acceptance
// point 5): for 1k and 10k Services × 10 endpoints it measures
//
//   - cold full sync: a fresh core Tracker fed with the Services and
//     EndpointSlices, one Snapshot, one Backend.Sync into an empty table;
//   - rule count (nftables rules) and element count after it;
//   - one-service change: one EndpointSlice update (one endpoint replaced),
//     Tracker.Snapshot and a partial Backend.Sync, repeated -changes times;
//   - RSS of the process (the proxy's own memory: tracker, state, backend
//     records; the nft child process is not included) and its peak;
//
// both into the real kernel (the nft binary, inside a private network
// namespace created with `unshare --net`, so the host ruleset is never
// touched) and into knftables.Fake (pure Go cost). Every (mode, scale) runs
// in a child process of its own so RSS figures do not mix.
//
// It prints a table with the goals (10k cold sync ≤ 2 s, one change
// ≤ 20 ms, RSS ≤ 150 MB) and ratios. It is a report: missed goals print
// MISS and the exit status stays 0. Run as root for the kernel rows:
//
//	go run ./bench/proxy [-services 1000,10000] [-endpoints 10] [-changes 50] [-backend nftables|iptables] [-iptables-variant nft|legacy]
//
// -connrate measures the new-connection rate instead (connrate.go):
//
//	go run ./bench/proxy -connrate -backend iptables [-connrate-services 10,10000,10]
//
// -backend iptables measures the iptables backend the same way (kernel
// rows: the iptables variant DetectVariant picks inside the private
// namespace, normally iptables-nft; the rule count is iptables rules).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
)

const netnsEnv = "SVCNET_BENCH_PROXY_NETNS"

// result is what one child run reports (as JSON on stdout).
type result struct {
	Mode       string    `json:"mode"`
	Services   int       `json:"services"`
	Endpoints  int       `json:"endpoints"`
	Build      float64   `json:"build"` // seconds: tracker ingest + snapshot
	Cold       float64   `json:"cold"`  // seconds: Backend.Sync of the full state
	Rules      int       `json:"rules"` // nftables rules
	Elements   int       `json:"elements"`
	Changes    []float64 `json:"changes"` // seconds each: snapshot + partial sync
	Snapshot   []float64 `json:"snapshot"`
	RSSMB      float64   `json:"rss_mb"`
	PeakRSSMB  float64   `json:"peak_rss_mb"`
	Error      string    `json:"error,omitempty"`
	NftVersion string    `json:"nft_version,omitempty"`
}

func main() {
	var (
		servicesFlag = flag.String("services", "1000,10000", "service counts to run, comma-separated")
		endpoints    = flag.Int("endpoints", 10, "endpoints per service")
		changes      = flag.Int("changes", 50, "one-service changes to time per scale")
		modes        = flag.String("modes", "kernel,fake", "kernel (real nft in a private netns; root only) and/or fake")
		fakeMax      = flag.Int("fake-max", 2000, "largest service count for the fake (knftables.Fake is quadratic; 10k takes many minutes)")
		child        = flag.String("child", "", "internal: run one mode:services measurement and print JSON")
		backendFlag  = flag.String("backend", "nftables", "proxy backend to measure: nftables or iptables")
		variantFlag  = flag.String("iptables-variant", "", "with -backend iptables: nft or legacy (default: iptables.DetectVariant)")
		connRate     = flag.Bool("connrate", false, "measure the new-connection rate (direct vs ClusterIP) instead of sync costs; see connrate.go")
		crServices   = flag.String("connrate-services", "10,10000,10", "with -connrate: service counts installed in turn, comma-separated")
		crSeconds    = flag.Float64("connrate-seconds", 2, "with -connrate: seconds per measurement round")
	)
	flag.Parse()
	if *connRate {
		os.Exit(runConnRateParent(*backendFlag, *variantFlag, *crServices, *crSeconds))
	}
	if *child == "connrate" {
		var scales []int
		for _, s := range strings.Split(*crServices, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				fmt.Fprintf(os.Stderr, "bad -connrate-services entry %q\n", s)
				os.Exit(2)
			}
			scales = append(scales, n)
		}
		if err := connRateChild(*backendFlag, *variantFlag, scales, *crSeconds); err != nil {
			fmt.Fprintln(os.Stderr, "connection-rate bench:", err)
			os.Exit(1)
		}
		return
	}
	if *child != "" {
		mode, n, _ := strings.Cut(*child, ":")
		svcs, _ := strconv.Atoi(n)
		r := measure(*backendFlag, *variantFlag, mode, svcs, *endpoints, *changes)
		_ = json.NewEncoder(os.Stdout).Encode(r)
		return
	}

	var scales []int
	for _, s := range strings.Split(*servicesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bad -services entry %q\n", s)
			os.Exit(2)
		}
		scales = append(scales, n)
	}
	var results []result
	for _, mode := range strings.Split(*modes, ",") {
		for _, n := range scales {
			if mode == "fake" && n > *fakeMax {
				fmt.Fprintf(os.Stderr, "bench/proxy: fake, %d services: skipped (-fake-max %d)\n", n, *fakeMax)
				continue
			}
			fmt.Fprintf(os.Stderr, "bench/proxy: %s, %d services × %d endpoints ...\n", mode, n, *endpoints)
			results = append(results, runChild(*backendFlag, *variantFlag, mode, n, *endpoints, *changes))
		}
	}
	report(os.Stdout, *backendFlag, results)
}

// runChild runs one measurement in a fresh process; the kernel mode runs
// under `unshare --net --mount` so the table lives in a private netns.
func runChild(backend, variant, mode string, n, eps, changes int) result {
	self, err := os.Executable()
	if err != nil {
		return result{Mode: mode, Services: n, Error: err.Error()}
	}
	args := []string{"-child", fmt.Sprintf("%s:%d", mode, n), "-endpoints", strconv.Itoa(eps), "-changes", strconv.Itoa(changes), "-backend", backend, "-iptables-variant", variant}
	var cmd *exec.Cmd
	if mode == "kernel" {
		if os.Geteuid() != 0 {
			return result{Mode: mode, Services: n, Error: "skipped: needs root (real nft inside unshare --net)"}
		}
		cmd = exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", self}, args...)...)
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
	} else {
		cmd = exec.Command(self, args...)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var r result
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		msg := fmt.Sprintf("child failed: %v %v", err, jerr)
		return result{Mode: mode, Services: n, Error: msg}
	}
	return r
}

// objects builds n Services (ClusterIP; every 10th a NodePort, every 20th
// UDP) with one EndpointSlice of eps endpoints each.
func objects(n, eps int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	slcs := make([]*discovery.EndpointSlice, 0, n)
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		proto := v1.ProtocolTCP
		if i%20 == 19 {
			proto = v1.ProtocolUDP
		}
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		s := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []v1.ServicePort{{Name: "p", Port: 80, Protocol: proto}}},
		}
		if i%10 == 9 {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = int32(30000 + i%2700)
		}
		svcs = append(svcs, s)
		slcs = append(slcs, slice(name, i, 0, eps, proto))
	}
	return svcs, slcs
}

// slice returns service i's slice with endpoints gen..gen+eps-1 (so gen+1
// replaces one endpoint).
func slice(name string, i, gen, eps int, proto v1.Protocol) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-x", Labels: map[string]string{discovery.LabelServiceName: name}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("p"), Port: ptr.To[int32](8080), Protocol: ptr.To(proto)}},
	}
	for j := gen; j < gen+eps; j++ {
		k := i*eps + j
		ip := fmt.Sprintf("10.%d.%d.%d", 128+k/65000, (k/250)%260%256, k%250+1)
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(fmt.Sprintf("node-%d", k%50))})
	}
	return s
}

// benchBackend is what measure needs of a backend.
type benchBackend interface {
	proxy.Backend
	proxy.SyncStats
}

func measure(backend, variant, mode string, n, eps, changes int) result {
	r := result{Mode: mode, Services: n, Endpoints: eps}
	fail := func(err error) result { r.Error = err.Error(); return r }
	ctx := context.Background()
	if mode == "kernel" && os.Getenv(netnsEnv) == "" {
		return fail(fmt.Errorf("kernel mode must run inside unshare --net"))
	}
	if mode != "kernel" && mode != "fake" {
		return fail(fmt.Errorf("unknown mode %q", mode))
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var (
		b        benchBackend
		elements func() int
	)
	switch backend {
	case "nftables":
		var nft knftables.Interface
		if mode == "kernel" {
			real, err := nftables.NewInterface(v1.IPv4Protocol)
			if err != nil {
				return fail(err)
			}
			nft = real
			if out, err := exec.Command("nft", "--version").Output(); err == nil {
				r.NftVersion = strings.TrimSpace(string(out))
			}
		} else {
			nft = nftables.NewFake(v1.IPv4Protocol)
		}
		nb, err := nftables.New(nftables.Config{
			NodeName:     "node-0",
			ClusterCIDRs: mustPrefixes("10.128.0.0/9"),
			ServiceCIDRs: mustPrefixes("10.96.0.0/12"),
			Logger:       logger,
		}, nft)
		if err != nil {
			return fail(err)
		}
		b, elements = nb, func() int { _, e := nb.Counts(); return e }
	case "iptables":
		var ipt iptables.Interface = iptables.NewFake()
		if mode == "kernel" {
			v := iptables.Variant(variant)
			if v == "" {
				var err error
				if v, err = iptables.DetectVariant(ctx); err != nil {
					return fail(err)
				}
			}
			ipt = iptables.NewExec(v1.IPv4Protocol, v)
			if out, err := exec.Command("iptables-"+string(v)+"-restore", "--version").CombinedOutput(); err == nil {
				r.NftVersion = strings.TrimSpace(string(out))
			}
		}
		ib, err := iptables.New(iptables.Config{
			NodeName:     "node-0",
			ClusterCIDRs: mustPrefixes("10.128.0.0/9"),
			ServiceCIDRs: mustPrefixes("10.96.0.0/12"),
			Logger:       logger,
		}, ipt)
		if err != nil {
			return fail(err)
		}
		b, elements = ib, func() int { return 0 }
	default:
		return fail(fmt.Errorf("unknown backend %q", backend))
	}

	svcs, slcs := objects(n, eps)
	start := time.Now()
	tr := proxy.NewTracker("node-0")
	tr.SetSynced(true, true)
	for i := range svcs {
		tr.UpdateService(svcs[i])
		tr.UpdateSlice(slcs[i])
	}
	st, _ := tr.Snapshot(true)
	r.Build = time.Since(start).Seconds()
	svcs, slcs = nil, nil

	runtime.GC()
	start = time.Now()
	if err := b.Sync(ctx, st); err != nil {
		return fail(fmt.Errorf("cold sync: %w", err))
	}
	r.Cold = time.Since(start).Seconds()
	_, r.Rules = b.LastSyncStats()
	r.Elements = elements()

	// One-service changes, spread over the services.
	for c := range changes {
		i := (c * 7919) % n
		name := fmt.Sprintf("svc-%05d", i)
		proto := v1.ProtocolTCP
		if i%20 == 19 {
			proto = v1.ProtocolUDP
		}
		s := slice(name, i, c+1, eps, proto)
		start := time.Now()
		tr.UpdateSlice(s)
		st, _ := tr.Snapshot(false)
		snap := time.Since(start)
		if err := b.Sync(ctx, st); err != nil {
			return fail(fmt.Errorf("change %d: %w", c, err))
		}
		if partial, _ := b.LastSyncStats(); !partial {
			return fail(fmt.Errorf("change %d was not a partial sync", c))
		}
		r.Changes = append(r.Changes, time.Since(start).Seconds())
		r.Snapshot = append(r.Snapshot, snap.Seconds())
	}
	r.RSSMB, r.PeakRSSMB = rss()
	if mode == "kernel" {
		_ = b.Cleanup(ctx)
	}
	runtime.KeepAlive(st)
	return r
}

func mustPrefixes(s string) []netip.Prefix {
	p, err := proxy.ParsePrefixes(s)
	if err != nil {
		panic(err)
	}
	return p
}

// rss returns the current and peak resident set size in MB.
func rss() (cur, peak float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

func report(w io.Writer, backend string, rs []result) {
	fmt.Fprintf(w, "\n== %s proxy backend: sync cost (issue 5 acceptance 5, issue 7 acceptance 5) ==\n", backend)
	fmt.Fprintf(w, "machine: %d CPUs, %s\n\n", runtime.NumCPU(), runtime.Version())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tservices\teps/svc\tbuild state\tcold sync\trules\telements\tchange p50\tchange p99\tchange max\tsnapshot p50\tRSS MB\tpeak RSS MB\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%d\t\t%s\t\t\t\t\t\t\t\t\t\t\n", r.Mode, r.Services, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t\n", r.Mode, r.Services, r.Endpoints,
			dur(r.Build), dur(r.Cold), r.Rules, r.Elements, dur(pct(r.Changes, .5)), dur(pct(r.Changes, .99)),
			dur(pct(r.Changes, 1)), dur(pct(r.Snapshot, .5)), r.RSSMB, r.PeakRSSMB)
	}
	tw.Flush()

	fmt.Fprintln(w, "\n-- goals (largest kernel run; fake if no kernel run) --")
	var g *result
	for i := range rs {
		r := &rs[i]
		if r.Error != "" {
			continue
		}
		if g == nil || (r.Mode == "kernel" && (g.Mode != "kernel" || r.Services > g.Services)) || (r.Mode == g.Mode && r.Services > g.Services) {
			g = r
		}
	}
	if g == nil {
		fmt.Fprintln(w, "no successful run")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "goal\tmeasured\ttarget\tratio (measured/target)\tverdict\t")
	row := func(name string, measured, target float64, unit func(float64) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t\n", name, unit(measured), unit(target), measured/target, verdict(measured <= target))
	}
	mb := func(v float64) string { return fmt.Sprintf("%.0f MB", v) }
	label := fmt.Sprintf("(%s, %d svc)", g.Mode, g.Services)
	cold := g.Build + g.Cold
	row("cold full sync, incl. state build "+label, cold, 2, dur)
	row("one-service change p99 "+label, pct(g.Changes, .99), 0.020, dur)
	row("peak RSS "+label, g.PeakRSSMB, 150, mb)
	tw.Flush()
	if g.NftVersion != "" {
		fmt.Fprintf(w, "kernel runs used %s inside a private network namespace\n", g.NftVersion)
	}
	fmt.Fprintln(w, "(RSS is the proxy process only; the nft child's memory during the transaction is not counted.)")
}

func dur(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
