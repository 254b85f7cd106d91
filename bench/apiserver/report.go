package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// pct returns the p-th percentile (0 < p <= 100) of ds by the nearest-rank
// method, or 0 for an empty slice. ds is sorted in place.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(float64(len(ds))*p/100+0.999999) - 1
	rank = max(0, min(rank, len(ds)-1))
	return ds[rank]
}

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// ratio formats a/b as a percentage, or "n/a" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

// verdict is the PASS/MISS column of the goals table.
func verdict(ok, measured bool) string {
	switch {
	case !measured:
		return "n/a"
	case ok:
		return "PASS"
	default:
		return "MISS"
	}
}

// table prints rows as plain text with aligned columns under a title.
type table struct {
	title string
	head  []string
	rows  [][]string
	notes []string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s\n", t.title, strings.Repeat("=", len(t.title)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.head, "\t"))
	dashes := make([]string, len(t.head))
	for i, h := range t.head {
		dashes[i] = strings.Repeat("-", len(h))
	}
	fmt.Fprintln(tw, strings.Join(dashes, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	for _, n := range t.notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
}

// results is everything one run measured.
type results struct {
	server               string // how the server was started
	skipped              []string
	etcdWhere, valueFrom string
	valueLen             int
	loadStart, loadEnd   string
	phases               *table
	rates                []rates
	fill                 rateResult
	stored, total        int
	warmOK               int
	lists                []listResult
	watch                watchResult
	watchErr             error
	rssStart, rssAtN     rss
	rssEnd               rss
	took                 time.Duration
}

// print writes the report: the tables, then the goals with PASS/MISS.
func (res *results) print(out io.Writer, o options) {
	fmt.Fprintf(out, "\nsvcnet API server benchmark (%s, %d CPUs)\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU())
	if res.server != "" {
		fmt.Fprintf(out, "server: %s\n", res.server)
	}
	fmt.Fprintf(out, "raw etcd rate measured on %s\n", res.etcdWhere)
	fmt.Fprintf(out, "raw Put value: %d bytes (%s); keys %s<prefix>-cN-NNNNNN\n", res.valueLen, res.valueFrom, rawPrefix)
	fmt.Fprintf(out, "API clients: client-go typed clientset, protobuf, one TLS connection per client, no client rate limit\n")
	fmt.Fprintf(out, "load average at start: %s; at end: %s\n", res.loadStart, res.loadEnd)
	res.phases.note("the server, its etcd and the bench clients share these CPUs; 'other' CPU was taken by unrelated processes and makes every figure pessimistic")
	res.phases.print(out)

	t1 := &table{
		title: "1. Service creates/s beside etcd's raw Put/s (same concurrency, same etcd)",
		head: []string{"existing svcs", "clients", "etcd put/s", "put p50", "put p99",
			"API create/s", "create p50", "create p99", "API/etcd", "etcd create txn/s", "txn/put", "API/txn", "errors"},
	}
	for _, r := range res.rates {
		t1.add(strconv.Itoa(r.existing), strconv.Itoa(r.conc),
			fmt.Sprintf("%.0f", r.raw.perSec()), ms(pct(r.raw.lat, 50)), ms(pct(r.raw.lat, 99)),
			fmt.Sprintf("%.0f", r.api.perSec()), ms(pct(r.api.lat, 50)), ms(pct(r.api.lat, 99)),
			ratio(r.api.perSec(), r.raw.perSec()),
			fmt.Sprintf("%.0f", r.txn.perSec()), ratio(r.txn.perSec(), r.raw.perSec()), ratio(r.api.perSec(), r.txn.perSec()),
			fmt.Sprintf("%d", r.raw.failed+r.txn.failed+r.api.failed))
		for _, e := range []error{r.raw.firstErr, r.txn.firstErr, r.api.firstErr} {
			if e != nil {
				t1.note("first error (existing=%d, clients=%d): %v", r.existing, r.conc, e)
			}
		}
	}
	slice := o.rateDuration / time.Duration(o.rounds)
	t1.note("each row: %d rounds of (raw puts for %s, create txns for %s, then API creates for %s), at most %d writes per kind; every API create allocated a ClusterIP (checked)",
		o.rounds, slice, slice, slice, o.rateMaxOps)
	t1.note("'etcd create txn' is the transaction the server commits for each create (the Service key and its ClusterIP's allocation key, both created only if absent), sent straight to etcd: no server can create Services faster; 'txn/put' is its rate over the plain put's")
	t1.note("'existing svcs' is the count in the whole cluster when the row starts; each row creates into an empty namespace and deletes its Services afterwards")
	t1.note("see 1c for where the CPU goes: the server, its etcd and the clients share the machine")
	t1.note("before the last two rows, namespace %s was filled to %d Services with 8 clients at %.0f creates/s (%d created, %d failed, %.1fs)",
		nsBench, res.stored, res.fill.perSec(), res.fill.ok, res.fill.failed, res.fill.elapsed.Seconds())
	for _, r := range res.rates {
		d := fmt.Sprintf("after the row (existing=%d, clients=%d) its %d Services were deleted by 8 clients in %.1fs", r.existing, r.conc, r.deleted, r.deleteTook.Seconds())
		if r.deleteErr != nil {
			d += fmt.Sprintf(": %v", r.deleteErr)
		}
		t1.note("%s", d)
	}
	if res.fill.firstErr != nil {
		t1.note("first fill error: %v", res.fill.firstErr)
	}
	t1.print(out)

	t1b := &table{
		title: fmt.Sprintf("1b. API create rate with %d Services in namespace %s vs with none", res.stored, nsBench),
		head: []string{"clients", "create/s at 0", fmt.Sprintf("create/s at %d", res.stored), "at N / at 0",
			"server CPU/create at 0", "at N", "at N / at 0"},
	}
	for i := 0; i < 2 && i+2 < len(res.rates); i++ {
		a0, aN := res.rates[i], res.rates[i+2]
		c0, cN := perOpDur(a0.apiCPU, a0.api.ok+a0.api.failed), perOpDur(aN.apiCPU, aN.api.ok+aN.api.failed)
		t1b.add(strconv.Itoa(a0.conc), fmt.Sprintf("%.0f", a0.api.perSec()), fmt.Sprintf("%.0f", aN.api.perSec()), ratio(aN.api.perSec(), a0.api.perSec()),
			us(c0), us(cN), ratio(float64(cN), float64(c0)))
	}
	t1b.note("the rate ratio moves with other load on the machine; server CPU per create does not, and shows whether the cost grows with the Services stored")
	t1b.print(out)

	t1c := &table{
		title: "1c. CPU time per write (user+system; this machine has " + strconv.Itoa(runtime.NumCPU()) + " CPUs = that many CPU-seconds per second)",
		head: []string{"existing svcs", "clients", "server CPU/put", "bench CPU/put", "server CPU/txn", "bench CPU/txn",
			"server CPU/create", "bench CPU/create"},
	}
	for _, r := range res.rates {
		t1c.add(strconv.Itoa(r.existing), strconv.Itoa(r.conc),
			perOp(r.rawCPU, r.raw.ok+r.raw.failed), perOp(r.rawSelf, r.raw.ok+r.raw.failed),
			perOp(r.txnCPU, r.txn.ok+r.txn.failed), perOp(r.txnSelf, r.txn.ok+r.txn.failed),
			perOp(r.apiCPU, r.api.ok+r.api.failed), perOp(r.apiSelf, r.api.ok+r.api.failed))
	}
	t1c.note("server = the svcnet server process, which includes the embedded etcd; bench = the client process (client-go, TLS, protobuf)")
	t1c.print(out)

	t2 := &table{
		title: fmt.Sprintf("2. LIST of %d Services in one namespace (time to last byte, no client decode)", res.stored),
		head:  []string{"format", "lists", "p50", "p99", "bytes", "requests/list", "errors"},
	}
	for _, l := range res.lists {
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
	if res.watchErr != nil {
		t3.note("watch measurement failed: %v", res.watchErr)
	} else {
		n := len(res.watch.fromStart)
		worst := pct(res.watch.fromStart, 100)
		t3.add("create sent", strconv.Itoa(n), ms(pct(res.watch.fromStart, 50)), ms(pct(res.watch.fromStart, 99)), ms(worst), strconv.Itoa(res.watch.missing))
		t3.add("create returned", strconv.Itoa(n), ms(pct(res.watch.fromReturn, 50)), ms(pct(res.watch.fromReturn, 99)), ms(pct(res.watch.fromReturn, 100)), strconv.Itoa(res.watch.missing))
		t3.note("%d creates, one every %s from one client, %d failed; 'create returned' can be negative (event before response)", res.watch.creates, o.watchInterval, res.watch.createFailed)
		if res.watch.firstErr != nil {
			t3.note("first error: %v", res.watch.firstErr)
		}
	}
	t3.print(out)

	t4 := &table{
		title: "4. Server memory (/proc/<pid>/status; includes the embedded etcd when it runs in the server)",
		head:  []string{"when", "services stored (all ns)", "VmRSS", "VmHWM"},
	}
	t4.add("after start + 20 warm-up creates", "~20", res.rssStart.rss, res.rssStart.hwm)
	t4.add(fmt.Sprintf("%d in %s, after the LISTs", res.stored, nsBench), fmt.Sprintf("~%d", res.stored+res.warmOK), res.rssAtN.rss, res.rssAtN.hwm)
	t4.add("end of run", strconv.Itoa(res.total), res.rssEnd.rss, res.rssEnd.hwm)
	if res.rssStart.err != nil {
		t4.note("%v", res.rssStart.err)
	}
	t4.print(out)

	// Goals.
	g := &table{
		title: "Goals (issue 2, acceptance point 7) — a report, not an assertion",
		head:  []string{"goal", "target", "measured", "result"},
	}
	for _, r := range res.rates {
		rr := r.api.perSec() / nonzero(r.raw.perSec())
		g.add(fmt.Sprintf("creates/s vs etcd put/s, %s, %d existing", nClients(r.conc), r.existing), ">= 80%",
			ratio(r.api.perSec(), r.raw.perSec()), verdict(rr >= 0.8, r.raw.ok > 0))
		g.add("  etcd's own create txn/s vs put/s (the ceiling)", "(reported)", ratio(r.txn.perSec(), r.raw.perSec()), "-")
	}
	for i := 0; i < 2 && i+2 < len(res.rates); i++ {
		a0, aN := res.rates[i], res.rates[i+2]
		rr := aN.api.perSec() / nonzero(a0.api.perSec())
		g.add(fmt.Sprintf("creates/s at %d vs at 0, %s", aN.existing, nClients(a0.conc)), ">= 90% (\"the same\")",
			ratio(aN.api.perSec(), a0.api.perSec()), verdict(rr >= 0.9, a0.api.ok > 0))
		c0, cN := perOpDur(a0.apiCPU, a0.api.ok+a0.api.failed), perOpDur(aN.apiCPU, aN.api.ok+aN.api.failed)
		g.add(fmt.Sprintf("  same, by server CPU/create, %s", nClients(a0.conc)), "<= 110% of at 0",
			ratio(float64(cN), float64(c0)), verdict(float64(cN) <= 1.1*float64(c0), c0 > 0 && cN > 0))
	}
	for _, l := range res.lists {
		p99 := pct(l.lat, 99)
		g.add(fmt.Sprintf("LIST %d services p99, %s", res.stored, l.mode.name), "<= 250 ms", ms(p99), verdict(p99 <= 250*time.Millisecond, len(l.lat) > 0))
	}
	if res.watchErr == nil {
		p99 := pct(res.watch.fromStart, 99)
		g.add(fmt.Sprintf("watch p99 from create sent, %d watchers", o.watchers), "<= 50 ms, none missing",
			fmt.Sprintf("%s, %d missing", ms(p99), res.watch.missing), verdict(p99 <= 50*time.Millisecond && res.watch.missing == 0, len(res.watch.fromStart) > 0))
	} else {
		g.add(fmt.Sprintf("watch p99, %d watchers", o.watchers), "<= 50 ms", "failed", "MISS")
	}
	g.add(fmt.Sprintf("server RSS at %d services", res.stored), "(no goal; reported)", res.rssAtN.rss, "-")
	if res.stored < o.services {
		g.note("only %d of the %d Services could be created within %s; LIST and the at-N rates are at %d", res.stored, o.services, o.fillTimeout, res.stored)
	}
	for _, sk := range res.skipped {
		g.note("SKIPPED (past -max-time %s): %s", o.maxTime, sk)
	}
	g.print(out)
	fmt.Fprintf(out, "\nbench took %.0fs\n", res.took.Seconds())
}

func nClients(n int) string {
	if n == 1 {
		return "1 client"
	}
	return fmt.Sprintf("%d clients", n)
}
func nonzero(f float64) float64 {
	if f == 0 {
		return 1e-9
	}
	return f
}
