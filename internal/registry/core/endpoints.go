package core

//lint:file-ignore SA1019 core/v1 Endpoints are deprecated, not removed: svcnet serves them and the kubernetes Service needs them

import (
	"context"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Endpoints returns the Kind for core/v1 endpoints.
func Endpoints() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("endpoints"),
		Kind:         "Endpoints",
		SingularName: "endpoints",
		ShortNames:   []string{"ep"},
		Namespaced:   true,
		New:          func() runtime.Object { return &corev1.Endpoints{} },
		NewList:      func() runtime.Object { return &corev1.EndpointsList{} },
		Strategy:     endpointsStrategy{generic.Base{Namespaced: true, CreateOnUpdate: true}},
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("Endpoints", corev1.Endpoints{}.SwaggerDoc()["subsets"], 0),
				generic.AgeColumn(),
			},
			Cells: func(obj runtime.Object) []interface{} {
				ep := obj.(*corev1.Endpoints)
				return []interface{}{ep.Name, FormatEndpoints(ep), generic.Age(ep.CreationTimestamp)}
			},
		},
	}
}

// FormatEndpoints renders the ENDPOINTS cell: ip:port for every ready
// address and port (bare IPs for subsets without ports), the first three
// then " + N more...", or "<none>" without subsets.
func FormatEndpoints(ep *corev1.Endpoints) string {
	if len(ep.Subsets) == 0 {
		return "<none>"
	}
	const max = 3
	var list []string
	total := 0
	for _, ss := range ep.Subsets {
		if len(ss.Ports) == 0 {
			total += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) < max {
					list = append(list, a.IP)
				}
			}
			continue
		}
		for _, p := range ss.Ports {
			total += len(ss.Addresses)
			for _, a := range ss.Addresses {
				if len(list) < max {
					list = append(list, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
				}
			}
		}
	}
	return generic.ListWithMore(list, total, max)
}

type endpointsStrategy struct{ generic.Base }

// Default sets port protocols to TCP.
func (endpointsStrategy) Default(obj runtime.Object) {
	ep := obj.(*corev1.Endpoints)
	for i := range ep.Subsets {
		for j := range ep.Subsets[i].Ports {
			if ep.Subsets[i].Ports[j].Protocol == "" {
				ep.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
			}
		}
	}
}

func (s endpointsStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateSubsets(obj.(*corev1.Endpoints).Subsets)...)
}

func (s endpointsStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	ep, oldEP := obj.(*corev1.Endpoints), old.(*corev1.Endpoints)
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	// Unchanged subsets stay valid even if today's rules reject them.
	if subsetErrs := validateSubsets(ep.Subsets); len(subsetErrs) > 0 && generic.Changed(ep.Subsets, oldEP.Subsets) {
		errs = append(errs, subsetErrs...)
	}
	return errs
}

func validateSubsets(subsets []corev1.EndpointSubset) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range subsets {
		p := field.NewPath("subsets").Index(i)
		if len(ss.Addresses) == 0 && len(ss.NotReadyAddresses) == 0 {
			errs = append(errs, field.Required(p, "must specify `addresses` or `notReadyAddresses`"))
		}
		for j := range ss.Addresses {
			errs = append(errs, validateEndpointAddress(&ss.Addresses[j], p.Child("addresses").Index(j))...)
		}
		for j := range ss.NotReadyAddresses {
			errs = append(errs, validateEndpointAddress(&ss.NotReadyAddresses[j], p.Child("notReadyAddresses").Index(j))...)
		}
		for j := range ss.Ports {
			errs = append(errs, validateEndpointPort(&ss.Ports[j], len(ss.Ports) > 1, p.Child("ports").Index(j))...)
		}
	}
	return errs
}

func validateEndpointAddress(a *corev1.EndpointAddress, p *field.Path) field.ErrorList {
	ipPath := p.Child("ip")
	errs := validation.IsValidIPForLegacyField(ipPath, a.IP, true, nil)
	if a.Hostname != "" {
		errs = append(errs, generic.ValidateDNS1123Label(a.Hostname, p.Child("hostname"))...)
	}
	if a.NodeName != nil {
		for _, msg := range validation.IsDNS1123Subdomain(*a.NodeName) {
			errs = append(errs, field.Invalid(p.Child("nodeName"), *a.NodeName, msg))
		}
	}
	return append(errs, generic.ValidateEndpointIP(a.IP, ipPath)...)
}

func validateEndpointPort(port *corev1.EndpointPort, requireName bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if requireName && port.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	} else if port.Name != "" {
		errs = append(errs, generic.ValidateDNS1123Label(port.Name, p.Child("name"))...)
	}
	for _, msg := range validation.IsValidPortNum(int(port.Port)) {
		errs = append(errs, field.Invalid(p.Child("port"), port.Port, msg))
	}
	switch port.Protocol {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	case "":
		errs = append(errs, field.Required(p.Child("protocol"), ""))
	default:
		errs = append(errs, field.NotSupported(p.Child("protocol"), port.Protocol,
			[]corev1.Protocol{corev1.ProtocolSCTP, corev1.ProtocolTCP, corev1.ProtocolUDP}))
	}
	if port.AppProtocol != nil {
		errs = append(errs, validateQualifiedName(*port.AppProtocol, p.Child("appProtocol"))...)
	}
	return errs
}

func validateQualifiedName(v string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsQualifiedName(v) {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}
