package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// chainPlan is one per-service chain and its rules, in order.
type chainPlan struct {
	name  string
	rules []string
}

// setPlan is one per-endpoint affinity set.
type setPlan struct {
	name    string
	timeout time.Duration
}

// svcRecord is what the backend wrote for one service port: the inputs of
// its plan. render is a pure function of them and of what forces a full
// sync when it changes (node addresses, configuration), so a partial sync
// re-renders the previous plan instead of keeping it (at 10k services the
// plans would hold ~15 MB of element text).
type svcRecord struct {
	sp  *proxy.ServicePort
	eps []proxy.Endpoint
}

// svcPlan is everything one service port contributes to the table. It is a
// pure function of the ServicePort, its endpoints and the backend config, so
// comparing two plans tells whether the service must be rewritten.
type svcPlan struct {
	chains []chainPlan
	sets   []setPlan
	elems  []elemWant
	// picks are the N of the shared pick-N chains this service jumps to.
	picks []int
	// udp is set for UDP services: what conntrack cleanup needs.
	udp *conntrack.Stale
}

func (p *svcPlan) rules() int {
	n := 0
	for _, c := range p.chains {
		n += len(c.rules)
	}
	return n
}

// hasChain reports whether p (which may be nil) has chain c with the same
// rules.
func (p *svcPlan) hasChain(c chainPlan) bool {
	if p == nil {
		return false
	}
	for _, x := range p.chains {
		if x.name == c.name {
			return slices.Equal(x.rules, c.rules)
		}
	}
	return false
}

func (p *svcPlan) equal(q *svcPlan) bool {
	if !slices.Equal(p.picks, q.picks) || len(p.chains) != len(q.chains) || len(p.sets) != len(q.sets) || len(p.elems) != len(q.elems) {
		return false
	}
	for i := range p.chains {
		a, b := p.chains[i], q.chains[i]
		if a.name != b.name || len(a.rules) != len(b.rules) {
			return false
		}
		for j := range a.rules {
			if a.rules[j] != b.rules[j] {
				return false
			}
		}
	}
	for i := range p.sets {
		if p.sets[i] != q.sets[i] {
			return false
		}
	}
	for i := range p.elems {
		if p.elems[i] != q.elems[i] {
			return false
		}
	}
	return true
}

// familyAddrs returns the addresses of addrs in the backend's family.
func (b *Backend) familyAddrs(addrs []netip.Addr) []netip.Addr {
	return proxy.AddrsOfFamily(addrs, b.ipv6)
}

func (b *Backend) familyEndpoints(eps []proxy.Endpoint) []proxy.Endpoint {
	return proxy.EndpointsOfFamily(eps, b.ipv6)
}

// render builds the plan for one service port, or nil when the service has
// no ClusterIP of this backend's family.
func (b *Backend) render(sp *proxy.ServicePort, allEps []proxy.Endpoint) *svcPlan {
	cips := b.familyAddrs(sp.ClusterIPs)
	if len(cips) == 0 {
		return nil
	}
	clusterIP := cips[0]
	eps := b.familyEndpoints(allEps)
	cluster, local, reachable, hasAny := proxy.CategorizeEndpoints(eps, sp)

	proto := strings.ToLower(string(sp.Protocol))
	port := strconv.Itoa(int(sp.Port))
	base := serviceChainBase(sp.Name)
	clusterChain := clusterChainPrefix + base
	localChain := localChainPrefix + base
	externalChain := externalChainPrefix + base
	fwChain := firewallChainPrefix + base
	affinity := sp.AffinityTimeout > 0
	ipX := b.ipX()

	p := &svcPlan{}
	elem := func(container, value string, key ...string) {
		p.elems = append(p.elems, elemWant{elemKey: elemKey{container: containerOf(container), key: strings.Join(key, " . ")}, value: value})
	}

	// Hairpin: a local endpoint reaching itself through the service must be
	// masqueraded or it would answer itself directly.
	for _, ep := range reachable {
		if ep.IsLocal {
			elem(hairpinSet, "", ep.IP.String(), ep.IP.String(), proto, strconv.Itoa(int(ep.Port)))
		}
	}

	usesCluster := len(cluster) > 0 && sp.UsesClusterEndpoints()
	usesLocal := len(local) > 0 && sp.UsesLocalEndpoints()

	internalChain, hasInternal := clusterChain, hasAny
	if sp.InternalPolicyLocal {
		internalChain = localChain
		hasInternal = hasAny && len(local) > 0
	}
	externalPolicyChain, hasExternal := clusterChain, hasAny
	if sp.ExternalPolicyLocal {
		externalPolicyChain = localChain
		hasExternal = hasAny && len(local) > 0
	}
	usesExternal := hasAny && sp.ExternallyAccessible()

	// No endpoints anywhere: reject. Endpoints elsewhere but none usable
	// under Local policy: drop (the client should try another node).
	internalVerdict, externalVerdict := "drop", "drop"
	if !hasAny {
		internalVerdict = "goto " + rejectChain
		externalVerdict = "goto " + rejectChain
	}

	// Chains are written only when something points at them.
	referenced := map[string]bool{}
	ref := func(chain string) string {
		referenced[chain] = true
		return chain
	}
	// usePick records that the service jumps to the shared chain pick-n.
	usePick := func(n int) string {
		if !slices.Contains(p.picks, n) {
			p.picks = append(p.picks, n)
		}
		return pickChainName(n)
	}
	// slots fills the slots of one frontend (destination address and port)
	// with eps, for the pick-N chain that chooses among them.
	slots := func(eps []proxy.Endpoint, targetPort uint16, addr, port string) {
		if len(eps) == 1 {
			elem(singleEndpointMap, eps[0].IP.String()+" . "+strconv.Itoa(int(targetPort)), addr, proto, port)
			return
		}
		elem(endpointPortsMap, strconv.Itoa(int(targetPort)), addr, proto, port)
		for i, ep := range eps {
			elem(endpointSlotsMap, ep.IP.String(), addr, proto, port, strconv.Itoa(i))
		}
	}

	elem(clusterIPsSet, "", clusterIP.String())
	if hasInternal {
		internalEps := cluster
		if sp.InternalPolicyLocal {
			internalEps = local
		}
		if targetPort, ok := commonPort(internalEps); ok && !affinity {
			// The common case needs no chain of its own: the ClusterIP
			// jumps to the shared pick-N chain, whose one rule DNATs to
			// slot "numgen random mod N" of this ClusterIP in
			// endpoint-slots, port from endpoint-ports (pick-1: address
			// and port from single-endpoint). An endpoint
			// change is then a map-element change, which the kernel
			// applies without re-validating the table's chains.
			slots(internalEps, targetPort, clusterIP.String(), port)
			elem(serviceIPsMap, "goto "+usePick(len(internalEps)), clusterIP.String(), proto, port)
		} else {
			elem(serviceIPsMap, "goto "+ref(internalChain), clusterIP.String(), proto, port)
		}
	} else {
		elem(noEndpointServicesMap, internalVerdict, clusterIP.String(), proto, port)
	}
	for _, ip := range b.familyAddrs(sp.ExternalIPs) {
		if hasAny {
			elem(serviceIPsMap, "goto "+ref(externalChain), ip.String(), proto, port)
		}
		if !hasExternal {
			elem(noEndpointServicesMap, externalVerdict, ip.String(), proto, port)
		}
	}
	lbIPs := b.familyAddrs(sp.LoadBalancerIPs)
	usesFW := len(lbIPs) > 0 && len(sp.LoadBalancerSourceRanges) > 0
	for _, ip := range lbIPs {
		if hasAny {
			elem(serviceIPsMap, "goto "+ref(externalChain), ip.String(), proto, port)
		}
		if usesFW {
			elem(firewallIPsMap, "goto "+fwChain, ip.String(), proto, port)
		}
		if !hasExternal {
			elem(noEndpointServicesMap, externalVerdict, ip.String(), proto, port)
		}
	}
	if sp.NodePort != 0 {
		np := strconv.Itoa(int(sp.NodePort))
		if hasAny {
			elem(serviceNodePortsMap, "goto "+ref(externalChain), proto, np)
		}
		if !hasExternal {
			elem(noEndpointNodePortsMap, externalVerdict, proto, np)
		}
	}

	if usesExternal {
		var rules []string
		if !sp.ExternalPolicyLocal {
			// External traffic to a Cluster-policy service may leave the node:
			// masquerade so replies come back through us.
			rules = append(rules, b.masqRule())
		} else {
			shortCircuit := clusterChain
			if !usesCluster {
				shortCircuit = localChain
			}
			if len(b.clusterCIDRs) > 0 {
				// Pods reaching an external IP of the service are treated as
				// internal traffic (as kube-proxy does).
				rules = append(rules, fmt.Sprintf("%s saddr %s goto %s", ipX, prefixMatch(b.clusterCIDRs), ref(shortCircuit)))
			}
			rules = append(rules,
				"fib saddr type local "+b.masqRule(),
				"fib saddr type local goto "+ref(shortCircuit))
		}
		if targetPort, ok := commonPort(cluster); ok && hasExternal && !sp.ExternalPolicyLocal && !affinity {
			// As for the ClusterIP: every external destination (external
			// and LoadBalancer IPs, NodePort on each node address) gets
			// its own slots, so endpoint moves touch elements only.
			for _, ip := range append(b.familyAddrs(sp.ExternalIPs), lbIPs...) {
				slots(cluster, targetPort, ip.String(), port)
			}
			if sp.NodePort != 0 {
				for _, ip := range b.nodeIPs {
					slots(cluster, targetPort, ip.String(), strconv.Itoa(int(sp.NodePort)))
				}
			}
			rules = append(rules, "goto "+usePick(len(cluster)))
		} else if hasExternal {
			rules = append(rules, "goto "+ref(externalPolicyChain))
		}
		p.chains = append(p.chains, chainPlan{name: externalChain, rules: rules})
	}

	if usesFW {
		var srcs []string
		allowFromNode := false
		for _, r := range sp.LoadBalancerSourceRanges {
			if r.Addr().Is4() != !b.ipv6 {
				continue
			}
			srcs = append(srcs, r.String())
			for _, nip := range b.nodeIPs {
				if r.Contains(nip) {
					allowFromNode = true
				}
			}
		}
		if allowFromNode {
			// Traffic from the node itself to the LB IP arrives with the LB IP
			// as its source when the LB IP is local.
			for _, ip := range lbIPs {
				srcs = append(srcs, ip.String())
			}
		}
		rule := "drop"
		if len(srcs) > 0 {
			rule = fmt.Sprintf("%s saddr != { %s } drop", ipX, strings.Join(srcs, ", "))
		}
		p.chains = append(p.chains, chainPlan{name: fwChain, rules: []string{rule}})
	}

	if usesCluster && referenced[clusterChain] {
		p.chains = append(p.chains, chainPlan{name: clusterChain, rules: b.dispatchRules(sp, cluster, affinity)})
	}
	if usesLocal && referenced[localChain] {
		p.chains = append(p.chains, chainPlan{name: localChain, rules: b.dispatchRules(sp, local, affinity)})
	}
	if affinity {
		for _, ep := range reachable {
			eb := endpointChainBase(sp.Name, ep)
			set := affinitySetPrefix + eb
			p.sets = append(p.sets, setPlan{name: set, timeout: sp.AffinityTimeout})
			p.chains = append(p.chains, chainPlan{name: endpointChainPrefix + eb, rules: []string{
				fmt.Sprintf("update @%s { %s saddr }", set, ipX),
				fmt.Sprintf("meta l4proto %s dnat to %s", proto, ep.AddrPort()),
			}})
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

// dispatchRules writes the endpoint choice for one policy chain.
//
// Without affinity it is a cascade, as iptables' statistic rules: rule i
// (of N) matches with probability 1/(N-i), so each endpoint gets 1/N:
//
//	numgen random mod 3 0 meta l4proto tcp dnat to A
//	numgen random mod 2 0 meta l4proto tcp dnat to B
//	meta l4proto tcp dnat to C
//
// (dnat ends rule evaluation). This uses no sets: with nft 1.0.x, one
// anonymous "numgen … map { … }" per service makes a 10k-service load ~3×
// slower, and a map shared by every service costs O(elements) per rule
// that binds it (quadratic).
func (b *Backend) dispatchRules(sp *proxy.ServicePort, eps []proxy.Endpoint, affinity bool) []string {
	proto := strings.ToLower(string(sp.Protocol))
	if !affinity {
		rules := make([]string, 0, len(eps))
		for i, ep := range eps {
			if i == len(eps)-1 {
				rules = append(rules, fmt.Sprintf("meta l4proto %s dnat to %s", proto, ep.AddrPort()))
				break
			}
			rules = append(rules, fmt.Sprintf("numgen random mod %d 0 meta l4proto %s dnat to %s", len(eps)-i, proto, ep.AddrPort()))
		}
		return rules
	}
	rules := make([]string, 0, len(eps)+1)
	vm := make([]string, len(eps))
	for i, ep := range eps {
		epChain := endpointChainPrefix + endpointChainBase(sp.Name, ep)
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", b.ipX(), affinitySetPrefix+endpointChainBase(sp.Name, ep), epChain))
		vm[i] = fmt.Sprintf("%d : goto %s", i, epChain)
	}
	return append(rules, fmt.Sprintf("numgen random mod %d vmap { %s }", len(eps), strings.Join(vm, " , ")))
}

// pickRule is the one rule of chain pick-N: DNAT to the address in slot
// "numgen random mod N" of the packet's destination in endpoint-slots and to
// the destination's port in endpoint-ports. pick-1 needs no choice: one
// lookup in single-endpoint gives address and port. (A numgen-keyed map
// cannot hold "address . port" values: nft 1.0.6 refuses a typeof value
// with "th dport" in a rule, and "tcp dport" would make the rule TCP-only.)
func (b *Backend) pickRule(n int) string {
	key := b.ipX() + " daddr . meta l4proto . th dport"
	if n == 1 {
		return fmt.Sprintf("dnat %s to %s map @%s", b.ipX(), key, singleEndpointMap)
	}
	return fmt.Sprintf("dnat %s to %s . numgen random mod %d map @%s : %s map @%s",
		b.ipX(), key, n, endpointSlotsMap, key, endpointPortsMap)
}

// commonPort returns the port all of eps listen on, if there is one.
func commonPort(eps []proxy.Endpoint) (uint16, bool) {
	if len(eps) == 0 {
		return 0, false
	}
	for _, ep := range eps[1:] {
		if ep.Port != eps[0].Port {
			return 0, false
		}
	}
	return uint16(eps[0].Port), true
}

func (b *Backend) ipX() string {
	if b.ipv6 {
		return "ip6"
	}
	return "ip"
}

func (b *Backend) masqRule() string { return "mark set mark or " + masqueradeMark }

// prefixMatch is the right-hand side matching any of ps: a single prefix
// as such (a mask and a compare, the cheapest match), several as an
// anonymous interval set (a set lookup).
func prefixMatch(ps []netip.Prefix) string {
	if len(ps) == 1 {
		return ps[0].String()
	}
	return "{ " + joinPrefixes(ps) + " }"
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
