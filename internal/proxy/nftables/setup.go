package nftables

import (
	"context"
	"fmt"
	"net/netip"

	"sigs.k8s.io/knftables"
)

type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
}

var baseChains = []baseChain{
	// Before DNAT: the firewall sees the original destination.
	{filterPreroutingPreDNATChain, knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
	{filterOutputPreDNATChain, knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
	{filterInputChain, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
	{filterForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	{filterOutputChain, knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	{natPreroutingChain, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
	{natOutputChain, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
	{natPostroutingChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
}

// jumps connect base chains to the regular chains. The filter jumps only
// look at new connections: established ones were decided already.
var jumps = []struct{ from, extra, to string }{
	{filterInputChain, "ct state new", nodePortEndpointsCheckChain},
	{filterInputChain, "ct state new", serviceEndpointsCheckChain},
	{filterForwardChain, "ct state new", serviceEndpointsCheckChain},
	{filterOutputChain, "ct state new", serviceEndpointsCheckChain},
	{filterPreroutingPreDNATChain, "ct state new", firewallCheckChain},
	{filterOutputPreDNATChain, "ct state new", firewallCheckChain},
	{natOutputChain, "", servicesChain},
	{natPreroutingChain, "", servicesChain},
	{natPostroutingChain, "", masqueradingChain},
	{filterForwardChain, "ct state new", clusterIPsCheckChain},
	{filterOutputChain, "ct state new", clusterIPsCheckChain},
}

func (b *Backend) addrType() string {
	if b.ipv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// setup writes the fixed part of the table for a full sync: base chains,
// top-level chains and their rules, and empties every shared set and map
// (they are refilled by the same transaction). On the first sync of the
// process the whole table is deleted and recreated, which also removes
// whatever an older version left behind.
func (b *Backend) setup(_ context.Context, tx *knftables.Transaction) error {
	ipX, addr := b.ipX(), b.addrType()
	b.elems.reset()
	b.baseRules = 0
	rule := func(chain, r string) {
		tx.Add(&knftables.Rule{Chain: chain, Rule: r})
		b.baseRules++
	}
	chain := func(name string) {
		tx.Add(&knftables.Chain{Name: name})
		tx.Flush(&knftables.Chain{Name: name})
	}

	tx.Add(&knftables.Table{Comment: knftables.PtrTo("svcnet service proxy")})
	if !b.initialized {
		tx.Delete(&knftables.Table{})
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("svcnet service proxy")})
	}
	for _, bc := range baseChains {
		c := &knftables.Chain{Name: bc.name, Type: knftables.PtrTo(bc.typ), Hook: knftables.PtrTo(bc.hook), Priority: knftables.PtrTo(bc.priority)}
		tx.Add(c)
		tx.Flush(c)
	}
	for _, c := range []string{servicesChain, masqueradingChain, serviceEndpointsCheckChain,
		nodePortEndpointsCheckChain, firewallCheckChain, clusterIPsCheckChain, rejectChain} {
		chain(c)
	}
	if !b.cfg.TCPBeLiberal {
		// Packets conntrack cannot place (e.g. out-of-window TCP) would
		// otherwise reach pods without reverse NAT and draw a RST.
		rule(filterForwardChain, "ct state invalid drop")
	}
	for _, j := range jumps {
		rule(j.from, knftables.Concat(j.extra, "jump", j.to))
	}

	sets := []struct{ name, typ, comment string }{
		{clusterIPsSet, addr, "active ClusterIPs"},
		{nodePortIPsSet, addr, "IPs that accept NodePort traffic"},
		{hairpinSet, addr + " . " + addr + " . inet_proto . inet_service", "local endpoints that may reach themselves through a service"},
	}
	for _, s := range sets {
		set := &knftables.Set{Name: s.name, Type: s.typ, Comment: knftables.PtrTo(s.comment)}
		tx.Add(set)
		tx.Flush(set)
	}
	maps := []struct{ name, typ, comment string }{
		{serviceIPsMap, addr + " . inet_proto . inet_service : verdict", "ClusterIP, ExternalIP and LoadBalancer IP traffic"},
		{serviceNodePortsMap, "inet_proto . inet_service : verdict", "NodePort traffic"},
		{noEndpointServicesMap, addr + " . inet_proto . inet_service : verdict", "services without usable endpoints: reject or drop"},
		{noEndpointNodePortsMap, "inet_proto . inet_service : verdict", "nodeports without usable endpoints: reject or drop"},
		{firewallIPsMap, addr + " . inet_proto . inet_service : verdict", "destinations subject to loadBalancerSourceRanges"},
		{endpointPortsMap, addr + " . inet_proto . inet_service : inet_service", "endpoint port of each ClusterIP, for the pick-N chains"},
		{singleEndpointMap, addr + " . inet_proto . inet_service : " + addr + " . inet_service", "endpoint address and port of each ClusterIP with one endpoint, for pick-1"},
	}
	for _, m := range maps {
		mp := &knftables.Map{Name: m.name, Type: m.typ, Comment: knftables.PtrTo(m.comment)}
		tx.Add(mp)
		tx.Flush(mp)
	}
	// endpoint-slots: "ClusterIP . proto . port . slot : endpoint IP", read
	// by the pick-N chains. The numgen key part has no named type, so the
	// map is declared by typeof. (Its value is the address alone: nft 1.0.6
	// cannot read back a typeof with "th dport" in the value, and "tcp
	// dport" would make nft add a TCP-only match to rules written later.)
	slots := &knftables.Map{
		Name:    endpointSlotsMap,
		TypeOf:  fmt.Sprintf("%s daddr . meta l4proto . th dport . numgen random mod 1 : %s daddr", ipX, ipX),
		Comment: knftables.PtrTo("endpoint address of each ClusterIP by slot, for the pick-N chains"),
	}
	tx.Add(slots)
	tx.Flush(slots)

	// Masquerading: marked packets, and hairpin connections.
	rule(masqueradingChain, fmt.Sprintf("mark and %s != 0 mark set mark xor %s masquerade fully-random", masqueradeMark, masqueradeMark))
	rule(masqueradingChain, fmt.Sprintf("ct status dnat %s saddr . %s daddr . meta l4proto . th dport @%s masquerade fully-random", ipX, ipX, hairpinSet))

	// No endpoints: TCP gets a reset, everything else ICMP port unreachable.
	rule(rejectChain, "meta l4proto tcp reject with tcp reset")
	rule(rejectChain, "reject")
	rule(serviceEndpointsCheckChain, fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", ipX, noEndpointServicesMap))
	rule(nodePortEndpointsCheckChain, fmt.Sprintf("%s daddr @%s meta l4proto . th dport vmap @%s", ipX, nodePortIPsSet, noEndpointNodePortsMap))
	rule(firewallCheckChain, fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", ipX, firewallIPsMap))

	// Service CIDR hygiene: unused port on a ClusterIP → reject;
	// unallocated address → drop.
	rule(clusterIPsCheckChain, fmt.Sprintf("%s daddr @%s reject", ipX, clusterIPsSet))
	if len(b.serviceCIDRs) > 0 {
		rule(clusterIPsCheckChain, fmt.Sprintf("%s daddr %s drop", ipX, prefixMatch(b.serviceCIDRs)))
	}

	// Dispatch.
	switch {
	case b.cfg.MasqueradeAll:
		rule(servicesChain, fmt.Sprintf("%s daddr @%s %s", ipX, clusterIPsSet, b.masqRule()))
	case len(b.clusterCIDRs) > 0:
		// Off-cluster clients reaching a ClusterIP (via a route to the
		// service CIDR) are masqueraded so replies return through us.
		rule(servicesChain, fmt.Sprintf("%s daddr @%s %s saddr != %s %s", ipX, clusterIPsSet, ipX, prefixMatch(b.clusterCIDRs), b.masqRule()))
	}
	rule(servicesChain, fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", ipX, serviceIPsMap))
	rule(servicesChain, fmt.Sprintf("%s daddr @%s meta l4proto . th dport vmap @%s", ipX, nodePortIPsSet, serviceNodePortsMap))
	return nil
}

// globalElems are the elements not owned by any service.
func (b *Backend) globalElems(nodeIPs []netip.Addr) []elemWant {
	out := make([]elemWant, 0, len(nodeIPs))
	for _, ip := range nodeIPs {
		out = append(out, elemWant{elemKey: elemKey{container: containerOf(nodePortIPsSet), key: ip.String()}})
	}
	return out
}
