// Package coordination builds the registry.Kind for coordination.k8s.io/v1
// Leases (node heartbeats in kube-node-lease, leader election), following
// kube-apiserver's pkg/registry/coordination/lease: no defaults, no status,
// create-on-update allowed, and spec checks on the duration and transitions.
// The coordinated-leader-election fields (strategy, preferredHolder) are
// dropped unless already stored, as upstream does with that feature off.
package coordination

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Leases returns the Kind for coordination.k8s.io/v1 leases.
func Leases() *registry.Kind {
	return &registry.Kind{
		Resource:     coordinationv1.SchemeGroupVersion.WithResource("leases"),
		Kind:         "Lease",
		SingularName: "lease",
		Namespaced:   true,
		New:          func() runtime.Object { return &coordinationv1.Lease{} },
		NewList:      func() runtime.Object { return &coordinationv1.LeaseList{} },
		Strategy:     strategy{generic.Base{Namespaced: true, CreateOnUpdate: true}},
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("Holder", coordinationv1.LeaseSpec{}.SwaggerDoc()["holderIdentity"], 0),
				generic.AgeColumn(),
			},
			Cells: func(obj runtime.Object) []interface{} {
				l := obj.(*coordinationv1.Lease)
				holder := ""
				if l.Spec.HolderIdentity != nil {
					holder = *l.Spec.HolderIdentity
				}
				return []interface{}{l.Name, holder, generic.Age(l.CreationTimestamp)}
			},
		},
	}
}

type strategy struct{ generic.Base }

func (strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	l := obj.(*coordinationv1.Lease)
	l.Spec.Strategy = nil
	l.Spec.PreferredHolder = nil
}

func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	s.Base.PrepareForUpdate(ctx, obj, old)
	l, o := obj.(*coordinationv1.Lease), old.(*coordinationv1.Lease)
	if o.Spec.Strategy == nil {
		l.Spec.Strategy = nil
	}
	if o.Spec.PreferredHolder == nil {
		l.Spec.PreferredHolder = nil
	}
}

func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateSpec(&obj.(*coordinationv1.Lease).Spec)...)
}

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return append(s.Base.ValidateUpdate(ctx, obj, old), validateSpec(&obj.(*coordinationv1.Lease).Spec)...)
}

func validateSpec(spec *coordinationv1.LeaseSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if d := spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(p.Child("leaseDurationSeconds"), d, "must be greater than 0"))
	}
	if t := spec.LeaseTransitions; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(p.Child("leaseTransitions"), t, "must be greater than or equal to 0"))
	}
	if spec.PreferredHolder != nil && *spec.PreferredHolder != "" && (spec.Strategy == nil || *spec.Strategy == "") {
		errs = append(errs, field.Forbidden(p.Child("preferredHolder"), "may only be specified if `strategy` is defined"))
	}
	return errs
}
