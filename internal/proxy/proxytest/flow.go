package proxytest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Verdict is the fate of a traced packet.
type Verdict string

// The verdicts a Tracer reports.
const (
	// Accept means no service rule handled the packet: it goes on unchanged
	// (its String form is "").
	Accept Verdict = ""
	// DNAT means the packet's destination was rewritten to an endpoint.
	DNAT Verdict = "DNAT"
	// Reject means the packet was refused (TCP reset / ICMP unreachable).
	Reject Verdict = "REJECT"
	// Drop means the packet was silently discarded.
	Drop Verdict = "DROP"
)

// Path is one way a packet can take through the dataplane. Random endpoint
// choice (nftables numgen, iptables statistic, ipvs schedulers) makes a
// packet's fate a set of paths, one per possible choice.
type Path struct {
	Verdict Verdict
	// Endpoint is the DNAT target (valid only when Verdict is DNAT).
	Endpoint netip.AddrPort
	// Masquerade reports whether the packet's source is rewritten to the
	// node's address on the way out.
	Masquerade bool
	// Trail lists the rules the packet matched, for failure messages.
	Trail []string
}

// outcome is the Path's contribution to Result.String.
func (p Path) outcome() string {
	if p.Verdict == DNAT {
		return "DNAT"
	}
	return string(p.Verdict)
}

// Result is everything that can happen to one traced packet.
type Result struct {
	Paths []Path
}

// Endpoints returns the sorted, deduplicated DNAT targets over all paths.
func (r Result) Endpoints() []netip.AddrPort {
	var eps []netip.AddrPort
	for _, p := range r.Paths {
		if p.Verdict == DNAT && !slices.Contains(eps, p.Endpoint) {
			eps = append(eps, p.Endpoint)
		}
	}
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return eps
}

// Masquerade reports whether any path masquerades. Where paths differ (a
// hairpin path among others), the table's cases use a single-endpoint
// service so that the answer is unambiguous.
func (r Result) Masquerade() bool {
	for _, p := range r.Paths {
		if p.Masquerade {
			return true
		}
	}
	return false
}

// String renders the result as the table spells expectations:
// "DNAT 10.244.1.2:8080,10.244.2.2:8080", "REJECT", "DROP" or "" (not
// handled). When paths disagree (some DNAT, some DROP) the distinct outcomes
// are joined with " | " so the mismatch shows in the failure.
func (r Result) String() string {
	var outs []string
	for _, p := range r.Paths {
		o := p.outcome()
		if !slices.Contains(outs, o) {
			outs = append(outs, o)
		}
	}
	slices.Sort(outs)
	for i, o := range outs {
		if o != "DNAT" {
			continue
		}
		var s []string
		for _, ep := range r.Endpoints() {
			s = append(s, ep.String())
		}
		outs[i] = "DNAT " + strings.Join(s, ",")
	}
	return strings.Join(outs, " | ")
}

// Tracer answers "what would this dataplane do with a new connection's first
// packet from src to dst:port?". Each backend provides one, built over its
// fake (the nftables backend: NFTTracer over knftables.Fake). proto is
// "tcp", "udp" or "sctp".
type Tracer interface {
	Trace(src, dst netip.Addr, proto string, port int) (Result, error)
}

// StatefulTracer is a Tracer that models the state a dataplane keeps between
// connections: ClientIP session-affinity records. Follow traces a packet and
// records what the dataplane would remember had it chosen endpoint ep (so the
// next Trace from the same client sticks to ep); Reset forgets everything.
type StatefulTracer interface {
	Tracer
	Follow(src, dst netip.Addr, proto string, port int, ep netip.AddrPort) error
	Reset()
}

// Case is one row of the packet-flow table: the first packet of a new
// connection from Src to Dst:Port and what must happen to it.
type Case struct {
	Name  string
	Src   string
	Dst   string
	Proto string // "tcp" when empty
	Port  int
	// After, when set, is an endpoint "ip:port" that an earlier connection of
	// the same client to the same destination was sent to (session
	// affinity). The runner replays that connection with StatefulTracer.Follow
	// before tracing the case.
	After string
	// Want is the expected Result.String(): "DNAT ip:port[,ip:port…]" (the
	// set of possible endpoints, in any order), "REJECT", "DROP" or "".
	Want string
	// Masq is whether the packet must be masqueraded (SNAT to the node).
	Masq bool
}

// normalizeWant sorts the endpoint list of a "DNAT a,b" expectation.
func normalizeWant(want string) (string, error) {
	rest, ok := strings.CutPrefix(want, "DNAT ")
	if !ok {
		return want, nil
	}
	var eps []netip.AddrPort
	for _, s := range strings.Split(rest, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			return "", fmt.Errorf("bad endpoint %q in %q: %w", s, want, err)
		}
		eps = append(eps, ap)
	}
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	eps = slices.Compact(eps)
	out := make([]string, len(eps))
	for i, ep := range eps {
		out[i] = ep.String()
	}
	return "DNAT " + strings.Join(out, ","), nil
}

// Run traces every case through tr as a subtest and checks the outcome and
// the masquerade flag. A tracer error (for instance a rule the tracer cannot
// evaluate) fails the case: the table must never pass by understanding less.
func Run(t *testing.T, tr Tracer, cases []Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(tc.Src), netip.MustParseAddr(tc.Dst)
			proto := tc.Proto
			if proto == "" {
				proto = "tcp"
			}
			want, err := normalizeWant(tc.Want)
			if err != nil {
				t.Fatal(err)
			}
			if st, ok := tr.(StatefulTracer); ok {
				st.Reset()
			}
			if tc.After != "" {
				st, ok := tr.(StatefulTracer)
				if !ok {
					t.Fatalf("case needs session-affinity state but %T is not a StatefulTracer", tr)
				}
				if err := st.Follow(src, dst, proto, tc.Port, netip.MustParseAddrPort(tc.After)); err != nil {
					t.Fatalf("replaying the earlier connection to %s: %v", tc.After, err)
				}
			}
			res, err := tr.Trace(src, dst, proto, tc.Port)
			if err != nil {
				t.Fatalf("trace %s -> %s %s/%d: %v", src, dst, proto, tc.Port, err)
			}
			got := res.String()
			if got != want || res.Masquerade() != tc.Masq {
				var trail []string
				for i, p := range res.Paths {
					trail = append(trail, fmt.Sprintf("path %d (%s %v masq=%v):\n  %s",
						i, p.Verdict, p.Endpoint, p.Masquerade, strings.Join(p.Trail, "\n  ")))
				}
				t.Errorf("%s -> %s %s/%d:\n got  %q masq=%v\n want %q masq=%v\n%s",
					src, dst, proto, tc.Port, got, res.Masquerade(), want, tc.Masq, strings.Join(trail, "\n"))
			}
		})
	}
}
