package iptables

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// builtinChains are the built-in chains of the tables the backend uses, in
// iptables-save order.
var builtinChains = map[string][]string{
	tableFilter: {"INPUT", "FORWARD", "OUTPUT"},
	tableNAT:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// builtinTargets are jump targets that are not chains.
var builtinTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true, "DNAT": true,
	"SNAT": true, "MASQUERADE": true, "MARK": true, "LOG": true,
}

// Fake is an in-memory Interface with iptables-restore --noflush semantics:
// a chain line creates or flushes a chain; -A, -I, -D, -F and -X edit it;
// COMMIT checks that every jump target exists and that deleted chains were
// empty and unreferenced, and applies the table atomically (an error
// leaves the table unchanged, as the kernel does). Save renders
// iptables-save text. Rules are stored as written (the backend writes
// iptables-save's canonical spelling).
type Fake struct {
	mu     sync.Mutex // guards the fields below
	tables map[string]*fakeTable
	// Restores records every payload, for tests.
	Restores []string
}

var _ Interface = (*Fake)(nil)

type fakeTable struct {
	chains map[string]*fakeChain
	owned  map[string]bool // chains copied by this transaction
}

type fakeChain struct {
	builtin bool
	policy  string
	rules   []string
	targets []string // ruleTarget of each rule
}

// NewFake returns an empty Fake (built-in chains of filter and nat exist,
// with policy ACCEPT).
func NewFake() *Fake {
	f := &Fake{tables: map[string]*fakeTable{}}
	for t, chains := range builtinChains {
		ft := &fakeTable{chains: map[string]*fakeChain{}}
		for _, c := range chains {
			ft.chains[c] = &fakeChain{builtin: true, policy: "ACCEPT"}
		}
		f.tables[t] = ft
	}
	return f
}

// clone copies the chain map; chains are copied when first modified
// (owned tracks which ones the clone may modify in place).
func (t *fakeTable) clone() *fakeTable {
	return &fakeTable{chains: maps.Clone(t.chains), owned: map[string]bool{}}
}

// mutable returns chain name for modification, copying it first.
func (t *fakeTable) mutable(name string) *fakeChain {
	c := t.chains[name]
	if c == nil || t.owned[name] {
		return c
	}
	cc := *c
	cc.rules = slices.Clone(c.rules)
	cc.targets = slices.Clone(c.targets)
	t.chains[name] = &cc
	t.owned[name] = true
	return &cc
}

// Restore implements Interface.
func (f *Fake) Restore(_ context.Context, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Restores = append(f.Restores, string(payload))
	var (
		name string
		cur  *fakeTable
	)
	sc := bufio.NewScanner(bytes.NewReader(payload))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	fail := func(format string, args ...any) error {
		return fmt.Errorf("iptables fake: line %d: %s", line, fmt.Sprintf(format, args...))
	}
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "*"):
			if cur != nil {
				return fail("table %s not committed", name)
			}
			name = l[1:]
			t, ok := f.tables[name]
			if !ok {
				return fail("unknown table %q", name)
			}
			cur = t.clone()
		case l == "COMMIT":
			if cur == nil {
				return fail("COMMIT outside a table")
			}
			if err := cur.check(); err != nil {
				return fail("%s: %v", name, err)
			}
			f.tables[name] = cur
			cur = nil
		case cur == nil:
			return fail("%q outside a table", l)
		case strings.HasPrefix(l, ":"):
			fields := strings.Fields(l[1:])
			if len(fields) < 2 {
				return fail("bad chain line %q", l)
			}
			c, ok := cur.chains[fields[0]]
			if ok {
				c = cur.mutable(fields[0])
			}
			switch {
			case ok && c.builtin:
				if fields[1] != "-" {
					c.policy = fields[1]
				}
			case ok:
				c.rules, c.targets = nil, nil // a chain line flushes an existing chain
			default:
				if fields[1] != "-" {
					return fail("policy on user chain %s", fields[0])
				}
				cur.chains[fields[0]] = &fakeChain{}
				cur.owned[fields[0]] = true
			}
		default:
			if err := cur.apply(l); err != nil {
				return fail("%v", err)
			}
		}
	}
	if cur != nil {
		return fmt.Errorf("iptables fake: table %s not committed", name)
	}
	return sc.Err()
}

// apply runs one command line (-A, -I, -D, -F, -X) on t.
func (t *fakeTable) apply(l string) error {
	cmd, rest, _ := strings.Cut(l, " ")
	chainName, rule, _ := strings.Cut(rest, " ")
	c := t.mutable(chainName)
	if c == nil {
		return fmt.Errorf("%s: no chain %q", cmd, chainName)
	}
	switch cmd {
	case "-A":
		c.rules = append(c.rules, rule)
		c.targets = append(c.targets, ruleTarget(rule))
	case "-I":
		pos := 1
		if first, r, _ := strings.Cut(rule, " "); first != "" {
			if n, err := strconv.Atoi(first); err == nil {
				pos, rule = n, r
			}
		}
		if pos < 1 || pos > len(c.rules)+1 {
			return fmt.Errorf("-I %s %d: index out of range", chainName, pos)
		}
		c.rules = slices.Insert(c.rules, pos-1, rule)
		c.targets = slices.Insert(c.targets, pos-1, ruleTarget(rule))
	case "-D":
		i := slices.Index(c.rules, rule)
		if i < 0 {
			return fmt.Errorf("-D %s: no such rule %q", chainName, rule)
		}
		c.rules = slices.Delete(c.rules, i, i+1)
		c.targets = slices.Delete(c.targets, i, i+1)
	case "-F":
		c.rules, c.targets = nil, nil
	case "-X":
		if c.builtin {
			return fmt.Errorf("-X %s: built-in chain", chainName)
		}
		if len(c.rules) > 0 {
			return fmt.Errorf("-X %s: chain not empty", chainName)
		}
		delete(t.chains, chainName)
	default:
		return fmt.Errorf("unsupported command %q", cmd)
	}
	return nil
}

// check verifies that every jump target exists.
func (t *fakeTable) check() error {
	for n, c := range t.chains {
		for _, target := range c.targets {
			if target == "" || builtinTargets[target] {
				continue
			}
			if _, ok := t.chains[target]; !ok {
				return fmt.Errorf("chain %s jumps to missing chain %q", n, target)
			}
		}
	}
	return nil
}

// ruleTarget returns the -j argument of a rule ("" when none).
func ruleTarget(rule string) string {
	toks := splitRule(rule)
	for i := 0; i+1 < len(toks); i++ {
		if toks[i] == "-j" || toks[i] == "-g" {
			return toks[i+1]
		}
	}
	return ""
}

// splitRule splits a rule into words, keeping "quoted strings" whole.
func splitRule(rule string) []string {
	var out []string
	for rule != "" {
		rule = strings.TrimLeft(rule, " ")
		if rule == "" {
			break
		}
		if rule[0] == '"' {
			end := strings.IndexByte(rule[1:], '"')
			if end < 0 {
				out = append(out, rule)
				break
			}
			out = append(out, rule[:end+2])
			rule = rule[end+2:]
			continue
		}
		w, r, _ := strings.Cut(rule, " ")
		out = append(out, w)
		rule = r
	}
	return out
}

// Save implements Interface.
func (f *Fake) Save(_ context.Context, table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("iptables fake: unknown table %q", table)
	}
	return []byte(t.save(table)), nil
}

// Dump returns iptables-save text of every table (filter, then nat).
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[tableFilter].save(tableFilter) + f.tables[tableNAT].save(tableNAT)
}

func (t *fakeTable) save(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", name)
	var user []string
	for n, c := range t.chains {
		if !c.builtin {
			user = append(user, n)
		}
	}
	slices.Sort(user)
	order := append(slices.Clone(builtinChains[name]), user...)
	for _, n := range order {
		c := t.chains[n]
		pol := "-"
		if c.builtin {
			pol = c.policy
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", n, pol)
	}
	for _, n := range order {
		for _, r := range t.chains[n].rules {
			fmt.Fprintf(&b, "-A %s %s\n", n, r)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Rules returns the number of rules in every table.
func (f *Fake) Rules() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.tables {
		for _, c := range t.chains {
			n += len(c.rules)
		}
	}
	return n
}
