// Package networking builds the registry.Kind for networking.k8s.io/v1
// ServiceCIDRs: the ranges ClusterIPs come from. Validation, status
// handling and the table follow kube-apiserver's
// pkg/registry/networking/servicecidr: one or two CIDRs (one per family),
// immutable except that a single-family range may gain its second family;
// status is written through /status only. The server bootstraps the
// default ServiceCIDR "kubernetes" from --service-cidr; node proxies watch
// them (internal/proxy) to drop traffic to unallocated service addresses.
//
// svcnet's ClusterIP allocator allocates from --service-cidr only: a
// ServiceCIDR created later is served, stored and used by the proxies, but
// does not widen the allocatable range (upstream's MultiCIDRServiceAllocator
// does). There is no finalizer guarding a range still in use.
package networking

import (
	"context"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// DefaultServiceCIDRName is the ServiceCIDR the API server creates from its
// own service CIDRs, as kube-apiserver does.
const DefaultServiceCIDRName = "kubernetes"

// ServiceCIDRs returns the Kind for networking.k8s.io/v1 servicecidrs.
func ServiceCIDRs() *registry.Kind {
	return &registry.Kind{
		Resource:     networkingv1.SchemeGroupVersion.WithResource("servicecidrs"),
		Kind:         "ServiceCIDR",
		SingularName: "servicecidr",
		Namespaced:   false,
		New:          func() runtime.Object { return &networkingv1.ServiceCIDR{} },
		NewList:      func() runtime.Object { return &networkingv1.ServiceCIDRList{} },
		Strategy:     strategy{generic.Base{Namespaced: false}},
		Status:       true,
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("CIDRs", networkingv1.ServiceCIDRSpec{}.SwaggerDoc()["cidrs"], 0),
				generic.AgeColumn(),
			},
			Cells: func(obj runtime.Object) []interface{} {
				sc := obj.(*networkingv1.ServiceCIDR)
				return []interface{}{sc.Name, strings.Join(sc.Spec.CIDRs, ","), generic.Age(sc.CreationTimestamp)}
			},
		},
	}
}

type strategy struct{ generic.Base }

var _ registry.StatusStrategy = strategy{}

// PrepareForCreate drops a client-set status (upstream's
// ServiceCIDRStatusFieldWiping).
func (strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	obj.(*networkingv1.ServiceCIDR).Status = networkingv1.ServiceCIDRStatus{}
}

// PrepareForUpdate keeps the stored status and generation.
func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	s.Base.PrepareForUpdate(ctx, obj, old)
	obj.(*networkingv1.ServiceCIDR).Status = old.(*networkingv1.ServiceCIDR).Status
}

func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateSpec(&obj.(*networkingv1.ServiceCIDR).Spec, field.NewPath("spec", "cidrs"))...)
}

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	cur, prev := obj.(*networkingv1.ServiceCIDR).Spec.CIDRs, old.(*networkingv1.ServiceCIDR).Spec.CIDRs
	p := field.NewPath("spec", "cidrs")
	switch {
	case len(prev) == len(cur):
		for i := range prev {
			if prev[i] != cur[i] {
				errs = append(errs, field.Invalid(p.Index(i), cur[i], apimachineryvalidation.FieldImmutableErrorMsg))
			}
		}
	case len(prev) == 1 && len(cur) == 2:
		// A single-family range may become dual-stack (issues.k8s.io/131261).
		if cur[0] != prev[0] {
			errs = append(errs, field.Invalid(p.Index(0), cur[0], apimachineryvalidation.FieldImmutableErrorMsg))
		}
		errs = append(errs, validateSpec(&obj.(*networkingv1.ServiceCIDR).Spec, p)...)
	default:
		errs = append(errs, field.Invalid(p, cur, apimachineryvalidation.FieldImmutableErrorMsg))
	}
	return errs
}

// PrepareForStatusUpdate keeps everything but status.
func (strategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	sc, o := obj.(*networkingv1.ServiceCIDR), old.(*networkingv1.ServiceCIDR)
	sc.Spec = o.Spec
	sc.Generation = o.Generation
}

func (strategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return generic.ValidateObjectMetaUpdate(&obj.(*networkingv1.ServiceCIDR).ObjectMeta, &old.(*networkingv1.ServiceCIDR).ObjectMeta)
}

// validateSpec is upstream's validateServiceCIDRSpec: one or two valid
// CIDRs, at most one per IP family.
func validateSpec(spec *networkingv1.ServiceCIDRSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(spec.CIDRs) == 0 {
		return append(errs, field.Required(p, "at least one CIDR required"))
	}
	if len(spec.CIDRs) > 2 {
		return append(errs, field.Invalid(p, spec, "may only hold up to 2 values"))
	}
	for i, c := range spec.CIDRs {
		errs = append(errs, validation.IsValidCIDR(p.Index(i), c)...)
	}
	if len(spec.CIDRs) == 2 {
		f0, f1 := netutils.IPFamilyOfCIDRString(spec.CIDRs[0]), netutils.IPFamilyOfCIDRString(spec.CIDRs[1])
		if f0 == f1 && f0 != netutils.IPFamilyUnknown {
			errs = append(errs, field.Invalid(p, spec.CIDRs, "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"))
		}
	}
	return errs
}
