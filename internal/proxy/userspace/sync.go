package userspace

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
)

// A sync has two parts. The global part — the fixed rules (they depend on
// the service CIDRs) and the NodePort addresses — is small. The per-service
// part is each service port's listeners and its elements in the sets and
// maps. A full sync (State.Full, the first, or when the global part
// changed) rewrites the whole table in one transaction. A partial sync
// plans only the changed service ports and writes the difference between
// their old and new elements, so an endpoint change at 10k services costs
// what one service costs.
//
// Element keys can have several owners: the ports of one Service share its
// ClusterIP in cluster-ips, and two Services may name the same external
// address and port. refs counts the owners of each key, so a key leaves the
// table with its last owner. Two owners that want different values for one
// map key are a conflict; the full sync resolves it as it always did (the
// first service port in name order wins), so a partial sync that meets one
// falls back to a full sync.

// want is one listener the State needs.
type want struct {
	eps      []proxy.Endpoint
	alg      Algorithm
	affinity time.Duration
	tp       transparency
}

// pending is a redirect element waiting for its listener's port.
type pending struct {
	key      lnKey
	addr     netip.Addr // invalid for a NodePort
	proto    string
	port     int32
	nodePort bool
}

// elemRef is an element key's entry in the table: the element written (with
// its value) and how many service ports own the key.
type elemRef struct {
	e        *knftables.Element
	n        int
	conflict bool // owners want different values
}

// plan is what the sync of some service ports computed: the listeners they
// want and their elements, the redirects among them added once the
// listeners exist.
type plan struct {
	wants map[lnKey]want
	pend  []pending
	elems map[proxy.ServicePortName][]*knftables.Element
}

func newPlan() *plan {
	return &plan{wants: map[lnKey]want{}, elems: map[proxy.ServicePortName][]*knftables.Element{}}
}

func (p *plan) add(n proxy.ServicePortName, e *knftables.Element) {
	p.elems[n] = append(p.elems[n], e)
}

// Sync implements proxy.Backend: it opens a listener for every service
// port that has usable endpoints (two when the internal and external
// traffic policies differ), hands each its endpoints, writes the redirect
// table in one transaction (whole, or the changed services' elements), and
// then closes the listeners no longer used. Established connections of
// removed listeners are not cut.
func (b *Backend) Sync(ctx context.Context, st *proxy.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.epoch++
	b.setupTransparent(ctx)
	global := &ruleset{rules: b.baseRules(proxy.ServiceCIDRsOfFamily(st, b.cfg.ServiceCIDRs, b.ipv6))}
	for _, a := range b.nodePortIPs(st) {
		global.add(&knftables.Element{Set: nodePortIPsSet, Key: []string{a.String()}})
	}
	gfp := global.fingerprint()
	// When most service ports changed (a namespace deleted, a restart of
	// the API server's watch), one rewrite costs less than the deltas.
	most := len(st.Changed) > max(len(b.plans), len(st.Services))/2
	if !st.Full && b.initialized && gfp == b.global && !most {
		if done, err := b.syncPartial(ctx, st); done {
			return err
		}
	}
	return b.syncFull(ctx, st, global, gfp)
}

// syncFull plans every service port and rewrites the table when anything
// in it changed (always when st.Full).
func (b *Backend) syncFull(ctx context.Context, st *proxy.State, rs *ruleset, gfp string) error {
	b.partial = false
	names := slices.SortedFunc(maps.Keys(st.Services), proxy.CompareServicePortNames)
	p := newPlan()
	for _, n := range names {
		b.planService(p, n, st.Services[n], st.Endpoints[n])
	}
	errs := b.openListeners(p)
	globalCount := rs.count()
	for _, n := range names {
		rs.elems = append(rs.elems, p.elems[n]...)
	}
	rs.elems = sortElems(rs.elems)

	fp := rs.fingerprint()
	if st.Full || fp != b.last {
		tx := b.nft.NewTransaction()
		b.transaction(tx, rs)
		if err := b.nft.Run(ctx, tx); err != nil {
			b.last, b.global = "", ""
			return errors.Join(append(errs, fmt.Errorf("userspace: sync %s table: %w", b.ipX(), err))...)
		}
		b.initialized = true
		b.last = fp
	}
	b.global, b.globalCount = gfp, globalCount
	b.plans = p.elems
	b.refs = map[string]*elemRef{}
	for _, n := range names {
		for _, e := range p.elems[n] {
			k := elemKey(e)
			switch r := b.refs[k]; {
			case r == nil:
				b.refs[k] = &elemRef{e: e, n: 1}
			default:
				r.n++
				r.conflict = r.conflict || !sameValue(r.e, e)
			}
		}
	}
	b.closeListeners(st, p, maps.Keys(b.listeners))
	if len(errs) > 0 {
		b.last, b.global = "", "" // rewrite next time, with the missing listeners
	}
	return errors.Join(errs...)
}

// syncPartial plans the changed service ports and writes the difference
// their elements make. It reports done false, having changed nothing in
// the table, when a key with conflicting owners is involved.
func (b *Backend) syncPartial(ctx context.Context, st *proxy.State) (done bool, err error) {
	names := slices.SortedFunc(maps.Keys(st.Changed), proxy.CompareServicePortNames)
	p := newPlan()
	for _, n := range names {
		if sp := st.Services[n]; sp != nil {
			b.planService(p, n, sp, st.Endpoints[n])
		}
	}
	// The owners' counts after the change, for the keys it touches, and
	// what the table holds for them now.
	after := map[string]*elemRef{}
	before := map[string]*knftables.Element{}
	touch := func(k string) *elemRef {
		if r, ok := after[k]; ok {
			return r
		}
		r := &elemRef{}
		if old := b.refs[k]; old != nil {
			*r = *old
			before[k] = old.e
		}
		after[k] = r
		return r
	}
	for _, n := range names {
		for _, e := range b.plans[n] {
			touch(elemKey(e)).n--
		}
	}
	// Listeners before the new elements: redirects need their ports, and
	// redirected traffic must find its socket.
	errs := b.openListeners(p)
	for _, n := range names {
		for _, e := range p.elems[n] {
			r := touch(elemKey(e))
			switch {
			case r.n <= 0:
				r.e, r.n, r.conflict = e, 1, false
			case !sameValue(r.e, e):
				r.conflict = true
				r.n++
			default:
				r.n++
			}
		}
	}
	keys := slices.Sorted(maps.Keys(after))
	for _, k := range keys {
		if after[k].conflict {
			return false, nil
		}
	}

	tx := b.nft.NewTransaction()
	ops := 0
	for _, k := range keys {
		old, r := before[k], after[k]
		switch {
		case r.n <= 0 && old != nil:
			tx.Delete(old)
			ops++
		case r.n > 0 && old == nil:
			tx.Add(r.e)
			ops++
		case r.n > 0 && !sameValue(old, r.e):
			tx.Delete(old)
			tx.Add(r.e)
			ops++
		}
	}
	if ops > 0 {
		if err := b.nft.Run(ctx, tx); err != nil {
			b.last, b.global = "", "" // the next sync is full
			return true, errors.Join(append(errs, fmt.Errorf("userspace: sync %s table: %w", b.ipX(), err))...)
		}
		b.last = "" // the whole-table fingerprint is not kept up to date
	}
	b.partial = true
	for _, k := range keys {
		if r := after[k]; r.n > 0 {
			b.refs[k] = r
		} else {
			delete(b.refs, k)
		}
	}
	for _, n := range names {
		if es := p.elems[n]; len(es) > 0 {
			b.plans[n] = es
		} else {
			delete(b.plans, n)
		}
	}
	b.closeListeners(st, p, func(yield func(lnKey) bool) {
		for _, n := range names {
			for _, ext := range []bool{false, true} {
				if k := (lnKey{name: n, external: ext}); b.listeners[k] != nil && !yield(k) {
					return
				}
			}
		}
	})
	if len(errs) > 0 {
		b.global = "" // the next sync is full, with the missing listeners
	}
	return true, errors.Join(errs...)
}

// planService adds service port n's listeners and elements to p.
func (b *Backend) planService(p *plan, n proxy.ServicePortName, sp *proxy.ServicePort, eps []proxy.Endpoint) {
	cips := b.familyAddrs(sp.ClusterIPs)
	if len(cips) == 0 {
		return
	}
	for _, a := range cips {
		p.add(n, &knftables.Element{Set: clusterIPsSet, Key: []string{a.String()}})
	}
	if sp.Protocol != v1.ProtocolTCP && sp.Protocol != v1.ProtocolUDP {
		// SCTP: Go has no SCTP sockets. The ClusterIP's port is rejected
		// by cluster-ips-check.
		return
	}
	proto := strings.ToLower(string(sp.Protocol))
	cluster, local, _, hasAny := proxy.CategorizeEndpoints(eps, sp)
	internal, external := cluster, cluster
	if sp.InternalPolicyLocal {
		internal = local
	}
	if sp.ExternalPolicyLocal {
		external = local
	}
	verdict := "drop" // endpoints exist, none usable here
	if !hasAny {
		verdict = "goto " + rejectChain
	}
	alg := b.cfg.Algorithm
	if sp.LBAlgorithm != "" {
		a, err := ParseAlgorithm(sp.LBAlgorithm)
		if err != nil {
			b.log.Warn("ignoring the service's "+proxy.AnnotationLBAlgorithm+" annotation", "service", n.String(), "err", err)
		} else {
			alg = a
		}
	}

	inKey := lnKey{name: n}
	if len(internal) > 0 {
		p.wants[inKey] = want{eps: internal, alg: alg, affinity: sp.AffinityTimeout, tp: transparentInCluster}
		for _, a := range cips {
			p.pend = append(p.pend, pending{key: inKey, addr: a, proto: proto, port: sp.Port})
		}
	} else {
		for _, a := range cips {
			p.add(n, noEndpointsElem(a, proto, sp.Port, verdict))
		}
	}

	if !sp.ExternallyAccessible() {
		return
	}
	// External traffic has its own listener: its endpoints may differ
	// (traffic policies) and so does whether the client address is kept.
	extKey := lnKey{name: n, external: true}
	extAddrs := b.familyAddrs(slices.Concat(sp.ExternalIPs, sp.LoadBalancerIPs))
	if len(external) > 0 {
		tp := transparentNever
		if sp.ExternalPolicyLocal {
			tp = transparentAlways
		}
		p.wants[extKey] = want{eps: external, alg: alg, affinity: sp.AffinityTimeout, tp: tp}
		for _, a := range extAddrs {
			p.pend = append(p.pend, pending{key: extKey, addr: a, proto: proto, port: sp.Port})
		}
		if sp.NodePort != 0 {
			p.pend = append(p.pend, pending{key: extKey, proto: proto, port: sp.NodePort, nodePort: true})
		}
	} else {
		for _, a := range extAddrs {
			p.add(n, noEndpointsElem(a, proto, sp.Port, verdict))
		}
		if sp.NodePort != 0 {
			p.add(n, noEndpointsNodePortElem(proto, sp.NodePort, verdict))
		}
	}
	if len(sp.LoadBalancerSourceRanges) > 0 {
		for _, lb := range b.familyAddrs(sp.LoadBalancerIPs) {
			p.add(n, &knftables.Element{Set: firewallIPsSet, Key: []string{lb.String(), proto, itoa(sp.Port)}})
			for _, r := range sp.LoadBalancerSourceRanges {
				if r.Addr().Is4() == !b.ipv6 {
					p.add(n, &knftables.Element{Set: firewallAllowSet, Key: []string{lb.String(), proto, itoa(sp.Port), r.String()}})
				}
			}
		}
	}
}

// openListeners opens (or updates) the listeners p wants and adds the
// redirect elements that point at them.
func (b *Backend) openListeners(p *plan) []error {
	var errs []error
	for k, w := range p.wants {
		l := b.listeners[k]
		if l == nil {
			var err error
			l, err = newListener(k, b.cfg.ListenAddr, b.set)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b.listeners[k] = l
			b.log.Debug("listening", "service", k.String(), "port", l.port)
		}
		l.update(w.eps, w.alg, w.affinity, w.tp)
	}
	for _, pd := range p.pend {
		l := b.listeners[pd.key]
		if l == nil {
			continue // failed to listen (reported)
		}
		if pd.nodePort {
			p.add(pd.key.name, redirectNodePortElem(pd.proto, pd.port, l.port))
		} else {
			p.add(pd.key.name, redirectElem(pd.addr, pd.proto, pd.port, l.port))
		}
	}
	return errs
}

// closeListeners closes the listeners among candidates that p does not
// want, now that no rule points at them. A service that still exists keeps
// its listener (with no endpoints) even while it has no endpoints: the
// conntrack entries of its UDP clients point at the listener's port, and
// when endpoints come back the same port must serve them again (a new port
// would leave those clients stuck on the old one for as long as they keep
// sending).
func (b *Backend) closeListeners(st *proxy.State, p *plan, candidates iter.Seq[lnKey]) {
	var gone []lnKey
	for k := range candidates {
		if _, ok := p.wants[k]; ok {
			continue
		}
		l := b.listeners[k]
		if sp, exists := st.Services[k.name]; exists && (!k.external || sp.ExternallyAccessible()) {
			cfg := l.cfg.Load()
			l.update(nil, cfg.alg, cfg.affinity, cfg.tp)
			continue
		}
		gone = append(gone, k)
	}
	for _, k := range gone {
		b.listeners[k].close()
		delete(b.listeners, k)
		b.log.Debug("closed listener", "service", k.String())
	}
}
