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
	container string
	key       string
	value     string
}

// nftContent is the per-family, sync-dependent part of the table.
type nftContent struct {
	elems     []nftElem
	firewalls map[string][]netip.Prefix // chain -> allowed sources
}

func famMatch(fam v1.IPFamily, a netip.Addr) bool { return a.Is4() == (fam == v1.IPv4Protocol) }

func l4(p uint16) string { return strings.ToLower(protoName(p)) }

func firewallChain(k vsKey) string {
	sum := sha256.Sum256([]byte(k.String()))
	return firewallChainPrefix + base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" +
		strings.NewReplacer(":", ".", " ", "-", "[", "", "]", "").Replace(strings.ToLower(k.String()))
}

func (b *Backend) nftContent(fam v1.IPFamily) nftContent {
	c := nftContent{firewalls: map[string][]netip.Prefix{}}
	seen := map[nftElem]bool{}
	add := func(container, key, value string) {
		e := nftElem{container, key, value}
		if !seen[e] {
			seen[e] = true
			c.elems = append(c.elems, e)
		}
	}
	for _, ip := range b.nodeIPs {
		if famMatch(fam, ip) {
			add(nodePortIPsSet, ip.String(), "")
		}
	}
	for _, plan := range b.records {
		for _, vs := range plan {
			if !famMatch(fam, vs.key.addr) {
				continue
			}
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
					add(masqNodePortsSet, p+" . "+port, "")
				}
				if verdict != "" {
					add(noEndpointNodePortsMap, p+" . "+port, verdict)
				}
			} else {
				add(serviceIPsSet, tuple, "")
				add(serviceAddrsSet, a, "")
				if vs.entry == EntryClusterIP {
					add(clusterIPsSet, tuple, "")
				}
				if vs.masquerade {
					add(masqServicesSet, tuple, "")
				}
				if verdict != "" {
					add(noEndpointServicesMap, tuple, verdict)
				}
				if vs.sourceRanges != nil {
					ch := firewallChain(vs.key)
					c.firewalls[ch] = vs.sourceRanges
					add(firewallIPsMap, tuple, "goto "+ch)
				}
			}
			for ap, w := range vs.dests {
				if w > 0 {
					ea := ap.Addr().String()
					add(hairpinSet, ea+" . "+ea+" . "+p+" . "+fmt.Sprint(ap.Port()), "")
				}
			}
		}
	}
	slices.SortFunc(c.elems, func(x, y nftElem) int {
		return strings.Compare(x.container+"|"+x.key+"|"+x.value, y.container+"|"+y.key+"|"+y.value)
	})
	return c
}

// nftWritten is what a family's table holds, as last written.
type nftWritten struct {
	elems     map[nftElem]bool
	firewalls map[string]string // chain -> its source ranges, rendered
}

func (c nftContent) written() *nftWritten {
	w := &nftWritten{elems: make(map[nftElem]bool, len(c.elems)), firewalls: map[string]string{}}
	for _, e := range c.elems {
		w.elems[e] = true
	}
	for ch, r := range c.firewalls {
		w.firewalls[ch] = fmt.Sprint(r)
	}
	return w
}

// syncNFT brings each family's table to the current records: on a full
// sync (or after a failure) by recreating the table in one transaction,
// otherwise by one transaction of only the element (and firewall chain)
// changes, none when nothing changed.
func (b *Backend) syncNFT(ctx context.Context, full bool) error {
	var errs []error
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		nft := b.cfg.NFT[fam]
		if nft == nil {
			continue
		}
		c := b.nftContent(fam)
		old := b.nftState[fam]
		var tx *knftables.Transaction
		if full || old == nil {
			tx = b.nftTransaction(nft, fam, c)
		} else if tx = b.nftDelta(nft, fam, old, c); tx == nil {
			continue
		}
		if err := nft.Run(ctx, tx); err != nil {
			delete(b.nftState, fam)
			errs = append(errs, fmt.Errorf("ipvs: nftables %s table: %w", fam, err))
			continue
		}
		b.nftState[fam] = c.written()
	}
	return errors.Join(errs...)
}

// nftDelta returns the transaction from old to c, nil when they are equal.
func (b *Backend) nftDelta(nft knftables.Interface, fam v1.IPFamily, old *nftWritten, c nftContent) *knftables.Transaction {
	tx := nft.NewTransaction()
	n := 0
	want := c.written()
	for e := range old.elems {
		if !want.elems[e] {
			tx.Delete(element(e))
			n++
		}
	}
	var newChains []string
	for ch, r := range want.firewalls {
		if old.firewalls[ch] != r {
			newChains = append(newChains, ch)
		}
	}
	slices.Sort(newChains)
	for _, ch := range newChains {
		tx.Add(&knftables.Chain{Name: ch})
		tx.Flush(&knftables.Chain{Name: ch})
		for _, r := range firewallRules(fam, c.firewalls[ch]) {
			tx.Add(&knftables.Rule{Chain: ch, Rule: r})
		}
		n++
	}
	for _, e := range c.elems {
		if !old.elems[e] {
			tx.Add(element(e))
			n++
		}
	}
	for ch := range old.firewalls {
		if _, ok := want.firewalls[ch]; !ok {
			tx.Delete(&knftables.Chain{Name: ch})
			n++
		}
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

func (b *Backend) nftTransaction(nft knftables.Interface, fam v1.IPFamily, c nftContent) *knftables.Transaction {
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
	for _, p := range b.cfg.ServiceCIDRs {
		if famMatch(fam, p.Addr()) {
			scidrs = append(scidrs, p.Masked().String())
		}
	}
	if len(scidrs) > 0 {
		for _, ch := range []string{filterForwardChain, filterOutputChain} {
			rule(ch, "ct state new", ipX, "daddr {", strings.Join(scidrs, ", "), "}", ipX, "daddr != @"+serviceAddrsSet, "drop")
		}
	}
	chains := make([]string, 0, len(c.firewalls))
	for ch := range c.firewalls {
		chains = append(chains, ch)
	}
	slices.Sort(chains)
	for _, ch := range chains {
		tx.Add(&knftables.Chain{Name: ch})
		for _, r := range firewallRules(fam, c.firewalls[ch]) {
			tx.Add(&knftables.Rule{Chain: ch, Rule: r})
		}
	}
	for _, e := range c.elems {
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
