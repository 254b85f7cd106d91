package proxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServicePortName identifies one port of one Service: the unit every backend
// programs. Two ports of the same Service are two independent virtual services.
type ServicePortName struct {
	types.NamespacedName
	// Port is the port's name (empty for a single unnamed port).
	Port string
	// Protocol is TCP, UDP or SCTP.
	Protocol v1.Protocol
}

// String returns "ns/name:port" (":port" omitted when the port is unnamed),
// the same spelling kube-proxy uses in logs and chain names.
func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.NamespacedName.String()
	}
	return fmt.Sprintf("%s:%s", n.NamespacedName, n.Port)
}

// ServicePort is the desired state of one virtual service, derived from a
// v1.Service. It holds only what a backend needs; every field is already
// validated and parsed (addresses are netip values, never strings).
//
// A ServicePort is immutable once placed in a State: backends and the core
// may share the pointer across snapshots.
type ServicePort struct {
	Name ServicePortName

	// ClusterIPs are the Service's cluster IPs (one per family). Never empty:
	// headless Services are not proxied and never reach a State.
	ClusterIPs []netip.Addr
	// Port is the Service port (spec.ports[].port).
	Port int32
	// Protocol repeats Name.Protocol for convenience.
	Protocol v1.Protocol
	// NodePort is spec.ports[].nodePort, 0 when none.
	NodePort int32
	// ExternalIPs are spec.externalIPs.
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are the IPs of status.loadBalancer.ingress (hostnames and
	// ingress entries with ipMode Proxy are skipped, as upstream does).
	LoadBalancerIPs []netip.Addr
	// LoadBalancerSourceRanges restricts which clients may use the
	// LoadBalancer IPs (not NodePorts, not ClusterIPs). Empty means everyone.
	LoadBalancerSourceRanges []netip.Prefix

	// AffinityTimeout is the ClientIP session affinity timeout; 0 means no
	// affinity (sessionAffinity None).
	AffinityTimeout time.Duration

	// ExternalPolicyLocal is externalTrafficPolicy: Local (applies to NodePort,
	// ExternalIPs and LoadBalancer IPs; implies no SNAT for external traffic).
	ExternalPolicyLocal bool
	// InternalPolicyLocal is internalTrafficPolicy: Local (applies to ClusterIP).
	InternalPolicyLocal bool
	// HealthCheckNodePort is spec.healthCheckNodePort (set only for
	// type LoadBalancer with ExternalPolicyLocal), 0 when none.
	HealthCheckNodePort int32

	// LBAlgorithm is the Service's annotation svcnet.io/lb-algorithm
	// (AnnotationLBAlgorithm), trimmed, "" when absent. Only backends that
	// choose endpoints themselves (userspace) use it; the others ignore it.
	LBAlgorithm string
}

// ExternallyAccessible reports whether the service has any external entry
// point (NodePort, ExternalIPs or LoadBalancer IPs).
func (sp *ServicePort) ExternallyAccessible() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// Endpoint is one backend of one ServicePort, merged from the EndpointSlices
// of its Service (deduplicated by IP and port).
type Endpoint struct {
	IP netip.Addr
	// NodeName is the endpoint's node ("" when unknown); IsLocal is
	// NodeName == State.NodeName.
	NodeName string
	// Zone is the endpoint's zone ("" when unknown).
	Zone string
	Port int32
	// Ready, Serving and Terminating are the EndpointSlice conditions (nil
	// Ready/Serving count as true, nil Terminating as false, as upstream).
	// (Fields ordered for size: 64 bytes; a node holds one per endpoint of
	// the cluster.)
	Ready       bool
	Serving     bool
	Terminating bool
	IsLocal     bool
}

// AddrPort returns IP:Port.
func (e Endpoint) AddrPort() netip.AddrPort {
	return netip.AddrPortFrom(e.IP, uint16(e.Port))
}

// String returns "IP:Port".
func (e Endpoint) String() string { return e.AddrPort().String() }

// State is the complete desired state a Backend programs in one Sync: a
// point-in-time snapshot built by the core from the Service, EndpointSlice
// and Node informers.
//
// The model:
//   - Services holds one ServicePort per proxied Service port. Services with
//     the label service.kubernetes.io/service-proxy-name, ExternalName
//     Services and headless Services (clusterIP None) are absent.
//   - Endpoints holds, for every key of Services that has any, the merged
//     endpoints from the Service's EndpointSlices (slices labelled
//     service.kubernetes.io/headless are skipped), sorted by IP then port.
//     Endpoints is keyed by ServicePortName too, so a port without endpoints
//     simply has no entry. All endpoints are listed, whatever their
//     conditions; backends choose among them with CategorizeEndpoints, which
//     applies traffic policies and the serving-terminating fallback.
//   - Changed lists the ServicePortNames whose Service or endpoints changed
//     since the previous State handed to the backend (including deleted ones,
//     which are then absent from Services). It is a hint for partial syncs.
//   - Full asks the backend to ignore its record of what it wrote and
//     rewrite everything (periodic resync, first sync, after a failure).
//
// A State and everything it points to is read-only for backends and may be
// shared between goroutines. (Its maps are shared with the Tracker until
// the next snapshot; whoever calls Tracker.Release promises not to read
// them after that.) The same State may be passed twice (Sync must
// be idempotent). Backends that keep their own record of what they wrote
// (as the nftables backend does) may ignore Changed and diff by themselves;
// Changed is always a superset of the real changes.
type State struct {
	// NodeName is this node's name (used for IsLocal and ETP/ITP Local).
	NodeName string
	// NodeZone is this node's topology.kubernetes.io/zone label, "" if none.
	NodeZone string
	// NodeIPs are this node's InternalIP/ExternalIP addresses from its Node
	// object (may be empty before the Node is seen).
	NodeIPs []netip.Addr

	Services  map[ServicePortName]*ServicePort
	Endpoints map[ServicePortName][]Endpoint

	// ServiceCIDRs are the spec.cidrs of the cluster's ServiceCIDR objects
	// (networking.k8s.io/v1): traffic to an unallocated address in them is
	// dropped. Nil when they are not known (an API server that does not serve
	// ServiceCIDRs, or before the first list): backends then use the CIDRs
	// they were configured with (--service-cidr). See ServiceCIDRsOfFamily.
	ServiceCIDRs []netip.Prefix

	Changed map[ServicePortName]struct{}
	Full    bool

	// Generation increases by one for every snapshot the core builds.
	Generation uint64
}

// NewState returns an empty State for node.
func NewState(nodeName string) *State {
	return &State{
		NodeName:  nodeName,
		Services:  map[ServicePortName]*ServicePort{},
		Endpoints: map[ServicePortName][]Endpoint{},
		Changed:   map[ServicePortName]struct{}{},
	}
}

// CompareServicePortNames orders names by namespace, name, port name and
// protocol: the order every backend writes its rules in.
func CompareServicePortNames(x, y ServicePortName) int {
	return cmp.Or(
		strings.Compare(x.Namespace, y.Namespace),
		strings.Compare(x.Name, y.Name),
		strings.Compare(x.Port, y.Port),
		strings.Compare(string(x.Protocol), string(y.Protocol)),
	)
}

// SyncCandidates returns, sorted, the service ports a backend must look at
// to program st: every one for a full sync; otherwise the Changed ones, the
// ones the backend still has rules for (known) that st no longer holds, and
// the ones st holds that the backend does not know yet (Changed lists
// deletions too, but the check is cheap and keeps a sloppy caller from
// leaving a deleted service behind).
func SyncCandidates[V any](st *State, full bool, known map[ServicePortName]V) []ServicePortName {
	var out []ServicePortName
	if full {
		out = make([]ServicePortName, 0, len(st.Services))
		for n := range st.Services {
			out = append(out, n)
		}
	} else {
		seen := map[ServicePortName]bool{}
		add := func(n ServicePortName) {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
		for n := range st.Changed {
			add(n)
		}
		for n := range known {
			if _, ok := st.Services[n]; !ok {
				add(n)
			}
		}
		if len(known) != len(st.Services) {
			for n := range st.Services {
				if _, ok := known[n]; !ok {
					add(n)
				}
			}
		}
	}
	slices.SortFunc(out, CompareServicePortNames)
	return out
}

// AddrsOfFamily returns the addresses of addrs in one IP family.
func AddrsOfFamily(addrs []netip.Addr, ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.Is4() == !ipv6 {
			out = append(out, a)
		}
	}
	return out
}

// ServiceCIDRsOfFamily returns the service CIDRs a backend of one IP family
// programs: st.ServiceCIDRs when known, else configured; masked, in order,
// without duplicates.
func ServiceCIDRsOfFamily(st *State, configured []netip.Prefix, ipv6 bool) []netip.Prefix {
	src := configured
	if st != nil && st.ServiceCIDRs != nil {
		src = st.ServiceCIDRs
	}
	var out []netip.Prefix
	for _, p := range src {
		if p.Addr().Is4() == !ipv6 && !slices.Contains(out, p.Masked()) {
			out = append(out, p.Masked())
		}
	}
	return out
}

// EndpointsOfFamily returns the endpoints of eps in one IP family.
func EndpointsOfFamily(eps []Endpoint, ipv6 bool) []Endpoint {
	out := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		if e.IP.Is4() == !ipv6 {
			out = append(out, e)
		}
	}
	return out
}
