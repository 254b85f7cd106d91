// Package discovery builds the registry.Kind for discovery.k8s.io/v1
// EndpointSlices, following kube-apiserver's pkg/registry/discovery and
// pkg/apis/discovery validation: ports default to protocol TCP and name "",
// addressType is required, supported and immutable, endpoint addresses must
// match it, and any change other than metadata bumps metadata.generation.
package discovery

import (
	"context"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Limits from upstream's EndpointSlice validation.
const (
	maxTopologyLabels = 16
	maxAddresses      = 100
	maxPorts          = 20000
	maxEndpoints      = 1000
	maxZoneHints      = 8
	maxNodeHints      = 8
)

// EndpointSlices returns the Kind for discovery.k8s.io/v1 endpointslices.
func EndpointSlices() *registry.Kind {
	doc := discoveryv1.EndpointSlice{}.SwaggerDoc()
	return &registry.Kind{
		Resource:     discoveryv1.SchemeGroupVersion.WithResource("endpointslices"),
		Kind:         "EndpointSlice",
		SingularName: "endpointslice",
		Namespaced:   true,
		New:          func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		NewList:      func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		Strategy:     strategy{generic.Base{Namespaced: true}},
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("AddressType", doc["addressType"], 0),
				generic.Column("Ports", doc["ports"], 0),
				generic.Column("Endpoints", doc["endpoints"], 0),
				generic.AgeColumn(),
			},
			Cells: func(obj runtime.Object) []interface{} {
				s := obj.(*discoveryv1.EndpointSlice)
				return []interface{}{s.Name, string(s.AddressType), FormatPorts(s.Ports), FormatEndpoints(s.Endpoints), generic.Age(s.CreationTimestamp)}
			},
		},
	}
}

// FormatPorts renders the PORTS cell: port numbers (the name when there is
// no number, "*" when neither), the first three then " + N more...",
// "<unset>" when empty.
func FormatPorts(ports []discoveryv1.EndpointPort) string {
	list := make([]string, 0, len(ports))
	for _, p := range ports {
		switch {
		case p.Port != nil:
			list = append(list, strconv.Itoa(int(*p.Port)))
		case p.Name != nil:
			list = append(list, *p.Name)
		default:
			list = append(list, "*")
		}
	}
	return unsetIfEmpty(generic.ListWithMore(list, len(list), 3))
}

// FormatEndpoints renders the ENDPOINTS cell: every address of every
// endpoint, the first three then " + N more...", "<unset>" when empty.
func FormatEndpoints(endpoints []discoveryv1.Endpoint) string {
	var list []string
	for _, e := range endpoints {
		list = append(list, e.Addresses...)
	}
	return unsetIfEmpty(generic.ListWithMore(list, len(list), 3))
}

func unsetIfEmpty(s string) string {
	if s == "" {
		return "<unset>"
	}
	return s
}

type strategy struct{ generic.Base }

// Default gives every port a name ("") and protocol (TCP).
func (strategy) Default(obj runtime.Object) {
	s := obj.(*discoveryv1.EndpointSlice)
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Name == nil {
			name := ""
			p.Name = &name
		}
		if p.Protocol == nil {
			proto := corev1.ProtocolTCP
			p.Protocol = &proto
		}
	}
}

func (strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	generic.InitGeneration(obj)
}

// PrepareForUpdate bumps generation when anything but metadata changed, or
// the labels did.
func (st strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	st.Default(s) // compare defaulted ports; see generic.Base
	changed := generic.Changed(s.AddressType, o.AddressType) ||
		generic.Changed(s.Endpoints, o.Endpoints) ||
		generic.Changed(s.Ports, o.Ports) ||
		generic.Changed(s.Labels, o.Labels)
	generic.UpdateGeneration(s, o, changed)
}

func (st strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(st.Base.Validate(ctx, obj), validateSlice(obj.(*discoveryv1.EndpointSlice), nil)...)
}

func (st strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	errs := st.Base.ValidateUpdate(ctx, obj, old)
	errs = append(errs, validateSlice(s, o)...)
	return append(errs, generic.ValidateImmutable(s.AddressType, o.AddressType, field.NewPath("addressType"))...)
}

func validateSlice(s, old *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	case "":
		errs = append(errs, field.Required(field.NewPath("addressType"), ""))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType,
			[]discoveryv1.AddressType{discoveryv1.AddressTypeFQDN, discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6}))
	}
	errs = append(errs, validatePorts(s.Ports, field.NewPath("ports"))...)
	// Unchanged endpoints stay valid even if today's rules reject them.
	if epErrs := validateEndpoints(s.Endpoints, s.AddressType, field.NewPath("endpoints")); len(epErrs) > 0 &&
		(old == nil || generic.Changed(s.Endpoints, old.Endpoints)) {
		errs = append(errs, epErrs...)
	}
	return errs
}

func validateEndpoints(endpoints []discoveryv1.Endpoint, addrType discoveryv1.AddressType, path *field.Path) field.ErrorList {
	if len(endpoints) > maxEndpoints {
		return field.ErrorList{field.TooMany(path, len(endpoints), maxEndpoints)}
	}
	var errs field.ErrorList
	for i, ep := range endpoints {
		ip := path.Index(i)
		ap := ip.Child("addresses")
		if len(ep.Addresses) == 0 {
			errs = append(errs, field.Required(ap, "must contain at least 1 address"))
		} else if len(ep.Addresses) > maxAddresses {
			errs = append(errs, field.TooMany(ap, len(ep.Addresses), maxAddresses))
		}
		for j, a := range ep.Addresses {
			switch addrType {
			case discoveryv1.AddressTypeIPv4:
				if ipErrs := validation.IsValidIPForLegacyField(ap.Index(j), a, true, nil); len(ipErrs) > 0 {
					errs = append(errs, ipErrs...)
				} else {
					if strings.Contains(a, ":") {
						errs = append(errs, field.Invalid(ap, a, "must be an IPv4 address"))
					}
					errs = append(errs, generic.ValidateEndpointIP(a, ap.Index(j))...)
				}
			case discoveryv1.AddressTypeIPv6:
				if ipErrs := validation.IsValidIP(ap.Index(j), a); len(ipErrs) > 0 {
					errs = append(errs, ipErrs...)
				} else {
					if !strings.Contains(a, ":") {
						errs = append(errs, field.Invalid(ap, a, "must be an IPv6 address"))
					}
					errs = append(errs, generic.ValidateEndpointIP(a, ap.Index(j))...)
				}
			case discoveryv1.AddressTypeFQDN:
				errs = append(errs, validation.IsFullyQualifiedDomainName(ap.Index(j), a)...)
			}
		}
		if ep.NodeName != nil {
			for _, msg := range validation.IsDNS1123Subdomain(*ep.NodeName) {
				errs = append(errs, field.Invalid(ip.Child("nodeName"), *ep.NodeName, msg))
			}
		}
		tp := ip.Child("deprecatedTopology")
		if len(ep.DeprecatedTopology) > maxTopologyLabels {
			errs = append(errs, field.TooMany(tp, len(ep.DeprecatedTopology), maxTopologyLabels))
		}
		errs = append(errs, metav1validation.ValidateLabels(ep.DeprecatedTopology, tp)...)
		if ep.Hostname != nil {
			errs = append(errs, generic.ValidateDNS1123Label(*ep.Hostname, ip.Child("hostname"))...)
		}
		if ep.Hints != nil {
			errs = append(errs, validateHints(ep.Hints, ip.Child("hints"))...)
		}
	}
	return errs
}

func validateHints(h *discoveryv1.EndpointHints, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	zp := path.Child("forZones")
	if len(h.ForZones) > maxZoneHints {
		return field.ErrorList{field.TooMany(zp, len(h.ForZones), maxZoneHints)}
	}
	zones := map[string]bool{}
	for i, z := range h.ForZones {
		p := zp.Index(i).Child("name")
		if zones[z.Name] {
			errs = append(errs, field.Duplicate(p, z.Name))
		}
		zones[z.Name] = true
		for _, msg := range validation.IsValidLabelValue(z.Name) {
			errs = append(errs, field.Invalid(p, z.Name, msg))
		}
	}
	np := path.Child("forNodes")
	if len(h.ForNodes) > maxNodeHints {
		return append(errs, field.TooMany(np, len(h.ForNodes), maxNodeHints))
	}
	nodes := map[string]bool{}
	for i, n := range h.ForNodes {
		p := np.Index(i).Child("name")
		if nodes[n.Name] {
			errs = append(errs, field.Duplicate(p, n.Name))
		}
		nodes[n.Name] = true
		for _, msg := range validation.IsDNS1123Subdomain(n.Name) {
			errs = append(errs, field.Invalid(p, n.Name, msg))
		}
	}
	return errs
}

func validatePorts(ports []discoveryv1.EndpointPort, path *field.Path) field.ErrorList {
	if len(ports) > maxPorts {
		return field.ErrorList{field.TooMany(path, len(ports), maxPorts)}
	}
	var errs field.ErrorList
	names := map[string]bool{}
	for i, p := range ports {
		ip := path.Index(i)
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name != "" {
			errs = append(errs, generic.ValidateDNS1123Label(name, ip.Child("name"))...)
		}
		if names[name] {
			errs = append(errs, field.Duplicate(ip.Child("name"), p.Name))
		}
		names[name] = true
		if p.Protocol == nil {
			errs = append(errs, field.Required(ip.Child("protocol"), ""))
		} else {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				errs = append(errs, field.NotSupported(ip.Child("protocol"), *p.Protocol,
					[]corev1.Protocol{corev1.ProtocolSCTP, corev1.ProtocolTCP, corev1.ProtocolUDP}))
			}
		}
		if p.AppProtocol != nil {
			for _, msg := range validation.IsQualifiedName(*p.AppProtocol) {
				errs = append(errs, field.Invalid(ip.Child("appProtocol"), *p.AppProtocol, msg))
			}
		}
	}
	return errs
}
