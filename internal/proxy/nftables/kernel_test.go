package nftables

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// requireKernel skips unless running as root inside the private network
// namespace that TestMain (proxytest.Main, in realtraffic_test.go) sets up.
func requireKernel(t *testing.T) {
	t.Helper()
	if !proxytest.InSandbox() {
		t.Skip("needs root: runs inside a private network namespace (proxytest.Main)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
}

// snapshotObjects lists chains, sets and maps with their elements and the
// rules of every chain, in a normalized text form comparable between the
// kernel and the Fake.
func snapshotObjects(t *testing.T, nft knftables.Interface) string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, typ := range []string{"chains", "sets", "maps"} {
		names, err := nft.List(ctx, typ)
		if err != nil && !knftables.IsNotFound(err) {
			t.Fatalf("list %s: %v", typ, err)
		}
		slices.Sort(names)
		for _, n := range names {
			out = append(out, typ+" "+n)
			switch typ {
			case "chains":
				rules, err := nft.ListRules(ctx, n)
				if err != nil {
					t.Fatalf("list rules of %s: %v", n, err)
				}
				out = append(out, "  rules "+strconv.Itoa(len(rules)))
			default:
				kind := strings.TrimSuffix(typ, "s")
				elems, err := nft.ListElements(ctx, kind, n)
				if err != nil {
					t.Fatalf("list elements of %s: %v", n, err)
				}
				var es []string
				for _, e := range elems {
					es = append(es, strings.Join(e.Key, " . ")+" : "+strings.Join(e.Value, " "))
				}
				slices.Sort(es)
				for _, e := range es {
					out = append(out, "  "+e)
				}
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestKernelAcceptsSyncs runs the golden states, in shuffled order with
// partial syncs, through the real nft binary and kernel (inside the test's
// private network namespace), and checks after every step that the
// kernel holds the same chains, rule counts and elements as the Fake.
func TestKernelAcceptsSyncs(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		t.Run(string(fam), func(t *testing.T) {
			real, err := NewInterface(fam)
			if err != nil {
				t.Fatal(err)
			}
			kb, err := New(testConfig(fam), real)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := kb.Cleanup(ctx); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			fb, fake, _ := newTestBackend(t, testConfig(fam))

			var states []*proxy.State
			for _, tc := range goldenCases() {
				if tc.mod == nil {
					states = append(states, tc.state)
				}
			}
			states = append(states, mergeStates(states...), proxy.NewState(testNode))
			// step syncs both backends from prev to next and requires the
			// kernel to hold what the Fake holds.
			prev := proxy.NewState(testNode)
			step := func(next *proxy.State, what string) {
				t.Helper()
				if err := kb.Sync(ctx, withChanged(prev, next)); err != nil {
					t.Fatalf("%s: kernel rejected sync: %v", what, err)
				}
				mustSync(t, fb, withChanged(prev, next))
				if got, want := snapshotObjects(t, real), snapshotObjects(t, fake); got != want {
					t.Fatalf("%s: kernel differs from fake\n--- kernel ---\n%s\n--- fake ---\n%s", what, got, want)
				}
				prev = next
			}
			r := rand.New(rand.NewPCG(7, 0))
			for i, idx := range append(r.Perm(len(states)), r.Perm(len(states))...) {
				step(states[idx], fmt.Sprintf("step %d (state %d)", i, idx))
			}
			// Endpoint moves that keep each ClusterIP's endpoint count are
			// element-only changes, sent over netlink without nft: the
			// kernel must still hold exactly what the Fake holds.
			plain := buildState(svcWithEps{
				svc{name: "plain", cip: []string{"10.96.0.77", "fd96::77"}, svcPort: 80},
				[]proxy.Endpoint{ep("10.244.1.77", 80, "node-b", "ready"), ep("fd44::77", 80, "node-b", "ready"), ep("fd44::78", 80, "node-c", "ready")},
			})
			all := mergeStates(append(states, plain)...)
			step(all, "all states")
			batches := real.(*realInterface).batches
			names := slices.SortedFunc(maps.Keys(all.Endpoints), func(a, b proxy.ServicePortName) int {
				return strings.Compare(a.String(), b.String())
			})
			for _, n := range names {
				next := mergeStates(prev)
				moved := slices.Clone(next.Endpoints[n])
				for i := range moved {
					for range 50 {
						moved[i].IP = moved[i].IP.Next()
					}
				}
				next.Endpoints[n] = moved
				step(next, "moving "+n.String())
			}
			if got := real.(*realInterface).batches - batches; got == 0 {
				t.Errorf("no endpoint move went through the netlink element path")
			}
			// A ClusterIP whose endpoint count goes 1 → 2 → 1 → 3 moves
			// between single-endpoint (pick-1) and the slot maps.
			plainName := slices.Collect(maps.Keys(plain.Endpoints))[0]
			base := netip.MustParseAddr("10.244.3.1")
			if fam == v1.IPv6Protocol {
				base = netip.MustParseAddr("fd44::3:1")
			}
			for _, n := range []int{1, 2, 1, 3} {
				next := mergeStates(prev)
				eps := make([]proxy.Endpoint, n)
				for i := range eps {
					eps[i] = ep(base.String(), 80, "node-b", "ready")
					base = base.Next()
				}
				next.Endpoints[plainName] = eps
				step(next, fmt.Sprintf("%d endpoints", n))
			}
			// Cleanup removes everything.
			if err := kb.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := real.List(ctx, "chains"); !knftables.IsNotFound(err) {
				t.Errorf("table still present after Cleanup (err=%v)", err)
			}
		})
	}
}
