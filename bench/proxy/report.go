package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// reportMode prints one table for a proxy mode: every figure of issue 7
// acceptance 5 (and issue 5's for nftables) with its goal, the ratio the
// goal is about, and a verdict. Figures without a goal are reported with
// "—". A missed goal prints MISS; it is a report, not a test.
func reportMode(w io.Writer, backend string, rs []result, cr *connRateResult) {
	title := backend
	if cr != nil {
		title = cr.Backend
	}
	fmt.Fprintf(w, "\n== proxy mode %s (issue 5 acceptance 5, issue 7 acceptance 5) ==\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tmeasured\tgoal\tratio\tverdict\t")
	none := func(name, measured string) { fmt.Fprintf(tw, "%s\t%s\t—\t\t\t\n", name, measured) }
	kernelMode := backend == "nftables" || backend == "iptables"

	for _, r := range rs {
		label := fmt.Sprintf("%d svc × %d eps", r.Services, r.Endpoints)
		if r.Mode != "kernel" {
			label += ", " + r.Mode
		}
		if r.Error != "" {
			fmt.Fprintf(tw, "sync (%d svc, %s)\t%s\t\t\t\t\n", r.Services, r.Mode, r.Error)
			continue
		}
		cold := r.Build + r.Cold
		// Issue 5's goals are the nftables backend's, at 10k services.
		if backend == "nftables" && r.Services == 10000 && r.Mode == "kernel" {
			fmt.Fprintf(tw, "cold sync incl. state build (%s)\t%s\t≤ 2s\t%.2f\t%s\t\n", label, dur(cold), cold/2, verdict(cold <= 2))
			p99 := pct(r.Changes, .99)
			fmt.Fprintf(tw, "one-service change p50 / p99 (%s)\t%s / %s\tp99 ≤ 20ms\t%.2f\t%s\t\n", label, dur(pct(r.Changes, .5)), dur(p99), p99/0.020, verdict(p99 <= 0.020))
			fmt.Fprintf(tw, "peak RSS (%s)\t%.0f MB\t≤ 150 MB\t%.2f\t%s\t\n", label, r.PeakRSSMB, r.PeakRSSMB/150, verdict(r.PeakRSSMB <= 150))
		} else {
			none(fmt.Sprintf("cold sync incl. state build (%s)", label), dur(cold))
			none(fmt.Sprintf("one-service change p50 / p99 (%s)", label), dur(pct(r.Changes, .5))+" / "+dur(pct(r.Changes, .99)))
			none(fmt.Sprintf("peak RSS (%s)", label), fmt.Sprintf("%.0f MB", r.PeakRSSMB))
		}
		if r.Restart > 0 {
			none(fmt.Sprintf("restart: full sync over existing rules (%s)", label), dur(r.Restart))
		}
		if r.RemoveAll > 0 {
			none(fmt.Sprintf("every service removed, one sync (%s)", label), dur(r.RemoveAll))
		}
		none(fmt.Sprintf("rules (%s)", label), fmt.Sprint(r.Rules+r.Elements))
	}

	if cr != nil && len(cr.Rows) > 0 {
		first := cr.Rows[0]
		big := first
		for _, r := range cr.Rows {
			if r.Services > big.Services {
				big = r
			}
		}
		// The non-service baseline: the mean of the rows at the smallest
		// installation (the default 10,10000,10 brackets the big one),
		// raw and in units of the control.
		var base, baseControl float64
		var k int
		for _, r := range cr.Rows {
			if r.Services == first.Services {
				base += r.Direct
				baseControl += r.DirectPerControl
				k++
			}
		}
		base /= float64(k)
		baseControl /= float64(k)
		seen := map[int]bool{}
		for _, r := range cr.Rows {
			again := ""
			if seen[r.Services] {
				again = ", again"
			}
			seen[r.Services] = true
			none(fmt.Sprintf("new conn/s, non-service address (%d svc%s)", r.Services, again), fmt.Sprintf("%.0f", r.Direct))
			ratio := r.PairRatio
			name := fmt.Sprintf("new conn/s via ClusterIP (%d svc%s)", r.Services, again)
			if kernelMode {
				fmt.Fprintf(tw, "%s\t%.0f\t≥ 95%% of direct\t%.2f\t%s\t\n", name, r.ViaVIP, ratio, verdict(ratio >= 0.95))
			} else {
				fmt.Fprintf(tw, "%s\t%.0f\t—\t%.2f of direct\t\t\n", name, r.ViaVIP, ratio)
			}
			if r.Errs > 0 {
				none(fmt.Sprintf("failed dials (%d svc%s)", r.Services, again), fmt.Sprint(r.Errs))
			}
		}
		if big.Services != first.Services {
			// The installations are minutes apart; the control
			// rounds take out how fast the machine was at each.
			ratio := big.DirectPerControl / baseControl
			name := fmt.Sprintf("non-service conn/s at %d vs %d svc", big.Services, first.Services)
			measured := fmt.Sprintf("%.0f vs %.0f", big.Direct, base)
			// Issue 7 sets this goal for the kernel modes only.
			if kernelMode {
				fmt.Fprintf(tw, "%s\t%s\t≤ 5%% slower\t%.3f\t%s\t\n", name, measured, ratio, verdict(ratio >= 0.95))
			} else {
				fmt.Fprintf(tw, "%s\t%s\t—\t%.3f\t\t\n", name, measured, ratio)
			}
		}
		gbs := func(v float64) string { return fmt.Sprintf("%.2f GB/s", v/1e9) }
		none(fmt.Sprintf("throughput, one stream, direct (%d svc)", cr.TputServices), gbs(cr.TputDirect))
		ratio := cr.TputRatio
		name := fmt.Sprintf("throughput, one stream, via ClusterIP (%d svc)", cr.TputServices)
		switch {
		case kernelMode:
			fmt.Fprintf(tw, "%s\t%s\t≥ 95%% of direct\t%.2f\t%s\t\n", name, gbs(cr.TputVIP), ratio, verdict(ratio >= 0.95))
		case backend == "bare-nat":
			// A reference, not a mode: no goal.
			fmt.Fprintf(tw, "%s\t%s\t—\t%.2f of direct\t\t\n", name, gbs(cr.TputVIP), ratio)
		default:
			fmt.Fprintf(tw, "%s\t%s\t≥ 70%% of direct\t%.2f\t%s\t\n", name, gbs(cr.TputVIP), ratio, verdict(ratio >= 0.70))
		}
	}
	tw.Flush()
	for _, r := range rs {
		if r.NftVersion != "" {
			fmt.Fprintf(w, "kernel sync rows used %s inside a private network namespace; RSS is the proxy process only.\n", r.NftVersion)
			break
		}
	}
	if cr != nil {
		fmt.Fprintf(w, "connection rates: one client loop, median of %d rounds of %gs; throughput: one stream, median of %d rounds.\n", cr.Rounds, cr.Seconds, crTputRounds)
		fmt.Fprintln(w, "ClusterIP ratios: median of per-round ratios (each ClusterIP round against the direct round just before it).")
		if len(cr.Rows) > 1 {
			fmt.Fprintln(w, "non-service conn/s at many vs few svc: the ratio is of each direct round over the control round that follows it (the same client and server behind a node namespace without rules: the machine's speed of the moment); the raw rates, measured minutes apart, are in the figure column.")
		}
		fmt.Fprintf(w, "machine load average (1 min) %.1f before, %.1f after; CPU steal %.1f%%: other work on the machine (or the VM's host) skews every figure; per-round figures are on stderr.\n", cr.LoadBefore, cr.LoadAfter, cr.StealPct)
	}
}
