// Command svcnet-bench-dns benchmarks svcnet's cluster DNS (issue 6,
// acceptance point 5). It runs a real svcnet API server in-process (embedded
// etcd, loopback, fsync off: this measures DNS, not etcd), fills it with
// Services through the API, starts `svcnet dns` as a separate process (so
// its RSS and CPU are its own) fed by informers from that server, and
// drives it with dnsperf on loopback. See bench/dns/README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/server"
)

type options struct {
	svcnet     string
	dnsperf    string
	services   int
	headless   int
	extNames   int
	duration   time.Duration
	clients    int
	threads    int
	inflight   int
	latClients int
	workers    int
	hold       time.Duration
	hotBinary  bool
}

func main() {
	var o options
	flag.StringVar(&o.svcnet, "svcnet", "bin/svcnet", "svcnet binary (runs `svcnet dns`)")
	flag.StringVar(&o.dnsperf, "dnsperf", "dnsperf", "dnsperf binary")
	flag.IntVar(&o.services, "services", 10000, "Services to create")
	flag.IntVar(&o.headless, "headless", 1000, "how many of them are headless (3 ready endpoints each, one EndpointSlice)")
	flag.IntVar(&o.extNames, "ext-names", 1000, "distinct external names for the cached-external workload")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each dnsperf run")
	flag.IntVar(&o.clients, "clients", 8, "dnsperf -c (sockets; SO_REUSEPORT spreads them over the server's sockets)")
	flag.IntVar(&o.threads, "threads", 2, "dnsperf -T")
	flag.IntVar(&o.inflight, "inflight", 200, "dnsperf -q (outstanding queries)")
	flag.IntVar(&o.latClients, "latency-clients", 4, "dnsperf -c for the half-load latency runs (one thread)")
	flag.IntVar(&o.workers, "fill-workers", 16, "parallel API clients filling the cluster")
	flag.DurationVar(&o.hold, "hold", 0, "after the sync, print the kubeconfig and the DNS pid and keep everything running this long, then stop without dnsperf runs (for inspecting memory by hand)")
	flag.BoolVar(&o.hotBinary, "hot-binary", false, "run -svcnet as it is (freshly linked: its pages sit in the page cache in large folios) instead of a private copy read back from disk; see README")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-dns:", err)
		os.Exit(1)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeUDPTCPPort finds a port free for both UDP and TCP.
func freeUDPTCPPort() int {
	for {
		p := freePort()
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			c.Close()
			return p
		}
	}
}

func run(ctx context.Context, o options) error {
	if _, err := exec.LookPath(o.dnsperf); err != nil {
		return fmt.Errorf("dnsperf not found (apt-get install dnsperf): %w", err)
	}
	tmp, err := os.MkdirTemp(os.Getenv("BENCH_TMPDIR"), "svcnet-bench-dns.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// 1. API server, in-process.
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := server.Config{
		DataDir: filepath.Join(tmp, "data"), BindAddress: "127.0.0.1", SecurePort: freePort(),
		AdvertiseAddress:      "192.0.2.10",
		EmbeddedEtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort()),
		EmbeddedEtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort()),
		EtcdUnsafeNoFsync:     true,
		Logger:                logger,
	}
	ready := make(chan server.Info, 1)
	cfg.OnReady = func(i server.Info) { ready <- i }
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- server.Run(sctx, cfg) }()
	defer func() { cancel(); <-done }()
	var info server.Info
	select {
	case info = <-ready:
	case err := <-done:
		return fmt.Errorf("API server: %w", err)
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("API server not ready in 2 minutes")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", info.AdminKubeconfig)
	if err != nil {
		return err
	}
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.QPS, rc.Burst = -1, 0
	client := kubernetes.NewForConfigOrDie(rest.CopyConfig(rc))

	// 2. Fill.
	start := time.Now()
	if err := fill(ctx, client, o); err != nil {
		return err
	}
	fillTook := time.Since(start)
	fmt.Fprintf(os.Stderr, "bench-dns: created %d Services (%d headless with slices) in %v\n", o.services, o.headless, fillTook.Round(time.Millisecond))

	// 3. Fake upstream: every name has one A record, TTL 3600.
	upstream, stopUp, err := startUpstream()
	if err != nil {
		return err
	}
	defer stopUp()

	// 4. svcnet dns, a process of its own, from the binary as a node has
	// it: on disk, not in the page cache (see coldCopy).
	bin, binNote := o.svcnet, "as built (-hot-binary: freshly linked, pages in the page cache)"
	if !o.hotBinary {
		if bin, err = coldCopy(o.svcnet, tmp); err != nil {
			return err
		}
		binNote = "private copy of " + o.svcnet + ", page cache dropped before start (read from disk, as after an install)"
		var fs unix.Statfs_t
		if unix.Statfs(bin, &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
			binNote = "private copy of " + o.svcnet + " on tmpfs (BENCH_TMPDIR): its pages cannot be dropped, RssFile is not representative"
		}
	}
	dnsPort, health, metrics := freeUDPTCPPort(), freePort(), freePort()
	cmd := exec.Command(bin, "dns", "--kubeconfig", info.AdminKubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", dnsPort), "--upstream", upstream,
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", health), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--log-level", "warn")
	var dnsLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dnsLog, &dnsLog
	dnsStart := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start svcnet dns: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	addr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	last := fmt.Sprintf("svc-%05d.bench.svc.cluster.local.", o.services-1)
	for {
		if time.Since(dnsStart) > 2*time.Minute {
			return fmt.Errorf("svcnet dns not serving %s after 2 minutes; log:\n%s", last, dnsLog.String())
		}
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", health)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if r, err := query(addr, last, mdns.TypeA); err == nil && len(r.Answer) > 0 {
					break
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	syncTook := time.Since(dnsStart)
	rssIdle, _ := procStatus(pid, "VmRSS")
	if o.hold > 0 {
		fmt.Fprintf(os.Stderr, "bench-dns: holding %v: kubeconfig %s, svcnet dns pid %d, dns %s, metrics 127.0.0.1:%d, upstream %s\n",
			o.hold, info.AdminKubeconfig, pid, addr, metrics, upstream)
		time.Sleep(o.hold)
		return nil
	}

	// 5. Query files.
	files, err := writeQueryFiles(tmp, o)
	if err != nil {
		return err
	}
	for i := 0; i < o.extNames; i++ { // warm the forward cache
		if _, err := query(addr, fmt.Sprintf("ext-%d.example.com.", i), mdns.TypeA); err != nil {
			return fmt.Errorf("warm cache: %w", err)
		}
	}

	// 6. dnsperf runs.
	var rows []row
	for _, w := range []struct{ name, file string }{
		{fmt.Sprintf("cluster names (A, %d Services)", o.services), files[0]},
		{"search-path misses (NXDOMAIN)", files[1]},
		{"cached external names (A)", files[2]},
	} {
		fmt.Fprintf(os.Stderr, "bench-dns: %s: max rate for %v\n", w.name, o.duration)
		cpu0 := procCPU(pid)
		t0 := time.Now()
		maxRes, err := dnsperf(ctx, o, dnsPort, w.file, 0, false)
		if err != nil {
			return err
		}
		cpuFrac := (procCPU(pid) - cpu0).Seconds() / time.Since(t0).Seconds()
		r := row{name: w.name, max: maxRes, dnsCPU: cpuFrac}
		for i, rate := range []float64{goalQPS / 2, maxRes.qps / 2} {
			fmt.Fprintf(os.Stderr, "bench-dns: %s: latency at %.0f qps for %v\n", w.name, rate, o.duration)
			busy0, cpu0 := machineBusy(), procCPU(pid)
			t0 := time.Now()
			res, err := dnsperf(ctx, o, dnsPort, w.file, rate, true)
			if err != nil {
				return err
			}
			el := time.Since(t0).Seconds()
			res.dnsCores = (procCPU(pid) - cpu0).Seconds() / el
			res.otherCores = (machineBusy()-busy0).Seconds()/el - res.dnsCores - res.perfCores
			r.lat[i] = res
		}
		rows = append(rows, r)
	}
	var mem memInfo
	mem.rssIdle = rssIdle
	mem.rss, _ = procStatus(pid, "VmRSS")
	mem.hwm, _ = procStatus(pid, "VmHWM")
	mem.anon, _ = procStatus(pid, "RssAnon")
	mem.file, _ = procStatus(pid, "RssFile")
	mem.goHeap = scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics))
	mem.binary = binNote
	report(os.Stdout, o, rows, fillTook, syncTook, mem)
	return nil
}

// coldCopy copies the svcnet binary into dir, writes it to disk and drops
// the copy's pages from the page cache, so that `svcnet dns` starts from a
// binary that is read from disk, as on a node after an install or a reboot.
//
// Why: the Go linker writes its output through a shared mapping, which
// leaves a freshly built binary in the page cache in large folios (2 MB);
// kernels since 6.18 map a whole large folio on a fault, so every spot the
// process touches would cost it 2 MB of RssFile — a property of having just
// linked the file, not of the DNS. A private copy is used so that other
// processes running bin/svcnet at the same time do not keep its pages
// cached (a mapped page cannot be dropped).
func coldCopy(src, dir string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	dst := filepath.Join(dir, "svcnet")
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return "", err
	}
	if err := unix.Fadvise(int(out.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		out.Close()
		return "", fmt.Errorf("drop page cache of %s: %w", dst, err)
	}
	return dst, out.Close()
}

type memInfo struct {
	binary                        string
	rssIdle, rss, hwm, anon, file int64
	goHeap                        map[string]float64
}

// scrape reads the Go memory gauges from svcnet dns's /metrics.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.HasPrefix(f[0], "go_memstats_") {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
		if len(f) == 2 && (f[0] == "svcnet_dns_index_names" || f[0] == "svcnet_dns_index_build_duration_seconds_count") {
			out[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out
}

type row struct {
	name   string
	max    perfResult
	lat    [2]perfResult // at goalQPS/2, at max/2
	dnsCPU float64
}

func fill(ctx context.Context, c kubernetes.Interface, o options) error {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.workers)
	for w := 0; w < o.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.services {
					return
				}
				if err := createOne(ctx, c, i, i < o.headless); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func createOne(ctx context.Context, c kubernetes.Interface, i int, headless bool) error {
	name := fmt.Sprintf("svc-%05d", i)
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	if headless {
		s.Spec.ClusterIP = corev1.ClusterIPNone
	}
	if _, err := c.CoreV1().Services("bench").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if !headless {
		return nil
	}
	pn, proto, port := "http", corev1.ProtocolTCP, int32(8080)
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: "bench", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Protocol: &proto, Port: &port}},
	}
	for k := 0; k < 3; k++ {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 200+k, (i/256)%256, i%256)}})
	}
	if _, err := c.DiscoveryV1().EndpointSlices("bench").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create slice %s: %w", name, err)
	}
	return nil
}

func startUpstream() (string, func(), error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == mdns.TypeA {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 3600}, A: net.IPv4(192, 0, 2, 1)}}
		}
		_ = w.WriteMsg(m)
	})
	s := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = s.ActivateAndServe() }()
	return pc.LocalAddr().String(), func() { _ = s.Shutdown() }, nil
}

func query(addr, name string, t uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, t)
	c := &mdns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// writeQueryFiles writes the three dnsperf inputs: cluster names (every
// Service, A), search-path misses (what a pod's resolver with ndots:5 sends
// for an external name before trying it as is: NXDOMAIN in the zone), and
// external names (cached).
func writeQueryFiles(dir string, o options) ([3]string, error) {
	var files [3]string
	gen := []func(w *bufio.Writer){
		func(w *bufio.Writer) {
			for i := 0; i < o.services; i++ {
				fmt.Fprintf(w, "svc-%05d.bench.svc.cluster.local A\n", i)
			}
		},
		func(w *bufio.Writer) {
			for i := 0; i < o.extNames; i++ {
				for _, suf := range []string{"bench.svc.cluster.local", "svc.cluster.local", "cluster.local"} {
					fmt.Fprintf(w, "ext-%d.example.com.%s A\n", i, suf)
				}
			}
		},
		func(w *bufio.Writer) {
			for i := 0; i < o.extNames; i++ {
				fmt.Fprintf(w, "ext-%d.example.com A\n", i)
			}
		},
	}
	for i, g := range gen {
		files[i] = filepath.Join(dir, fmt.Sprintf("queries-%d.txt", i))
		f, err := os.Create(files[i])
		if err != nil {
			return files, err
		}
		w := bufio.NewWriter(f)
		g(w)
		if err := w.Flush(); err != nil {
			return files, err
		}
		f.Close()
	}
	return files, nil
}

type perfResult struct {
	sent, completed, lost int
	qps                   float64
	avgLatency            time.Duration
	p50, p99, p999        time.Duration
	rcodes                string
	// CPU in cores during the run: svcnet dns, dnsperf, everything else.
	dnsCores, perfCores, otherCores float64
}

// machineBusy is the non-idle CPU time of the whole machine (/proc/stat).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

// dnsperf runs one dnsperf; qps > 0 limits the rate; verbose collects every
// query's latency for percentiles.
func dnsperf(ctx context.Context, o options, port int, file string, qps float64, verbose bool) (perfResult, error) {
	args := []string{"-s", "127.0.0.1", "-p", strconv.Itoa(port), "-d", file,
		"-l", strconv.Itoa(int(o.duration.Seconds())), "-c", strconv.Itoa(o.clients), "-T", strconv.Itoa(o.threads),
		"-q", strconv.Itoa(o.inflight), "-t", "2"}
	if qps > 0 {
		args = append(args, "-Q", strconv.Itoa(int(qps)))
	}
	if verbose {
		args = append(args, "-v")
	}
	if verbose {
		// One thread and fewer sockets: on 2 cores every extra runnable
		// thread shows up as scheduling delay in the latency tail.
		args[9], args[11] = strconv.Itoa(o.latClients), "1"
	}
	// Output goes to a file, not a pipe: no reader competes for the CPU
	// while dnsperf -v prints a line per query.
	f, err := os.CreateTemp(filepath.Dir(file), "dnsperf-out.")
	if err != nil {
		return perfResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, o.dnsperf, args...)
	cmd.Stdout, cmd.Stderr = f, f
	runErr := cmd.Run()
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return perfResult{}, err
	}
	if runErr != nil {
		return perfResult{}, fmt.Errorf("dnsperf %v: %w\n%s", args, runErr, tail(string(out), 20))
	}
	r := parseDnsperf(string(out))
	if ps := cmd.ProcessState; ps != nil {
		r.perfCores = (ps.UserTime() + ps.SystemTime()).Seconds() / o.duration.Seconds()
	}
	return r, nil
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func parseDnsperf(out string) perfResult {
	var r perfResult
	var lat []float64
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "> ") && len(f) >= 5:
			// "> NOERROR name A 0.000123"
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, v)
			}
		case strings.Contains(line, "Queries sent:") && len(f) >= 3:
			r.sent, _ = strconv.Atoi(f[2])
		case strings.Contains(line, "Queries completed:") && len(f) >= 3:
			r.completed, _ = strconv.Atoi(f[2])
		case strings.Contains(line, "Queries lost:") && len(f) >= 3:
			r.lost, _ = strconv.Atoi(f[2])
		case strings.Contains(line, "Queries per second:") && len(f) >= 4:
			r.qps, _ = strconv.ParseFloat(f[3], 64)
		case strings.Contains(line, "Average Latency (s):") && len(f) >= 4:
			v, _ := strconv.ParseFloat(f[3], 64)
			r.avgLatency = time.Duration(v * float64(time.Second))
		case strings.Contains(line, "Response codes:"):
			r.rcodes = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	if len(lat) > 0 {
		sort.Float64s(lat)
		pct := func(p float64) time.Duration {
			return time.Duration(lat[min(len(lat)-1, int(p*float64(len(lat))))] * float64(time.Second))
		}
		r.p50, r.p99, r.p999 = pct(0.50), pct(0.99), pct(0.999)
	}
	return r
}

func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", key, pid)
}

// procCPU is the process's user+system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
