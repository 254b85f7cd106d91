package iptables

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/svcnet/svcnet/internal/proxy"
)

// root is a top-level chain whose rules are gathered from every service's
// plan. A partial sync rebuilds a root only when a changed service's part
// of it changed (an endpoint change touches none), and then writes only
// the chains of its tree whose rules differ.
type root struct {
	table, chain string
	// part returns a plan's entries in this chain.
	part func(p *svcPlan) []entry
	// ports: the entries are keyed by portKey and split by protocol.
	ports bool
}

var roots = []root{
	{table: tableNAT, chain: kubeServicesChain, part: func(p *svcPlan) []entry { return p.natServices }},
	{table: tableNAT, chain: kubeNodePortsChain, part: func(p *svcPlan) []entry { return p.natNodePorts }, ports: true},
	{table: tableFilter, chain: kubeServicesChain, part: func(p *svcPlan) []entry { return p.filterServices }},
	{table: tableFilter, chain: kubeExternalServicesChain, part: func(p *svcPlan) []entry { return p.filterExternal }},
	{table: tableFilter, chain: kubeProxyFirewallChain, part: func(p *svcPlan) []entry { return p.filterFirewall }},
	{table: tableFilter, chain: kubeNodePortsChain, part: func(p *svcPlan) []entry { return p.filterNodePorts }, ports: true},
}

// rootChanged reports whether a service going from plan a to plan b (either
// may be nil) changes root r.
func rootChanged(r root, a, b *svcPlan) bool {
	var x, y []entry
	if a != nil {
		x = r.part(a)
	}
	if b != nil {
		y = r.part(b)
	}
	if len(x) == 0 && len(y) == 0 {
		return false
	}
	return !reflect.DeepEqual(x, y)
}

// buildRoot renders root r from every plan: the root chain's rules and
// its KUBE-DST chains.
func (b *Backend) buildRoot(r root, records map[proxy.ServicePortName]*svcPlan) map[string][]string {
	var es []entry
	for _, p := range records {
		es = append(es, r.part(p)...)
	}
	chains := map[string][]string{}
	seed := r.table + " " + r.chain
	switch {
	case r.ports:
		// One tree per protocol; the protocol is each rule's first match.
		byProto := map[string][]entry{}
		for _, e := range es {
			proto, _, _ := strings.Cut(strings.TrimPrefix(e.rule, "-p "), " ")
			byProto[proto] = append(byProto[proto], e)
		}
		var rules []string
		for _, proto := range slices.Sorted(maps.Keys(byProto)) {
			rules = append(rules, tree(seed+" "+proto, byProto[proto], portMatch(proto), chains)...)
		}
		chains[r.chain] = rules
	case r.table == tableNAT && r.chain == kubeServicesChain:
		// NodePorts: after the service addresses of the node IPs (an
		// ExternalIP may be a node IP), only on the NodePort addresses.
		for _, ip := range b.nodeIPs {
			es = append(es, entry{addr: ip, late: true, rule: fmt.Sprintf(`-d %s -m comment --comment "kubernetes service nodeports" -j %s`, host(ip), kubeNodePortsChain)})
		}
		chains[r.chain] = tree(seed, es, addrMatch, chains)
	case r.table == tableFilter && r.chain == kubeServicesChain:
		rules := tree(seed, es, addrMatch, chains)
		for _, p := range b.serviceCIDRs {
			rules = append(rules, fmt.Sprintf(`-d %s -m comment --comment "unallocated service IP" -j DROP`, p))
		}
		chains[r.chain] = rules
	default:
		chains[r.chain] = tree(seed, es, addrMatch, chains)
	}
	return chains
}

// fixedChains are the top-level chains that do not depend on services.
func (b *Backend) fixedChains() map[string]map[string][]string {
	var fwd []string
	if !b.cfg.TCPBeLiberal {
		// Packets conntrack cannot place (out-of-window TCP) would reach
		// pods un-NATed and draw a RST ("connection reset by peer").
		fwd = append(fwd, "-m conntrack --ctstate INVALID -j DROP")
	}
	fwd = append(fwd,
		`-m comment --comment "kubernetes forwarding rules" -m mark --mark `+masqueradeMark+"/"+masqueradeMark+" -j ACCEPT",
		`-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`)
	return map[string]map[string][]string{
		tableFilter: {kubeForwardChain: fwd},
		tableNAT: {
			kubePostroutingChain: {
				"-m mark ! --mark " + masqueradeMark + "/" + masqueradeMark + " -j RETURN",
				"-j MARK --xor-mark " + masqueradeMark,
				`-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
			},
			kubeMarkMasqChain: {"-j MARK --or-mark " + masqueradeMark},
		},
	}
}
