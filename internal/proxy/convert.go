package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels the informers filter on (as kube-proxy).
const (
	// LabelServiceProxyName marks Services handled by another proxy.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// LabelHeadless marks EndpointSlices of headless Services.
	LabelHeadless = "service.kubernetes.io/headless"
	// DefaultAffinityTimeout is the ClientIP affinity timeout when the
	// Service does not set one (3 hours).
	DefaultAffinityTimeout = 10800 * time.Second
	// AnnotationLBAlgorithm selects the load-balancing algorithm of a
	// Service in the userspace proxy mode (ServicePort.LBAlgorithm).
	AnnotationLBAlgorithm = "svcnet.io/lb-algorithm"
)

// ServicePorts converts a Service into its proxied ports, or nil when the
// Service is not proxied (service-proxy-name label, ExternalName, headless,
// no ClusterIP yet). Unparseable addresses are skipped.
func ServicePorts(svc *v1.Service) map[ServicePortName]*ServicePort {
	if _, ok := svc.Labels[LabelServiceProxyName]; ok {
		return nil
	}
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	cips := svc.Spec.ClusterIPs
	if len(cips) == 0 && svc.Spec.ClusterIP != "" {
		cips = []string{svc.Spec.ClusterIP}
	}
	if len(cips) == 0 || cips[0] == v1.ClusterIPNone {
		return nil
	}
	clusterIPs := parseAddrs(cips)
	if len(clusterIPs) == 0 {
		return nil
	}
	externalIPs := parseAddrs(svc.Spec.ExternalIPs)
	var lbIPs []netip.Addr
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy {
				continue
			}
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				lbIPs = append(lbIPs, a.Unmap())
			}
		}
	}
	var ranges []netip.Prefix
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		for _, part := range strings.Split(r, ",") {
			if p, err := netip.ParsePrefix(strings.TrimSpace(part)); err == nil {
				ranges = append(ranges, p.Masked())
			}
		}
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		affinity = DefaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	externallyTyped := svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer
	etpLocal := svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal &&
		(externallyTyped || len(externalIPs) > 0)
	itpLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal
	var hc int32
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer && etpLocal {
		hc = svc.Spec.HealthCheckNodePort
	}

	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	out := make(map[ServicePortName]*ServicePort, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		name := ServicePortName{NamespacedName: nn, Port: p.Name, Protocol: proto}
		sp := &ServicePort{
			Name:                     name,
			ClusterIPs:               clusterIPs,
			Port:                     p.Port,
			Protocol:                 proto,
			ExternalIPs:              externalIPs,
			LoadBalancerIPs:          lbIPs,
			LoadBalancerSourceRanges: ranges,
			AffinityTimeout:          affinity,
			ExternalPolicyLocal:      etpLocal,
			InternalPolicyLocal:      itpLocal,
			HealthCheckNodePort:      hc,
			LBAlgorithm:              strings.TrimSpace(svc.Annotations[AnnotationLBAlgorithm]),
		}
		if externallyTyped {
			sp.NodePort = p.NodePort
		}
		out[name] = sp
	}
	return out
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// SliceService returns the Service an EndpointSlice belongs to, and false
// when the slice is not proxied (no service-name label, headless label,
// FQDN addresses).
func SliceService(s *discovery.EndpointSlice) (types.NamespacedName, bool) {
	name := s.Labels[discovery.LabelServiceName]
	if name == "" {
		return types.NamespacedName{}, false
	}
	if _, ok := s.Labels[LabelHeadless]; ok {
		return types.NamespacedName{}, false
	}
	if s.AddressType != discovery.AddressTypeIPv4 && s.AddressType != discovery.AddressTypeIPv6 {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: s.Namespace, Name: name}, true
}

// MergeEndpoints merges the endpoints of one Service's slices into
// per-port lists (deduplicated by IP:port, sorted by IP then port), marking
// endpoints on nodeName as local. Only the first address of each endpoint
// is used, as upstream.
func MergeEndpoints(svc types.NamespacedName, slices_ []*discovery.EndpointSlice, nodeName string) map[ServicePortName][]Endpoint {
	out := map[ServicePortName][]Endpoint{}
	seen := map[ServicePortName]map[netip.AddrPort]bool{}
	for _, s := range slices_ {
		for _, p := range s.Ports {
			if p.Port == nil {
				continue
			}
			proto := v1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			name := ServicePortName{NamespacedName: svc, Protocol: proto}
			if p.Name != nil {
				name.Port = *p.Name
			}
			if seen[name] == nil {
				seen[name] = map[netip.AddrPort]bool{}
			}
			for _, e := range s.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(e.Addresses[0])
				if err != nil {
					continue
				}
				ep := Endpoint{IP: ip.Unmap(), Port: *p.Port}
				if seen[name][ep.AddrPort()] {
					continue
				}
				seen[name][ep.AddrPort()] = true
				ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
				ep.Serving = ep.Ready
				if e.Conditions.Serving != nil {
					ep.Serving = *e.Conditions.Serving
				}
				ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
				if e.NodeName != nil {
					ep.NodeName = *e.NodeName
					ep.IsLocal = ep.NodeName == nodeName
				}
				if e.Zone != nil {
					ep.Zone = *e.Zone
				}
				out[name] = append(out[name], ep)
			}
		}
	}
	for name, eps := range out {
		// Exact size: the lists live as long as the Service does.
		eps = slices.Clone(eps)
		out[name] = eps
		slices.SortFunc(eps, func(a, b Endpoint) int {
			if c := a.IP.Compare(b.IP); c != 0 {
				return c
			}
			return int(a.Port) - int(b.Port)
		})
	}
	return out
}

// CompactSlice returns the part of an EndpointSlice the proxy reads: name,
// namespace, resourceVersion, the service-name and headless labels, the
// last-change-trigger-time annotation, address type, ports, and per
// endpoint the first address, the conditions, node name and zone — in
// exact-size slices, with conditions and node names shared between
// objects. The informers keep this instead of the decoded object (at 10k
// Services × 10 endpoints it is about half the memory).
func CompactSlice(s *discovery.EndpointSlice) *discovery.EndpointSlice {
	out := &discovery.EndpointSlice{
		AddressType: s.AddressType,
		Ports:       slices.Clip(s.Ports),
	}
	out.Name, out.Namespace, out.ResourceVersion, out.UID = s.Name, s.Namespace, s.ResourceVersion, s.UID
	for _, l := range []string{discovery.LabelServiceName, LabelHeadless} {
		if v, ok := s.Labels[l]; ok {
			if out.Labels == nil {
				out.Labels = make(map[string]string, 1)
			}
			out.Labels[l] = v
		}
	}
	if v, ok := s.Annotations[v1.EndpointsLastChangeTriggerTime]; ok {
		out.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: v}
	}
	out.Endpoints = make([]discovery.Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		c := &out.Endpoints[i]
		c.Addresses = slices.Clip(e.Addresses[:min(len(e.Addresses), 1)])
		c.Conditions = discovery.EndpointConditions{
			Ready:       sharedBool(e.Conditions.Ready),
			Serving:     sharedBool(e.Conditions.Serving),
			Terminating: sharedBool(e.Conditions.Terminating),
		}
		c.NodeName = sharedString(e.NodeName)
		c.Zone = sharedString(e.Zone)
	}
	return out
}

var (
	boolTrue, boolFalse = true, false
	// sharedStrings interns node names and zones (a cluster has few).
	sharedStrings sync.Map // string → *string
)

func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &boolTrue
	}
	return &boolFalse
}

func sharedString(s *string) *string {
	if s == nil {
		return nil
	}
	if p, ok := sharedStrings.Load(*s); ok {
		return p.(*string)
	}
	v := *s
	p, _ := sharedStrings.LoadOrStore(v, &v)
	return p.(*string)
}
