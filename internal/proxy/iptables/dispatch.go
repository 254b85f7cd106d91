package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The destination gate.
//
// Upstream's KUBE-SERVICES is one linear chain with a rule per ClusterIP,
// ExternalIP and LoadBalancer IP port, and KUBE-NODEPORTS one with a rule
// per NodePort: every new connection of the node, service or not, walks
// all of KUBE-SERVICES (at 10k services that costs about a third of the
// node's connection rate). Without ipset (which the node may not have),
// svcnet turns each top-level chain into a 16-ary prefix tree over the
// destination address (KUBE-NODEPORTS: over the destination port, per
// protocol):
//
//	KUBE-SERVICES:  -d 10.96.0.0/20 -j KUBE-DST-…   (≤ 16 prefix jumps)
//	KUBE-DST-…:     -d 10.96.0.0/24 -j KUBE-DST-…
//	KUBE-DST-…:     -d 10.96.0.10/32 -p tcp … --dport 80 -j KUBE-SVC-…
//	KUBE-NODEPORTS: -p tcp -m tcp --dport 30000:30255 -j KUBE-DST-…
//
// A chain holds at most leafMax rules as they are; beyond that its keys
// are grouped by the nibble after their common prefix, one jump per group
// (a group of one rule is inlined). Chains sit at nibble-aligned prefixes,
// so adding a far-away address adds a level above the existing chains
// instead of renaming them. A packet to a non-service address fails at
// most 16 cheap "-d prefix" tests per level it enters (the kernel tests
// addresses before any match module), and one to a service walks
// O(log16 n) levels of at most 16 rules. The tree is a pure function of
// the entries, so a change rewrites only the chains whose rules differ.

// leafMax is the largest chain written as plain rules.
const leafMax = 16

// entry is one rule of a top-level chain, keyed by destination address
// (or, for KUBE-NODEPORTS, by portKey).
type entry struct {
	addr netip.Addr
	// late entries go after the others of the same key (e.g. the NodePort
	// jump after the ExternalIP rules of a node address, the catch-all
	// REJECT after a ClusterIP's ports).
	late bool
	// order sorts entries of the same key and lateness (the service name:
	// deterministic payloads).
	order string
	rule  string
}

// portKey encodes a port as an IPv4-shaped key, so port trees reuse the
// address tree (prefix lengths 16..32 are port ranges).
func portKey(port int32) netip.Addr {
	return netip.AddrFrom4([4]byte{0, 0, byte(port >> 8), byte(port)})
}

// keyMatch renders the match of a tree jump for prefix p.
type keyMatch func(p netip.Prefix) string

func addrMatch(p netip.Prefix) string { return "-d " + p.String() }

// portMatch returns the match of port-range prefixes for protocol proto.
func portMatch(proto string) keyMatch {
	return func(p netip.Prefix) string {
		b := p.Masked().Addr().As4()
		lo := int(b[2])<<8 | int(b[3])
		hi := lo + 1<<(32-p.Bits()) - 1
		return fmt.Sprintf("-p %s -m %s --dport %d:%d", proto, proto, lo, hi)
	}
}

func cmpEntry(a, b entry) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	if a.late != b.late {
		if a.late {
			return 1
		}
		return -1
	}
	return strings.Compare(a.order, b.order)
}

// tree renders entries for a top-level chain: its rules and the extra
// KUBE-DST chains (name → rules) added to chains. name seeds the chain
// names (table, root chain, protocol for port trees).
func tree(name string, entries []entry, match keyMatch, chains map[string][]string) []string {
	es := slices.Clone(entries)
	slices.SortFunc(es, cmpEntry)
	es = slices.CompactFunc(es, func(a, b entry) bool { return a.addr == b.addr && a.rule == b.rule })
	return buildNode(name, es, match, chains)
}

// buildNode returns the rules of a chain holding es (sorted).
func buildNode(name string, es []entry, match keyMatch, chains map[string][]string) []string {
	if len(es) <= leafMax || es[0].addr == es[len(es)-1].addr {
		rules := make([]string, len(es))
		for i, e := range es {
			rules[i] = e.rule
		}
		return rules
	}
	common := commonBits(es[0].addr, es[len(es)-1].addr)
	bits := min((common/4+1)*4, es[0].addr.BitLen())
	var rules []string
	for i := 0; i < len(es); {
		p := netip.PrefixFrom(es[i].addr, bits).Masked()
		j := i + 1
		for j < len(es) && p.Contains(es[j].addr) {
			j++
		}
		group := es[i:j]
		if len(group) == 1 {
			rules = append(rules, group[0].rule)
		} else {
			chain := dispatchChainPrefix + hash16(name+" "+p.String())
			chains[chain] = buildNode(name, group, match, chains)
			rules = append(rules, match(p)+" -j "+chain)
		}
		i = j
	}
	return rules
}

// commonBits is the length of the longest common prefix of a and b (of
// the same family).
func commonBits(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	for i := range x {
		d := x[i] ^ y[i]
		if d == 0 {
			n += 8
			continue
		}
		for d&0x80 == 0 {
			n++
			d <<= 1
		}
		break
	}
	if a.Is4() {
		n = max(n-96, 0)
	}
	return n
}
