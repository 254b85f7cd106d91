package proxytest

import (
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
)

// The standard topology the table is written against. A backend under test
// is configured with these values (node name and IPs, cluster CIDR for the
// "traffic from outside the cluster is masqueraded" rule, service CIDR for
// "unallocated ClusterIPs are dropped").
const (
	NodeName      = "node-a"
	NodeIP        = "192.168.0.2" // this node
	OtherNodeIP   = "192.168.0.3" // node-b, hosts the remote pods
	ClusterCIDR   = "10.244.0.0/16"
	ServiceCIDR   = "10.96.0.0/16"
	LocalPod      = "10.244.1.100" // a client pod on node-a
	RemotePod     = "10.244.2.100" // a client pod on node-b
	ExternalIP    = "203.0.113.5"  // a client outside the cluster, inside the LB source range
	BlockedClient = "198.51.100.9" // a client outside the LB source range
)

// NodeIPs returns this node's addresses.
func NodeIPs() []netip.Addr { return []netip.Addr{netip.MustParseAddr(NodeIP)} }

// svcSpec is a compact description of one service port of the fixture.
type svcSpec struct {
	name      string
	proto     v1.Protocol
	clusterIP string
	port      int32
	nodePort  int32
	external  []string
	lb        []string
	ranges    []string
	affinity  time.Duration
	etpLocal  bool
	itpLocal  bool
	hcPort    int32
	eps       []epSpec
}

// epSpec is one endpoint: "ip:port" plus conditions and node.
type epSpec struct {
	addr        string
	node        string // "node-a" is local
	ready       bool
	serving     bool
	terminating bool
}

func ready(addr, node string) epSpec {
	return epSpec{addr: addr, node: node, ready: true, serving: true}
}

// The standard services. Endpoints on node-a (local) are 10.244.1.x, on
// node-b 10.244.2.x.
var standard = []svcSpec{
	{name: "clusterip", clusterIP: "10.96.0.10", port: 80, eps: []epSpec{
		ready("10.244.1.2:8080", "node-a"), ready("10.244.2.2:8080", "node-b"), ready("10.244.2.3:8080", "node-b")}},
	{name: "udp", proto: v1.ProtocolUDP, clusterIP: "10.96.0.10", port: 53, eps: []epSpec{
		ready("10.244.1.2:5353", "node-a"), ready("10.244.2.2:5353", "node-b")}},
	{name: "sctp", proto: v1.ProtocolSCTP, clusterIP: "10.96.0.10", port: 9999, eps: []epSpec{
		ready("10.244.2.2:9999", "node-b")}},
	{name: "nodeport", clusterIP: "10.96.0.11", port: 80, nodePort: 30080, eps: []epSpec{
		ready("10.244.1.3:8080", "node-a"), ready("10.244.2.4:8080", "node-b")}},
	{name: "externalip", clusterIP: "10.96.0.12", port: 80, external: []string{"192.0.2.10"}, eps: []epSpec{
		ready("10.244.2.5:80", "node-b")}},
	{name: "lb", clusterIP: "10.96.0.13", port: 80, nodePort: 30081, lb: []string{"192.0.2.20"},
		ranges: []string{"203.0.113.0/25"}, eps: []epSpec{ready("10.244.2.6:80", "node-b")}},
	{name: "etp-local", clusterIP: "10.96.0.14", port: 80, nodePort: 30082, lb: []string{"192.0.2.21"},
		etpLocal: true, hcPort: 30500, eps: []epSpec{
			ready("10.244.1.4:80", "node-a"), ready("10.244.2.7:80", "node-b")}},
	{name: "etp-local-remote-only", clusterIP: "10.96.0.15", port: 80, nodePort: 30083, lb: []string{"192.0.2.22"},
		etpLocal: true, hcPort: 30501, eps: []epSpec{ready("10.244.2.8:80", "node-b")}},
	{name: "itp-local", clusterIP: "10.96.0.16", port: 80, itpLocal: true, eps: []epSpec{
		ready("10.244.1.5:80", "node-a"), ready("10.244.2.9:80", "node-b")}},
	{name: "itp-local-remote-only", clusterIP: "10.96.0.17", port: 80, itpLocal: true, eps: []epSpec{
		ready("10.244.2.10:80", "node-b")}},
	{name: "no-endpoints", clusterIP: "10.96.0.18", port: 80, nodePort: 30084, external: []string{"192.0.2.11"}},
	{name: "affinity", clusterIP: "10.96.0.19", port: 80, affinity: 10 * time.Second, eps: []epSpec{
		ready("10.244.1.6:80", "node-a"), ready("10.244.2.11:80", "node-b")}},
	{name: "terminating", clusterIP: "10.96.0.20", port: 80, eps: []epSpec{
		{addr: "10.244.2.12:80", node: "node-b", serving: true, terminating: true},
		{addr: "10.244.2.13:80", node: "node-b", terminating: true}}},
	{name: "terminating-mixed", clusterIP: "10.96.0.21", port: 80, eps: []epSpec{
		ready("10.244.2.14:80", "node-b"),
		{addr: "10.244.2.15:80", node: "node-b", serving: true, terminating: true}}},
	{name: "not-ready", clusterIP: "10.96.0.22", port: 80, eps: []epSpec{
		{addr: "10.244.2.16:80", node: "node-b"}}},
	{name: "hairpin", clusterIP: "10.96.0.23", port: 80, eps: []epSpec{ready("10.244.1.7:80", "node-a")}},
}

// StandardState returns a fresh State (Full, every service Changed) holding
// the standard services, for node-a.
func StandardState() *proxy.State {
	st := proxy.NewState(NodeName)
	st.NodeIPs = NodeIPs()
	st.Full = true
	st.Generation = 1
	for _, s := range standard {
		proto := s.proto
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		name := proxy.ServicePortName{
			NamespacedName: types.NamespacedName{Namespace: "ns", Name: s.name},
			Port:           "p",
			Protocol:       proto,
		}
		sp := &proxy.ServicePort{
			Name:                name,
			ClusterIPs:          []netip.Addr{netip.MustParseAddr(s.clusterIP)},
			Port:                s.port,
			Protocol:            proto,
			NodePort:            s.nodePort,
			ExternalIPs:         addrs(s.external),
			LoadBalancerIPs:     addrs(s.lb),
			AffinityTimeout:     s.affinity,
			ExternalPolicyLocal: s.etpLocal,
			InternalPolicyLocal: s.itpLocal,
			HealthCheckNodePort: s.hcPort,
		}
		for _, r := range s.ranges {
			sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
		}
		st.Services[name] = sp
		st.Changed[name] = struct{}{}
		for _, e := range s.eps {
			ap := netip.MustParseAddrPort(e.addr)
			st.Endpoints[name] = append(st.Endpoints[name], proxy.Endpoint{
				IP: ap.Addr(), Port: int32(ap.Port()),
				Ready: e.ready, Serving: e.serving, Terminating: e.terminating,
				NodeName: e.node, IsLocal: e.node == NodeName,
			})
		}
	}
	return st
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// StandardCases is the packet-flow table over StandardState, following the
// behaviour of kube-proxy's nftables mode (k/k pkg/proxy/nftables) where
// issue 5 does not say otherwise.
func StandardCases() []Case {
	const (
		clusterEPs = "DNAT 10.244.1.2:8080,10.244.2.2:8080,10.244.2.3:8080"
		npEPs      = "DNAT 10.244.1.3:8080,10.244.2.4:8080"
	)
	return []Case{
		// Not service traffic.
		{Name: "pod to pod is not handled", Src: LocalPod, Dst: "10.244.2.2", Port: 8080, Want: ""},
		{Name: "external to node non-nodeport is not handled", Src: ExternalIP, Dst: NodeIP, Port: 22, Want: ""},
		{Name: "pod to other node's nodeport is not ours", Src: LocalPod, Dst: OtherNodeIP, Port: 30080, Want: ""},

		// ClusterIP.
		{Name: "pod to clusterIP", Src: LocalPod, Dst: "10.96.0.10", Port: 80, Want: clusterEPs},
		{Name: "remote pod to clusterIP", Src: RemotePod, Dst: "10.96.0.10", Port: 80, Want: clusterEPs},
		{Name: "node to clusterIP is masqueraded", Src: NodeIP, Dst: "10.96.0.10", Port: 80, Want: clusterEPs, Masq: true},
		{Name: "external to clusterIP is masqueraded", Src: ExternalIP, Dst: "10.96.0.10", Port: 80, Want: clusterEPs, Masq: true},
		{Name: "clusterIP udp", Src: LocalPod, Dst: "10.96.0.10", Proto: "udp", Port: 53, Want: "DNAT 10.244.1.2:5353,10.244.2.2:5353"},
		{Name: "clusterIP sctp", Src: LocalPod, Dst: "10.96.0.10", Proto: "sctp", Port: 9999, Want: "DNAT 10.244.2.2:9999"},
		{Name: "clusterIP wrong protocol is rejected", Src: LocalPod, Dst: "10.96.0.10", Proto: "udp", Port: 80, Want: "REJECT"},
		{Name: "clusterIP unused port is rejected", Src: LocalPod, Dst: "10.96.0.10", Port: 81, Want: "REJECT"},
		{Name: "unallocated clusterIP is dropped", Src: LocalPod, Dst: "10.96.0.200", Port: 80, Want: "DROP"},

		// NodePort: on the node IPs, Cluster policy masquerades.
		{Name: "external to nodeport", Src: ExternalIP, Dst: NodeIP, Port: 30080, Want: npEPs, Masq: true},
		{Name: "pod to nodeport", Src: LocalPod, Dst: NodeIP, Port: 30080, Want: npEPs, Masq: true},
		{Name: "node to own nodeport", Src: NodeIP, Dst: NodeIP, Port: 30080, Want: npEPs, Masq: true},
		{Name: "nodeport udp is not a tcp nodeport", Src: ExternalIP, Dst: NodeIP, Proto: "udp", Port: 30080, Want: ""},
		{Name: "nodeport clusterIP", Src: LocalPod, Dst: "10.96.0.11", Port: 80, Want: npEPs},

		// ExternalIPs.
		{Name: "external to externalIP", Src: ExternalIP, Dst: "192.0.2.10", Port: 80, Want: "DNAT 10.244.2.5:80", Masq: true},
		{Name: "pod to externalIP", Src: LocalPod, Dst: "192.0.2.10", Port: 80, Want: "DNAT 10.244.2.5:80", Masq: true},
		{Name: "externalIP other port is not handled", Src: ExternalIP, Dst: "192.0.2.10", Port: 81, Want: ""},

		// LoadBalancer with source ranges (LB IP only, not NodePort).
		{Name: "allowed client to LB IP", Src: ExternalIP, Dst: "192.0.2.20", Port: 80, Want: "DNAT 10.244.2.6:80", Masq: true},
		{Name: "blocked client to LB IP is dropped", Src: BlockedClient, Dst: "192.0.2.20", Port: 80, Want: "DROP"},
		{Name: "blocked client to LB nodeport passes", Src: BlockedClient, Dst: NodeIP, Port: 30081, Want: "DNAT 10.244.2.6:80", Masq: true},
		{Name: "blocked client to LB clusterIP passes", Src: BlockedClient, Dst: "10.96.0.13", Port: 80, Want: "DNAT 10.244.2.6:80", Masq: true},

		// externalTrafficPolicy Local.
		{Name: "ETP local: external to nodeport keeps client IP", Src: ExternalIP, Dst: NodeIP, Port: 30082, Want: "DNAT 10.244.1.4:80"},
		{Name: "ETP local: external to LB IP keeps client IP", Src: ExternalIP, Dst: "192.0.2.21", Port: 80, Want: "DNAT 10.244.1.4:80"},
		{Name: "ETP local: clusterIP uses all endpoints", Src: LocalPod, Dst: "10.96.0.14", Port: 80, Want: "DNAT 10.244.1.4:80,10.244.2.7:80"},
		{Name: "ETP local: pod to LB IP short-circuits to cluster", Src: LocalPod, Dst: "192.0.2.21", Port: 80, Want: "DNAT 10.244.1.4:80,10.244.2.7:80"},
		{Name: "ETP local: node to nodeport short-circuits, masqueraded", Src: NodeIP, Dst: NodeIP, Port: 30082, Want: "DNAT 10.244.1.4:80,10.244.2.7:80", Masq: true},
		{Name: "ETP local without local endpoints: external dropped", Src: ExternalIP, Dst: NodeIP, Port: 30083, Want: "DROP"},
		{Name: "ETP local without local endpoints: LB IP dropped", Src: ExternalIP, Dst: "192.0.2.22", Port: 80, Want: "DROP"},
		{Name: "ETP local without local endpoints: clusterIP works", Src: LocalPod, Dst: "10.96.0.15", Port: 80, Want: "DNAT 10.244.2.8:80"},

		// internalTrafficPolicy Local.
		{Name: "ITP local: pod gets local endpoint only", Src: LocalPod, Dst: "10.96.0.16", Port: 80, Want: "DNAT 10.244.1.5:80"},
		{Name: "ITP local without local endpoints: dropped", Src: LocalPod, Dst: "10.96.0.17", Port: 80, Want: "DROP"},

		// No endpoints: refused, never silently dropped.
		{Name: "no endpoints: clusterIP rejected", Src: LocalPod, Dst: "10.96.0.18", Port: 80, Want: "REJECT"},
		{Name: "no endpoints: node to clusterIP rejected", Src: NodeIP, Dst: "10.96.0.18", Port: 80, Want: "REJECT"},
		{Name: "no endpoints: nodeport rejected", Src: ExternalIP, Dst: NodeIP, Port: 30084, Want: "REJECT"},
		{Name: "no endpoints: externalIP rejected", Src: ExternalIP, Dst: "192.0.2.11", Port: 80, Want: "REJECT"},

		// Session affinity.
		{Name: "affinity: first connection may go anywhere", Src: LocalPod, Dst: "10.96.0.19", Port: 80, Want: "DNAT 10.244.1.6:80,10.244.2.11:80"},
		{Name: "affinity: client sticks to its endpoint", Src: LocalPod, Dst: "10.96.0.19", Port: 80, After: "10.244.2.11:80", Want: "DNAT 10.244.2.11:80"},
		{Name: "affinity: other client is free", Src: RemotePod, Dst: "10.96.0.19", Port: 80, Want: "DNAT 10.244.1.6:80,10.244.2.11:80"},

		// Terminating endpoints.
		{Name: "terminating fallback: serving-terminating used when none ready", Src: LocalPod, Dst: "10.96.0.20", Port: 80, Want: "DNAT 10.244.2.12:80"},
		{Name: "terminating ignored while a ready one exists", Src: LocalPod, Dst: "10.96.0.21", Port: 80, Want: "DNAT 10.244.2.14:80"},
		{Name: "only not-ready endpoints: rejected", Src: LocalPod, Dst: "10.96.0.22", Port: 80, Want: "REJECT"},

		// Hairpin: a pod reaching itself through its service is masqueraded.
		{Name: "hairpin is masqueraded", Src: "10.244.1.7", Dst: "10.96.0.23", Port: 80, Want: "DNAT 10.244.1.7:80", Masq: true},
		{Name: "other pod to hairpin service is not", Src: LocalPod, Dst: "10.96.0.23", Port: 80, Want: "DNAT 10.244.1.7:80"},
	}
}
