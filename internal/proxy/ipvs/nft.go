package ipvs

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
)

// TableName is the nftables table (families ip and ip6) with what IPVS
// cannot do itself.
const TableName = "svcnet-ipvs"

// masqueradeMark is bit 14, as kube-proxy.
const masqueradeMark = "0x4000"

// Chains, sets and maps of the table.
const (
	natPreroutingChain  = "nat-prerouting"
	natOutputChain      = "nat-output"
	natPostroutingChain = "nat-postrouting"
	filterInputChain    = "filter-input"
	filterForwardChain  = "filter-forward"
	filterOutputChain   = "filter-output"
	markMasqChain       = "mark-for-masquerade"
	rejectChain         = "reject-chain"
	firewallChainPrefix = "firewall-"

	serviceIPsSet          = "service-ips"           // addr . proto . port of ClusterIP/ExternalIP/LB virtual servers
	serviceAddrsSet        = "service-addrs"         // their addresses
	clusterIPsSet          = "cluster-ips"           // addr . proto . port of ClusterIPs
	masqServicesSet        = "masquerade-services"   // external entries of Cluster-policy services
	nodePortIPsSet         = "nodeport-ips"          // addresses NodePorts answer on
	masqNodePortsSet       = "masquerade-nodeports"  // proto . port of Cluster-policy NodePorts
	hairpinSet             = "hairpin-connections"   // endpoint . endpoint . proto . port
	noEndpointServicesMap  = "no-endpoint-services"  // addr . proto . port : reject | drop
	noEndpointNodePortsMap = "no-endpoint-nodeports" // proto . port : reject | drop
	firewallIPsMap         = "firewall-ips"          // addr . proto . port : goto firewall-X
)

type nftElem struct {
	fam       v1.IPFamily
	container string
	key       string
	value     string
}

// fwChain is a firewall chain: loadBalancerSourceRanges of one LB IP.
type fwChain struct {
	fam    v1.IPFamily
	ranges string // rendered, for comparison
	prefix []netip.Prefix
}

// svcNFT is what one service port contributes to the tables.
type svcNFT struct {
	elems []nftElem
	fws   map[string]fwChain
}

// nftBook is the reference-counted record of the tables' contents: two
// services may need the same element (e.g. one ClusterIP in service-addrs
// for two ports), so an element goes only when its last user goes.
type nftBook struct {
	refs   map[nftElem]int
	fws    map[string]fwChain
	perSvc map[proxy.ServicePortName]svcNFT
	global []nftElem
}

func newNFTBook() *nftBook {
	return &nftBook{refs: map[nftElem]int{}, fws: map[string]fwChain{}, perSvc: map[proxy.ServicePortName]svcNFT{}}
}

func famOf(a netip.Addr) v1.IPFamily {
	if a.Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

func famMatch(fam v1.IPFamily, a netip.Addr) bool { return famOf(a) == fam }

func l4(p uint16) string { return strings.ToLower(protoName(p)) }

func firewallChain(k vsKey) string {
	sum := sha256.Sum256([]byte(k.String()))
	return firewallChainPrefix + base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" +
		strings.NewReplacer(":", ".", " ", "-", "[", "", "]", "").Replace(strings.ToLower(k.String()))
}

// planNFT is what plan puts in the tables.
func planNFT(plan []*virtualServer) svcNFT {
	out := svcNFT{}
	seen := map[nftElem]bool{}
	add := func(fam v1.IPFamily, container, key, value string) {
		e := nftElem{fam, container, key, value}
		if !seen[e] {
			seen[e] = true
			out.elems = append(out.elems, e)
		}
	}
	for _, vs := range plan {
		fam := famOf(vs.key.addr)
		a, p, port := vs.key.addr.String(), l4(vs.key.proto), fmt.Sprint(vs.key.port)
		tuple := a + " . " + p + " . " + port
		verdict := ""
		switch vs.noEps {
		case rejectNoEndpoints:
			verdict = "goto " + rejectChain
		case dropNoEndpoints:
			verdict = "drop"
		}
		if vs.entry == EntryNodePort {
			if vs.masquerade {
				add(fam, masqNodePortsSet, p+" . "+port, "")
			}
			if verdict != "" {
				add(fam, noEndpointNodePortsMap, p+" . "+port, verdict)
			}
		} else {
			add(fam, serviceIPsSet, tuple, "")
			add(fam, serviceAddrsSet, a, "")
			if vs.entry == EntryClusterIP {
				add(fam, clusterIPsSet, tuple, "")
			}
			if vs.masquerade {
				add(fam, masqServicesSet, tuple, "")
			}
			if verdict != "" {
				add(fam, noEndpointServicesMap, tuple, verdict)
			}
			if vs.sourceRanges != nil {
				ch := firewallChain(vs.key)
				if out.fws == nil {
					out.fws = map[string]fwChain{}
				}
				out.fws[ch] = fwChain{fam: fam, ranges: fmt.Sprint(vs.sourceRanges), prefix: vs.sourceRanges}
				add(fam, firewallIPsMap, tuple, "goto "+ch)
			}
		}
		for ap, w := range vs.dests {
			if w > 0 {
				ea := ap.Addr().String()
				add(fam, hairpinSet, ea+" . "+ea+" . "+p+" . "+fmt.Sprint(ap.Port()), "")
			}
		}
	}
	return out
}

// nftDelta is the change of the tables' contents in one sync.
type nftDelta struct {
	before   map[nftElem]bool
	fwBefore map[string]*fwChain
}

func (d *nftDelta) touch(bk *nftBook, e nftElem) {
	if _, ok := d.before[e]; !ok {
		d.before[e] = bk.refs[e] > 0
	}
}

func (d *nftDelta) touchFW(bk *nftBook, ch string) {
	if _, ok := d.fwBefore[ch]; !ok {
		if c, ok := bk.fws[ch]; ok {
			d.fwBefore[ch] = &c
		} else {
			d.fwBefore[ch] = nil
		}
	}
}

func (bk *nftBook) replace(d *nftDelta, old, new svcNFT) {
	for _, e := range old.elems {
		d.touch(bk, e)
		if bk.refs[e]--; bk.refs[e] <= 0 {
			delete(bk.refs, e)
		}
	}
	for _, e := range new.elems {
		d.touch(bk, e)
		bk.refs[e]++
	}
	for ch := range old.fws {
		d.touchFW(bk, ch)
		delete(bk.fws, ch)
	}
	for ch, c := range new.fws {
		d.touchFW(bk, ch)
		bk.fws[ch] = c
	}
}

// updateNFT brings the record up to date for the candidate services (all
// of them on a full sync) and the node IPs, and returns what changed.
func (b *Backend) updateNFT(full bool, cands []proxy.ServicePortName) *nftDelta {
	if full || b.nft == nil {
		b.nft = newNFTBook()
		cands = cands[:0:0]
		for n := range b.records {
			cands = append(cands, n)
		}
	}
	d := &nftDelta{before: map[nftElem]bool{}, fwBefore: map[string]*fwChain{}}
	var global svcNFT
	for _, ip := range b.nodeIPs {
		global.elems = append(global.elems, nftElem{famOf(ip), nodePortIPsSet, ip.String(), ""})
	}
	b.nft.replace(d, svcNFT{elems: b.nft.global}, global)
	b.nft.global = global.elems
	for _, n := range cands {
		var next svcNFT
		if plan, ok := b.records[n]; ok {
			next = planNFT(plan)
		}
		b.nft.replace(d, b.nft.perSvc[n], next)
		if next.elems == nil && next.fws == nil {
			delete(b.nft.perSvc, n)
		} else {
			b.nft.perSvc[n] = next
		}
	}
	return d
}

// syncNFT writes the tables: on a full sync by recreating each family's
// table in one transaction, otherwise one transaction per family of only
// the element and firewall chain changes, none when nothing changed.
func (b *Backend) syncNFT(ctx context.Context, full bool, cands []proxy.ServicePortName) error {
	full = full || b.nft == nil
	d := b.updateNFT(full, cands)
	var errs []error
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		nft := b.cfg.NFT[fam]
		if nft == nil {
			continue
		}
		var tx *knftables.Transaction
		if full {
			tx = b.nftTransaction(nft, fam)
		} else if tx = b.nftDeltaTx(nft, fam, d); tx == nil {
			continue
		}
		if err := nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("ipvs: nftables %s table: %w", fam, err))
		}
	}
	if len(errs) > 0 {
		b.nft = nil // rebuilt by the next (full) sync
	}
	return errors.Join(errs...)
}

func sortedElems(m map[nftElem]bool, keep func(nftElem, bool) bool) []nftElem {
	var out []nftElem
	for e, v := range m {
		if keep(e, v) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y nftElem) int {
		return strings.Compare(x.container+"|"+x.key+"|"+x.value, y.container+"|"+y.key+"|"+y.value)
	})
	return out
}

// nftDeltaTx returns fam's transaction for d, nil when nothing changed.
func (b *Backend) nftDeltaTx(nft knftables.Interface, fam v1.IPFamily, d *nftDelta) *knftables.Transaction {
	tx := nft.NewTransaction()
	n := 0
	for _, e := range sortedElems(d.before, func(e nftElem, was bool) bool { return e.fam == fam && was && b.nft.refs[e] == 0 }) {
		tx.Delete(element(e))
		n++
	}
	var added, removed []string
	for ch, was := range d.fwBefore {
		now, ok := b.nft.fws[ch]
		switch {
		case ok && now.fam == fam && (was == nil || was.ranges != now.ranges):
			added = append(added, ch)
		case !ok && was != nil && was.fam == fam:
			removed = append(removed, ch)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	for _, ch := range added {
		tx.Add(&knftables.Chain{Name: ch})
		tx.Flush(&knftables.Chain{Name: ch})
		for _, r := range firewallRules(fam, b.nft.fws[ch].prefix) {
			tx.Add(&knftables.Rule{Chain: ch, Rule: r})
		}
		n++
	}
	for _, e := range sortedElems(d.before, func(e nftElem, was bool) bool { return e.fam == fam && !was && b.nft.refs[e] > 0 }) {
		tx.Add(element(e))
		n++
	}
	for _, ch := range removed {
		tx.Delete(&knftables.Chain{Name: ch})
		n++
	}
	if n == 0 {
		return nil
	}
	return tx
}

func element(e nftElem) *knftables.Element {
	el := &knftables.Element{Key: strings.Split(e.key, " . ")}
	if e.value != "" {
		el.Map, el.Value = e.container, []string{e.value}
	} else {
		el.Set = e.container
	}
	return el
}

func firewallRules(fam v1.IPFamily, ranges []netip.Prefix) []string {
	ipX := "ip"
	if fam == v1.IPv6Protocol {
		ipX = "ip6"
	}
	var srcs []string
	for _, p := range ranges {
		srcs = append(srcs, p.String())
	}
	var out []string
	if len(srcs) > 0 {
		out = append(out, knftables.Concat(ipX, "saddr {", strings.Join(srcs, ", "), "}", "return"))
	}
	return append(out, "drop")
}

func (b *Backend) nftTransaction(nft knftables.Interface, fam v1.IPFamily) *knftables.Transaction {
	ipX, addr := "ip", "ipv4_addr"
	if fam == v1.IPv6Protocol {
		ipX, addr = "ip6", "ipv6_addr"
	}
	tx := nft.NewTransaction()
	comment := knftables.PtrTo("svcnet ipvs mode: masquerade and filtering")
	// Recreated whole, atomically: stale firewall chains go with it.
	tx.Add(&knftables.Table{Comment: comment})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: comment})
	base := []struct {
		name string
		typ  knftables.BaseChainType
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
	}{
		{natPreroutingChain, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
		{natOutputChain, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
		{natPostroutingChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
		// Filter priority 0 runs before IPVS (LOCAL_IN at NAT_SRC-1), so it
		// sees the virtual server address.
		{filterInputChain, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
		{filterForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
		{filterOutputChain, knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	}
	for _, bc := range base {
		tx.Add(&knftables.Chain{Name: bc.name, Type: knftables.PtrTo(bc.typ), Hook: knftables.PtrTo(bc.hook), Priority: knftables.PtrTo(bc.prio)})
	}
	for _, ch := range []string{markMasqChain, rejectChain} {
		tx.Add(&knftables.Chain{Name: ch})
	}
	tuple := addr + " . inet_proto . inet_service"
	for _, s := range []struct{ name, typ string }{
		{serviceIPsSet, tuple}, {serviceAddrsSet, addr}, {clusterIPsSet, tuple}, {masqServicesSet, tuple},
		{nodePortIPsSet, addr}, {masqNodePortsSet, "inet_proto . inet_service"},
		{hairpinSet, addr + " . " + addr + " . inet_proto . inet_service"},
	} {
		tx.Add(&knftables.Set{Name: s.name, Type: s.typ})
	}
	for _, m := range []struct{ name, typ string }{
		{noEndpointServicesMap, tuple + " : verdict"},
		{noEndpointNodePortsMap, "inet_proto . inet_service : verdict"},
		{firewallIPsMap, tuple + " : verdict"},
	} {
		tx.Add(&knftables.Map{Name: m.name, Type: m.typ})
	}
	rule := func(chain string, parts ...string) {
		tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(parts)})
	}
	dst := ipX + " daddr . meta l4proto . th dport"
	mark := "meta mark set mark or " + masqueradeMark

	// Masquerade decisions before IPVS rewrites the destination.
	rule(natPreroutingChain, "jump", markMasqChain)
	rule(natOutputChain, "jump", markMasqChain)
	var ccidrs []string
	for _, p := range b.cfg.ClusterCIDRs {
		if famMatch(fam, p.Addr()) {
			ccidrs = append(ccidrs, p.Masked().String())
		}
	}
	switch {
	case b.cfg.MasqueradeAll:
		rule(markMasqChain, dst, "@"+clusterIPsSet, mark)
	case len(ccidrs) > 0:
		rule(markMasqChain, dst, "@"+clusterIPsSet, ipX, "saddr != {", strings.Join(ccidrs, ", "), "}", mark)
	}
	rule(markMasqChain, dst, "@"+masqServicesSet, mark)
	rule(markMasqChain, ipX, "daddr @"+nodePortIPsSet, "meta l4proto . th dport @"+masqNodePortsSet, mark)
	rule(natPostroutingChain, "mark and", masqueradeMark, "!= 0 mark set mark xor", masqueradeMark, "masquerade fully-random")
	rule(natPostroutingChain, ipX, "saddr .", ipX, "daddr . meta l4proto . th dport @"+hairpinSet, "masquerade fully-random")

	// Filtering IPVS cannot do: source ranges, no endpoints, unused ports
	// of service IPs, unallocated service CIDR addresses.
	rule(rejectChain, "meta l4proto tcp reject with tcp reset")
	rule(rejectChain, "reject")
	rule(filterInputChain, "ct state new", dst, "vmap @"+firewallIPsMap)
	rule(filterInputChain, "ct state new", dst, "vmap @"+noEndpointServicesMap)
	rule(filterInputChain, "ct state new", ipX, "daddr @"+nodePortIPsSet, "meta l4proto . th dport vmap @"+noEndpointNodePortsMap)
	rule(filterInputChain, "ct state new", ipX, "daddr @"+serviceAddrsSet, dst, "!= @"+serviceIPsSet, "reject")
	var scidrs []string
	for _, p := range b.serviceCIDRs {
		if famMatch(fam, p.Addr()) {
			scidrs = append(scidrs, p.Masked().String())
		}
	}
	if len(scidrs) > 0 {
		for _, ch := range []string{filterForwardChain, filterOutputChain} {
			rule(ch, "ct state new", ipX, "daddr {", strings.Join(scidrs, ", "), "}", ipX, "daddr != @"+serviceAddrsSet, "drop")
		}
	}
	var chains []string
	for ch, c := range b.nft.fws {
		if c.fam == fam {
			chains = append(chains, ch)
		}
	}
	slices.Sort(chains)
	for _, ch := range chains {
		tx.Add(&knftables.Chain{Name: ch})
		for _, r := range firewallRules(fam, b.nft.fws[ch].prefix) {
			tx.Add(&knftables.Rule{Chain: ch, Rule: r})
		}
	}
	all := make(map[nftElem]bool, len(b.nft.refs))
	for e := range b.nft.refs {
		all[e] = true
	}
	for _, e := range sortedElems(all, func(e nftElem, _ bool) bool { return e.fam == fam }) {
		tx.Add(element(e))
	}
	return tx
}

func cleanupNFT(ctx context.Context, nfts map[v1.IPFamily]knftables.Interface) error {
	var errs []error
	for fam, nft := range nfts {
		tx := nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("ipvs: delete nftables %s table: %w", fam, err))
		}
	}
	return errors.Join(errs...)
}
