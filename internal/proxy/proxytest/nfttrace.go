package proxytest

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// NFTTracer is the Tracer of the nftables backend. It evaluates the rules
// held by one or more knftables.Fake the way the kernel would for the first
// packet of a new connection:
//
//   - Base chains of every table whose family fits the packet (ip or inet
//     for IPv4, ip6 or inet for IPv6) run hook by hook, ordered by priority.
//     A packet from a node address is locally generated: output,
//     postrouting, then (if it stays on the node) prerouting and input.
//     Any other packet takes prerouting, then input (destination is a node
//     address) or forward and postrouting.
//   - NAT chains run as in nf_nat: the first nat chain of a hook that
//     performs dnat/snat/masquerade sets the binding and later nat chains of
//     the same manipulation are skipped; prerouting/output do destination
//     NAT, postrouting/input source NAT. A dnat rewrites the destination at
//     once, so later chains (and the routing decision) see the endpoint.
//   - "numgen random" is a choice point: every choice is explored, and each
//     complete walk is one Path of the Result.
//   - Dynamic sets ("update @set { ip saddr }") are remembered per path;
//     Follow commits the updates of the path that reached a given endpoint,
//     which is how session affinity is modelled.
//
// Rules are tokenized and interpreted, not regex-matched against one
// backend's spelling: the subset of the nft language understood is listed in
// nftexpr.go, and anything outside it is an error, so a case can never pass
// because the tracer skipped a rule it did not understand. Each packet is
// the first of its connection: "ct state" is new and "ct status" is dnat
// only after a dnat.
type NFTTracer struct {
	fakes   []*knftables.Fake
	nodeIPs []netip.Addr
	// dyn holds the committed dynamic-set elements, keyed by setKey.
	dyn map[string][][]string
}

var _ StatefulTracer = (*NFTTracer)(nil)

// NewNFTTracer returns a tracer over the tables of fakes. nodeIPs are the
// node's own addresses: "fib daddr type local" matches them (and loopback),
// and packets from them are locally generated.
func NewNFTTracer(nodeIPs []netip.Addr, fakes ...*knftables.Fake) *NFTTracer {
	return &NFTTracer{fakes: fakes, nodeIPs: nodeIPs, dyn: map[string][][]string{}}
}

// Reset forgets the committed dynamic-set elements.
func (t *NFTTracer) Reset() { t.dyn = map[string][][]string{} }

// Trace implements Tracer.
func (t *NFTTracer) Trace(src, dst netip.Addr, proto string, port int) (Result, error) {
	runs, err := t.explore(src, dst, proto, port)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, r := range runs {
		res.Paths = append(res.Paths, r.path())
	}
	return res, nil
}

// Follow implements StatefulTracer: it commits the dynamic-set updates of
// the path that ends at ep.
func (t *NFTTracer) Follow(src, dst netip.Addr, proto string, port int, ep netip.AddrPort) error {
	runs, err := t.explore(src, dst, proto, port)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.verdict == DNAT && r.dnatTo == ep {
			for _, u := range r.updates {
				t.dyn[u.set] = append(t.dyn[u.set], u.elem)
			}
			return nil
		}
	}
	return fmt.Errorf("nfttrace: no path from %s to %s %s/%d reaches %s", src, dst, proto, port, ep)
}

// maxPaths bounds the exploration of choice points.
const maxPaths = 4096

// explore walks the packet once per combination of choices.
func (t *NFTTracer) explore(src, dst netip.Addr, proto string, port int) ([]*run, error) {
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("nfttrace: unsupported protocol %q", proto)
	}
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("nfttrace: mixed address families %s -> %s", src, dst)
	}
	chains, err := t.baseChains(src.Is4())
	if err != nil {
		return nil, err
	}
	var runs []*run
	var script []int
	for {
		r := &run{
			t: t, chains: chains, script: script,
			src: src, dst: dst, proto: proto, dport: port, sport: 40000,
		}
		if err := r.walk(); err != nil {
			return nil, err
		}
		runs = append(runs, r)
		if len(runs) > maxPaths {
			return nil, fmt.Errorf("nfttrace: more than %d paths", maxPaths)
		}
		// Depth-first: advance the last choice that has alternatives left.
		i := len(r.taken) - 1
		for i >= 0 && r.taken[i]+1 >= r.limits[i] {
			i--
		}
		if i < 0 {
			return runs, nil
		}
		script = append(slices.Clone(r.taken[:i]), r.taken[i]+1)
	}
}

// baseChain is a chain attached to a hook.
type baseChain struct {
	tbl      *tableRef
	chain    *knftables.FakeChain
	hook     knftables.BaseChainHook
	nat      bool
	priority int
}

// tableRef identifies a table for set lookups.
type tableRef struct {
	family knftables.Family
	table  *knftables.FakeTable
}

func (tr *tableRef) setKey(name string) string {
	return string(tr.family) + " " + tr.table.Name + " " + name
}

// baseChains lists the base chains that see packets of the given family.
func (t *NFTTracer) baseChains(v4 bool) ([]baseChain, error) {
	var out []baseChain
	for _, f := range t.fakes {
		f.RLock()
		for fam, tables := range f.Tables {
			if !(fam == knftables.InetFamily || (v4 && fam == knftables.IPv4Family) || (!v4 && fam == knftables.IPv6Family)) {
				continue
			}
			for _, tbl := range tables {
				ref := &tableRef{family: fam, table: tbl}
				for _, ch := range tbl.Chains {
					if ch.Hook == nil {
						continue
					}
					switch *ch.Hook {
					case knftables.PreroutingHook, knftables.InputHook, knftables.ForwardHook,
						knftables.OutputHook, knftables.PostroutingHook:
					default:
						f.RUnlock()
						return nil, fmt.Errorf("nfttrace: chain %s: hook %s not modelled", ch.Name, *ch.Hook)
					}
					prio := 0
					if ch.Priority != nil {
						p, err := knftables.ParsePriority(fam, string(*ch.Priority))
						if err != nil {
							f.RUnlock()
							return nil, fmt.Errorf("nfttrace: chain %s: %w", ch.Name, err)
						}
						prio = p
					}
					out = append(out, baseChain{
						tbl: ref, chain: ch, hook: *ch.Hook, priority: prio,
						nat: ch.Type != nil && *ch.Type == knftables.NATType,
					})
				}
			}
		}
		f.RUnlock()
	}
	slices.SortFunc(out, func(a, b baseChain) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority),
			cmp.Compare(a.tbl.setKey(a.chain.Name), b.tbl.setKey(b.chain.Name)))
	})
	return out, nil
}

// dynUpdate is one element added to a dynamic set along a path.
type dynUpdate struct {
	set  string
	elem []string
}

// run is one walk of one packet with one sequence of choices.
type run struct {
	t      *NFTTracer
	chains []baseChain

	// script are the choices to make; taken/limits record the choices made
	// and how many alternatives each had.
	script, taken, limits []int

	src, dst     netip.Addr
	proto        string
	sport, dport int
	mark, ctmark uint64

	verdict Verdict
	dnatTo  netip.AddrPort
	masq    bool
	// natDone records, per manipulation ("dst", "src"), that the NAT
	// binding is set and further nat chains of that kind are skipped.
	natDone map[string]bool
	updates []dynUpdate
	trail   []string
	depth   int
}

func (r *run) path() Path {
	return Path{Verdict: r.verdict, Endpoint: r.dnatTo, Masquerade: r.masq, Trail: r.trail}
}

// choose returns the choice for a point with n alternatives.
func (r *run) choose(n int) int {
	c := 0
	if i := len(r.taken); i < len(r.script) {
		c = r.script[i]
	}
	r.taken = append(r.taken, c)
	r.limits = append(r.limits, n)
	return c
}

// isLocal reports whether a is one of the node's addresses.
func (r *run) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(r.t.nodeIPs, a)
}

// walk sends the packet through the hooks (see NFTTracer).
func (r *run) walk() error {
	r.natDone = map[string]bool{}
	var hooks []knftables.BaseChainHook
	switch {
	case r.isLocal(r.src):
		hooks = []knftables.BaseChainHook{knftables.OutputHook, knftables.PostroutingHook}
	default:
		hooks = []knftables.BaseChainHook{knftables.PreroutingHook}
	}
	for i := 0; i < len(hooks); i++ {
		stop, err := r.runHook(hooks[i])
		if err != nil || stop {
			return err
		}
		// Routing decisions, made on the (possibly DNATed) destination.
		switch {
		case hooks[i] == knftables.PreroutingHook && i == 0:
			if r.isLocal(r.dst) {
				hooks = append(hooks, knftables.InputHook)
			} else {
				hooks = append(hooks, knftables.ForwardHook, knftables.PostroutingHook)
			}
		case hooks[i] == knftables.PostroutingHook && r.isLocal(r.src) && r.isLocal(r.dst):
			// Sent by the node to itself: received again through
			// loopback (destination NAT is already bound, so nat
			// chains at prerouting are skipped).
			hooks = append(hooks, knftables.PreroutingHook, knftables.InputHook)
		}
	}
	return nil
}

// manip is the NAT manipulation a nat chain at hook performs.
func manip(hook knftables.BaseChainHook) string {
	if hook == knftables.PreroutingHook || hook == knftables.OutputHook {
		return "dst"
	}
	return "src"
}

// runHook runs the base chains of one hook; stop is true when the packet
// was dropped or rejected.
func (r *run) runHook(hook knftables.BaseChainHook) (stop bool, err error) {
	for _, bc := range r.chains {
		if bc.hook != hook {
			continue
		}
		if bc.nat && r.natDone[manip(hook)] {
			continue
		}
		v, err := r.runChain(bc.tbl, bc.chain)
		if err != nil {
			return true, err
		}
		if v.kind == vNAT && bc.nat {
			r.natDone[manip(hook)] = true
		}
		if v.kind == vNone && bc.chain.Policy != nil && *bc.chain.Policy == knftables.DropPolicy {
			v.kind = vDrop
			r.trail = append(r.trail, bc.chain.Name+": policy drop")
		}
		switch v.kind {
		case vDrop:
			r.verdict = Drop
			return true, nil
		case vReject:
			r.verdict = Reject
			return true, nil
		}
	}
	// A connection without a NAT binding gets a null binding after the hook.
	for _, bc := range r.chains {
		if bc.hook == hook && bc.nat {
			r.natDone[manip(hook)] = true
		}
	}
	return false, nil
}

// verdictKind is the outcome of a rule or a chain.
type verdictKind int

const (
	vNone   verdictKind = iota // no verdict: go on with the next rule
	vAccept                    // accept (ends the base chain)
	vDrop                      // drop
	vReject                    // reject
	vReturn                    // return to the calling chain
	vJump                      // jump to target, then continue
	vGoto                      // goto target, never come back
	vNAT                       // a NAT statement ran: accept, binding set
)

type verdict struct {
	kind   verdictKind
	target string
}

// maxDepth bounds chain recursion (nft itself allows 16 jump levels).
const maxDepth = 32

// runChain runs the rules of ch; vNone means the chain ended (or returned)
// without a verdict.
func (r *run) runChain(tbl *tableRef, ch *knftables.FakeChain) (verdict, error) {
	r.depth++
	defer func() { r.depth-- }()
	if r.depth > maxDepth {
		return verdict{}, fmt.Errorf("nfttrace: chain recursion deeper than %d at %s", maxDepth, ch.Name)
	}
	for _, rule := range ch.Rules {
		v, err := r.evalRule(tbl, ch.Name, rule.Rule)
		if err != nil {
			return verdict{}, err
		}
		switch v.kind {
		case vNone:
			continue
		case vReturn:
			return verdict{}, nil
		case vJump, vGoto:
			target := tbl.table.Chains[v.target]
			if target == nil {
				return verdict{}, fmt.Errorf("nfttrace: %s: jump to unknown chain %q", ch.Name, v.target)
			}
			sub, err := r.runChain(tbl, target)
			if err != nil {
				return verdict{}, err
			}
			if sub.kind != vNone || v.kind == vGoto {
				return sub, nil
			}
		default:
			return v, nil
		}
	}
	return verdict{}, nil
}

// evalRule evaluates one rule against the packet.
func (r *run) evalRule(tbl *tableRef, chain, rule string) (verdict, error) {
	e := &ruleEval{r: r, tbl: tbl, toks: tokenize(rule)}
	v, matched, err := e.eval()
	if err != nil {
		return verdict{}, fmt.Errorf("nfttrace: chain %s rule %q: %w", chain, rule, err)
	}
	if matched {
		r.trail = append(r.trail, chain+": "+rule)
	}
	return v, nil
}

// tokenize splits rule text into words; braces and commas are words of
// their own and quoted strings stay whole.
func tokenize(s string) []string {
	var toks []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			flush()
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				j = len(s) - i - 1
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 1
		case c == ' ' || c == '\t':
			flush()
		case c == '{' || c == '}' || c == ',':
			flush()
			toks = append(toks, string(c))
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return toks
}
