package userspace

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// Object names in the table.
const (
	tableName = "svcnet-userspace"

	filterPreroutingPreDNATChain = "filter-prerouting-pre-dnat"
	filterOutputPreDNATChain     = "filter-output-pre-dnat"
	filterInputChain             = "filter-input"
	filterForwardChain           = "filter-forward"
	filterOutputChain            = "filter-output"
	natPreroutingChain           = "nat-prerouting"
	natOutputChain               = "nat-output"

	redirectsChain              = "redirects"
	serviceEndpointsCheckChain  = "service-endpoints-check"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	firewallCheckChain          = "firewall-check"
	clusterIPsCheckChain        = "cluster-ips-check"
	rejectChain                 = "reject-chain"

	clusterIPsSet          = "cluster-ips"
	nodePortIPsSet         = "nodeport-ips"
	serviceIPsMap          = "service-ips"
	serviceNodePortsMap    = "service-nodeports"
	noEndpointServicesMap  = "no-endpoint-services"
	noEndpointNodePortsMap = "no-endpoint-nodeports"
	firewallIPsSet         = "firewall-ips"
	firewallAllowSet       = "firewall-allow"
)

// ruleset is everything one sync writes: fixed rules plus the elements of
// the sets and maps. Rendering it twice from the same State gives the same
// value, so an unchanged sync can be skipped.
type ruleset struct {
	rules map[string][]string // chain → rules
	elems []*knftables.Element
}

func (r *ruleset) add(e *knftables.Element) { r.elems = append(r.elems, e) }

func (r *ruleset) fingerprint() string {
	var sb strings.Builder
	for _, c := range slices.Sorted(maps.Keys(r.rules)) {
		fmt.Fprintf(&sb, "%s: %q\n", c, r.rules[c])
	}
	for _, e := range r.elems {
		fmt.Fprintf(&sb, "%s%s %v %v\n", e.Set, e.Map, e.Key, e.Value)
	}
	return sb.String()
}

// count is the number of rules and elements (for SyncStats).
func (r *ruleset) count() int {
	n := len(r.elems)
	for _, rs := range r.rules {
		n += len(rs)
	}
	return n
}

func (b *Backend) ipX() string {
	if b.ipv6 {
		return "ip6"
	}
	return "ip"
}

func (b *Backend) addrType() string {
	if b.ipv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// baseRules renders the fixed chains; scidrs are the service CIDRs of the
// backend's family (proxy.ServiceCIDRsOfFamily).
func (b *Backend) baseRules(scidrs []netip.Prefix) map[string][]string {
	ipX := b.ipX()
	r := map[string][]string{}
	add := func(chain, rule string) { r[chain] = append(r[chain], rule) }
	for _, c := range []string{natPreroutingChain, natOutputChain} {
		add(c, "jump "+redirectsChain)
	}
	for _, proto := range []string{"tcp", "udp"} {
		add(redirectsChain, fmt.Sprintf("meta l4proto %s redirect to : %s daddr . meta l4proto . th dport map @%s", proto, ipX, serviceIPsMap))
		add(redirectsChain, fmt.Sprintf("%s daddr @%s meta l4proto %s redirect to : meta l4proto . th dport map @%s", ipX, nodePortIPsSet, proto, serviceNodePortsMap))
	}
	for _, c := range []string{filterPreroutingPreDNATChain, filterOutputPreDNATChain} {
		add(c, "ct state new jump "+firewallCheckChain)
	}
	add(firewallCheckChain, fmt.Sprintf("%s daddr . meta l4proto . th dport @%s %s daddr . meta l4proto . th dport . %s saddr != @%s drop",
		ipX, firewallIPsSet, ipX, ipX, firewallAllowSet))
	add(filterInputChain, "ct state new jump "+nodePortEndpointsCheckChain)
	for _, c := range []string{filterInputChain, filterForwardChain, filterOutputChain} {
		add(c, "ct state new jump "+serviceEndpointsCheckChain)
	}
	for _, c := range []string{filterForwardChain, filterOutputChain} {
		add(c, "ct state new jump "+clusterIPsCheckChain)
	}
	add(serviceEndpointsCheckChain, fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", ipX, noEndpointServicesMap))
	add(nodePortEndpointsCheckChain, fmt.Sprintf("%s daddr @%s meta l4proto . th dport vmap @%s", ipX, nodePortIPsSet, noEndpointNodePortsMap))
	add(clusterIPsCheckChain, fmt.Sprintf("%s daddr @%s reject", ipX, clusterIPsSet))
	if len(scidrs) > 0 {
		cidrs := make([]string, len(scidrs))
		for i, p := range scidrs {
			cidrs[i] = p.String()
		}
		add(clusterIPsCheckChain, fmt.Sprintf("%s daddr { %s } drop", ipX, strings.Join(cidrs, ", ")))
	}
	add(rejectChain, "meta l4proto tcp reject with tcp reset")
	add(rejectChain, "reject")
	return r
}

type baseChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
}

var baseChains = []baseChain{
	{filterPreroutingPreDNATChain, knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
	{filterOutputPreDNATChain, knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
	{filterInputChain, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
	{filterForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	{filterOutputChain, knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	{natPreroutingChain, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
	{natOutputChain, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
}

var regularChains = []string{redirectsChain, serviceEndpointsCheckChain, nodePortEndpointsCheckChain,
	firewallCheckChain, clusterIPsCheckChain, rejectChain}

// transaction writes rs from scratch in one transaction: every chain is
// flushed and refilled, every set and map emptied and refilled, so the
// kernel switches from the old rule set to the new one atomically. The
// first sync of a process recreates the table, dropping leftovers.
func (b *Backend) transaction(tx *knftables.Transaction, rs *ruleset) {
	comment := knftables.PtrTo("svcnet service proxy (userspace mode)")
	tx.Add(&knftables.Table{Comment: comment})
	if !b.initialized {
		tx.Delete(&knftables.Table{})
		tx.Add(&knftables.Table{Comment: comment})
	}
	for _, bc := range baseChains {
		c := &knftables.Chain{Name: bc.name, Type: knftables.PtrTo(bc.typ), Hook: knftables.PtrTo(bc.hook), Priority: knftables.PtrTo(bc.priority)}
		tx.Add(c)
		tx.Flush(c)
	}
	for _, name := range regularChains {
		tx.Add(&knftables.Chain{Name: name})
		tx.Flush(&knftables.Chain{Name: name})
	}
	addr := b.addrType()
	sets := []*knftables.Set{
		{Name: clusterIPsSet, Type: addr, Comment: knftables.PtrTo("active ClusterIPs")},
		{Name: nodePortIPsSet, Type: addr, Comment: knftables.PtrTo("IPs that accept NodePort traffic")},
		{Name: firewallIPsSet, Type: addr + " . inet_proto . inet_service", Comment: knftables.PtrTo("LoadBalancer IPs with loadBalancerSourceRanges")},
		{Name: firewallAllowSet, Type: addr + " . inet_proto . inet_service . " + addr, Flags: []knftables.SetFlag{knftables.IntervalFlag},
			Comment: knftables.PtrTo("allowed sources of firewall-ips")},
	}
	for _, s := range sets {
		tx.Add(s)
		tx.Flush(s)
	}
	maps := []*knftables.Map{
		{Name: serviceIPsMap, Type: addr + " . inet_proto . inet_service : inet_service", Comment: knftables.PtrTo("ClusterIP, ExternalIP and LoadBalancer IP → listener port")},
		{Name: serviceNodePortsMap, Type: "inet_proto . inet_service : inet_service", Comment: knftables.PtrTo("NodePort → listener port")},
		{Name: noEndpointServicesMap, Type: addr + " . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("services without usable endpoints: reject or drop")},
		{Name: noEndpointNodePortsMap, Type: "inet_proto . inet_service : verdict", Comment: knftables.PtrTo("nodeports without usable endpoints: reject or drop")},
	}
	for _, m := range maps {
		tx.Add(m)
		tx.Flush(m)
	}
	if b.set.transparent.Load() {
		b.mangleChain(tx)
	}
	chains := append(slicesOf(baseChains), regularChains...)
	for _, c := range chains {
		for _, r := range rs.rules[c] {
			tx.Add(&knftables.Rule{Chain: c, Rule: r})
		}
	}
	for _, e := range rs.elems {
		tx.Add(e)
	}
}

func slicesOf(bcs []baseChain) []string {
	out := make([]string, len(bcs))
	for i, bc := range bcs {
		out[i] = bc.name
	}
	return out
}

// frontend elements.

func redirectElem(a netip.Addr, proto string, port int32, lport uint16) *knftables.Element {
	return &knftables.Element{Map: serviceIPsMap, Key: []string{a.String(), proto, itoa(port)}, Value: []string{strconv.Itoa(int(lport))}}
}

func redirectNodePortElem(proto string, port int32, lport uint16) *knftables.Element {
	return &knftables.Element{Map: serviceNodePortsMap, Key: []string{proto, itoa(port)}, Value: []string{strconv.Itoa(int(lport))}}
}

func noEndpointsElem(a netip.Addr, proto string, port int32, verdict string) *knftables.Element {
	return &knftables.Element{Map: noEndpointServicesMap, Key: []string{a.String(), proto, itoa(port)}, Value: []string{verdict}}
}

func noEndpointsNodePortElem(proto string, port int32, verdict string) *knftables.Element {
	return &knftables.Element{Map: noEndpointNodePortsMap, Key: []string{proto, itoa(port)}, Value: []string{verdict}}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

// elemKey identifies an element in the table: its set or map and its key
// (not a map element's value).
func elemKey(e *knftables.Element) string {
	return e.Set + e.Map + " " + strings.Join(e.Key, " ")
}

// sameValue reports whether two elements of one key have the same value.
func sameValue(a, b *knftables.Element) bool { return slices.Equal(a.Value, b.Value) }

// sortElems orders elements for a stable fingerprint.
func sortElems(es []*knftables.Element) []*knftables.Element {
	type keyed struct {
		key string
		e   *knftables.Element
	}
	ks := make([]keyed, len(es))
	for i, e := range es {
		ks[i] = keyed{elemKey(e), e}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	// Keys may repeat (an address shared by two services); keep the first.
	ks = slices.CompactFunc(ks, func(a, b keyed) bool { return a.key == b.key })
	out := es[:len(ks)]
	for i, k := range ks {
		out[i] = k.e
	}
	return out
}
