package iptables_test

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
)

// TestSyncInRuns: with MaxChainsPerRestore, a sync or cleanup that writes
// many chains goes to iptables-restore in several runs. Every run must
// commit on its own (the fake checks at each COMMIT that every jump target
// exists and that deleted chains are empty and unreferenced), and after
// the last run the tables must be what a single run leaves: after a cold
// sync, after a partial sync that changes and removes many services, after
// a full resync over existing rules, and after Cleanup.
func TestSyncInRuns(t *testing.T) {
	ctx := context.Background()
	const limit = 7
	one, oneFake := goldenBackend(t, v1.IPv4Protocol, nil)
	split, splitFake := goldenBackend(t, v1.IPv4Protocol, func(c *iptables.Config) { c.MaxChainsPerRestore = limit })

	// step runs op on both backends and compares the tables.
	step := func(name string, op func(b *iptables.Backend) error) {
		t.Helper()
		before1, before2 := len(oneFake.Restores), len(splitFake.Restores)
		if err := op(one); err != nil {
			t.Fatalf("%s, one run: %v", name, err)
		}
		if err := op(split); err != nil {
			t.Fatalf("%s, in runs: %v", name, err)
		}
		if got := len(oneFake.Restores) - before1; got != 1 {
			t.Fatalf("%s without a limit: %d runs, want 1", name, got)
		}
		runs := splitFake.Restores[before2:]
		if len(runs) < 3 {
			t.Fatalf("%s with MaxChainsPerRestore %d: %d runs, want several", name, limit, len(runs))
		}
		for i, r := range runs {
			// A run's chain lines are the chains it writes or deletes.
			if n := strings.Count(r, "\n:"); n > limit+3 {
				t.Errorf("%s: run %d has %d chain lines, want about %d at most", name, i+1, n, limit)
			}
		}
		if got, want := splitFake.Dump(), oneFake.Dump(); got != want {
			t.Fatalf("%s: tables after %d runs differ from one run's:\n%s", name, len(runs), lineDiff(want, got))
		}
		t.Logf("%s: %d runs", name, len(runs))
	}

	st := scaleState(300)
	step("cold sync", func(b *iptables.Backend) error { return b.Sync(ctx, st) })
	if !strings.Contains(oneFake.Dump(), ":KUBE-DST-") {
		t.Fatal("no KUBE-DST chains: the fixture does not exercise the dispatch trees")
	}

	// A third of the services get a new endpoint, a sixth are removed.
	next := *st
	next.Full, next.Generation = false, 2
	next.Services = maps.Clone(st.Services)
	next.Endpoints = maps.Clone(st.Endpoints)
	next.Changed = map[proxy.ServicePortName]struct{}{}
	names := slices.SortedFunc(maps.Keys(st.Services), func(a, b proxy.ServicePortName) int { return strings.Compare(a.String(), b.String()) })
	for i, n := range names {
		switch i % 6 {
		case 0, 3:
			eps := slices.Clone(st.Endpoints[n])
			eps[0].IP = netip.MustParseAddr("10.200.0.1").Next()
			next.Endpoints[n] = eps
			next.Changed[n] = struct{}{}
		case 1:
			delete(next.Services, n)
			delete(next.Endpoints, n)
			next.Changed[n] = struct{}{}
		}
	}
	step("partial sync", func(b *iptables.Backend) error { return b.Sync(ctx, &next) })

	full := next
	full.Full, full.Generation = true, 3
	step("full resync", func(b *iptables.Backend) error { return b.Sync(ctx, &full) })

	step("cleanup", func(b *iptables.Backend) error { return b.Cleanup(ctx) })
	if d := splitFake.Dump(); strings.Contains(d, "KUBE-") {
		t.Errorf("chains left after cleanup:\n%s", d)
	}
}
