package main

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"
)

// Goals of issue 6, acceptance point 5 (2-core machine, dnsperf beside).
const (
	goalQPS       = 55000
	goalP99       = 2 * time.Millisecond
	goalRSS       = 100 << 20
	coreDNSFigure = 35000 // CoreDNS + kubernetes plugin + cache on this machine (issue text)
)

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func report(w io.Writer, o options, rows []row, fillTook, syncTook time.Duration, m memInfo) {
	fmt.Fprintf(w, "\n== svcnet DNS benchmark (issue 6, point 5) ==\n")
	fmt.Fprintf(w, "machine: %d CPUs; dnsperf -c %d -T %d -q %d, %v per run, on loopback beside the server\n",
		runtime.NumCPU(), o.clients, o.threads, o.inflight, o.duration)
	fmt.Fprintf(w, "cluster: %d Services through the in-process API server (%d headless × 3 endpoints), filled in %v;\n",
		o.services, o.headless, fillTook.Round(time.Millisecond))
	fmt.Fprintf(w, "         `svcnet dns` (own process) synced and answering the last Service %v after start\n\n", syncTook.Round(time.Millisecond))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "workload\tmax QPS\tgoal\tratio\tlost\tDNS CPU (cores)\trcodes\t")
	for _, r := range rows {
		goal, ratio, ok := "-", "-", ""
		if r.name == rows[0].name {
			goal = fmt.Sprintf("≥ %d", goalQPS)
			ratio = fmt.Sprintf("%.2f", r.max.qps/goalQPS)
			ok = " " + verdict(r.max.qps >= goalQPS)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s%s\t%d\t%.2f\t%s\t\n", r.name, r.max.qps, goal, ratio, ok, r.max.lost, r.dnsCPU, r.max.rcodes)
	}
	tw.Flush()
	fmt.Fprintf(w, "(CoreDNS with the kubernetes plugin and cache: about %d QPS on this machine, per the issue)\n\n", coreDNSFigure)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "latency: workload\tat\tQPS\tp50\tp99\tp99.9\tgoal p99\tverdict\tlost\tCPU dns/dnsperf/other\t")
	for _, r := range rows {
		for i, at := range []string{fmt.Sprintf("goal/2 = %d", goalQPS/2), "max/2"} {
			l := r.lat[i]
			v := verdict(l.p99 < goalP99)
			if i == 1 {
				v = "(info)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t< %s\t%s\t%d\t%.2f/%.2f/%.2f\t\n", r.name, at, l.qps, ms(l.p50), ms(l.p99), ms(l.p999),
				ms(goalP99), v, l.lost, l.dnsCores, l.perfCores, max(0, l.otherCores))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "(latency per query as dnsperf -v reports it, client side, includes dnsperf's own scheduling;\n CPU in cores of %d: if \"other\" is not near 0, other work shared the CPUs and the tail is pessimistic)\n\n", runtime.NumCPU())

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "svcnet dns memory\tMB\tgoal\tverdict\t")
	mb := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(tw, "VmRSS after sync, idle\t%.1f\t\t\t\n", mb(m.rssIdle))
	fmt.Fprintf(tw, "VmRSS after the runs\t%.1f\t≤ %d\t%s\t\n", mb(m.rss), goalRSS>>20, verdict(m.rss <= goalRSS))
	fmt.Fprintf(tw, "  of which RssAnon (heap, stacks)\t%.1f\t\t\t\n", mb(m.anon))
	fmt.Fprintf(tw, "  of which RssFile (pages of the svcnet binary)\t%.1f\t\t\t\n", mb(m.file))
	g := m.goHeap
	fmt.Fprintf(tw, "  Go heap in use / idle+unreturned / released\t%.1f / %.1f / %.1f\t\t\t\n", g["go_memstats_heap_inuse_bytes"]/(1<<20),
		(g["go_memstats_heap_idle_bytes"]-g["go_memstats_heap_released_bytes"])/(1<<20), g["go_memstats_heap_released_bytes"]/(1<<20))
	fmt.Fprintf(tw, "  names in the index (publishes so far)\t%.0f (%.0f)\t\t\t\n", g["svcnet_dns_index_names"], g["svcnet_dns_index_build_duration_seconds_count"])
	fmt.Fprintf(tw, "peak VmRSS (VmHWM)\t%.1f\t≤ %d\t%s\t\n", mb(m.hwm), goalRSS>>20, verdict(m.hwm <= goalRSS))
	tw.Flush()
	fmt.Fprintf(w, "(RssFile is the mapped text/data of the one svcnet binary (kubectl, etcd and API server included);\n it does not grow with Services and is shared with other svcnet processes; RssAnon is what DNS allocates)\n")
	fmt.Fprintf(w, "svcnet binary: %s\n", m.binary)
}
