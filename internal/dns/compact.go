package dns

import (
	"net/netip"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Compact objects. The informers' transform (trimObject) turns every
// Service, EndpointSlice and Pod into one of these small structs before it
// is stored, so the stores hold only what DNS reads (a few hundred bytes per
// Service instead of a full corev1.Service), with IPs already parsed and
// namespace names interned. The index builder reads them directly.
//
// client-go's stores and key functions need metadata: each type implements
// metav1.ObjectMetaAccessor with a throw-away ObjectMeta holding the
// namespace, name and resourceVersion (meta.Accessor accepts it).

// svcObj is a Service as DNS sees it.
type svcObj struct {
	ns, name, rv string
	typ          corev1.ServiceType
	headless     bool         // spec.clusterIP is "None"
	clusterIPs   []netip.Addr // parsed spec.clusterIPs (else spec.clusterIP), unmapped
	externalName string
	ports        []portObj
	// tolerate: the Service carries the tolerate-unready-endpoints
	// annotation set to "true".
	tolerate bool
}

// portObj is a Service or EndpointSlice port; proto is lower case ("tcp"
// when unset) and name lower case.
type portObj struct {
	name, proto string
	port        int32
}

// sliceObj is an EndpointSlice as DNS sees it.
type sliceObj struct {
	ns, name, rv string
	service      string // kubernetes.io/service-name label
	fqdn         bool   // addressType FQDN: no records
	ports        []portObj
	endpoints    []endpointObj
}

// endpointObj is one endpoint: its parsable addresses, hostname and
// readiness (conditions.ready nil counts as ready).
type endpointObj struct {
	addrs    []netip.Addr
	hostname string
	ready    bool
}

// podObj is a Pod as DNS sees it (pods verified only).
type podObj struct {
	ns, name, rv string
	ips          []netip.Addr
}

func objMeta(ns, name, rv string) metav1.Object {
	return &metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}
}

// GetObjectMeta makes svcObj usable by client-go's key functions.
func (o *svcObj) GetObjectMeta() metav1.Object { return objMeta(o.ns, o.name, o.rv) }

// GetObjectMeta makes sliceObj usable by client-go's key functions.
func (o *sliceObj) GetObjectMeta() metav1.Object { return objMeta(o.ns, o.name, o.rv) }

// GetObjectMeta makes podObj usable by client-go's key functions.
func (o *podObj) GetObjectMeta() metav1.Object { return objMeta(o.ns, o.name, o.rv) }

// intern returns the canonical copy of s: namespaces, protocols and port
// names repeat across thousands of objects.
func intern(s string) string { return unique.Make(s).Value() }

func parseIPs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// compactService keeps what DNS needs of s.
func compactService(s *corev1.Service) *svcObj {
	o := &svcObj{ns: intern(s.Namespace), name: s.Name, rv: s.ResourceVersion, typ: corev1.ServiceType(intern(string(s.Spec.Type))),
		headless: s.Spec.ClusterIP == corev1.ClusterIPNone, tolerate: s.Annotations[tolerateUnreadyAnnotation] == "true"}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		o.externalName = s.Spec.ExternalName
	}
	if !o.headless {
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			ips = []string{s.Spec.ClusterIP}
		}
		o.clusterIPs = parseIPs(ips)
	}
	if len(s.Spec.Ports) > 0 {
		o.ports = make([]portObj, len(s.Spec.Ports))
		for i, p := range s.Spec.Ports {
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			o.ports[i] = portObj{name: intern(strings.ToLower(p.Name)), proto: intern(proto), port: p.Port}
		}
	}
	return o
}

// compactSlice keeps what DNS needs of sl.
func compactSlice(sl *discoveryv1.EndpointSlice) *sliceObj {
	o := &sliceObj{ns: intern(sl.Namespace), name: sl.Name, rv: sl.ResourceVersion,
		service: sl.Labels[discoveryv1.LabelServiceName], fqdn: sl.AddressType == discoveryv1.AddressTypeFQDN}
	if o.fqdn {
		return o
	}
	if len(sl.Ports) > 0 {
		o.ports = make([]portObj, len(sl.Ports))
		for i, p := range sl.Ports {
			po := portObj{proto: "tcp"}
			if p.Name != nil {
				po.name = intern(strings.ToLower(*p.Name))
			}
			if p.Protocol != nil {
				po.proto = intern(strings.ToLower(string(*p.Protocol)))
			}
			if p.Port != nil {
				po.port = *p.Port
			}
			o.ports[i] = po
		}
	}
	if len(sl.Endpoints) > 0 {
		o.endpoints = make([]endpointObj, 0, len(sl.Endpoints))
		for _, e := range sl.Endpoints {
			eo := endpointObj{addrs: parseIPs(e.Addresses), ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
			if e.Hostname != nil {
				eo.hostname = *e.Hostname
			}
			o.endpoints = append(o.endpoints, eo)
		}
	}
	return o
}

// compactPod keeps what DNS needs of p.
func compactPod(p *corev1.Pod) *podObj {
	o := &podObj{ns: intern(p.Namespace), name: p.Name, rv: p.ResourceVersion}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			o.ips = append(o.ips, a.Unmap())
		}
	}
	return o
}

// trimObject is the informers' transform: it replaces each object by its
// compact form before it is stored, so memory follows what is served.
func trimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return compactService(o), nil
	case *discoveryv1.EndpointSlice:
		return compactSlice(o), nil
	case *corev1.Pod:
		return compactPod(o), nil
	}
	return obj, nil
}
