package iptables

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// payload collects one iptables-restore --noflush input: per table, the
// chains to (re)write, which their chain line flushes first, and the
// chains to delete.
type payload struct {
	write map[string]map[string][]string // table → chain → rules
	del   map[string][]string            // table → chains
	// pre are commands run right after the chain lines (jump inserts and
	// deletes in built-in chains).
	pre map[string][]string

	// How the written chains may be split over several runs (split):
	// leaves are chains that jump to no chain of ours (the fixed chains,
	// table → chains), groups are the nat chains of one service each
	// (they jump only to each other and to leaves). Everything else in
	// write (the roots and their KUBE-DST trees) jumps to service chains.
	leaves map[string][]string
	groups [][]string
}

func newPayload() *payload {
	return &payload{
		write: map[string]map[string][]string{tableFilter: {}, tableNAT: {}},
		del:   map[string][]string{},
		pre:   map[string][]string{},
	}
}

// writeGroup writes one service's nat chains as a group.
func (p *payload) writeGroup(chains []chainPlan) {
	if len(chains) == 0 {
		return
	}
	g := make([]string, len(chains))
	for i, c := range chains {
		p.write[tableNAT][c.name] = c.rules
		g[i] = c.name
	}
	p.groups = append(p.groups, g)
}

// chains counts the chains p writes or deletes.
func (p *payload) chains() int {
	n := 0
	for _, w := range p.write {
		n += len(w)
	}
	for _, d := range p.del {
		n += len(d)
	}
	return n
}

// split cuts p into payloads that, applied in order, leave the tables as
// p does, with at most max chains per payload (more when one service's
// chains alone are more):
//
//  1. the leaves, with the first service groups;
//  2. the service groups, a service's chains always in one payload;
//  3. the other chains (the roots and their KUBE-DST trees), each after
//     the chains it jumps to (targetsFirst), and the jumps inserted in or
//     deleted from the built-in chains (pre: for a cleanup, the only run
//     before the deletions);
//  4. the deletions (splitDeletes).
//
// Each payload jumps only to chains it writes or that exist already, every
// chain is written in its final form, and nothing is deleted before the
// writes are done, so between two runs the rules are a mix of old and new
// chains that is itself consistent: a service is either wholly old or
// wholly new.
func (p *payload) split(max int) []*payload {
	var runs []*payload
	cur, n := newPayload(), 0
	add := func(t string, names []string) {
		if n > 0 && n+len(names) > max {
			runs = append(runs, cur)
			cur, n = newPayload(), 0
		}
		for _, c := range names {
			cur.write[t][c] = p.write[t][c]
		}
		n += len(names)
	}
	for _, t := range []string{tableFilter, tableNAT} {
		add(t, p.leaves[t])
	}
	grouped := map[string]bool{}
	for _, g := range p.groups {
		add(tableNAT, g)
		for _, c := range g {
			grouped[c] = true
		}
	}
	for _, t := range []string{tableFilter, tableNAT} {
		var others []string
		for c := range p.write[t] {
			if !grouped[c] && !slices.Contains(p.leaves[t], c) {
				others = append(others, c)
			}
		}
		slices.Sort(others)
		for _, c := range targetsFirst(others, p.write[t]) {
			add(t, []string{c})
		}
	}
	cur.pre = p.pre
	runs = append(runs, cur)
	return append(runs, p.splitDeletes(max)...)
}

// splitDeletes returns payloads that delete p.del: one when there are at
// most max chains, else runs that flush them, max at a time, then runs that
// delete them (a chain can only be deleted once nothing jumps to it; after
// the flushes, none of them jumps anywhere).
func (p *payload) splitDeletes(max int) []*payload {
	total := 0
	for _, d := range p.del {
		total += len(d)
	}
	if total == 0 {
		return nil
	}
	if total <= max {
		d := newPayload()
		d.del = p.del
		return []*payload{d}
	}
	var flushes, deletes []*payload
	for _, t := range []string{tableFilter, tableNAT} {
		for chunk := range slices.Chunk(slices.Sorted(slices.Values(p.del[t])), max) {
			f, d := newPayload(), newPayload()
			for _, c := range chunk {
				f.write[t][c] = nil // a chain line with no rules flushes it
			}
			d.del[t] = chunk
			flushes, deletes = append(flushes, f), append(deletes, d)
		}
	}
	return append(flushes, deletes...)
}

// targetsFirst orders chains so that every chain comes after the chains
// among them it jumps to (rules: chain → rules). Jumps never form a loop.
func targetsFirst(chains []string, rules map[string][]string) []string {
	in := map[string]bool{}
	for _, c := range chains {
		in[c] = true
	}
	seen := map[string]bool{}
	var order []string
	var visit func(c string)
	visit = func(c string) {
		if seen[c] {
			return
		}
		seen[c] = true
		for _, r := range rules[c] {
			if t := ruleTarget(r); in[t] {
				visit(t)
			}
		}
		order = append(order, c)
	}
	for _, c := range chains {
		visit(c)
	}
	return order
}

func (p *payload) empty() bool {
	for _, t := range []string{tableFilter, tableNAT} {
		if len(p.write[t]) > 0 || len(p.del[t]) > 0 || len(p.pre[t]) > 0 {
			return false
		}
	}
	return true
}

// bytes renders the payload. Within a table all chain lines come first
// (creating or flushing every chain written or deleted), so rules may
// reference chains in any order and deleted chains are empty and
// unreferenced by the time "-X" runs.
func (p *payload) bytes() []byte {
	var buf bytes.Buffer
	for _, t := range []string{tableFilter, tableNAT} {
		w, d, pre := p.write[t], p.del[t], p.pre[t]
		if len(w) == 0 && len(d) == 0 && len(pre) == 0 {
			continue
		}
		fmt.Fprintf(&buf, "*%s\n", t)
		chains := slices.Sorted(maps.Keys(w))
		slices.Sort(d)
		for _, c := range chains {
			fmt.Fprintf(&buf, ":%s - [0:0]\n", c)
		}
		for _, c := range d {
			fmt.Fprintf(&buf, ":%s - [0:0]\n", c)
		}
		for _, l := range pre {
			buf.WriteString(l)
			buf.WriteByte('\n')
		}
		for _, c := range chains {
			for _, r := range w[c] {
				buf.WriteString("-A ")
				buf.WriteString(c)
				buf.WriteByte(' ')
				buf.WriteString(r)
				buf.WriteByte('\n')
			}
		}
		for _, c := range d {
			fmt.Fprintf(&buf, "-X %s\n", c)
		}
		buf.WriteString("COMMIT\n")
	}
	return buf.Bytes()
}

// Sync implements proxy.Backend. A full sync (first sync, st.Full, node IP
// change, after a failure) writes every chain, deletes leftover owned
// chains found with iptables-save and inserts missing jumps from the
// built-in chains. A partial sync re-renders only the services in
// st.Changed (plus added or removed ones) and writes only the chains whose
// rules differ from what the backend wrote before: the changed services'
// own chains, and the top-level and KUBE-DST chains on their paths. Either
// way it is one iptables-restore --noflush run (atomic per table).
func (b *Backend) Sync(ctx context.Context, st *proxy.State) (err error) {
	nodeIPs := b.nodePortIPs(st)
	scidrs := proxy.ServiceCIDRsOfFamily(st, b.cfg.ServiceCIDRs, b.ipv6)
	full := b.needFull || st.Full || !slices.Equal(nodeIPs, b.nodeIPs) || !slices.Equal(scidrs, b.serviceCIDRs)
	b.nodeIPs, b.serviceCIDRs = nodeIPs, scidrs
	defer func() {
		if err != nil {
			b.needFull = true
			return
		}
		b.needFull = false
		b.lastPartial = !full
	}()

	// Records are updated in place; a failure forces a full sync, which
	// rebuilds them from scratch.
	old := b.records
	cands := proxy.SyncCandidates(st, full, old)
	if full {
		b.records = map[proxy.ServicePortName]*svcPlan{}
		b.svcRules = 0
	}

	pl := newPayload()
	dirty := make([]bool, len(roots))
	var udpStale []conntrack.Stale
	for _, n := range cands {
		prev := old[n]
		var plan *svcPlan
		if sp, ok := st.Services[n]; ok {
			plan = b.render(sp, st.Endpoints[n])
		}
		if udp := udpChange(prev, plan); udp != nil {
			udpStale = append(udpStale, *udp)
		}
		if !full {
			b.svcRules -= prev.chainRules()
		}
		b.svcRules += plan.chainRules()
		if plan == nil {
			delete(b.records, n)
		} else {
			b.records[n] = plan
		}
		if full {
			if plan != nil {
				pl.writeGroup(plan.chains)
			}
			continue
		}
		if prev != nil && plan != nil && prev.equal(plan) {
			continue
		}
		for i, r := range roots {
			dirty[i] = dirty[i] || rootChanged(r, prev, plan)
		}
		if plan != nil {
			var changed []chainPlan
			for _, c := range plan.chains {
				if pc := prev.chain(c.name); pc == nil || !slices.Equal(pc.rules, c.rules) {
					changed = append(changed, c)
				}
			}
			pl.writeGroup(changed)
		}
		if prev != nil {
			for _, c := range prev.chains {
				if plan.chain(c.name) == nil {
					pl.del[tableNAT] = append(pl.del[tableNAT], c.name)
				}
			}
		}
	}
	if full {
		// Services that vanished while we were out of sync.
		for n, p := range old {
			if _, ok := b.records[n]; !ok && p.udp != nil {
				udpStale = append(udpStale, conntrack.Stale{Frontends: p.udp.Frontends, NodePort: p.udp.NodePort})
			}
		}
	}

	// Top-level chains: the fixed ones on a full sync, the roots whose
	// entries changed, writing only chains whose rules differ.
	rootChains := slices.Clone(b.rootChains)
	if full {
		rootChains = make([]map[string][]string, len(roots))
		b.fixedRules = 0
		pl.leaves = map[string][]string{}
		for t, chains := range b.fixedChains() {
			for c, rules := range chains {
				pl.write[t][c] = rules
				pl.leaves[t] = append(pl.leaves[t], c)
				b.fixedRules += len(rules)
			}
		}
	}
	for i, r := range roots {
		if !full && !dirty[i] {
			continue
		}
		chains := b.buildRoot(r, b.records)
		var prev map[string][]string
		if !full {
			prev = rootChains[i]
		}
		for c, rules := range chains {
			if p, ok := prev[c]; !ok || !slices.Equal(p, rules) {
				pl.write[r.table][c] = rules
			}
		}
		for c := range prev {
			if _, ok := chains[c]; !ok {
				pl.del[r.table] = append(pl.del[r.table], c)
			}
		}
		rootChains[i] = chains
	}

	if full {
		if err := b.fullSyncExtras(ctx, pl); err != nil {
			return err
		}
	}
	if err := b.restore(ctx, pl); err != nil {
		return fmt.Errorf("iptables: sync: %w", err)
	}
	b.rootChains = rootChains

	if b.cfg.Conntrack != nil && len(udpStale) > 0 {
		n, err := b.cfg.Conntrack.ClearStaleUDP(ctx, b.ipv6, udpStale)
		if err != nil {
			// The rules are in; stale flows only delay UDP clients.
			b.log.Error("clearing stale UDP conntrack entries", "err", err)
		} else if n > 0 {
			b.log.Debug("cleared stale UDP conntrack entries", "flows", n)
		}
	}
	return nil
}

// restore applies pl: in one iptables-restore run, or, when it writes or
// deletes more than Config.MaxChainsPerRestore chains, in several (see
// payload.split and MaxChainsPerRestore). A failed run leaves the earlier
// runs applied; the caller's next sync is a full one.
func (b *Backend) restore(ctx context.Context, pl *payload) error {
	if pl.empty() {
		return nil
	}
	limit := b.cfg.MaxChainsPerRestore
	if limit <= 0 || pl.chains() <= limit {
		return b.ipt.Restore(ctx, pl.bytes())
	}
	runs := pl.split(limit)
	for i, r := range runs {
		if r.empty() {
			continue
		}
		if err := b.ipt.Restore(ctx, r.bytes()); err != nil {
			return fmt.Errorf("run %d of %d: %w", i+1, len(runs), err)
		}
	}
	return nil
}

// fullSyncExtras reads the kernel's tables: owned chains that no plan
// writes are deleted, and missing jumps from built-in chains inserted.
// The two saves run one after the other on purpose: a child process
// inherits the network namespace of the OS thread that starts it, and a
// caller may have entered a namespace on its own locked thread (the tests'
// nodes do), which goroutines of ours would not be on. (Run side by side
// they would save 0.7 s of a 10k-Service restart; the tests caught the
// wrong namespace.)
func (b *Backend) fullSyncExtras(ctx context.Context, pl *payload) error {
	for _, t := range []string{tableFilter, tableNAT} {
		saved, err := b.ipt.Save(ctx, t)
		if err != nil {
			return fmt.Errorf("iptables: full sync: %w", err)
		}
		chains, rules := parseSave(saved)
		for _, c := range chains {
			if _, ok := pl.write[t][c]; !ok && isOwnedChain(c) {
				pl.del[t] = append(pl.del[t], c)
			}
		}
		// Insert missing jumps at the top, last first, so they end up in
		// the order of the jumps list.
		for i := len(jumps) - 1; i >= 0; i-- {
			j := jumps[i]
			if j.table != t || slices.Contains(rules[j.from], j.rule()) {
				continue
			}
			pl.pre[t] = append(pl.pre[t], fmt.Sprintf("-I %s 1 %s", j.from, j.rule()))
		}
	}
	return nil
}

// parseSave returns the chain names and the rules per chain of
// iptables-save output for one table.
func parseSave(saved []byte) (chains []string, rules map[string][]string) {
	rules = map[string][]string{}
	for _, l := range strings.Split(string(saved), "\n") {
		switch {
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			chains = append(chains, name)
		case strings.HasPrefix(l, "-A "):
			chain, rule, _ := strings.Cut(l[3:], " ")
			rules[chain] = append(rules[chain], rule)
		}
	}
	return chains, rules
}

// Cleanup implements proxy.Backend: it removes the jumps from the
// built-in chains and every chain this backend creates, in both tables.
func (b *Backend) Cleanup(ctx context.Context) error {
	pl := newPayload()
	for _, t := range []string{tableFilter, tableNAT} {
		saved, err := b.ipt.Save(ctx, t)
		if err != nil {
			return fmt.Errorf("iptables: cleanup: %w", err)
		}
		chains, rules := parseSave(saved)
		ours := map[string]bool{}
		for _, c := range chains {
			if isOwnedChain(c) || slices.Contains(topChains[t], c) {
				ours[c] = true
				pl.del[t] = append(pl.del[t], c)
			}
		}
		for _, from := range builtinChains[t] {
			for _, r := range rules[from] {
				if ours[ruleTarget(r)] {
					pl.pre[t] = append(pl.pre[t], fmt.Sprintf("-D %s %s", from, r))
				}
			}
		}
	}
	b.needFull = true
	clear(b.records)
	b.rootChains = nil
	// In runs (split), the jumps from the built-in chains go first.
	if err := b.restore(ctx, pl); err != nil {
		return fmt.Errorf("iptables: cleanup: %w", err)
	}
	return nil
}

// udpChange returns the conntrack cleanup needed when a UDP service goes
// from plan old to plan cur (either may be nil), or nil when none is.
func udpChange(old, cur *svcPlan) *conntrack.Stale {
	switch {
	case old == nil && cur == nil:
		return nil
	case cur == nil:
		if old.udp == nil {
			return nil
		}
		return &conntrack.Stale{Frontends: old.udp.Frontends, NodePort: old.udp.NodePort}
	case cur.udp == nil:
		return nil
	case old == nil || old.udp == nil:
		// New UDP service: flows created while it did not exist (no DNAT)
		// must go.
		return cur.udp
	}
	if maps.Equal(old.udp.Keep, cur.udp.Keep) && slices.Equal(old.udp.Frontends, cur.udp.Frontends) {
		return nil
	}
	st := *cur.udp
	for _, f := range old.udp.Frontends {
		if !slices.Contains(st.Frontends, f) {
			st.Frontends = append(slices.Clip(st.Frontends), f)
		}
	}
	return &st
}
