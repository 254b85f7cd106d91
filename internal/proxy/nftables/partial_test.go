package nftables

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// mergeStates combines the services of several states into one.
func mergeStates(states ...*proxy.State) *proxy.State {
	out := proxy.NewState(testNode)
	for _, st := range states {
		for n, sp := range st.Services {
			out.Services[n] = sp
			if eps, ok := st.Endpoints[n]; ok {
				out.Endpoints[n] = eps
			}
		}
	}
	return out
}

// withChanged fills next.Changed with the services that differ from prev
// (what the core's change tracker computes).
func withChanged(prev, next *proxy.State) *proxy.State {
	cp := *next
	cp.Changed = map[proxy.ServicePortName]struct{}{}
	for n, sp := range next.Services {
		if !reflect.DeepEqual(prev.Services[n], sp) || !reflect.DeepEqual(prev.Endpoints[n], next.Endpoints[n]) {
			cp.Changed[n] = struct{}{}
		}
	}
	for n := range prev.Services {
		if _, ok := next.Services[n]; !ok {
			cp.Changed[n] = struct{}{}
		}
	}
	return &cp
}

// TestPartialSyncMatchesFullSync applies a sequence of states in shuffled
// orders with partial syncs and checks that the table always equals the one
// a fresh backend writes for the same state with a full sync.
func TestPartialSyncMatchesFullSync(t *testing.T) {
	var states []*proxy.State
	for _, tc := range goldenCases() {
		if tc.family == "" && tc.mod == nil {
			states = append(states, tc.state)
		}
	}
	// Combinations: everything, halves, and mutated endpoint lists.
	all := mergeStates(states...)
	states = append(states, all, mergeStates(states[:len(states)/2]...), mergeStates(states[len(states)/2:]...))
	mut := mergeStates(all)
	for n, eps := range mut.Endpoints {
		if len(eps) > 1 {
			mut.Endpoints[n] = eps[1:]
		} else {
			delete(mut.Endpoints, n)
		}
	}
	states = append(states, mut, proxy.NewState(testNode))

	for seed := uint64(1); seed <= 5; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		order := r.Perm(len(states))
		b, fake, _ := newTestBackend(t, testConfig(v1.IPv4Protocol))
		prev := proxy.NewState(testNode)
		for i, idx := range order {
			next := withChanged(prev, states[idx])
			mustSync(t, b, next)
			if i > 0 {
				if partial, _ := b.LastSyncStats(); !partial {
					t.Errorf("seed %d step %d: sync was not partial", seed, i)
				}
			}
			ref, refFake, _ := newTestBackend(t, testConfig(v1.IPv4Protocol))
			mustSync(t, ref, states[idx])
			if got, want := normDump(fake), normDump(refFake); got != want {
				t.Fatalf("seed %d step %d (state %d): partial-sync table differs from full sync\n--- partial ---\n%s\n--- full ---\n%s", seed, i, idx, got, want)
			}
			_, gotRules := b.LastSyncStats()
			_, wantRules := ref.LastSyncStats()
			if gotRules != wantRules {
				t.Errorf("seed %d step %d: rule count %d, full sync counts %d", seed, i, gotRules, wantRules)
			}
			prev = states[idx]
		}
	}
}

// normDump returns the fake's dump with element lines sorted: the Fake
// keeps elements in insertion order, which differs between partial and
// full syncs without meaning anything.
func normDump(f *knftables.Fake) string {
	lines := strings.Split(f.Dump(), "\n")
	var elems, other []string
	for _, l := range lines {
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
		} else {
			other = append(other, l)
		}
	}
	slices.Sort(elems)
	return strings.Join(append(other, elems...), "\n")
}

// countingNFT wraps a Fake, counting operations and failing on demand.
type countingNFT struct {
	*knftables.Fake
	ops  int
	last string
	fail bool
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.ops = tx.NumOperations()
	c.last = tx.String()
	if c.fail {
		return errors.New("injected failure")
	}
	return c.Fake.Run(ctx, tx)
}

func TestSyncIsIdempotentAndSmall(t *testing.T) {
	nft := &countingNFT{Fake: NewFake(v1.IPv4Protocol)}
	b, err := New(testConfig(v1.IPv4Protocol), nft)
	if err != nil {
		t.Fatal(err)
	}
	var all []*proxy.State
	for _, tc := range goldenCases() {
		if tc.family == "" && tc.mod == nil {
			all = append(all, tc.state)
		}
	}
	st := mergeStates(all...)
	mustSync(t, b, st)
	before := normDump(nft.Fake)

	// Same state again, with every service flagged as changed: nothing to do.
	nft.ops = 0
	again := withChanged(proxy.NewState(testNode), st)
	mustSync(t, b, again)
	if nft.ops != 0 {
		t.Errorf("re-sync of an identical state ran %d operations, want 0", nft.ops)
	}
	if normDump(nft.Fake) != before {
		t.Errorf("re-sync changed the table")
	}

	// One endpoint change touches only that service.
	next := mergeStates(st)
	web := proxy.ServicePortName{}
	for n := range next.Services {
		if n.Name == "web" && n.Port == "http" {
			web = n
		}
	}
	// Replace the first (remote) endpoint: only that ClusterIP slot's
	// element is replaced (delete, add); no chain or rule is written.
	old := next.Endpoints[web]
	next.Endpoints[web] = append([]proxy.Endpoint{ep("10.244.9.9", 8080, "node-d", "ready")}, old[1:]...)
	mustSync(t, b, withChanged(st, next))
	if want := 2; nft.ops != want || strings.Contains(nft.last, "rule") {
		t.Errorf("one-endpoint replacement ran %d operations, want %d:\n%s", nft.ops, want, nft.last)
	}

	// A failure forces the next sync to be full.
	nft.fail = true
	if err := b.Sync(context.Background(), withChanged(next, st)); err == nil {
		t.Fatal("expected injected failure")
	}
	nft.fail = false
	mustSync(t, b, withChanged(next, st))
	if partial, _ := b.LastSyncStats(); partial {
		t.Errorf("sync after a failure was partial, want full")
	}
	if normDump(nft.Fake) != before {
		t.Errorf("table after recovery differs from the original")
	}
}

func TestUDPConntrackCleanup(t *testing.T) {
	b, _, ct := newTestBackend(t, testConfig(v1.IPv4Protocol))
	dns := svc{name: "dns", proto: v1.ProtocolUDP, cip: []string{"10.96.0.10"}, svcPort: 53, nodePort: 30053}
	tcp := svc{name: "web", cip: []string{"10.96.0.11"}, svcPort: 80}
	s1 := buildState(svcWithEps{dns, []proxy.Endpoint{ep("10.244.1.2", 53, "node-b", "ready")}},
		svcWithEps{tcp, []proxy.Endpoint{ep("10.244.1.3", 80, "node-b", "ready")}})
	mustSync(t, b, s1)
	if len(ct.Calls) != 1 {
		t.Fatalf("new UDP service: %d conntrack calls, want 1", len(ct.Calls))
	}
	// Endpoint moves: flows to the VIP not DNATed to the new endpoint are stale.
	s2 := buildState(svcWithEps{dns, []proxy.Endpoint{ep("10.244.2.2", 53, "node-c", "ready")}},
		svcWithEps{tcp, []proxy.Endpoint{ep("10.244.1.4", 80, "node-b", "ready")}})
	mustSync(t, b, withChanged(s1, s2))
	if len(ct.Calls) != 2 || len(ct.Calls[1]) != 1 {
		t.Fatalf("calls = %+v, want one more call with one UDP service", ct.Calls)
	}
	st := ct.Calls[1][0]
	vip := netip.MustParseAddrPort("10.96.0.10:53")
	oldEp := netip.MustParseAddrPort("10.244.1.2:53")
	newEp := netip.MustParseAddrPort("10.244.2.2:53")
	cases := []struct {
		dst, reply netip.AddrPort
		want       bool
	}{
		{vip, oldEp, true},
		{vip, newEp, false},
		{vip, vip, true}, // never DNATed
		{netip.MustParseAddrPort("192.168.0.10:30053"), oldEp, true},
		{netip.MustParseAddrPort("10.96.0.99:53"), oldEp, false},
	}
	for _, c := range cases {
		if got := st.Matches(c.dst, c.reply); got != c.want {
			t.Errorf("Matches(%v, %v) = %v, want %v", c.dst, c.reply, got, c.want)
		}
	}
	// No UDP change: no call.
	s3 := buildState(svcWithEps{dns, []proxy.Endpoint{ep("10.244.2.2", 53, "node-c", "ready")}},
		svcWithEps{tcp, []proxy.Endpoint{ep("10.244.1.5", 80, "node-b", "ready")}})
	mustSync(t, b, withChanged(s2, s3))
	if len(ct.Calls) != 2 {
		t.Errorf("TCP-only change cleared conntrack: %+v", ct.Calls[2:])
	}
	// Service deleted: everything to its frontends goes.
	s4 := buildState(svcWithEps{tcp, []proxy.Endpoint{ep("10.244.1.5", 80, "node-b", "ready")}})
	mustSync(t, b, withChanged(s3, s4))
	if len(ct.Calls) != 3 || !ct.Calls[2][0].Matches(vip, newEp) {
		t.Errorf("deleting the UDP service: calls %+v, want flows to %v cleared", ct.Calls, vip)
	}
}

var _ conntrack.Interface = (*conntrack.Fake)(nil)
