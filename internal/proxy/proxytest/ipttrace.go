package proxytest

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// IPTTracer is the Tracer of the iptables backend. It parses iptables-save
// text (every table of one family) and evaluates it the way the kernel
// would for the first packet of a new connection:
//
//   - Hooks run their tables in netfilter priority order (raw, mangle,
//     nat for destination NAT, filter, nat for source NAT). A packet from a
//     node address is locally generated: OUTPUT, POSTROUTING, then, if it
//     is addressed to the node, PREROUTING and INPUT. Any other packet
//     takes PREROUTING, then INPUT (to a node address) or FORWARD and
//     POSTROUTING.
//   - The nat table is consulted only while the connection has no NAT
//     binding of that kind: after the nat chains of PREROUTING/OUTPUT ran
//     once, a looped-back packet skips them. DNAT rewrites the destination
//     at once, so later hooks and the routing decision see the endpoint.
//   - ACCEPT, DNAT and MASQUERADE end the table's traversal at that hook;
//     DROP and REJECT end the packet; a built-in chain that falls off its
//     end applies its policy.
//   - "-m statistic --mode random" is a choice point (match or not): every
//     combination is explored and each complete walk is one Path.
//   - "-m recent --set" records the source in the named list along the
//     path; Follow commits the records of the path that reached an
//     endpoint, and "--rcheck" matches committed records (the time
//     window is not modelled).
//
// Every option is parsed; an option the tracer does not know is an error
// (at NewIPTTracer), so a case can never pass because a match was skipped.
// The packet is new: "--ctstate NEW" matches, other states do not.
type IPTTracer struct {
	tables  map[string]map[string]*iptChain
	nodeIPs []netip.Addr
	recent  map[string][]netip.Addr
	// evaluated is the largest number of rules one path of the last Trace
	// evaluated.
	evaluated int
}

// RulesEvaluated returns how many rules the costliest path of the last
// Trace evaluated (matched or not), over all hooks and tables: the cost
// the kernel pays for the first packet of that connection.
func (t *IPTTracer) RulesEvaluated() int { return t.evaluated }

var _ StatefulTracer = (*IPTTracer)(nil)

type iptChain struct {
	name    string
	builtin bool
	policy  string
	rules   []*iptRule
}

// iptRule is one parsed rule.
type iptRule struct {
	text  string
	conds []iptCond
	// target is a chain name or a built-in target; "" for none.
	target string
	// Target options.
	toDest     netip.AddrPort
	markOr     uint32
	markClear  uint32
	markXor    uint32
	hasMarkXor bool
}

// iptCond is one match of a rule. choice marks a statistic match.
type iptCond struct {
	neg    bool
	kind   string // "src", "dst", "proto", "dport", "ctstate", "mark", "srctype", "dsttype", "statistic", "rcheck", "set"
	prefix netip.Prefix
	str    string
	lo, hi int
	mark   [2]uint32
}

// NewIPTTracer parses save (iptables-save or ip6tables-save output of the
// filter and nat tables, possibly more). nodeIPs are the node's own
// addresses: "--src-type/--dst-type LOCAL" match them (and loopback) and
// packets from them are locally generated.
func NewIPTTracer(nodeIPs []netip.Addr, save string) (*IPTTracer, error) {
	t := &IPTTracer{tables: map[string]map[string]*iptChain{}, nodeIPs: nodeIPs, recent: map[string][]netip.Addr{}}
	var cur map[string]*iptChain
	for i, l := range strings.Split(save, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || l == "COMMIT":
		case strings.HasPrefix(l, "*"):
			cur = map[string]*iptChain{}
			t.tables[l[1:]] = cur
		case cur == nil:
			return nil, fmt.Errorf("ipttrace: line %d outside a table: %q", i+1, l)
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("ipttrace: line %d: bad chain line %q", i+1, l)
			}
			cur[f[0]] = &iptChain{name: f[0], builtin: f[1] != "-", policy: f[1]}
		case strings.HasPrefix(l, "-A "):
			chain, rest, _ := strings.Cut(l[3:], " ")
			c := cur[chain]
			if c == nil {
				return nil, fmt.Errorf("ipttrace: line %d: rule for undeclared chain %s", i+1, chain)
			}
			r, err := parseIPTRule(rest)
			if err != nil {
				return nil, fmt.Errorf("ipttrace: line %d: %q: %w", i+1, l, err)
			}
			c.rules = append(c.rules, r)
		default:
			return nil, fmt.Errorf("ipttrace: line %d: unexpected %q", i+1, l)
		}
	}
	for tn, chains := range t.tables {
		for _, c := range chains {
			for _, r := range c.rules {
				if r.target != "" && !iptBuiltinTargets[r.target] && chains[r.target] == nil {
					return nil, fmt.Errorf("ipttrace: %s/%s: jump to unknown chain %q", tn, c.name, r.target)
				}
			}
		}
	}
	return t, nil
}

var iptBuiltinTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true, "DNAT": true, "MASQUERADE": true, "MARK": true,
}

// splitQuoted splits on spaces, keeping "quoted strings" whole.
func splitQuoted(s string) []string {
	var out []string
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return out
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return append(out, s)
			}
			out = append(out, s[:end+2])
			s = s[end+2:]
			continue
		}
		w, r, _ := strings.Cut(s, " ")
		out = append(out, w)
		s = r
	}
}

func parsePrefixArg(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseUint32(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 0, 32)
	return uint32(v), err
}

// parseIPTRule parses the text after "-A CHAIN ".
func parseIPTRule(text string) (*iptRule, error) {
	r := &iptRule{text: text}
	toks := splitQuoted(text)
	neg := false
	module := ""
	inTarget := false
	arg := func(i *int) (string, error) {
		if *i+1 >= len(toks) {
			return "", fmt.Errorf("%s needs an argument", toks[*i])
		}
		*i++
		return toks[*i], nil
	}
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		if tok == "!" {
			neg = true
			continue
		}
		c := iptCond{neg: neg}
		neg = false
		var err error
		var v string
		switch {
		case tok == "-s" || tok == "-d":
			if v, err = arg(&i); err == nil {
				c.kind = map[string]string{"-s": "src", "-d": "dst"}[tok]
				c.prefix, err = parsePrefixArg(v)
				r.conds = append(r.conds, c)
			}
		case tok == "-p":
			if v, err = arg(&i); err == nil {
				c.kind, c.str = "proto", v
				r.conds = append(r.conds, c)
			}
		case tok == "-m":
			module, err = arg(&i)
			switch module {
			case "comment", "tcp", "udp", "sctp", "conntrack", "mark", "addrtype", "statistic", "recent":
			default:
				err = fmt.Errorf("match module %q not modelled", module)
			}
		case tok == "-j":
			r.target, err = arg(&i)
			inTarget = true
		case inTarget:
			err = r.parseTargetOption(tok, &i, arg)
		default:
			err = parseMatchOption(r, module, tok, c, &i, arg)
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

func parseMatchOption(r *iptRule, module, tok string, c iptCond, i *int, arg func(*int) (string, error)) error {
	v := ""
	needArg := map[string]bool{"--comment": true, "--dport": true, "--ctstate": true, "--mark": true, "--src-type": true,
		"--dst-type": true, "--mode": true, "--probability": true, "--seconds": true, "--name": true, "--mask": true}
	if needArg[tok] {
		var err error
		if v, err = arg(i); err != nil {
			return err
		}
	}
	switch {
	case module == "comment" && tok == "--comment":
	case (module == "tcp" || module == "udp" || module == "sctp") && tok == "--dport":
		lo, hi, ok := strings.Cut(v, ":")
		var err error
		if c.lo, err = strconv.Atoi(lo); err != nil {
			return err
		}
		c.hi = c.lo
		if ok {
			if c.hi, err = strconv.Atoi(hi); err != nil {
				return err
			}
		}
		c.kind = "dport"
		r.conds = append(r.conds, c)
	case module == "conntrack" && tok == "--ctstate":
		c.kind, c.str = "ctstate", v
		r.conds = append(r.conds, c)
	case module == "mark" && tok == "--mark":
		val, mask, ok := strings.Cut(v, "/")
		x, err := parseUint32(val)
		if err != nil {
			return err
		}
		m := ^uint32(0)
		if ok {
			if m, err = parseUint32(mask); err != nil {
				return err
			}
		}
		c.kind, c.mark = "mark", [2]uint32{x, m}
		r.conds = append(r.conds, c)
	case module == "addrtype" && (tok == "--src-type" || tok == "--dst-type"):
		if v != "LOCAL" {
			return fmt.Errorf("addrtype %s not modelled", v)
		}
		c.kind = map[string]string{"--src-type": "srctype", "--dst-type": "dsttype"}[tok]
		r.conds = append(r.conds, c)
	case module == "statistic" && tok == "--mode":
		if v != "random" {
			return fmt.Errorf("statistic mode %s not modelled", v)
		}
	case module == "statistic" && tok == "--probability":
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p <= 0 || p >= 1 {
			return fmt.Errorf("bad probability %q", v)
		}
		c.kind = "statistic"
		r.conds = append(r.conds, c)
	case module == "recent" && tok == "--rcheck":
		c.kind = "rcheck"
		r.conds = append(r.conds, c)
	case module == "recent" && tok == "--set":
		c.kind = "set"
		r.conds = append(r.conds, c)
	case module == "recent" && tok == "--name":
		// Applies to the rcheck/set of this rule.
		for j := range r.conds {
			if r.conds[j].kind == "rcheck" || r.conds[j].kind == "set" {
				r.conds[j].str = v
			}
		}
	case module == "recent" && (tok == "--seconds" || tok == "--mask" || tok == "--reap" || tok == "--rsource"):
		// The time window is not modelled; the mask must be the full one.
		if tok == "--mask" && v != "255.255.255.255" && v != "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" {
			return fmt.Errorf("recent --mask %s not modelled", v)
		}
	default:
		return fmt.Errorf("option %s (module %q) not modelled", tok, module)
	}
	return nil
}

func (r *iptRule) parseTargetOption(tok string, i *int, arg func(*int) (string, error)) error {
	switch {
	case r.target == "DNAT" && tok == "--to-destination":
		v, err := arg(i)
		if err != nil {
			return err
		}
		r.toDest, err = netip.ParseAddrPort(v)
		return err
	case r.target == "MARK" && (tok == "--or-mark" || tok == "--xor-mark"):
		v, err := arg(i)
		if err != nil {
			return err
		}
		x, err := parseUint32(v)
		if tok == "--or-mark" {
			r.markOr = x
		} else {
			r.markXor, r.hasMarkXor = x, true
		}
		return err
	case r.target == "MARK" && tok == "--set-xmark":
		// What the kernel reports for --or-mark (v/v) and --xor-mark (v/0):
		// mark = (mark &^ mask) ^ value.
		v, err := arg(i)
		if err != nil {
			return err
		}
		val, mask, ok := strings.Cut(v, "/")
		x, err := parseUint32(val)
		if err != nil {
			return err
		}
		m := ^uint32(0)
		if ok {
			if m, err = parseUint32(mask); err != nil {
				return err
			}
		}
		r.markClear, r.markXor, r.hasMarkXor = m, x, true
		return nil
	case r.target == "MASQUERADE" && tok == "--random-fully":
		return nil
	case r.target == "REJECT" && tok == "--reject-with":
		_, err := arg(i)
		return err
	}
	return fmt.Errorf("target option %s of %s not modelled", tok, r.target)
}

// Reset forgets the committed recent records.
func (t *IPTTracer) Reset() { t.recent = map[string][]netip.Addr{} }

// Trace implements Tracer.
func (t *IPTTracer) Trace(src, dst netip.Addr, proto string, port int) (Result, error) {
	runs, err := t.explore(src, dst, proto, port)
	if err != nil {
		return Result{}, err
	}
	var res Result
	t.evaluated = 0
	for _, r := range runs {
		t.evaluated = max(t.evaluated, r.evaluated)
		res.Paths = append(res.Paths, Path{Verdict: r.verdict, Endpoint: r.dnatTo, Masquerade: r.masq, Trail: r.trail})
	}
	return res, nil
}

// Follow implements StatefulTracer: it commits the recent records of the
// path that ends at ep.
func (t *IPTTracer) Follow(src, dst netip.Addr, proto string, port int, ep netip.AddrPort) error {
	runs, err := t.explore(src, dst, proto, port)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.verdict == DNAT && r.dnatTo == ep {
			for _, u := range r.sets {
				t.recent[u] = append(t.recent[u], src)
			}
			return nil
		}
	}
	return fmt.Errorf("ipttrace: no path from %s to %s %s/%d reaches %s", src, dst, proto, port, ep)
}

func (t *IPTTracer) explore(src, dst netip.Addr, proto string, port int) ([]*iptRun, error) {
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("ipttrace: unsupported protocol %q", proto)
	}
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("ipttrace: mixed address families %s -> %s", src, dst)
	}
	var runs []*iptRun
	var script []int
	for {
		r := &iptRun{t: t, script: script, src: src, dst: dst, proto: proto, dport: port}
		if err := r.walk(); err != nil {
			return nil, err
		}
		runs = append(runs, r)
		if len(runs) > maxPaths {
			return nil, fmt.Errorf("ipttrace: more than %d paths", maxPaths)
		}
		i := len(r.taken) - 1
		for i >= 0 && r.taken[i]+1 >= 2 {
			i--
		}
		if i < 0 {
			return runs, nil
		}
		script = append(slices.Clone(r.taken[:i]), r.taken[i]+1)
	}
}

// iptRun is one walk of one packet with one sequence of statistic choices.
type iptRun struct {
	t             *IPTTracer
	script, taken []int
	src, dst      netip.Addr
	proto         string
	dport         int
	mark          uint32
	verdict       Verdict
	dnatTo        netip.AddrPort
	masq          bool
	dnatDone      bool // destination NAT binding set
	snatDone      bool // source NAT binding set
	sets          []string
	evaluated     int
	trail         []string
	depth         int
}

func (r *iptRun) choose() int {
	c := 0
	if i := len(r.taken); i < len(r.script) {
		c = r.script[i]
	}
	r.taken = append(r.taken, c)
	return c
}

func (r *iptRun) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(r.t.nodeIPs, a)
}

// hookTables lists the tables a hook runs, in priority order; "nat" at
// PREROUTING/OUTPUT is destination NAT, at INPUT/POSTROUTING source NAT.
var hookTables = map[string][]string{
	"PREROUTING":  {"raw", "mangle", "nat"},
	"INPUT":       {"mangle", "filter", "nat"},
	"FORWARD":     {"mangle", "filter"},
	"OUTPUT":      {"raw", "mangle", "nat", "filter"},
	"POSTROUTING": {"mangle", "nat"},
}

func (r *iptRun) walk() error {
	var hooks []string
	if r.isLocal(r.src) {
		hooks = []string{"OUTPUT", "POSTROUTING"}
	} else {
		hooks = []string{"PREROUTING"}
	}
	for i := 0; i < len(hooks); i++ {
		stop, err := r.runHook(hooks[i])
		if err != nil || stop {
			return err
		}
		switch {
		case hooks[i] == "PREROUTING" && i == 0:
			if r.isLocal(r.dst) {
				hooks = append(hooks, "INPUT")
			} else {
				hooks = append(hooks, "FORWARD", "POSTROUTING")
			}
		case hooks[i] == "POSTROUTING" && r.isLocal(r.src) && r.isLocal(r.dst):
			// Looped back to the node: destination NAT is bound already.
			hooks = append(hooks, "PREROUTING", "INPUT")
		}
	}
	return nil
}

func (r *iptRun) runHook(hook string) (stop bool, err error) {
	for _, tn := range hookTables[hook] {
		chains := r.t.tables[tn]
		if chains == nil {
			continue
		}
		c := chains[hook]
		if c == nil {
			continue
		}
		if tn == "nat" && (hook == "PREROUTING" || hook == "OUTPUT") && r.dnatDone {
			continue
		}
		if tn == "nat" && (hook == "INPUT" || hook == "POSTROUTING") && r.snatDone {
			continue
		}
		v, err := r.runChain(chains, c)
		if err != nil {
			return true, err
		}
		if v == "" || v == "RETURN" {
			v = c.policy
			if v == "DROP" {
				r.trail = append(r.trail, tn+"/"+hook+": policy DROP")
			}
		}
		if tn == "nat" {
			if hook == "PREROUTING" || hook == "OUTPUT" {
				r.dnatDone = true
			} else {
				r.snatDone = true
			}
		}
		switch v {
		case "DROP":
			r.verdict = Drop
			return true, nil
		case "REJECT":
			r.verdict = Reject
			return true, nil
		}
	}
	return false, nil
}

// runChain runs c's rules; the result is a terminating target ("ACCEPT",
// "DROP", "REJECT", "DNAT", "MASQUERADE") or "" when c ran off its end
// or returned.
func (r *iptRun) runChain(chains map[string]*iptChain, c *iptChain) (string, error) {
	r.depth++
	defer func() { r.depth-- }()
	if r.depth > maxDepth {
		return "", fmt.Errorf("ipttrace: chain recursion deeper than %d at %s", maxDepth, c.name)
	}
	for _, rule := range c.rules {
		r.evaluated++
		ok, err := r.matches(rule)
		if err != nil {
			return "", fmt.Errorf("ipttrace: %s: %q: %w", c.name, rule.text, err)
		}
		if !ok {
			continue
		}
		r.trail = append(r.trail, c.name+": "+rule.text)
		switch rule.target {
		case "":
			continue
		case "RETURN":
			return "", nil
		case "ACCEPT", "DROP", "REJECT":
			return rule.target, nil
		case "MARK":
			r.mark |= rule.markOr
			r.mark &^= rule.markClear
			if rule.hasMarkXor {
				r.mark ^= rule.markXor
			}
			continue
		case "DNAT":
			if r.dnatTo.IsValid() {
				return "", fmt.Errorf("ipttrace: second DNAT in %s", c.name)
			}
			r.dnatTo = rule.toDest
			r.dst, r.dport = rule.toDest.Addr(), int(rule.toDest.Port())
			r.verdict = DNAT
			return "DNAT", nil
		case "MASQUERADE":
			r.masq = true
			return "MASQUERADE", nil
		}
		sub, err := r.runChain(chains, chains[rule.target])
		if err != nil {
			return "", err
		}
		if sub != "" {
			return sub, nil
		}
	}
	return "", nil
}

func (r *iptRun) matches(rule *iptRule) (bool, error) {
	var sets []string
	for _, c := range rule.conds {
		var ok bool
		switch c.kind {
		case "src":
			ok = c.prefix.Contains(r.src)
		case "dst":
			ok = c.prefix.Contains(r.dst)
		case "proto":
			ok = c.str == r.proto
		case "dport":
			ok = r.dport >= c.lo && r.dport <= c.hi
		case "ctstate":
			// A new connection's first packet; after DNAT its state is
			// still NEW (and DNAT), never INVALID/RELATED/ESTABLISHED.
			for _, s := range strings.Split(c.str, ",") {
				ok = ok || s == "NEW" || (s == "DNAT" && r.dnatTo.IsValid())
			}
		case "mark":
			ok = r.mark&c.mark[1] == c.mark[0]
		case "srctype":
			ok = r.isLocal(r.src)
		case "dsttype":
			ok = r.isLocal(r.dst)
		case "statistic":
			ok = r.choose() == 0
		case "rcheck":
			ok = slices.Contains(r.t.recent[c.str], r.src)
		case "set":
			sets = append(sets, c.str)
			ok = true
		default:
			return false, fmt.Errorf("match %q not modelled", c.kind)
		}
		if c.neg {
			ok = !ok
		}
		if !ok {
			return false, nil
		}
	}
	r.sets = append(r.sets, sets...)
	return true, nil
}
