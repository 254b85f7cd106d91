package iptables_test

import (
	"cmp"
	"context"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// newFlowBackend returns the iptables backend over a Fake, configured for
// the standard topology of the packet-flow table (IPv4 or its IPv6 map).
func newFlowBackend(t *testing.T, fam v1.IPFamily) (*iptables.Backend, *iptables.Fake) {
	t.Helper()
	return goldenBackend(t, fam, nil)
}

func tracer(t *testing.T, fake *iptables.Fake, nodeIPs []netip.Addr) *proxytest.IPTTracer {
	t.Helper()
	tr, err := proxytest.NewIPTTracer(nodeIPs, fake.Dump())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestPacketFlow runs the shared packet-flow table through the rules the
// backend wrote (issue 7, acceptance 1). The iptables mode behaves as the
// nftables one for every case of the table.
func TestPacketFlow(t *testing.T) {
	b, fake := newFlowBackend(t, v1.IPv4Protocol)
	if err := b.Sync(context.Background(), proxytest.StandardState()); err != nil {
		t.Fatal(err)
	}
	proxytest.Run(t, tracer(t, fake, proxytest.NodeIPs()), proxytest.StandardCases())
}

// TestPacketFlowIPv6 runs the table mapped into IPv6 through ip6tables
// rules.
func TestPacketFlowIPv6(t *testing.T) {
	b, fake := newFlowBackend(t, v1.IPv6Protocol)
	if err := b.Sync(context.Background(), proxytest.StandardStateIPv6()); err != nil {
		t.Fatal(err)
	}
	proxytest.Run(t, tracer(t, fake, proxytest.NodeIPsIPv6()), proxytest.StandardCasesIPv6())
}

// TestPacketFlowAfterPartialSyncs reaches StandardState through partial
// syncs only (services added one at a time in random order, endpoints
// dropped and restored, one service deleted and re-added): the table must
// still hold, and the kernel (fake) state must equal a fresh full sync's.
func TestPacketFlowAfterPartialSyncs(t *testing.T) {
	ctx := context.Background()
	want := proxytest.StandardState()
	names := slices.SortedFunc(maps.Keys(want.Services), func(a, b proxy.ServicePortName) int {
		return cmp.Compare(a.String(), b.String())
	})
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed))
		rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })

		b, fake := newFlowBackend(t, v1.IPv4Protocol)
		cur := proxy.NewState(proxytest.NodeName)
		cur.NodeIPs = proxytest.NodeIPs()
		cur.Full = true
		if err := b.Sync(ctx, cur); err != nil {
			t.Fatal(err)
		}
		gen := uint64(1)
		step := func(change func(st *proxy.State), changed ...proxy.ServicePortName) {
			t.Helper()
			gen++
			next := &proxy.State{
				NodeName: cur.NodeName, NodeIPs: cur.NodeIPs, Generation: gen,
				Services: maps.Clone(cur.Services), Endpoints: maps.Clone(cur.Endpoints),
				Changed: map[proxy.ServicePortName]struct{}{},
			}
			change(next)
			for _, n := range changed {
				next.Changed[n] = struct{}{}
			}
			if err := b.Sync(ctx, next); err != nil {
				t.Fatal(err)
			}
			if partial, _ := b.LastSyncStats(); !partial {
				t.Fatalf("generation %d: sync was full, want partial", gen)
			}
			cur = next
		}
		restore := func(st *proxy.State, n proxy.ServicePortName) {
			if eps, ok := want.Endpoints[n]; ok {
				st.Endpoints[n] = eps
			}
		}
		for _, n := range names {
			step(func(st *proxy.State) { st.Services[n] = want.Services[n]; restore(st, n) }, n)
		}
		for _, n := range names {
			step(func(st *proxy.State) { delete(st.Endpoints, n) }, n)
		}
		for _, n := range names {
			step(func(st *proxy.State) { restore(st, n) }, n)
		}
		victim := names[0]
		step(func(st *proxy.State) { delete(st.Services, victim); delete(st.Endpoints, victim) }, victim)
		step(func(st *proxy.State) { st.Services[victim] = want.Services[victim]; restore(st, victim) }, victim)
		proxytest.Run(t, tracer(t, fake, proxytest.NodeIPs()), proxytest.StandardCases())

		fresh, freshFake := newFlowBackend(t, v1.IPv4Protocol)
		if err := fresh.Sync(ctx, proxytest.StandardState()); err != nil {
			t.Fatal(err)
		}
		if got, want := fake.Dump(), freshFake.Dump(); got != want {
			t.Errorf("seed %d: rules after partial syncs differ from a full sync:\n%s", seed, lineDiff(got, want))
		}
	}
}

// lineDiff lists the lines only in a ("-") or only in b ("+").
func lineDiff(a, b string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range splitLines(s) {
			m[l]++
		}
		return m
	}
	ca, cb := count(a), count(b)
	var out []string
	for l, n := range ca {
		if cb[l] < n {
			out = append(out, "- "+l)
		}
	}
	for l, n := range cb {
		if ca[l] < n {
			out = append(out, "+ "+l)
		}
	}
	slices.Sort(out)
	return joinLines(out)
}
