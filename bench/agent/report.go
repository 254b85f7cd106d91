package main

import (
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// sloP99 is upstream's pod startup SLO for stateless pods (create →
// Running seen by a watch, image pulls excluded): p99 ≤ 5 s. The issue sets
// no hard goal; the ratio is a reference.
const sloP99 = 5 * time.Second

// report collects the run's figures.
type report struct {
	opts  options
	start time.Time

	agentReady     time.Duration // agent start → Node Ready
	agent0, agentN mem           // the agent with 0 and N pods
	pods0, podsN   map[string][]mem
	run            runResult
	del            delResult
	restarts       int
	agentStop      time.Duration
	agentErrors    int
	agentWarns     int

	throttled       int           // agent requests delayed by client-go's rate limiter
	longestThrottle time.Duration // the longest such delay
	nodeClean       time.Duration // first delete sent → no pod process, dir or veth
	nodeCleanErr    error
	warnings        map[string]int // agent WARN/ERROR lines by message
	events          map[string]int // Events in the pods' namespace by reason, once all were Ready
}

func (r *report) header() {
	fsync := "fsync on (default)"
	if r.opts.noFsync {
		fsync = "fsync OFF (-no-fsync)"
	}
	fmt.Printf("agent bench: %d pods on one node, %d creating workers, %s, GOMAXPROCS %d, load %s, embedded etcd %s\n",
		r.opts.pods, r.opts.workers, time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), hostLoad(), fsync)
	fmt.Println("pod: `svcnet agnhost netexec --http-port=8080`, readiness httpGet /readyz periodSeconds 1, scheduled by the server")
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 0, 64) + " ms"
}

func mib(kib int64) string { return strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64) + " MiB" }

// span collects to-from over the pods where both are set.
func span(pods map[string]podTimes, from, to func(podTimes) time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range pods {
		a, b := from(t), to(t)
		if a.IsZero() || b.IsZero() {
			continue
		}
		out = append(out, max(0, b.Sub(a)))
	}
	return out
}

func (r *report) print() {
	n := r.opts.pods
	pods := r.run.pods
	createSent := func(t podTimes) time.Time { return t.createSent }
	created := func(t podTimes) time.Time { return t.created }
	scheduled := func(t podTimes) time.Time { return t.scheduled }
	running := func(t podTimes) time.Time { return t.running }
	ready := func(t podTimes) time.Time { return t.ready }
	sandboxStarted := func(t podTimes) time.Time { return t.sandboxStarted }
	containerStarted := func(t podTimes) time.Time { return t.containerStarted }
	readyTransition := func(t podTimes) time.Time { return t.readyTransition }
	serving := func(t podTimes) time.Time { return t.serving }
	firstProbe := func(t podTimes) time.Time { return t.firstProbeServed }
	// trunc compares a time with a second-precision one.
	trunc := func(f func(podTimes) time.Time) func(podTimes) time.Time {
		return func(t podTimes) time.Time { return f(t).Truncate(time.Second) }
	}

	fmt.Println()
	fmt.Printf("1. Pod startup: %d pods created concurrently; latency from the create call returning to the first watch event showing the step\n", n)
	wall := r.run.lastReady.Sub(r.run.firstSent)
	readyLat := span(pods, created, ready)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tpods\tp50\tp90\tp99\tmax\twall\tpods/s\tgoal (ref.)\tp99/goal\t")
	row := func(name string, d []time.Duration, goal time.Duration, withWall bool) {
		w, rate, g, ratio := "", "", "—", ""
		if withWall && wall > 0 {
			w = ms(wall)
			rate = strconv.FormatFloat(float64(len(d))/wall.Seconds(), 'f', 1, 64)
		}
		if goal > 0 {
			g = "p99 ≤ " + strconv.FormatFloat(goal.Seconds(), 'g', -1, 64) + " s"
			ratio = strconv.FormatFloat(float64(percentile(d, .99))/float64(goal), 'f', 2, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, len(d),
			ms(percentile(d, .5)), ms(percentile(d, .9)), ms(percentile(d, .99)), ms(percentile(d, 1)), w, rate, g, ratio)
	}
	row("create → Running+Ready", readyLat, sloP99, true)
	row("create → Running", span(pods, created, running), sloP99, false)
	fmt.Fprintln(tw, "  where the time goes:\t\t\t\t\t\t\t\t\t\t")
	row("  create call", span(pods, createSent, created), 0, false)
	row("  created → scheduled", span(pods, created, scheduled), 0, false)
	row("  scheduled → Running", span(pods, scheduled, running), 0, false)
	row("    scheduled → sandbox started (agent log)", span(pods, scheduled, sandboxStarted), 0, false)
	row("    sandbox → container started (agent log)", span(pods, sandboxStarted, containerStarted), 0, false)
	row("    container started → Running seen", span(pods, containerStarted, running), 0, false)
	row("  Running → Ready", span(pods, running, ready), 0, false)
	row("  container started → Ready seen", span(pods, containerStarted, ready), 0, false)
	row("    container started → Ready decided (lastTransitionTime, 1 s res.)", span(pods, trunc(containerStarted), readyTransition), 0, false)
	row("    container started → netexec serving (its log)", span(pods, containerStarted, serving), 0, false)
	row("    netexec serving → first /readyz probe served (its log)", span(pods, serving, firstProbe), 0, false)
	row("    first /readyz served → Ready decided (lastTransitionTime)", span(pods, trunc(firstProbe), readyTransition), 0, false)
	row("    Ready decided (lastTransitionTime) → Ready seen", span(pods, readyTransition, ready), 0, false)
	tw.Flush()
	fmt.Println("   goal: none in the issue; reference: upstream kubelet SLO, pod startup p99 ≤ 5 s (create → Running, stateless pods, no image pulls).")
	fmt.Println("   'Running → Ready' is bounded below by the readiness probe (periodSeconds 1, first probe after the container starts).")
	if r.run.timedOut {
		fmt.Printf("   TIMED OUT: only %d of %d pods Ready within %v\n", len(readyLat), n, r.opts.timeout)
	}
	fmt.Printf("   agent start → Node Ready: %s; container restarts during the run: %d; watch errors: %d\n",
		ms(r.agentReady), r.restarts, r.run.watchErrs)
	fmt.Printf("   agent API requests delayed by client-go's client-side rate limiter (logged when > 1 s) until all Ready: %d, longest %s\n",
		r.throttled, ms(r.longestThrottle))
	if len(r.events) > 0 {
		fmt.Print("   Events posted by then (same client and rate limit as the status writes):")
		for _, k := range slices.Sorted(maps.Keys(r.events)) {
			fmt.Printf(" %s %d", k, r.events[k])
		}
		fmt.Println()
	}

	fmt.Println()
	fmt.Println("2. Memory: VmRSS, RssAnon (heap + stacks, private to each process) and PSS (shared pages split among the")
	fmt.Println("   processes mapping them: every pod process maps the same svcnet binary, so the RSS sums count it many times)")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "process\tn@0\tVmRSS@0\tn@%d\tVmRSS@%d\tRssAnon@%d\tPSS@%d\tRssAnon per pod\tgoal\t\n", n, n, n, n)
	perPod := func(a, b int64) string {
		return strconv.FormatFloat(float64(b-a)/float64(n), 'f', 0, 64) + " KiB"
	}
	fmt.Fprintf(tw, "agent\t1\t%s\t1\t%s\t%s\t%s\t%s\t—\t\n", mib(r.agent0.rss), mib(r.agentN.rss), mib(r.agentN.anon), mib(r.agentN.pss), perPod(r.agent0.anon, r.agentN.anon))
	var tot0, totN mem
	var cnt0, cntN int
	for _, kind := range []string{"sandbox", "shim", "container"} {
		var a, b mem
		for _, m := range r.pods0[kind] {
			a.add(m)
		}
		for _, m := range r.podsN[kind] {
			b.add(m)
		}
		tot0.add(a)
		totN.add(b)
		cnt0 += len(r.pods0[kind])
		cntN += len(r.podsN[kind])
		fmt.Fprintf(tw, "%s (sum)\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t—\t\n", kind, len(r.pods0[kind]), mib(a.rss), len(r.podsN[kind]), mib(b.rss), mib(b.anon), mib(b.pss), perPod(a.anon, b.anon))
	}
	fmt.Fprintf(tw, "pod processes (sum)\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t—\t\n", cnt0, mib(tot0.rss), cntN, mib(totN.rss), mib(totN.anon), mib(totN.pss), perPod(tot0.anon, totN.anon))
	all0, allN := r.agent0, r.agentN
	all0.add(tot0)
	allN.add(totN)
	fmt.Fprintf(tw, "agent + pods\t\t%s\t\t%s\t%s\t%s\t%s\t—\t\n", mib(all0.rss), mib(allN.rss), mib(allN.anon), mib(allN.pss), perPod(all0.anon, allN.anon))
	tw.Flush()
	fmt.Printf("   agent with 0 pods: VmRSS %s, RssAnon %s, PSS %s\n", mib(r.agent0.rss), mib(r.agent0.anon), mib(r.agent0.pss))
	fmt.Println("   goal: none in the issue (the kubelet itself typically sits at 50–100 MiB RSS, for reference only).")

	fmt.Println()
	fmt.Println("3. Teardown: delete (default grace) → DELETED event; then agent SIGTERM and a final `agent --cleanup` run")
	gone := span(r.del.pods, func(t podTimes) time.Time { return t.deleteSent }, func(t podTimes) time.Time { return t.deleted })
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tpods\tp50\tp99\tmax\twall\t")
	dwall := r.del.lastGone.Sub(r.del.firstSent)
	fmt.Fprintf(tw, "delete → gone\t%d\t%s\t%s\t%s\t%s\t\n", len(gone), ms(percentile(gone, .5)), ms(percentile(gone, .99)), ms(percentile(gone, 1)), ms(max(0, dwall)))
	fmt.Fprintf(tw, "first delete → node clean (no pod process, dir, veth)\t\t\t\t\t%s\t\n", ms(r.nodeClean))
	fmt.Fprintf(tw, "agent SIGTERM → exit\t\t\t\t\t%s\t\n", ms(r.agentStop))
	tw.Flush()
	if r.nodeCleanErr != nil {
		fmt.Printf("   NOT CLEAN before the agent stopped: %v\n", r.nodeCleanErr)
	}
	if r.del.timedOut {
		fmt.Printf("   TIMED OUT: only %d of %d pods gone within %v\n", len(gone), n, r.opts.timeout)
	}
	fmt.Printf("   agent log lines: %d ERROR, %d WARN; total bench time %s (leftover check follows the --cleanup run)\n",
		r.agentErrors, r.agentWarns, ms(time.Since(r.start)))
	keys := slices.Sorted(maps.Keys(r.warnings))
	for _, k := range keys {
		fmt.Printf("     %4d × %s\n", r.warnings[k], k)
	}
}
