package userspace

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

func eps(n int) []*endpoint {
	out := make([]*endpoint, n)
	for i := range out {
		out[i] = newEndpoint(netip.MustParseAddrPort(fmt.Sprintf("10.244.%d.%d:8080", i/250, i%250+1)))
	}
	return out
}

func clientIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestParseAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Algorithm
		wantErr bool
	}{
		{"", RoundRobin, false},
		{"rr", RoundRobin, false},
		{"round-robin", RoundRobin, false},
		{" Least-Connections ", LeastConnections, false},
		{"lc", LeastConnections, false},
		{"random", Random, false},
		{"sh", SourceHash, false},
		{"source-hash", SourceHash, false},
		{"maglev", "", true},
	} {
		got, err := ParseAlgorithm(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRoundRobinTakesEachInTurn(t *testing.T) {
	e := eps(3)
	b := newBalancer(RoundRobin)
	var got []netip.AddrPort
	for i := 0; i < 6; i++ {
		o := b.order(clientIP(1), e)
		if len(o) != 3 {
			t.Fatalf("order has %d endpoints, want all 3 (retry order)", len(o))
		}
		got = append(got, o[0].addr)
	}
	for i := range got {
		if got[i] != e[i%3].addr {
			t.Fatalf("first choices %v, want each endpoint in turn", got)
		}
	}
}

func TestLeastConnectionsPicksTheIdlest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		active []int64
		want   []int // acceptable first choices
	}{
		{"one idle", []int64{3, 0, 2}, []int{1}},
		{"least loaded", []int64{5, 4, 7}, []int{1}},
		{"tie shares", []int64{1, 1, 9}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := eps(len(tc.active))
			for i, a := range tc.active {
				e[i].active.Store(a)
			}
			b := newBalancer(LeastConnections)
			seen := map[int]bool{}
			for i := 0; i < 10; i++ {
				o := b.order(clientIP(i), e)
				first := -1
				for j := range e {
					if e[j] == o[0] {
						first = j
					}
				}
				seen[first] = true
				// The rest is in increasing load.
				for j := 1; j < len(o); j++ {
					if o[j].active.Load() < o[j-1].active.Load() {
						t.Fatalf("order not by load: %v", o)
					}
				}
			}
			if len(seen) != len(tc.want) {
				t.Fatalf("first choices %v, want exactly %v", seen, tc.want)
			}
			for _, w := range tc.want {
				if !seen[w] {
					t.Fatalf("first choices %v, want %v", seen, tc.want)
				}
			}
		})
	}
}

func TestLeastConnectionsFollowsLoad(t *testing.T) {
	// Open connections one by one: each goes to the idlest, so the load
	// stays even; closing two on one endpoint sends the next two there.
	e := eps(3)
	b := newBalancer(LeastConnections)
	for i := 0; i < 9; i++ {
		b.order(clientIP(i), e)[0].active.Add(1)
	}
	for _, ep := range e {
		if ep.active.Load() != 3 {
			t.Fatalf("after 9 connections: %d on %s, want 3 each", ep.active.Load(), ep.addr)
		}
	}
	e[2].active.Add(-2)
	for i := 0; i < 2; i++ {
		ep := b.order(clientIP(i), e)[0]
		if ep != e[2] {
			t.Fatalf("connection %d went to %s, want the idlest %s", i, ep.addr, e[2].addr)
		}
		ep.active.Add(1)
	}
}

func TestRandomUsesEveryEndpoint(t *testing.T) {
	e := eps(3)
	b := newBalancer(Random)
	seen := map[netip.AddrPort]int{}
	for i := 0; i < 300; i++ {
		o := b.order(clientIP(1), e)
		if len(o) != 3 {
			t.Fatalf("order has %d endpoints", len(o))
		}
		seen[o[0].addr]++
	}
	if len(seen) != 3 {
		t.Fatalf("300 random picks used %v", seen)
	}
}

// firstChoices maps each of n clients to its source-hash endpoint.
func firstChoices(n int, e []*endpoint) map[netip.Addr]netip.AddrPort {
	b := newBalancer(SourceHash)
	out := make(map[netip.Addr]netip.AddrPort, n)
	for i := 0; i < n; i++ {
		c := clientIP(i)
		out[c] = b.order(c, e)[0].addr
	}
	return out
}

func TestSourceHashKeepsAClientOnOneEndpoint(t *testing.T) {
	e := eps(5)
	b := newBalancer(SourceHash)
	reversed := []*endpoint{e[4], e[3], e[2], e[1], e[0]}
	perEndpoint := map[netip.AddrPort]int{}
	for i := 0; i < 1000; i++ {
		c := clientIP(i)
		first := b.order(c, e)[0]
		for k := 0; k < 3; k++ {
			if got := b.order(c, e)[0]; got != first {
				t.Fatalf("client %s: %s then %s", c, first.addr, got.addr)
			}
		}
		if got := b.order(c, reversed)[0]; got != first {
			t.Fatalf("client %s: the endpoint list order changed its choice (%s, %s)", c, first.addr, got.addr)
		}
		perEndpoint[first.addr]++
	}
	// Spread: every endpoint gets a fair share (expected 200 each).
	for _, ep := range e {
		if n := perEndpoint[ep.addr]; n < 120 || n > 280 {
			t.Errorf("endpoint %s got %d of 1000 clients, want about 200", ep.addr, n)
		}
	}
}

func TestSourceHashMovesAtMostOneNth(t *testing.T) {
	const clients = 10000
	for _, n := range []int{1, 2, 3, 5, 10} {
		t.Run(fmt.Sprintf("%d to %d endpoints", n, n+1), func(t *testing.T) {
			all := eps(n + 1)
			before := firstChoices(clients, all[:n])
			after := firstChoices(clients, all)
			moved := 0
			for c, ep := range before {
				if after[c] != ep {
					moved++
					if after[c] != all[n].addr {
						t.Fatalf("client %s moved from %s to %s, not to the new endpoint", c, ep, after[c])
					}
				}
			}
			if limit := clients / n; moved > limit {
				t.Errorf("adding an endpoint to %d moved %d of %d clients, want at most 1/%d (%d)", n, moved, clients, n, limit)
			}
			t.Logf("%d -> %d endpoints: %d of %d clients moved (%.3f; ideal %.3f)", n, n+1, moved, clients, float64(moved)/clients, 1/float64(n+1))
			// Removing it again moves exactly those clients back.
			if back := firstChoices(clients, all[:n]); len(back) != len(before) {
				t.Fatal("client count changed")
			} else {
				for c, ep := range before {
					if back[c] != ep {
						t.Fatalf("client %s did not return to %s after the removal", c, ep)
					}
				}
			}
		})
	}
}

func TestEjectionBackoffAndOrder(t *testing.T) {
	set := &settings{ejectBase: time.Second, ejectMax: 4 * time.Second, log: slog.Default()}
	l := &listener{set: set, aff: map[netip.Addr]affinityEntry{}}
	e := eps(3)
	l.cfg.Store(&svcConfig{eps: e, alg: RoundRobin, bal: newBalancer(RoundRobin)})
	now := time.Unix(1000, 0)

	// Back-off doubles per consecutive failure up to the maximum.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		e[1].fail(now, set.ejectBase, set.ejectMax)
		if got := time.Duration(e[1].ejectedUntil.Load() - now.UnixNano()); got != want {
			t.Fatalf("failure %d: ejected for %s, want %s", i+1, got, want)
		}
	}
	for i := 0; i < 6; i++ {
		c := l.candidates(clientIP(i), now)
		if len(c) != 3 || c[2] != e[1] {
			t.Fatalf("candidates %v: want all three with the ejected %s last", addrsOf(c), e[1].addr)
		}
	}
	// After the back-off it is back in rotation; success clears the record.
	later := now.Add(5 * time.Second)
	firsts := map[*endpoint]bool{}
	for i := 0; i < 3; i++ {
		firsts[l.candidates(clientIP(i), later)[0]] = true
	}
	if !firsts[e[1]] {
		t.Fatalf("the endpoint did not return after its back-off")
	}
	e[1].succeed()
	if e[1].failures.Load() != 0 || e[1].ejected(now) {
		t.Fatal("success did not clear the failure record")
	}
}

func TestAffinityPutsTheLastEndpointFirstUntilTimeout(t *testing.T) {
	set := &settings{ejectBase: time.Second, ejectMax: time.Second, log: slog.Default()}
	l := &listener{set: set, aff: map[netip.Addr]affinityEntry{}}
	e := eps(3)
	l.cfg.Store(&svcConfig{eps: e, alg: RoundRobin, bal: newBalancer(RoundRobin), affinity: 10 * time.Second})
	now := time.Unix(1000, 0)
	c := clientIP(7)
	l.chosen(c, e[2], now)
	for i := 0; i < 5; i++ {
		now = now.Add(9 * time.Second) // each connection refreshes the record
		got := l.candidates(c, now)[0]
		if got != e[2] {
			t.Fatalf("connection %d went to %s, want the affinity endpoint %s", i, got.addr, e[2].addr)
		}
		l.chosen(c, got, now)
	}
	// Another client is balanced normally.
	seen := map[*endpoint]bool{}
	for i := 0; i < 3; i++ {
		seen[l.candidates(clientIP(8), now)[0]] = true
	}
	if len(seen) != 3 {
		t.Fatalf("a client without affinity saw %d endpoints, want 3", len(seen))
	}
	// Expiry: after the timeout the client is balanced again.
	now = now.Add(11 * time.Second)
	seen = map[*endpoint]bool{}
	for i := 0; i < 3; i++ {
		seen[l.candidates(c, now)[0]] = true
	}
	if len(seen) != 3 {
		t.Fatalf("after the timeout the client saw %d endpoints, want 3 (round-robin)", len(seen))
	}
	// An ejected affinity endpoint is not forced first.
	l.chosen(c, e[0], now)
	e[0].fail(now, set.ejectBase, set.ejectMax)
	for i := 0; i < 3; i++ {
		if got := l.candidates(c, now)[0]; got == e[0] {
			t.Fatal("the ejected affinity endpoint was chosen first")
		}
	}
}

func addrsOf(es []*endpoint) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.addr.String())
	}
	return out
}
