package nftables

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	gnft "github.com/google/nftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// Config configures one nftables Backend (one IP family).
type Config struct {
	// Family selects the table: v1.IPv4Protocol ("ip svcnet", the default)
	// or v1.IPv6Protocol ("ip6 svcnet").
	Family v1.IPFamily
	// NodeName is this node's name.
	NodeName string
	// NodeIPs are the node's addresses. NodePorts answer on those of this
	// family (never on loopback), unless NodePortAddresses is set. The
	// State's NodeIPs are added to them at each sync.
	NodeIPs []netip.Addr
	// ClusterCIDRs are the pod CIDRs. Traffic to a ClusterIP from outside
	// them is masqueraded; pods reaching an external IP of an ETP Local
	// service are short-circuited to the cluster policy. Empty disables both.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs are the service CIDRs: traffic to an unallocated address
	// in them is dropped (and to an unused port of an allocated one
	// rejected).
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses, when set, restricts NodePorts to the local
	// addresses inside these prefixes (as --nodeport-addresses). Loopback
	// addresses are always excluded.
	NodePortAddresses []netip.Prefix
	// InterfaceAddrs lists the local addresses matched against
	// NodePortAddresses (default: net.InterfaceAddrs).
	InterfaceAddrs func() ([]netip.Addr, error)
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// TCPBeLiberal, when false (the default), drops forwarded packets that
	// conntrack marks INVALID, so an out-of-window TCP segment cannot reach
	// a pod un-NATed and trigger "connection reset by peer" (kube-proxy
	// iptables behaviour). Set it when the node runs with
	// net.netfilter.nf_conntrack_tcp_be_liberal=1 instead.
	TCPBeLiberal bool
	// Conntrack deletes stale UDP flows after endpoint changes; nil disables
	// the cleanup.
	Conntrack conntrack.Interface
	// Logger receives the backend's logs (default slog.Default()).
	Logger *slog.Logger
}

// Backend is the nftables proxy backend for one IP family. It implements
// proxy.Backend and proxy.SyncStats. Sync and Cleanup must not be called
// concurrently (the proxy core calls them from one goroutine).
type Backend struct {
	cfg          Config
	nft          knftables.Interface
	ipv6         bool
	clusterCIDRs []netip.Prefix
	log          *slog.Logger

	// State of what is in the kernel, valid while needFull is false.
	needFull    bool
	initialized bool // the table was recreated once by this process
	nodeIPs     []netip.Addr
	// serviceCIDRs are the service CIDRs of this family the base rules
	// were last written with (ServiceCIDRsOfFamily).
	serviceCIDRs []netip.Prefix
	records      map[proxy.ServicePortName]svcRecord
	elems        *elementStore
	// picks counts the services using each pick-N chain; pickChains are
	// those in the kernel (each has one rule).
	picks      map[int]int
	pickChains map[int]bool
	baseRules  int
	svcRules   int

	lastPartial bool
}

var (
	_ proxy.Backend   = (*Backend)(nil)
	_ proxy.SyncStats = (*Backend)(nil)
)

// New returns a Backend writing through nft, which must be bound to family
// "ip" (IPv4) or "ip6" (IPv6) and table "svcnet" — see NewInterface — or be
// a knftables.NewFake with the same family and table.
func New(cfg Config, nft knftables.Interface) (*Backend, error) {
	if cfg.Family == "" {
		cfg.Family = v1.IPv4Protocol
	}
	if cfg.Family != v1.IPv4Protocol && cfg.Family != v1.IPv6Protocol {
		return nil, fmt.Errorf("nftables: unknown IP family %q", cfg.Family)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = proxy.LocalAddrs
	}
	b := &Backend{
		cfg:        cfg,
		nft:        nft,
		ipv6:       cfg.Family == v1.IPv6Protocol,
		log:        cfg.Logger.With("component", "proxy-nftables", "family", string(cfg.Family)),
		needFull:   true,
		records:    map[proxy.ServicePortName]svcRecord{},
		elems:      newElementStore(),
		picks:      map[int]int{},
		pickChains: map[int]bool{},
	}
	for _, p := range cfg.ClusterCIDRs {
		if p.Addr().Is4() == !b.ipv6 {
			b.clusterCIDRs = append(b.clusterCIDRs, p.Masked())
		}
	}
	return b, nil
}

// Family returns the knftables family for an IP family.
func Family(f v1.IPFamily) knftables.Family {
	if f == v1.IPv6Protocol {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// NewInterface returns a real knftables.Interface (the nft binary, plus a
// lasting netlink connection for element-only syncs) for the
// svcnet table of family f.
func NewInterface(f v1.IPFamily) (knftables.Interface, error) {
	nft, err := knftables.New(Family(f), tableName)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	r := &realInterface{Interface: nft, family: Family(f)}
	// Open the netlink connection now, so it belongs to the network
	// namespace of the caller (as nft does); if that fails, the first
	// element-only sync tries again.
	if c, err := gnft.New(gnft.AsLasting()); err == nil {
		r.conn = c
	}
	return r, nil
}

// NewFake returns an in-memory knftables.Fake for the svcnet table of
// family f, for tests.
func NewFake(f v1.IPFamily) *knftables.Fake {
	return knftables.NewFake(Family(f), tableName)
}

// TableName is the name of the table in both families.
const TableName = tableName

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "nftables" }

// LastSyncStats implements proxy.SyncStats.
func (b *Backend) LastSyncStats() (partial bool, rules int) {
	return b.lastPartial, b.baseRules + b.svcRules + len(b.pickChains)
}

// Counts returns the number of rules and of set/map elements the backend
// has written (its own record; no kernel round trip).
func (b *Backend) Counts() (rules, elements int) {
	return b.baseRules + b.svcRules + len(b.pickChains), b.elems.count()
}

// Cleanup implements proxy.Backend: it deletes the svcnet table of this
// family (nothing else is ever installed).
func (b *Backend) Cleanup(ctx context.Context) error {
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := b.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("nftables: cleanup %s table: %w", b.ipX(), err)
	}
	if r, ok := b.nft.(*realInterface); ok {
		// A backend is cleaned up when its mode is switched away from or
		// removed; do not keep its socket open meanwhile.
		r.closeConn()
	}
	b.needFull = true
	b.initialized = false
	clear(b.records)
	clear(b.picks)
	clear(b.pickChains)
	b.elems.reset()
	return nil
}

// nodePortIPs computes the addresses NodePorts answer on.
func (b *Backend) nodePortIPs(st *proxy.State) []netip.Addr {
	out, err := proxy.NodePortAddrs(b.cfg.NodePortAddresses, b.cfg.InterfaceAddrs, b.cfg.NodeIPs, st.NodeIPs,
		func(a netip.Addr) bool { return a.Is4() == !b.ipv6 })
	if err != nil {
		b.log.Error("listing local addresses for NodePorts", "err", err)
	}
	return out
}

// Sync implements proxy.Backend. A full sync (first sync, st.Full, node IP
// change, or after a failure) rewrites every object; a partial sync rewrites
// only the chains of services whose plan changed and the map elements that
// differ, all in one transaction.
func (b *Backend) Sync(ctx context.Context, st *proxy.State) (err error) {
	nodeIPs := b.nodePortIPs(st)
	scidrs := proxy.ServiceCIDRsOfFamily(st, b.cfg.ServiceCIDRs, b.ipv6)
	full := b.needFull || st.Full || !slices.Equal(nodeIPs, b.nodeIPs) || !slices.Equal(scidrs, b.serviceCIDRs)
	b.nodeIPs, b.serviceCIDRs = nodeIPs, scidrs
	defer func() {
		if err != nil {
			// The kernel and our records may now disagree: rebuild next time.
			b.needFull = true
			b.elems.reset()
			return
		}
		b.needFull = false
		b.lastPartial = !full
	}()

	tx := b.nft.NewTransaction()
	var (
		staleChains []string
		staleSets   []string
		old         = b.records
	)
	if full {
		if err := b.setup(ctx, tx); err != nil {
			return err
		}
		if b.initialized {
			// Anything in the kernel we do not write again is stale.
			chains, err := b.nft.List(ctx, "chains")
			if err != nil && !knftables.IsNotFound(err) {
				return fmt.Errorf("nftables: list chains: %w", err)
			}
			for _, c := range chains {
				if isServiceChain(c) || isPickChain(c) {
					staleChains = append(staleChains, c)
				}
			}
			sets, err := b.nft.List(ctx, "sets")
			if err != nil && !knftables.IsNotFound(err) {
				return fmt.Errorf("nftables: list sets: %w", err)
			}
			for _, s := range sets {
				if isAffinitySet(s) {
					staleSets = append(staleSets, s)
				}
			}
		}
		b.records = map[proxy.ServicePortName]svcRecord{}
		clear(b.picks)
		clear(b.pickChains)
		for _, w := range b.globalElems(nodeIPs) {
			b.elems.add(w)
		}
	}

	// Decide which services to look at.
	cands := proxy.SyncCandidates(st, full, b.records)

	newRecords := b.records
	var udpStale []conntrack.Stale
	type write struct {
		name proxy.ServicePortName
		plan *svcPlan
		prev *svcPlan // nil on a full sync: rewrite every chain
	}
	var writes []write
	for _, n := range cands {
		// The previous plan: on a partial sync to diff against; on a full
		// sync (which rewrites everything) only a UDP service's, for the
		// conntrack cleanup.
		var prev *svcPlan
		if r, ok := old[n]; ok && (!full || r.sp.Protocol == v1.ProtocolUDP) {
			prev = b.render(r.sp, r.eps)
		}
		var plan *svcPlan
		if sp, ok := st.Services[n]; ok {
			plan = b.render(sp, st.Endpoints[n])
		}
		if !full && prev != nil && plan != nil && prev.equal(plan) {
			continue
		}
		if !full && prev != nil {
			for _, e := range prev.elems {
				b.elems.remove(e.elemKey)
			}
			b.svcRules -= prev.rules()
			for _, n := range prev.picks {
				b.picks[n]--
			}
			// Chains and sets the new plan no longer has are stale.
			for _, c := range prev.chains {
				if plan == nil || !slices.ContainsFunc(plan.chains, func(x chainPlan) bool { return x.name == c.name }) {
					staleChains = append(staleChains, c.name)
				}
			}
			for _, s := range prev.sets {
				if plan == nil || !slices.ContainsFunc(plan.sets, func(x setPlan) bool { return x.name == s.name }) {
					staleSets = append(staleSets, s.name)
				}
			}
		}
		if udp := udpChange(prev, plan); udp != nil {
			udpStale = append(udpStale, *udp)
		}
		if plan == nil {
			delete(newRecords, n)
			continue
		}
		newRecords[n] = svcRecord{sp: st.Services[n], eps: st.Endpoints[n]}
		for _, n := range plan.picks {
			b.picks[n]++
		}
		w := write{name: n, plan: plan}
		if !full {
			w.prev = prev
		}
		writes = append(writes, w)
	}
	if full {
		b.svcRules = 0
		// Services that disappeared while we were not in sync: their UDP
		// flows are stale too.
		for n, r := range old {
			if _, ok := newRecords[n]; ok || r.sp.Protocol != v1.ProtocolUDP {
				continue
			}
			if p := b.render(r.sp, r.eps); p != nil && p.udp != nil {
				udpStale = append(udpStale, conntrack.Stale{Frontends: p.udp.Frontends, NodePort: p.udp.NodePort})
			}
		}
	}

	// 1. Create (or flush) every chain and set we write, so rules and map
	//    elements can reference each other in any order.
	active := map[string]bool{}
	activeSets := map[string]bool{}
	for _, w := range writes {
		for _, c := range w.plan.chains {
			active[c.name] = true
			if w.prev.hasChain(c) {
				continue
			}
			tx.Add(&knftables.Chain{Name: c.name})
			tx.Flush(&knftables.Chain{Name: c.name})
		}
		for _, s := range w.plan.sets {
			activeSets[s.name] = true
			tx.Add(&knftables.Set{
				Name:    s.name,
				Type:    b.addrType(),
				Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
				Timeout: knftables.PtrTo(s.timeout),
			})
		}
	}
	// The shared pick-N chains: create those now needed, drop those no
	// service uses any more (after the elements pointing at them, below).
	for _, n := range slices.Sorted(maps.Keys(b.picks)) {
		switch {
		case b.picks[n] > 0 && !b.pickChains[n]:
			b.pickChains[n] = true
			c := pickChainName(n)
			active[c] = true
			tx.Add(&knftables.Chain{Name: c})
			tx.Flush(&knftables.Chain{Name: c})
			tx.Add(&knftables.Rule{Chain: c, Rule: b.pickRule(n)})
		case b.picks[n] <= 0 && b.pickChains[n]:
			delete(b.pickChains, n)
			staleChains = append(staleChains, pickChainName(n))
		}
		if b.picks[n] <= 0 {
			delete(b.picks, n)
		}
	}
	// 2. Rules.
	for _, w := range writes {
		for _, c := range w.plan.chains {
			if w.prev.hasChain(c) {
				continue // identical in the kernel already
			}
			for _, r := range c.rules {
				tx.Add(&knftables.Rule{Chain: c.name, Rule: r})
			}
		}
		for _, e := range w.plan.elems {
			b.elems.add(e)
		}
		b.svcRules += w.plan.rules()
	}
	// 3. Map/set elements: deletions first (they may point at chains deleted
	//    below), then additions.
	structural := tx.NumOperations() > 0
	dels, adds := b.elems.delta()
	ew, direct := b.nft.(elementWriter)
	after := tx // the stale chains and sets below
	if direct {
		after = b.nft.NewTransaction()
	} else {
		for _, w := range dels {
			tx.Delete(newElement(w.elemKey, w.value))
		}
		for _, w := range adds {
			tx.Add(newElement(w.elemKey, w.value))
		}
	}
	// 4. Stale chains: flush all, then delete, so references between them
	//    do not matter; then stale affinity sets (referenced by those rules).
	staleChains = slices.DeleteFunc(staleChains, func(c string) bool { return active[c] })
	staleSets = slices.DeleteFunc(staleSets, func(s string) bool { return activeSets[s] })
	// (A full sync writes every plan and every pick chain in use, so the
	// kernel listing needs no other filter.)
	slices.Sort(staleChains)
	staleChains = slices.Compact(staleChains)
	for _, c := range staleChains {
		after.Flush(&knftables.Chain{Name: c})
	}
	for _, c := range staleChains {
		after.Delete(&knftables.Chain{Name: c})
	}
	slices.Sort(staleSets)
	for _, s := range slices.Compact(staleSets) {
		after.Delete(&knftables.Set{Name: s})
	}

	structural = structural || len(staleChains) > 0 || len(staleSets) > 0
	switch {
	case !direct:
		if tx.NumOperations() == 0 {
			return nil
		}
		if err := b.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("nftables: sync %s table (%d operations): %w", b.ipX(), tx.NumOperations(), err)
		}
	case !structural && !full:
		if len(dels)+len(adds) == 0 {
			return nil
		}
		if err := ew.writeElements(dels, adds); err != nil {
			return fmt.Errorf("nftables: sync %s table (%d element changes): %w", b.ipX(), len(dels)+len(adds), err)
		}
	default:
		if err := ew.runWithElements(ctx, tx, dels, adds, after); err != nil {
			return fmt.Errorf("nftables: sync %s table (%d operations, %d element changes): %w",
				b.ipX(), tx.NumOperations()+after.NumOperations(), len(dels)+len(adds), err)
		}
	}
	b.initialized = true

	if b.cfg.Conntrack != nil && len(udpStale) > 0 {
		n, err := b.cfg.Conntrack.ClearStaleUDP(ctx, b.ipv6, udpStale)
		if err != nil {
			// The rules are in; stale flows only delay UDP clients. Report
			// without failing the sync.
			b.log.Error("clearing stale UDP conntrack entries", "err", err)
		} else if n > 0 {
			b.log.Debug("cleared stale UDP conntrack entries", "flows", n)
		}
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
	if keepEqual(old.udp.Keep, cur.udp.Keep) && slices.Equal(old.udp.Frontends, cur.udp.Frontends) {
		return nil
	}
	st := *cur.udp
	// Also clean frontends the service no longer has.
	for _, f := range old.udp.Frontends {
		if !slices.Contains(st.Frontends, f) {
			st.Frontends = append(slices.Clip(st.Frontends), f)
		}
	}
	return &st
}

func keepEqual(a, b map[netip.AddrPort]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// ErrNotFound reports whether err is an nftables "no such object" error.
func ErrNotFound(err error) bool { return knftables.IsNotFound(err) }
