package list

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/userspace"
)

// Proxy modes FromState knows (KubeProxyConfiguration.mode values).
const (
	ModeNFTables  = "nftables"
	ModeIPTables  = "iptables"
	ModeUserspace = "userspace"
	ModeIPVS      = "ipvs"
)

// ForwardMasq is the forwarding method of every real server: the proxy
// DNATs (and masquerades where needed), which is IPVS's NAT ("Masq").
const ForwardMasq = "Masq"

// Options says how the node's proxy is set up.
type Options struct {
	// NodeName is the node whose view is built (IsLocal, Local policies).
	NodeName string
	// NodeIPs are extra node addresses (the proxy's --node-ip); the Node
	// object's InternalIP/ExternalIP addresses are added.
	NodeIPs []netip.Addr
	// NodePortAddresses, when set, puts NodePorts on the local addresses
	// inside these prefixes instead of on the node IPs.
	NodePortAddresses []netip.Prefix
	// InterfaceAddrs lists local addresses for NodePortAddresses (default:
	// net.InterfaceAddrs).
	InterfaceAddrs func() ([]netip.Addr, error)
	// Mode is the proxy mode (ModeNFTables when empty).
	Mode string
	// Scheduler is the configured default algorithm: the userspace
	// balancer's algorithm or the ipvs scheduler (KubeProxyConfiguration
	// ipvs.scheduler); "" means round robin.
	Scheduler string
}

// EntryKind is how clients reach a virtual service.
type EntryKind string

// The entry kinds.
const (
	EntryClusterIP      EntryKind = "ClusterIP"
	EntryNodePort       EntryKind = "NodePort"
	EntryExternalIP     EntryKind = "ExternalIP"
	EntryLoadBalancerIP EntryKind = "LoadBalancerIP"
)

// VirtualService is one address:port clients use, as an IPVS virtual
// server.
type VirtualService struct {
	Protocol v1.Protocol
	Address  netip.AddrPort
	// Scheduler is how the mode picks a real server (see the package doc).
	Scheduler string
	// Persistent is the ClientIP affinity timeout, 0 for none.
	Persistent time.Duration
	// Service and Entry say where the virtual service comes from.
	Service     proxy.ServicePortName
	Entry       EntryKind
	RealServers []RealServer
}

// RealServer is one endpoint of a virtual service.
type RealServer struct {
	Address netip.AddrPort
	Forward string
	// Weight is 1 for endpoints that get new connections, 0 for former
	// ones that still have connections.
	Weight     int
	ActiveConn int
	InActConn  int
}

// Table is the whole view, in no particular order until Render sorts it.
type Table struct {
	Mode     string
	Services []*VirtualService
}

// vsKey identifies a virtual service.
type vsKey struct {
	proto v1.Protocol
	addr  netip.AddrPort
}

// FromState builds the table of what st makes the proxy in mode o.Mode
// program. st.NodeIPs are used with o.NodeIPs for NodePorts.
func FromState(st *proxy.State, o Options) (*Table, error) {
	mode := o.Mode
	if mode == "" {
		mode = ModeNFTables
	}
	if !slices.Contains([]string{ModeNFTables, ModeIPTables, ModeUserspace, ModeIPVS}, mode) {
		return nil, fmt.Errorf("list: unknown proxy mode %q", mode)
	}
	defaultAlg := o.Scheduler
	if mode == ModeUserspace {
		if _, err := userspace.ParseAlgorithm(defaultAlg); err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
	}
	nodePortIPs, err := nodePortIPs(st, o)
	if err != nil {
		return nil, err
	}
	// Deterministic order, so that a (misconfigured) duplicate virtual
	// service always keeps the same owner.
	names := make([]proxy.ServicePortName, 0, len(st.Services))
	for n := range st.Services {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b proxy.ServicePortName) int {
		return strings.Compare(a.String()+"/"+string(a.Protocol), b.String()+"/"+string(b.Protocol))
	})

	t := &Table{Mode: mode}
	seen := map[vsKey]bool{}
	for _, n := range names {
		sp := st.Services[n]
		if mode == ModeUserspace && sp.Protocol != v1.ProtocolTCP && sp.Protocol != v1.ProtocolUDP {
			continue // the userspace proxy has no SCTP: it rejects these
		}
		sched := scheduler(mode, sp, defaultAlg)
		// As the backends: one independent view per IP family, for the
		// families the Service has a ClusterIP of.
		for _, v4 := range []bool{true, false} {
			fam := func(a netip.Addr) bool { return a.Is4() == v4 }
			cips := filter(sp.ClusterIPs, fam)
			if len(cips) == 0 {
				continue
			}
			var eps []proxy.Endpoint
			for _, e := range st.Endpoints[n] {
				// The userspace balancer dials endpoints of either family.
				if fam(e.IP) || mode == ModeUserspace {
					eps = append(eps, e)
				}
			}
			cluster, local, _, _ := proxy.CategorizeEndpoints(eps, sp)
			internal, external := cluster, cluster
			if sp.InternalPolicyLocal {
				internal = local
			}
			if sp.ExternalPolicyLocal {
				external = local
			}
			add := func(ip netip.Addr, port int32, kind EntryKind, eps []proxy.Endpoint) {
				if port <= 0 || port > 65535 {
					return
				}
				k := vsKey{sp.Protocol, netip.AddrPortFrom(ip, uint16(port))}
				if seen[k] {
					return
				}
				seen[k] = true
				vs := &VirtualService{
					Protocol: sp.Protocol, Address: k.addr, Scheduler: sched,
					Persistent: sp.AffinityTimeout, Service: n, Entry: kind,
				}
				for _, e := range eps {
					vs.RealServers = append(vs.RealServers, RealServer{Address: e.AddrPort(), Forward: ForwardMasq, Weight: 1})
				}
				t.Services = append(t.Services, vs)
			}
			// The backends program the first ClusterIP of the family.
			add(cips[0], sp.Port, EntryClusterIP, internal)
			for _, ip := range filter(sp.ExternalIPs, fam) {
				add(ip, sp.Port, EntryExternalIP, external)
			}
			for _, ip := range filter(sp.LoadBalancerIPs, fam) {
				add(ip, sp.Port, EntryLoadBalancerIP, external)
			}
			if sp.NodePort != 0 {
				for _, ip := range filter(nodePortIPs, fam) {
					add(ip, sp.NodePort, EntryNodePort, external)
				}
			}
		}
	}
	return t, nil
}

func filter(addrs []netip.Addr, keep func(netip.Addr) bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if keep(a) {
			out = append(out, a)
		}
	}
	return out
}

// scheduler names how mode picks an endpoint of sp.
func scheduler(mode string, sp *proxy.ServicePort, defaultAlg string) string {
	switch mode {
	case ModeUserspace:
		alg, err := userspace.ParseAlgorithm(sp.LBAlgorithm)
		if sp.LBAlgorithm == "" || err != nil {
			// The backend ignores a bad annotation (and logs it).
			alg, _ = userspace.ParseAlgorithm(defaultAlg)
		}
		switch alg {
		case userspace.LeastConnections:
			return "lc"
		case userspace.Random:
			return "random"
		case userspace.SourceHash:
			return "sh"
		}
		return "rr"
	case ModeIPVS:
		name := sp.LBAlgorithm
		if name == "" {
			name = defaultAlg
		}
		// ipvs scheduler names pass through; the userspace spellings of
		// the same algorithms become ipvs's.
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "", "round-robin", "roundrobin":
			return "rr"
		case "least-connections", "leastconnections", "least-conn":
			return "lc"
		case "source-hash", "sourcehash":
			return "sh"
		}
		return name
	}
	// nftables numgen random, iptables statistic mode random.
	return "random"
}

// nodePortIPs is the backends' rule: the local addresses inside
// NodePortAddresses when set, else the node IPs; never loopback.
func nodePortIPs(st *proxy.State, o Options) ([]netip.Addr, error) {
	ifaddrs := o.InterfaceAddrs
	if ifaddrs == nil {
		ifaddrs = proxy.LocalAddrs
	}
	out, err := proxy.NodePortAddrs(o.NodePortAddresses, ifaddrs, o.NodeIPs, st.NodeIPs, nil)
	if err != nil {
		return nil, fmt.Errorf("list: local addresses for nodePortAddresses: %w", err)
	}
	return out, nil
}

// Build reads the Services, EndpointSlices and this node's Node object
// through client and builds the table with FromState. A missing Node is
// not an error (NodePorts then only use o.NodeIPs).
func Build(ctx context.Context, client kubernetes.Interface, o Options) (*Table, error) {
	st, err := State(ctx, client, o.NodeName)
	if err != nil {
		return nil, err
	}
	return FromState(st, o)
}

// State lists the API objects the proxy watches and converts them with
// the proxy's own Tracker, as one full snapshot.
func State(ctx context.Context, client kubernetes.Interface, nodeName string) (*proxy.State, error) {
	tr := proxy.NewTracker(nodeName)
	opts := metav1.ListOptions{LabelSelector: "!" + proxy.LabelServiceProxyName}
	for {
		l, err := client.CoreV1().Services(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list: list services: %w", err)
		}
		for i := range l.Items {
			tr.UpdateService(&l.Items[i])
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			break
		}
	}
	opts = metav1.ListOptions{LabelSelector: "!" + proxy.LabelHeadless}
	for {
		l, err := client.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list: list endpointslices: %w", err)
		}
		for i := range l.Items {
			tr.UpdateSlice(&l.Items[i])
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			break
		}
	}
	if nodeName != "" {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		switch {
		case err == nil:
			tr.UpdateNode(node)
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("list: get node %s: %w", nodeName, err)
		}
	}
	tr.SetSynced(true, true)
	st, _ := tr.Snapshot(true)
	return st, nil
}
