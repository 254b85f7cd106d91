package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// Schedulers are the IPVS schedulers the mode accepts (ipvs.scheduler and
// the svcnet.io/lb-algorithm annotation).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh"}

// DefaultScheduler is used when neither the configuration nor the Service
// names one.
const DefaultScheduler = "rr"

// ParseScheduler returns the IPVS scheduler name for s: one of Schedulers
// (any case), the userspace mode's spellings of the same algorithms
// (round-robin, least-connections, source-hash), or "" for the default.
func ParseScheduler(s string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(s))
	switch n {
	case "", "round-robin", "roundrobin":
		return DefaultScheduler, nil
	case "least-connections", "leastconnections", "least-conn":
		return "lc", nil
	case "source-hash", "sourcehash":
		return "sh", nil
	}
	if !slices.Contains(Schedulers, n) {
		return "", fmt.Errorf("ipvs: unknown scheduler %q (known: %s)", s, strings.Join(Schedulers, ", "))
	}
	return n, nil
}

// Entry is how clients reach a virtual server.
type Entry uint8

// The entries.
const (
	EntryClusterIP Entry = iota
	EntryExternalIP
	EntryLoadBalancerIP
	EntryNodePort
)

func (e Entry) String() string {
	return [...]string{"ClusterIP", "ExternalIP", "LoadBalancerIP", "NodePort"}[e]
}

// noEndpoints says what happens to new connections to a virtual server
// without real servers of weight > 0.
type noEndpoints uint8

const (
	hasEndpoints noEndpoints = iota
	rejectNoEndpoints
	dropNoEndpoints // endpoints exist, but none usable under a Local policy here
)

// virtualServer is the desired state of one IPVS virtual server, plus the
// facts the nftables table needs about it.
type virtualServer struct {
	key     vsKey
	owner   proxy.ServicePortName
	entry   Entry
	sched   string
	timeout uint32 // persistence (ClientIP affinity) in seconds, 0 = none
	dests   map[netip.AddrPort]int
	// masquerade: traffic to it from anywhere is SNATed (external entry
	// points of Cluster-policy services).
	masquerade bool
	noEps      noEndpoints
	// sourceRanges are loadBalancerSourceRanges of this family (LB IPs only).
	sourceRanges []netip.Prefix
}

// sameService reports whether a and b need no UpdateService between them.
func (a *virtualServer) sameService(b *virtualServer) bool {
	return a.sched == b.sched && a.timeout == b.timeout
}

func (a *virtualServer) equal(b *virtualServer) bool {
	if a.key != b.key || a.owner != b.owner || a.entry != b.entry || !a.sameService(b) ||
		a.masquerade != b.masquerade || a.noEps != b.noEps || !slices.Equal(a.sourceRanges, b.sourceRanges) ||
		len(a.dests) != len(b.dests) {
		return false
	}
	for k, w := range a.dests {
		if bw, ok := b.dests[k]; !ok || bw != w {
			return false
		}
	}
	return true
}

func protoNum(p v1.Protocol) (uint16, bool) {
	switch p {
	case v1.ProtocolTCP:
		return protoTCP, true
	case v1.ProtocolUDP:
		return protoUDP, true
	case v1.ProtocolSCTP:
		return protoSCTP, true
	}
	return 0, false
}

// plan computes the virtual servers of one service port:
//
//   - one per ClusterIP (the first of each family), ExternalIP and
//     LoadBalancer IP on the Service port, and one per NodePort address on
//     the NodePort (the same entries as `svcnet proxy list` shows);
//   - real servers: the endpoints proxy.CategorizeEndpoints gives the
//     entry's policy (internal for the ClusterIP, external for the rest),
//     weight 1; terminating endpoints of the same pool that are not used
//     get weight 0, so their open connections keep working while no new
//     ones reach them (graceful drain);
//   - scheduler: the annotation, else the configured default; ClientIP
//     affinity becomes persistence with timeoutSeconds.
func (b *Backend) plan(sp *proxy.ServicePort, eps []proxy.Endpoint, nodePortIPs []netip.Addr) []*virtualServer {
	proto, ok := protoNum(sp.Protocol)
	if !ok {
		return nil
	}
	sched := b.defaultSched
	if sp.LBAlgorithm != "" {
		s, err := ParseScheduler(sp.LBAlgorithm)
		if err != nil {
			b.log.Warn("ignoring the Service's lb-algorithm annotation", "service", sp.Name.String(), "err", err)
		} else {
			sched = s
		}
	}
	var timeout uint32
	if sp.AffinityTimeout > 0 {
		timeout = uint32(sp.AffinityTimeout.Seconds())
		if timeout == 0 {
			timeout = 1
		}
	}
	var out []*virtualServer
	for _, v4 := range []bool{true, false} {
		fam := func(a netip.Addr) bool { return a.Is4() == v4 }
		cips := filterAddrs(sp.ClusterIPs, fam)
		if len(cips) == 0 {
			continue
		}
		af := uint16(afInet)
		if !v4 {
			af = afInet6
		}
		var feps []proxy.Endpoint
		for _, e := range eps {
			if fam(e.IP) {
				feps = append(feps, e)
			}
		}
		cluster, local, _, hasAny := proxy.CategorizeEndpoints(feps, sp)
		var ranges []netip.Prefix
		for _, p := range sp.LoadBalancerSourceRanges {
			if fam(p.Addr()) {
				ranges = append(ranges, p.Masked())
			}
		}
		if len(sp.LoadBalancerSourceRanges) > 0 && len(ranges) == 0 {
			// Only ranges of the other family: nobody of this family may use the LB IPs.
			ranges = []netip.Prefix{}
		}
		add := func(ip netip.Addr, port int32, entry Entry, localPolicy bool) {
			if port <= 0 || port > 65535 {
				return
			}
			pool := cluster
			if localPolicy {
				pool = local
			}
			vs := &virtualServer{
				key:   vsKey{af: af, proto: proto, addr: ip, port: uint16(port)},
				owner: sp.Name, entry: entry, sched: sched, timeout: timeout,
				dests:      map[netip.AddrPort]int{},
				masquerade: entry != EntryClusterIP && !localPolicy,
			}
			for _, e := range pool {
				vs.dests[e.AddrPort()] = 1
			}
			for _, e := range feps {
				if e.Terminating && (!localPolicy || e.IsLocal) {
					if _, ok := vs.dests[e.AddrPort()]; !ok {
						vs.dests[e.AddrPort()] = 0
					}
				}
			}
			switch {
			case len(pool) > 0:
			case hasAny:
				vs.noEps = dropNoEndpoints
			default:
				vs.noEps = rejectNoEndpoints
			}
			if entry == EntryLoadBalancerIP && ranges != nil {
				vs.sourceRanges = ranges
			}
			out = append(out, vs)
		}
		add(cips[0], sp.Port, EntryClusterIP, sp.InternalPolicyLocal)
		for _, ip := range filterAddrs(sp.ExternalIPs, fam) {
			add(ip, sp.Port, EntryExternalIP, sp.ExternalPolicyLocal)
		}
		for _, ip := range filterAddrs(sp.LoadBalancerIPs, fam) {
			add(ip, sp.Port, EntryLoadBalancerIP, sp.ExternalPolicyLocal)
		}
		if sp.NodePort != 0 {
			for _, ip := range filterAddrs(nodePortIPs, fam) {
				add(ip, sp.NodePort, EntryNodePort, sp.ExternalPolicyLocal)
			}
		}
	}
	return out
}

func filterAddrs(addrs []netip.Addr, keep func(netip.Addr) bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() && keep(a) {
			out = append(out, a)
		}
	}
	return out
}
