package proxytest

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The nft language subset NFTTracer understands. A rule is a sequence of
// matches and statements, evaluated left to right; the first failing match
// ends the rule.
//
// Selectors (concatenate with " . "):
//
//	ip|ip6 saddr|daddr          ip protocol, ip6 nexthdr, meta l4proto
//	th|tcp|udp|sctp sport|dport (tcp/udp/sctp also require that protocol)
//	meta nfproto, meta mark, mark, ct mark, ct state, ct status, ct direction
//	fib saddr|daddr type        numgen random mod N [offset M] (a choice point)
//	mark/ct mark may be followed by and|or|xor|&|'|'|^ VALUE
//
// Relations after a selector: a literal (address, prefix, a-b range, number,
// protocol name, comma list for ct state/status), "==", "!=", "<", "<=",
// ">", ">=", a named set "@name", an anonymous set "{ a, b . c }", or
// "vmap @name" / "vmap { k : verdict, … }" (no match when the key is absent).
//
// Statements: accept drop reject [with …] return continue jump goto counter
// log comment notrack, "[meta|ct] mark set EXPR", "update|add @set { EXPR
// [timeout T] }", masquerade [flags], snat to …, and dnat in the forms
//
//	dnat [ip|ip6] to ADDR[:PORT]
//	dnat ip|ip6 addr . port to ADDR . PORT
//	dnat [ip|ip6] [addr . port] to EXPR map @name|{ k : ADDR [. PORT], … }
//	dnat [ip|ip6] to EXPR map @name : EXPR map @name (address, then port)
//
// where EXPR may include "numgen random mod N".

// valKind is the type of a selector's value.
type valKind int

const (
	kAddr valKind = iota
	kProto
	kPort
	kNum // marks and numgen results
	kFlags
	kWord // fib types, nfproto, ct direction
)

type value struct {
	kind  valKind
	addr  netip.Addr
	num   uint64
	word  string
	flags []string
}

func (v value) String() string {
	switch v.kind {
	case kAddr:
		return v.addr.String()
	case kPort, kNum:
		return strconv.FormatUint(v.num, 10)
	case kFlags:
		return strings.Join(v.flags, ",")
	}
	return v.word
}

var protoNumbers = map[string]uint64{"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}

// ruleEval evaluates one tokenized rule.
type ruleEval struct {
	r    *run
	tbl  *tableRef
	toks []string
	pos  int
}

var errNoMatch = fmt.Errorf("no match")

func (e *ruleEval) peek() string {
	if e.pos < len(e.toks) {
		return e.toks[e.pos]
	}
	return ""
}

func (e *ruleEval) next() string {
	t := e.peek()
	e.pos++
	return t
}

func (e *ruleEval) expect(want string) error {
	if got := e.next(); got != want {
		return fmt.Errorf("expected %q, got %q", want, got)
	}
	return nil
}

// eval runs the rule. matched reports whether every match succeeded.
func (e *ruleEval) eval() (v verdict, matched bool, err error) {
	for e.pos < len(e.toks) {
		v, err := e.statement()
		if err == errNoMatch {
			return verdict{}, false, nil
		}
		if err != nil {
			return verdict{}, false, err
		}
		if v.kind != vNone {
			return v, true, nil
		}
	}
	return verdict{}, true, nil
}

// statement evaluates one match or statement.
func (e *ruleEval) statement() (verdict, error) {
	switch tok := e.peek(); tok {
	case "accept":
		e.next()
		return verdict{kind: vAccept}, nil
	case "drop":
		e.next()
		return verdict{kind: vDrop}, nil
	case "reject":
		e.pos = len(e.toks) // "with …" does not change the outcome
		return verdict{kind: vReject}, nil
	case "return":
		e.next()
		return verdict{kind: vReturn}, nil
	case "continue", "notrack":
		e.next()
		return verdict{}, nil
	case "jump", "goto":
		e.next()
		target := e.next()
		if target == "" {
			return verdict{}, fmt.Errorf("%s without a chain", tok)
		}
		k := vJump
		if tok == "goto" {
			k = vGoto
		}
		return verdict{kind: k, target: target}, nil
	case "counter":
		e.next()
		switch e.peek() {
		case "packets":
			e.pos += 4
		case "name":
			e.pos += 2
		}
		return verdict{}, nil
	case "log":
		e.next()
		for slices.Contains([]string{"prefix", "level", "group", "flags", "snaplen", "queue-threshold"}, e.peek()) {
			e.pos += 2
		}
		return verdict{}, nil
	case "comment":
		e.pos += 2
		return verdict{}, nil
	case "masquerade", "snat":
		// The source becomes the node's address: that is all the table
		// needs to know.
		e.pos = len(e.toks)
		e.r.masq = true
		return verdict{kind: vNAT}, nil
	case "dnat":
		e.next()
		return e.dnat()
	case "update", "add":
		e.next()
		return verdict{}, e.setUpdate()
	}
	vals, err := e.concat()
	if err != nil {
		return verdict{}, err
	}
	if e.peek() == "set" {
		e.next()
		return verdict{}, e.assign(vals)
	}
	return e.relation(vals)
}

// selector parses one selector and returns the packet's value for it;
// errNoMatch when a protocol-specific selector does not apply.
func (e *ruleEval) selector() (value, error) {
	r := e.r
	tok := e.next()
	switch tok {
	case "ip", "ip6":
		if (tok == "ip") != r.src.Is4() {
			return value{}, errNoMatch
		}
		switch f := e.next(); f {
		case "saddr":
			return value{kind: kAddr, addr: r.src}, nil
		case "daddr":
			return value{kind: kAddr, addr: r.dst}, nil
		case "protocol", "nexthdr":
			return value{kind: kProto, num: protoNumbers[r.proto]}, nil
		default:
			return value{}, fmt.Errorf("unsupported selector %s %s", tok, f)
		}
	case "th", "tcp", "udp", "sctp":
		if tok != "th" && tok != r.proto {
			return value{}, errNoMatch
		}
		switch f := e.next(); f {
		case "dport":
			return value{kind: kPort, num: uint64(r.dport)}, nil
		case "sport":
			return value{kind: kPort, num: uint64(r.sport)}, nil
		default:
			return value{}, fmt.Errorf("unsupported selector %s %s", tok, f)
		}
	case "mark":
		return e.binop(value{kind: kNum, num: r.mark})
	case "meta":
		switch f := e.next(); f {
		case "l4proto":
			return value{kind: kProto, num: protoNumbers[r.proto]}, nil
		case "mark":
			return e.binop(value{kind: kNum, num: r.mark})
		case "nfproto":
			w := "ipv4"
			if !r.src.Is4() {
				w = "ipv6"
			}
			return value{kind: kWord, word: w}, nil
		default:
			return value{}, fmt.Errorf("unsupported selector meta %s", f)
		}
	case "ct":
		switch f := e.next(); f {
		case "state":
			return value{kind: kFlags, flags: []string{"new"}}, nil
		case "status":
			var fl []string
			if r.dnatTo.IsValid() {
				fl = append(fl, "dnat")
			}
			return value{kind: kFlags, flags: fl}, nil
		case "direction":
			return value{kind: kWord, word: "original"}, nil
		case "mark":
			return e.binop(value{kind: kNum, num: r.ctmark})
		default:
			return value{}, fmt.Errorf("unsupported selector ct %s", f)
		}
	case "fib":
		var a netip.Addr
		switch f := e.next(); f {
		case "saddr":
			a = r.src
		case "daddr":
			a = r.dst
		default:
			return value{}, fmt.Errorf("unsupported selector fib %s", f)
		}
		if err := e.expect("type"); err != nil {
			return value{}, err
		}
		w := "unicast"
		if r.isLocal(a) {
			w = "local"
		}
		return value{kind: kWord, word: w}, nil
	case "numgen":
		n, off, err := e.numgen()
		if err != nil {
			return value{}, err
		}
		return value{kind: kNum, num: uint64(r.choose(n) + off)}, nil
	}
	return value{}, fmt.Errorf("unsupported selector %q", tok)
}

// numgen parses "random mod N [offset M]" (after "numgen").
func (e *ruleEval) numgen() (n, off int, err error) {
	if e.next() != "random" || e.next() != "mod" {
		return 0, 0, fmt.Errorf("only \"numgen random mod N\" is supported")
	}
	n, err = strconv.Atoi(e.next())
	if err != nil || n <= 0 {
		return 0, 0, fmt.Errorf("bad numgen modulus")
	}
	if e.peek() == "offset" {
		e.next()
		if off, err = strconv.Atoi(e.next()); err != nil {
			return 0, 0, fmt.Errorf("bad numgen offset")
		}
	}
	return n, off, nil
}

// binop applies an optional "and|or|xor VALUE" to a numeric value.
func (e *ruleEval) binop(v value) (value, error) {
	for {
		op := e.peek()
		switch op {
		case "and", "&", "or", "|", "xor", "^":
		default:
			return v, nil
		}
		e.next()
		n, err := parseNum(e.next())
		if err != nil {
			return value{}, err
		}
		switch op {
		case "and", "&":
			v.num &= n
		case "or", "|":
			v.num |= n
		default:
			v.num ^= n
		}
	}
}

func parseNum(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return n, nil
}

// concat parses "sel [. sel …]". errNoMatch (a protocol-specific selector
// that does not apply to the packet) ends the rule at once.
func (e *ruleEval) concat() ([]value, error) {
	var vals []value
	for {
		v, err := e.selector()
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		if e.peek() != "." {
			return vals, nil
		}
		e.next()
	}
}

// relation evaluates the comparison that follows a selector.
func (e *ruleEval) relation(vals []value) (verdict, error) {
	op := e.peek()
	switch op {
	case "vmap":
		e.next()
		elems, err := e.mapElements()
		if err != nil {
			return verdict{}, err
		}
		for _, el := range elems {
			if keyMatches(vals, el.key) {
				sub := &ruleEval{r: e.r, tbl: e.tbl, toks: tokenize(strings.Join(el.value, " . "))}
				return sub.statement()
			}
		}
		return verdict{}, errNoMatch
	case "==", "!=", "<", "<=", ">", ">=":
		e.next()
	default:
		op = "=="
	}
	var ok bool
	switch tok := e.peek(); {
	case strings.HasPrefix(tok, "@"), tok == "{":
		elems, err := e.setElements()
		if err != nil {
			return verdict{}, err
		}
		ok = slices.ContainsFunc(elems, func(k []string) bool { return keyMatches(vals, k) })
	default:
		if len(vals) != 1 {
			return verdict{}, fmt.Errorf("literal after a concatenation")
		}
		lit := e.next()
		if lit == "" {
			return verdict{}, fmt.Errorf("missing value after selector")
		}
		switch op {
		case "<", "<=", ">", ">=":
			n, err := parseNum(lit)
			if err != nil {
				return verdict{}, err
			}
			c := vals[0].num
			ok = (op == "<" && c < n) || (op == "<=" && c <= n) || (op == ">" && c > n) || (op == ">=" && c >= n)
		default:
			ok = matchLiteral(vals[0], lit)
		}
	}
	if op == "!=" {
		ok = !ok
	}
	if !ok {
		return verdict{}, errNoMatch
	}
	return verdict{}, nil
}

// keyMatches matches a concatenation against an element key.
func keyMatches(vals []value, key []string) bool {
	if len(vals) != len(key) {
		return false
	}
	for i := range vals {
		if !matchLiteral(vals[i], key[i]) {
			return false
		}
	}
	return true
}

// matchLiteral compares a value with one nft literal of its type.
func matchLiteral(v value, lit string) bool {
	lit = strings.TrimSpace(lit)
	switch v.kind {
	case kAddr:
		if lo, hi, ok := strings.Cut(lit, "-"); ok {
			a, err1 := netip.ParseAddr(lo)
			b, err2 := netip.ParseAddr(hi)
			return err1 == nil && err2 == nil && v.addr.Compare(a) >= 0 && v.addr.Compare(b) <= 0
		}
		if strings.Contains(lit, "/") {
			p, err := netip.ParsePrefix(lit)
			return err == nil && p.Contains(v.addr)
		}
		a, err := netip.ParseAddr(lit)
		return err == nil && a == v.addr
	case kProto:
		if n, ok := protoNumbers[lit]; ok {
			return n == v.num
		}
		n, err := strconv.ParseUint(lit, 10, 8)
		return err == nil && n == v.num
	case kPort, kNum:
		if lo, hi, ok := strings.Cut(lit, "-"); ok {
			a, err1 := strconv.ParseUint(lo, 0, 64)
			b, err2 := strconv.ParseUint(hi, 0, 64)
			return err1 == nil && err2 == nil && v.num >= a && v.num <= b
		}
		n, err := strconv.ParseUint(lit, 0, 64)
		return err == nil && n == v.num
	case kFlags:
		for _, f := range strings.Split(lit, ",") {
			if slices.Contains(v.flags, strings.TrimSpace(f)) {
				return true
			}
		}
		return false
	}
	return v.word == lit
}

// element is one set or map element as text.
type element struct {
	key, value []string
}

// setElements reads "@name" or "{ … }" and returns the element keys.
func (e *ruleEval) setElements() ([][]string, error) {
	tok := e.next()
	if name, ok := strings.CutPrefix(tok, "@"); ok {
		set := e.tbl.table.Sets[name]
		if set == nil {
			return nil, fmt.Errorf("unknown set %q", name)
		}
		var keys [][]string
		for _, el := range set.Elements {
			keys = append(keys, el.Key)
		}
		keys = append(keys, e.r.t.dyn[e.tbl.setKey(name)]...)
		for _, u := range e.r.updates {
			if u.set == e.tbl.setKey(name) {
				keys = append(keys, u.elem)
			}
		}
		return keys, nil
	}
	e.pos--
	elems, err := e.anonymous(false)
	if err != nil {
		return nil, err
	}
	keys := make([][]string, len(elems))
	for i, el := range elems {
		keys[i] = el.key
	}
	return keys, nil
}

// mapElements reads "@name" or "{ k : v, … }".
func (e *ruleEval) mapElements() ([]element, error) {
	tok := e.next()
	if name, ok := strings.CutPrefix(tok, "@"); ok {
		m := e.tbl.table.Maps[name]
		if m == nil {
			return nil, fmt.Errorf("unknown map %q", name)
		}
		out := make([]element, len(m.Elements))
		for i, el := range m.Elements {
			out[i] = element{key: el.Key, value: el.Value}
		}
		return out, nil
	}
	e.pos--
	return e.anonymous(true)
}

// anonymous reads "{ a . b , c : d … }".
func (e *ruleEval) anonymous(isMap bool) ([]element, error) {
	if err := e.expect("{"); err != nil {
		return nil, err
	}
	var out []element
	var words []string
	flush := func() error {
		if len(words) == 0 {
			return nil
		}
		var el element
		k, v := words, []string(nil)
		if i := slices.Index(words, ":"); i >= 0 {
			k, v = words[:i], words[i+1:]
		}
		if isMap != (v != nil) {
			return fmt.Errorf("malformed element %q", strings.Join(words, " "))
		}
		el.key = splitConcat(k)
		if v != nil {
			el.value = splitConcat(v)
		}
		out = append(out, el)
		words = nil
		return nil
	}
	for {
		tok := e.next()
		switch tok {
		case "":
			return nil, fmt.Errorf("unterminated {")
		case "}":
			return out, flush()
		case ",":
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			words = append(words, tok)
		}
	}
}

// splitConcat turns ["10.0.0.1", ".", "tcp"] into ["10.0.0.1", "tcp"] and
// keeps multi-word values (a verdict "goto chain") together.
func splitConcat(words []string) []string {
	var out []string
	var cur []string
	for _, w := range words {
		if w == "." {
			out = append(out, strings.Join(cur, " "))
			cur = nil
			continue
		}
		cur = append(cur, w)
	}
	return append(out, strings.Join(cur, " "))
}

// assign evaluates "[meta|ct] mark set EXPR" (the selector was already
// parsed into vals).
func (e *ruleEval) assign(vals []value) error {
	if len(vals) != 1 || vals[0].kind != kNum {
		return fmt.Errorf("only marks can be set")
	}
	target := e.toks[e.pos-2] // "mark" of "[meta|ct] mark set"
	isCT := e.pos >= 3 && e.toks[e.pos-3] == "ct"
	var v value
	if _, err := parseNum(e.peek()); err == nil {
		n, _ := parseNum(e.next())
		v = value{kind: kNum, num: n}
	} else {
		vs, err := e.concat()
		if err != nil {
			return err
		}
		v = vs[0]
	}
	if target != "mark" {
		return fmt.Errorf("unsupported assignment to %q", target)
	}
	if isCT {
		e.r.ctmark = v.num
	} else {
		e.r.mark = v.num
	}
	return nil
}

// setUpdate evaluates "@set { EXPR [timeout T] }" after update/add.
func (e *ruleEval) setUpdate() error {
	name, ok := strings.CutPrefix(e.next(), "@")
	if !ok {
		return fmt.Errorf("update/add needs @set")
	}
	if e.tbl.table.Sets[name] == nil && e.tbl.table.Maps[name] == nil {
		return fmt.Errorf("unknown set %q", name)
	}
	if err := e.expect("{"); err != nil {
		return err
	}
	vals, err := e.concat()
	if err != nil {
		return err
	}
	for e.peek() == "timeout" || e.peek() == "expires" || e.peek() == "counter" {
		if e.next() != "counter" {
			e.next()
		}
	}
	if err := e.expect("}"); err != nil {
		return err
	}
	elem := make([]string, len(vals))
	for i, v := range vals {
		elem[i] = v.String()
	}
	e.r.updates = append(e.r.updates, dynUpdate{set: e.tbl.setKey(name), elem: elem})
	return nil
}

// dnat evaluates the dnat statement (after "dnat").
func (e *ruleEval) dnat() (verdict, error) {
	if t := e.peek(); t == "ip" || t == "ip6" {
		e.next()
	}
	if e.peek() == "addr" {
		e.pos += 3 // addr . port
	}
	if err := e.expect("to"); err != nil {
		return verdict{}, err
	}
	var target []string
	switch tok := e.peek(); {
	case isSelectorStart(tok):
		var err error
		if target, err = e.lookup(); err != nil {
			return verdict{}, err
		}
		if target == nil {
			// A failed lookup breaks the rule (NFT_BREAK): no match.
			return verdict{}, errNoMatch
		}
		if e.peek() == ":" {
			// ": EXPR map @name": the port from a second lookup.
			e.next()
			port, err := e.lookup()
			if err != nil {
				return verdict{}, err
			}
			if port == nil {
				return verdict{}, errNoMatch // as for the address
			}
			target = append(target[:1:1], port...)
		}
	default:
		target = []string{e.next()}
		if e.peek() == "." {
			e.next()
			target = append(target, e.next())
		}
	}
	ap, err := parseTarget(target, e.r.dport)
	if err != nil {
		return verdict{}, err
	}
	e.pos = len(e.toks) // flags (persistent, random …) do not matter here
	e.r.dst = ap.Addr()
	e.r.dport = int(ap.Port())
	e.r.dnatTo = ap
	e.r.verdict = DNAT
	return verdict{kind: vNAT}, nil
}

// lookup evaluates "EXPR map @name|{ … }" and returns the value found, or
// nil.
func (e *ruleEval) lookup() ([]string, error) {
	vals, err := e.concat()
	if err != nil {
		return nil, err
	}
	if err := e.expect("map"); err != nil {
		return nil, err
	}
	elems, err := e.mapElements()
	if err != nil {
		return nil, err
	}
	for _, el := range elems {
		if keyMatches(vals, el.key) {
			return el.value, nil
		}
	}
	return nil, nil
}

func isSelectorStart(tok string) bool {
	switch tok {
	case "ip", "ip6", "th", "tcp", "udp", "sctp", "meta", "mark", "ct", "numgen", "fib":
		return true
	}
	return false
}

// parseTarget parses a DNAT target ["ip:port"], ["ip"], ["ip", "port"].
func parseTarget(t []string, dport int) (netip.AddrPort, error) {
	if len(t) == 2 {
		a, err := netip.ParseAddr(t[0])
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("bad dnat address %q", t[0])
		}
		p, err := strconv.ParseUint(t[1], 10, 16)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("bad dnat port %q", t[1])
		}
		return netip.AddrPortFrom(a, uint16(p)), nil
	}
	if len(t) != 1 {
		return netip.AddrPort{}, fmt.Errorf("bad dnat target %q", t)
	}
	if ap, err := netip.ParseAddrPort(t[0]); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(t[0], "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad dnat target %q", t[0])
	}
	return netip.AddrPortFrom(a, uint16(dport)), nil
}
