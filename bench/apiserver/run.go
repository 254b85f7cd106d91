package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/svcnet/svcnet/internal/apiserver"
)

const (
	nsBench = "bench"        // holds exactly -services Services for LIST and RSS
	nsAtN   = "bench-at-n"   // the create rate measured with -services in place
	nsWatch = "bench-watch"  // watched creates
	nsWarm  = "bench-warmup" // warm-up creates and the sample value
)

// rates is one row pair of the create table.
type rates struct {
	existing int
	conc     int
	raw, api rateResult
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	began := time.Now()
	cfg, err := loadConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	admin, err := newClients(cfg, 1)
	if err != nil {
		return err
	}
	one, err := newClients(cfg, 1)
	if err != nil {
		return err
	}
	eight, err := newClients(cfg, 8)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, admin[0], o.waitReady); err != nil {
		return err
	}
	if err := ensureNamespaces(ctx, admin[0], nsBench, nsAtN, nsWatch, nsWarm); err != nil {
		return err
	}

	ec, etcdWhere, closeEtcd, err := rawEtcd(ctx, log, o)
	if err != nil {
		return err
	}
	defer closeEtcd()

	// Warm-up: connections, caches, and one stored Service for the value size.
	log.Info("warm-up creates")
	warm := apiCreates(ctx, one, nsWarm, "warm", 20, 20*time.Second)
	if warm.ok == 0 {
		return fmt.Errorf("warm-up: no Service could be created: %v", warm.firstErr)
	}
	value, valueFrom, err := sampleValue(ctx, ec, admin[0], nsWarm, "warm-000000")
	if err != nil {
		return err
	}
	rssStart := readRSS(o.serverPID)

	var rs []rates
	measure := func(existing int, ns, prefix string) {
		for _, c := range []struct {
			n  int
			cs []kubernetes.Interface
		}{{1, one}, {8, eight}} {
			log.Info("raw etcd puts", "writers", c.n, "existing", existing)
			raw := rawPuts(ctx, ec, c.n, o.rateMaxOps, o.rateDuration, fmt.Sprintf("%s-c%d", prefix, c.n), value)
			log.Info("API creates", "clients", c.n, "existing", existing)
			api := apiCreates(ctx, c.cs, ns, fmt.Sprintf("%s-c%d", prefix, c.n), o.rateMaxOps, o.rateDuration)
			rs = append(rs, rates{existing: existing, conc: c.n, raw: raw, api: api})
		}
	}
	measure(0, nsBench, "at0")

	// Fill the bench namespace up to -services with 8 clients.
	have, err := countServices(ctx, admin[0], nsBench)
	if err != nil {
		return err
	}
	log.Info("filling", "namespace", nsBench, "have", have, "want", o.services)
	fill := apiCreates(ctx, eight, nsBench, "fill", max(0, o.services-have), o.fillTimeout)
	stored, err := countServices(ctx, admin[0], nsBench)
	if err != nil {
		return err
	}

	log.Info("lists", "services", stored)
	lists := measureLists(ctx, admin[0], nsBench, o.lists, 2*time.Minute)
	rssAtN := readRSS(o.serverPID)

	log.Info("watch", "watchers", o.watchers)
	watchClients, err := newClients(cfg, o.watchers)
	if err != nil {
		return err
	}
	wr, werr := measureWatch(ctx, one[0], watchClients, nsWatch, o.watchCreates, o.watchInterval)

	measure(stored, nsAtN, "atN")
	rssEnd := readRSS(o.serverPID)
	total, _ := countServices(ctx, admin[0], "")

	// Report.
	out := os.Stdout
	fmt.Fprintf(out, "\nsvcnet API server benchmark (%s, %d CPUs)\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU())
	fmt.Fprintf(out, "raw etcd rate measured on %s\n", etcdWhere)
	fmt.Fprintf(out, "raw Put value: %d bytes (%s); keys %s<prefix>-cN-NNNNNN\n", len(value), valueFrom, rawPrefix)
	fmt.Fprintf(out, "API clients: client-go typed clientset, protobuf, one TLS connection per client, no client rate limit\n")

	t1 := &table{
		title: "1. Service creates/s beside etcd's raw Put/s (same concurrency, same etcd)",
		head:  []string{"existing svcs", "clients", "etcd put/s", "put p50", "put p99", "API create/s", "create p50", "create p99", "API/etcd", "errors"},
	}
	for _, r := range rs {
		t1.add(strconv.Itoa(r.existing), strconv.Itoa(r.conc),
			fmt.Sprintf("%.0f", r.raw.perSec()), ms(pct(r.raw.lat, 50)), ms(pct(r.raw.lat, 99)),
			fmt.Sprintf("%.0f", r.api.perSec()), ms(pct(r.api.lat, 50)), ms(pct(r.api.lat, 99)),
			ratio(r.api.perSec(), r.raw.perSec()), fmt.Sprintf("%d", r.raw.failed+r.api.failed))
		for _, e := range []error{r.raw.firstErr, r.api.firstErr} {
			if e != nil {
				t1.note("first error (existing=%d, clients=%d): %v", r.existing, r.conc, e)
			}
		}
	}
	t1.note("each cell runs %s or %d writes, whichever ends first; every API create allocated a ClusterIP (checked)", o.rateDuration, o.rateMaxOps)
	t1.note("'existing svcs' %d: namespace %s was filled with %d clients at %.0f creates/s (%d created, %d failed, %.1fs)",
		stored, nsBench, 8, fill.perSec(), fill.ok, fill.failed, fill.elapsed.Seconds())
	if fill.firstErr != nil {
		t1.note("first fill error: %v", fill.firstErr)
	}
	t1.print(out)

	t1b := &table{
		title: fmt.Sprintf("1b. API create rate with %d existing Services vs with 0", stored),
		head:  []string{"clients", "create/s at 0", fmt.Sprintf("create/s at %d", stored), "at N / at 0"},
	}
	for i := 0; i < 2 && i+2 < len(rs); i++ {
		a0, aN := rs[i], rs[i+2]
		t1b.add(strconv.Itoa(a0.conc), fmt.Sprintf("%.0f", a0.api.perSec()), fmt.Sprintf("%.0f", aN.api.perSec()), ratio(aN.api.perSec(), a0.api.perSec()))
	}
	t1b.print(out)

	t2 := &table{
		title: fmt.Sprintf("2. LIST of %d Services in one namespace (time to last byte, no client decode)", stored),
		head:  []string{"format", "lists", "p50", "p99", "bytes", "requests/list", "errors"},
	}
	for _, l := range lists {
		t2.add(l.mode.name, strconv.Itoa(len(l.lat)), ms(pct(l.lat, 50)), ms(pct(l.lat, 99)), strconv.Itoa(l.bytes), strconv.Itoa(l.pages), strconv.Itoa(l.failed))
		if l.firstErr != nil {
			t2.note("first error (%s): %v", l.mode.name, l.firstErr)
		}
	}
	t2.print(out)

	t3 := &table{
		title: fmt.Sprintf("3. Watch ADDED-event latency, %d watchers (all namespaces, one connection each)", o.watchers),
		head:  []string{"measured from", "events", "p50", "p99", "max", "missing"},
	}
	if werr != nil {
		t3.note("watch measurement failed: %v", werr)
	} else {
		n := len(wr.fromStart)
		worst := pct(wr.fromStart, 100)
		t3.add("create sent", strconv.Itoa(n), ms(pct(wr.fromStart, 50)), ms(pct(wr.fromStart, 99)), ms(worst), strconv.Itoa(wr.missing))
		t3.add("create returned", strconv.Itoa(n), ms(pct(wr.fromReturn, 50)), ms(pct(wr.fromReturn, 99)), ms(pct(wr.fromReturn, 100)), strconv.Itoa(wr.missing))
		t3.note("%d creates, one every %s from one client, %d failed; 'create returned' can be negative (event before response)", wr.creates, o.watchInterval, wr.createFailed)
		if wr.firstErr != nil {
			t3.note("first error: %v", wr.firstErr)
		}
	}
	t3.print(out)

	t4 := &table{
		title: "4. Server memory (/proc/<pid>/status; includes the embedded etcd when it runs in the server)",
		head:  []string{"when", "services stored (all ns)", "VmRSS", "VmHWM"},
	}
	t4.add("after start + 20 warm-up creates", "~20", rssStart.rss, rssStart.hwm)
	t4.add(fmt.Sprintf("%d in %s, after the LISTs", stored, nsBench), fmt.Sprintf("~%d", stored+warm.ok), rssAtN.rss, rssAtN.hwm)
	t4.add("end of run", strconv.Itoa(total), rssEnd.rss, rssEnd.hwm)
	if rssStart.err != nil {
		t4.note("%v", rssStart.err)
	}
	t4.print(out)

	// Goals.
	g := &table{
		title: "Goals (issue 2, acceptance point 7) — a report, not an assertion",
		head:  []string{"goal", "target", "measured", "result"},
	}
	for _, r := range rs {
		rr := r.api.perSec() / nonzero(r.raw.perSec())
		g.add(fmt.Sprintf("creates/s vs etcd put/s, %d clients, %d existing", r.conc, r.existing), ">= 80%",
			ratio(r.api.perSec(), r.raw.perSec()), verdict(rr >= 0.8, r.raw.ok > 0))
	}
	for i := 0; i < 2 && i+2 < len(rs); i++ {
		a0, aN := rs[i], rs[i+2]
		rr := aN.api.perSec() / nonzero(a0.api.perSec())
		g.add(fmt.Sprintf("creates/s at %d vs at 0, %d clients", aN.existing, a0.conc), ">= 90% (\"the same\")",
			ratio(aN.api.perSec(), a0.api.perSec()), verdict(rr >= 0.9, a0.api.ok > 0))
	}
	for _, l := range lists {
		p99 := pct(l.lat, 99)
		g.add(fmt.Sprintf("LIST %d services p99, %s", stored, l.mode.name), "<= 250 ms", ms(p99), verdict(p99 <= 250*time.Millisecond, len(l.lat) > 0))
	}
	if werr == nil {
		p99 := pct(wr.fromStart, 99)
		g.add(fmt.Sprintf("watch p99 from create sent, %d watchers", o.watchers), "<= 50 ms, none missing",
			fmt.Sprintf("%s, %d missing", ms(p99), wr.missing), verdict(p99 <= 50*time.Millisecond && wr.missing == 0, len(wr.fromStart) > 0))
	} else {
		g.add(fmt.Sprintf("watch p99, %d watchers", o.watchers), "<= 50 ms", "failed", "MISS")
	}
	g.add(fmt.Sprintf("server RSS at %d services", stored), "(no goal; reported)", rssAtN.rss, "-")
	if stored < o.services {
		g.note("only %d of the %d Services could be created within %s; LIST and the at-N rates are at %d", stored, o.services, o.fillTimeout, stored)
	}
	g.print(out)
	fmt.Fprintf(out, "\nbench took %.0fs\n", time.Since(began).Seconds())
	return nil
}

func nonzero(f float64) float64 {
	if f == 0 {
		return 1e-9
	}
	return f
}

// sampleValue returns the bytes the server stored for the Service ns/name,
// or failing that (another key layout) the protobuf encoding of that Service
// as kube-apiserver would store it, and says which.
func sampleValue(ctx context.Context, ec *clientv3.Client, cs kubernetes.Interface, ns, name string) ([]byte, string, error) {
	key := apiserver.KeyPrefix + "core/services/" + ns + "/" + name
	if r, err := ec.Get(ctx, key); err == nil && len(r.Kvs) == 1 {
		return r.Kvs[0].Value, "what the server stored at " + key, nil
	}
	s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("bench: get sample service: %w", err)
	}
	s.APIVersion, s.Kind = "v1", "Service"
	s.ResourceVersion = ""
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(s, &buf); err != nil {
		return nil, "", fmt.Errorf("bench: encode sample service: %w", err)
	}
	return buf.Bytes(), "protobuf encoding of a created Service; " + key + " not found in etcd", nil
}

// rss is one reading of the server's memory.
type rss struct {
	rss, hwm string
	err      error
}

// readRSS reads VmRSS and VmHWM of pid.
func readRSS(pid int) rss {
	if pid <= 0 {
		return rss{rss: "n/a", hwm: "n/a", err: fmt.Errorf("no -server-pid given")}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{rss: "n/a", hwm: "n/a", err: fmt.Errorf("read server status: %w", err)}
	}
	r := rss{rss: "n/a", hwm: "n/a"}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			r.rss = fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		case "VmHWM:":
			r.hwm = fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		}
	}
	return r
}

// rawEtcd connects to the etcd for the raw put rate: the server's, or a
// separate embedded member. The returned func deletes the raw keys and
// closes what was opened.
func rawEtcd(ctx context.Context, log *slog.Logger, o options) (*clientv3.Client, string, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	etcdWhere := ""
	ca, cert, key := o.etcdCA, o.etcdCert, o.etcdKey
	endpoints := splitList(o.etcdEndpoints)
	if len(endpoints) > 0 {
		etcdWhere = fmt.Sprintf("the server's own etcd at %s", strings.Join(endpoints, ","))
	} else {
		if o.ownEtcdDir == "" {
			return nil, "", nil, fmt.Errorf("need -etcd-endpoints or -own-etcd-dir")
		}
		log.Info("starting a separate embedded etcd for the raw put rate", "dir", o.ownEtcdDir)
		e, err := ownEtcd(ctx, o.ownEtcdDir)
		if err != nil {
			return nil, "", nil, err
		}
		closers = append(closers, e.Close)
		endpoints = e.Endpoints()
		ca, cert, key = "", "", "" // our own member serves plain HTTP on loopback
		etcdWhere = fmt.Sprintf("a SEPARATE embedded etcd (fsync on) in the bench process, data in %s", o.ownEtcdDir)
	}
	ec, err := dialEtcd(ctx, endpoints, ca, cert, key)
	if err != nil {
		closeAll()
		return nil, "", nil, err
	}
	closers = append(closers, func() { ec.Close() }, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cleanRaw(cctx, ec); err != nil {
			log.Warn("delete raw keys", "err", err)
		}
	})
	return ec, etcdWhere, closeAll, nil
}

// runRawOnly prints etcd's raw Put rate at 1 and 8 writers and exits.
func runRawOnly(ctx context.Context, log *slog.Logger, o options) error {
	ec, etcdWhere, closeEtcd, err := rawEtcd(ctx, log, o)
	if err != nil {
		return err
	}
	defer closeEtcd()
	value := bytes.Repeat([]byte("x"), o.rawOnly)
	t := &table{
		title: "etcd raw Put rate on " + etcdWhere,
		head:  []string{"writers", "put/s", "p50", "p99", "errors"},
	}
	for _, c := range []int{1, 8} {
		r := rawPuts(ctx, ec, c, o.rateMaxOps, o.rateDuration, fmt.Sprintf("raw-c%d", c), value)
		t.add(strconv.Itoa(c), fmt.Sprintf("%.0f", r.perSec()), ms(pct(r.lat, 50)), ms(pct(r.lat, 99)), strconv.Itoa(r.failed))
		if r.firstErr != nil {
			t.note("first error (%d writers): %v", c, r.firstErr)
		}
	}
	t.note("%d-byte values, %s or %d puts per row", o.rawOnly, o.rateDuration, o.rateMaxOps)
	t.print(os.Stdout)
	return nil
}

// waitReady polls the server's /readyz (authenticated as admin) until it
// answers 200 "ok" or timeout passes.
func waitReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cs.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("server not ready within %s: %v", timeout, last)
}
