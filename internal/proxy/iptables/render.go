package iptables

import (
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// chainPlan is one per-service nat chain and its rules (the text after
// "-A NAME ", in iptables-save's canonical spelling).
type chainPlan struct {
	name  string
	rules []string
}

// svcPlan is everything one service port contributes: its own nat chains,
// and its rules in the shared top-level chains. It is a pure function of
// the ServicePort, its endpoints and the backend config (and node IPs), so
// comparing two plans tells whether the service must be rewritten.
type svcPlan struct {
	chains []chainPlan

	natServices     []entry // nat KUBE-SERVICES (ClusterIP, ExternalIP, LB IP)
	natNodePorts    []entry // nat KUBE-NODEPORTS (keyed by portKey)
	filterServices  []entry // filter KUBE-SERVICES (no endpoints, unused ports)
	filterExternal  []entry // filter KUBE-EXTERNAL-SERVICES
	filterFirewall  []entry // filter KUBE-PROXY-FIREWALL
	filterNodePorts []entry // filter KUBE-NODEPORTS (health check ports, keyed by portKey)

	// udp is set for UDP services: what conntrack cleanup needs.
	udp *conntrack.Stale
}

func (p *svcPlan) equal(q *svcPlan) bool { return reflect.DeepEqual(p, q) }

// chainRules counts the rules of the plan's own chains.
func (p *svcPlan) chainRules() int {
	if p == nil {
		return 0
	}
	n := 0
	for _, c := range p.chains {
		n += len(c.rules)
	}
	return n
}

// chain returns p's chain called name (p may be nil).
func (p *svcPlan) chain(name string) *chainPlan {
	if p == nil {
		return nil
	}
	for i := range p.chains {
		if p.chains[i].name == name {
			return &p.chains[i]
		}
	}
	return nil
}

func (b *Backend) familyAddrs(addrs []netip.Addr) []netip.Addr {
	return proxy.AddrsOfFamily(addrs, b.ipv6)
}

func (b *Backend) familyEndpoints(eps []proxy.Endpoint) []proxy.Endpoint {
	return proxy.EndpointsOfFamily(eps, b.ipv6)
}

// host renders a as a host prefix ("10.0.0.1/32", "fd00::1/128").
func host(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// render builds the plan for one service port, or nil when the service has
// no ClusterIP of this backend's family. The structure follows upstream's
// syncProxyRules; differences are noted inline.
func (b *Backend) render(sp *proxy.ServicePort, allEps []proxy.Endpoint) *svcPlan {
	cips := b.familyAddrs(sp.ClusterIPs)
	if len(cips) == 0 {
		return nil
	}
	clusterIP := cips[0]
	cluster, local, reachable, hasAny := proxy.CategorizeEndpoints(b.familyEndpoints(allEps), sp)

	n := sp.Name
	name := n.String()
	proto := strings.ToLower(string(sp.Protocol))
	svc, svl, ext, fw := svcChain(n), svlChain(n), extChain(n), fwChain(n)

	usesCluster := len(cluster) > 0 && sp.UsesClusterEndpoints()
	usesLocal := len(local) > 0 && sp.UsesLocalEndpoints()
	internalChain, hasInternal := svc, hasAny
	if sp.InternalPolicyLocal {
		internalChain = svl
		hasInternal = hasAny && len(local) > 0
	}
	externalPolicyChain, hasExternal := svc, hasAny
	if sp.ExternalPolicyLocal {
		externalPolicyChain = svl
		hasExternal = hasAny && len(local) > 0
	}
	usesExternal := hasAny && sp.ExternallyAccessible()
	lbIPs := b.familyAddrs(sp.LoadBalancerIPs)
	var ranges []netip.Prefix
	for _, r := range sp.LoadBalancerSourceRanges {
		if r.Addr().Is4() == !b.ipv6 {
			ranges = append(ranges, r)
		}
	}
	usesFW := hasAny && len(lbIPs) > 0 && len(sp.LoadBalancerSourceRanges) > 0
	lbChain := ext
	if usesFW {
		lbChain = fw
	}

	// No endpoints anywhere: REJECT. Endpoints elsewhere but none usable
	// under a Local policy: DROP (the client should try another node).
	const reject = "REJECT --reject-with " // + icmp type
	rejectTarget := reject + "icmp-port-unreachable"
	if b.ipv6 {
		rejectTarget = reject + "icmp6-port-unreachable"
	}
	internalTarget, externalTarget := "DROP", "DROP"
	if !hasAny {
		internalTarget, externalTarget = rejectTarget, rejectTarget
	}

	// match is the canonical "-d ADDR -p P -m comment … -m P --dport N".
	match := func(a netip.Addr, what string) string {
		return fmt.Sprintf(`-d %s -p %s -m comment --comment "%s %s" -m %s --dport %d`, host(a), proto, name, what, proto, sp.Port)
	}

	p := &svcPlan{}

	// ClusterIP.
	if hasInternal {
		p.natServices = append(p.natServices, entry{addr: clusterIP, rule: match(clusterIP, "cluster IP") + " -j " + internalChain})
	} else {
		comment := "has no endpoints"
		if hasAny {
			comment = "has no local endpoints"
		}
		p.filterServices = append(p.filterServices, entry{addr: clusterIP, rule: match(clusterIP, comment) + " -j " + internalTarget})
	}
	// Any other port of an allocated ClusterIP is refused (svcnet, as
	// upstream's nftables mode; the rule is shared by the service's ports).
	p.filterServices = append(p.filterServices, entry{addr: clusterIP, late: true, rule: "-d " + host(clusterIP) + " -j " + rejectTarget})

	for _, ip := range b.familyAddrs(sp.ExternalIPs) {
		if hasAny {
			p.natServices = append(p.natServices, entry{addr: ip, rule: match(ip, "external IP") + " -j " + ext})
		}
		if !hasExternal {
			p.filterExternal = append(p.filterExternal, entry{addr: ip, rule: match(ip, "external IP") + " -j " + externalTarget})
		}
	}
	for _, ip := range lbIPs {
		if hasAny {
			p.natServices = append(p.natServices, entry{addr: ip, rule: match(ip, "loadbalancer IP") + " -j " + lbChain})
		}
		if usesFW {
			p.filterFirewall = append(p.filterFirewall, entry{addr: ip, rule: match(ip, "traffic not accepted by "+fw) + " -j DROP"})
		}
		if !hasExternal {
			p.filterExternal = append(p.filterExternal, entry{addr: ip, rule: match(ip, "loadbalancer IP") + " -j " + externalTarget})
		}
	}
	if sp.NodePort != 0 {
		if hasAny {
			p.natNodePorts = append(p.natNodePorts, entry{addr: portKey(sp.NodePort),
				rule: fmt.Sprintf(`-p %s -m comment --comment "%s" -m %s --dport %d -j %s`, proto, name, proto, sp.NodePort, ext)})
		}
		if !hasExternal {
			// Upstream matches "-m addrtype --dst-type LOCAL"; NodePorts
			// answer only on b.nodeIPs here (as the nftables backend).
			for _, ip := range b.nodeIPs {
				p.filterExternal = append(p.filterExternal, entry{addr: ip, rule: fmt.Sprintf(`-d %s -p %s -m comment --comment "%s node port" -m %s --dport %d -j %s`,
					host(ip), proto, name, proto, sp.NodePort, externalTarget)})
			}
		}
	}
	if sp.HealthCheckNodePort != 0 {
		p.filterNodePorts = append(p.filterNodePorts, entry{addr: portKey(sp.HealthCheckNodePort),
			rule: fmt.Sprintf(`-p tcp -m comment --comment "%s health check node port" -m tcp --dport %d -j ACCEPT`, name, sp.HealthCheckNodePort)})
	}

	// Masquerade ClusterIP traffic from outside the cluster (or all of it),
	// at the top of the internal policy chain as upstream.
	var internalMasq []string
	if hasInternal {
		m := fmt.Sprintf(`-d %s -p %s -m comment --comment "%s cluster IP" -m %s --dport %d -j %s`, host(clusterIP), proto, name, proto, sp.Port, kubeMarkMasqChain)
		switch {
		case b.cfg.MasqueradeAll:
			internalMasq = []string{m}
		case len(b.clusterCIDRs) > 0:
			// "! -s" takes one prefix: the first cluster CIDR of the family.
			internalMasq = []string{fmt.Sprintf("! -s %s %s", b.clusterCIDRs[0], m)}
		}
	}

	if usesExternal {
		var rules []string
		if !sp.ExternalPolicyLocal {
			rules = append(rules, fmt.Sprintf(`-m comment --comment "masquerade traffic for %s external destinations" -j %s`, name, kubeMarkMasqChain))
		} else {
			short := svc
			if !usesCluster {
				short = svl
			}
			for _, c := range b.clusterCIDRs {
				rules = append(rules, fmt.Sprintf(`-s %s -m comment --comment "pod traffic for %s external destinations" -j %s`, c, name, short))
			}
			rules = append(rules,
				fmt.Sprintf(`-m comment --comment "masquerade LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j %s`, name, kubeMarkMasqChain),
				fmt.Sprintf(`-m comment --comment "route LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j %s`, name, short))
		}
		if hasExternal {
			rules = append(rules, "-j "+externalPolicyChain)
		}
		p.chains = append(p.chains, chainPlan{name: ext, rules: rules})
	}
	if usesFW {
		var rules []string
		allowFromNode := false
		for _, r := range ranges {
			rules = append(rules, fmt.Sprintf(`-s %s -m comment --comment "%s loadbalancer IP" -j %s`, r, name, ext))
			for _, nip := range b.nodeIPs {
				if r.Contains(nip) {
					allowFromNode = true
				}
			}
		}
		if allowFromNode {
			// A node reaching a local LB IP uses it as the source address.
			for _, ip := range lbIPs {
				rules = append(rules, fmt.Sprintf(`-s %s -m comment --comment "%s loadbalancer IP" -j %s`, host(ip), name, ext))
			}
		}
		// What falls off the end is not DNATed and meets the DROP in
		// filter KUBE-PROXY-FIREWALL.
		p.chains = append(p.chains, chainPlan{name: fw, rules: rules})
	}
	if usesCluster {
		rules := internalMasq
		if sp.InternalPolicyLocal {
			rules = nil
		}
		p.chains = append(p.chains, chainPlan{name: svc, rules: append(rules, b.dispatchRules(sp, cluster)...)})
	}
	if usesLocal {
		var rules []string
		if sp.InternalPolicyLocal {
			rules = internalMasq
		}
		p.chains = append(p.chains, chainPlan{name: svl, rules: append(rules, b.dispatchRules(sp, local)...)})
	}
	for _, ep := range reachable {
		if !needsSEP(sp, ep) {
			continue
		}
		sep := sepChain(n, ep)
		dnat := "-p " + proto
		if sp.AffinityTimeout > 0 {
			dnat += " -m recent --set --name " + sep + " --mask " + b.fullMask() + " --rsource"
		}
		dnat += fmt.Sprintf(" -m %s -j DNAT --to-destination %s", proto, ep.AddrPort())
		p.chains = append(p.chains, chainPlan{name: sep, rules: []string{
			// Hairpin: an endpoint reaching itself through the service.
			"-s " + host(ep.IP) + " -j " + kubeMarkMasqChain,
			dnat,
		}})
	}

	// Entries of the same key sort by service.
	for _, list := range [][]entry{p.natServices, p.natNodePorts, p.filterServices, p.filterExternal, p.filterFirewall, p.filterNodePorts} {
		for i := range list {
			list[i].order = name + "/" + proto
		}
	}

	if sp.Protocol == v1.ProtocolUDP {
		st := &conntrack.Stale{Keep: map[netip.AddrPort]bool{}}
		for _, ip := range append(append([]netip.Addr{clusterIP}, b.familyAddrs(sp.ExternalIPs)...), lbIPs...) {
			st.Frontends = append(st.Frontends, netip.AddrPortFrom(ip, uint16(sp.Port)))
		}
		st.NodePort = uint16(sp.NodePort)
		for _, ep := range reachable {
			st.Keep[ep.AddrPort()] = true
		}
		p.udp = st
	}
	return p
}

// dispatchRules writes the endpoint choice of one policy chain: with
// ClientIP affinity first one "recent --rcheck" rule per endpoint, then the
// statistic cascade (rule i of N matches with probability 1/(N-i), so each
// endpoint gets 1/N; the last rule always matches).
func (b *Backend) dispatchRules(sp *proxy.ServicePort, eps []proxy.Endpoint) []string {
	rules := make([]string, 0, 2*len(eps))
	if sp.AffinityTimeout > 0 {
		secs := max(int(sp.AffinityTimeout.Seconds()), 1)
		for _, ep := range eps {
			sep := sepChain(sp.Name, ep)
			rules = append(rules, fmt.Sprintf("-m recent --rcheck --seconds %d --reap --name %s --mask %s --rsource -j %s", secs, sep, b.fullMask(), sep))
		}
	}
	proto := strings.ToLower(string(sp.Protocol))
	for i, ep := range eps {
		stat := ""
		if i < len(eps)-1 {
			stat = fmt.Sprintf("-m statistic --mode random --probability %s ", probability(len(eps)-i))
		}
		if needsSEP(sp, ep) {
			rules = append(rules, stat+"-j "+sepChain(sp.Name, ep))
			continue
		}
		// iptables-save's order: -p first, then the matches as given.
		rules = append(rules, fmt.Sprintf("-p %s %s-m %s -j DNAT --to-destination %s", proto, stat, proto, ep.AddrPort()))
	}
	return rules
}

// needsSEP reports whether endpoint ep gets its own KUBE-SEP chain: with
// ClientIP affinity (the chain names the recent list), and for local
// endpoints (only they can reach themselves through the service and need
// the hairpin masquerade). Other endpoints are DNATed straight from the
// policy chain: upstream writes a 2-rule KUBE-SEP chain for every
// endpoint, which at 10k services × 10 endpoints triples the ruleset that
// iptables-restore must load.
func needsSEP(sp *proxy.ServicePort, ep proxy.Endpoint) bool {
	return sp.AffinityTimeout > 0 || ep.IsLocal
}

// probability is upstream's spelling of 1/n.
func probability(n int) string { return strconv.FormatFloat(1/float64(n), 'f', 10, 64) }

// fullMask is the recent module's default --mask, as iptables-save prints it.
func (b *Backend) fullMask() string {
	if b.ipv6 {
		return "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	return "255.255.255.255"
}
