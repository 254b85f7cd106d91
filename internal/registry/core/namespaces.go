package core

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Namespaces returns the Kind for core/v1 namespaces.
func Namespaces() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("namespaces"),
		Kind:         "Namespace",
		SingularName: "namespace",
		ShortNames:   []string{"ns"},
		Namespaced:   false,
		New:          func() runtime.Object { return &corev1.Namespace{} },
		NewList:      func() runtime.Object { return &corev1.NamespaceList{} },
		Strategy:     namespaceStrategy{generic.Base{ValidateName: apivalidation.ValidateNamespaceName}},
		Status:       true,
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("Status", "The status of the namespace", 0),
				generic.AgeColumn(),
			},
			Cells: func(obj runtime.Object) []interface{} {
				ns := obj.(*corev1.Namespace)
				return []interface{}{ns.Name, string(ns.Status.Phase), generic.Age(ns.CreationTimestamp)}
			},
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
		},
	}
}

type namespaceStrategy struct{ generic.Base }

var _ registry.StatusStrategy = namespaceStrategy{}

// Default sets the kubernetes.io/metadata.name label and phase Active.
func (namespaceStrategy) Default(obj runtime.Object) {
	ns := obj.(*corev1.Namespace)
	setNamespaceNameLabel(ns)
	if ns.Status.Phase == "" {
		ns.Status.Phase = corev1.NamespaceActive
	}
}

// setNamespaceNameLabel keeps the immutable-name label in step with the
// name (upstream sets it in defaulting and again after generateName).
func setNamespaceNameLabel(ns *corev1.Namespace) {
	if ns.Name == "" {
		return
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[corev1.LabelMetadataName] = ns.Name
}

// PrepareForCreate starts the namespace Active with the "kubernetes"
// finalizer in spec.finalizers.
func (namespaceStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	ns := obj.(*corev1.Namespace)
	ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
	has := false
	for _, f := range ns.Spec.Finalizers {
		has = has || f == corev1.FinalizerKubernetes
	}
	if !has {
		ns.Spec.Finalizers = append(ns.Spec.Finalizers, corev1.FinalizerKubernetes)
	}
	setNamespaceNameLabel(ns)
}

// PrepareForUpdate keeps spec.finalizers (changed only through /finalize
// upstream) and status.
func (s namespaceStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	s.Base.PrepareForUpdate(ctx, obj, old)
	ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
	ns.Spec.Finalizers = oldNS.Spec.Finalizers
	ns.Status = oldNS.Status
	setNamespaceNameLabel(ns)
}

func (s namespaceStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	errs := s.Base.Validate(ctx, obj)
	return append(errs, validateNamespaceFinalizers(obj.(*corev1.Namespace))...)
}

func (s namespaceStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	return append(errs, validateNamespaceFinalizers(obj.(*corev1.Namespace))...)
}

func validateNamespaceFinalizers(ns *corev1.Namespace) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec", "finalizers")
	for _, f := range ns.Spec.Finalizers {
		errs = append(errs, apivalidation.ValidateFinalizerName(string(f), p)...)
		if !strings.Contains(string(f), "/") && !generic.IsStandardFinalizerName(string(f)) {
			errs = append(errs, field.Invalid(p, string(f), "name is neither a standard finalizer name nor is it fully qualified"))
		}
	}
	return errs
}

// PrepareForStatusUpdate keeps the stored spec.
func (namespaceStrategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
	ns.Spec = oldNS.Spec
	ns.Generation = oldNS.Generation
}

// ValidateStatusUpdate ties the phase to deletionTimestamp as upstream does
// (including upstream's "status.Phase" path).
func (namespaceStrategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
	errs := generic.ValidateObjectMetaUpdate(&ns.ObjectMeta, &oldNS.ObjectMeta)
	p := field.NewPath("status", "Phase")
	if ns.DeletionTimestamp.IsZero() {
		if ns.Status.Phase != corev1.NamespaceActive {
			errs = append(errs, field.Invalid(p, ns.Status.Phase, "may only be 'Active' if `deletionTimestamp` is empty"))
		}
	} else if ns.Status.Phase != corev1.NamespaceTerminating {
		errs = append(errs, field.Invalid(p, ns.Status.Phase, "may only be 'Terminating' if `deletionTimestamp` is not empty"))
	}
	return errs
}
