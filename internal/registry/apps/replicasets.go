package apps

import (
	"context"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// ReplicaSets returns the Kind for apps/v1 replicasets.
func ReplicaSets() *registry.Kind {
	return &registry.Kind{
		Resource:     appsv1.SchemeGroupVersion.WithResource("replicasets"),
		Kind:         "ReplicaSet",
		SingularName: "replicaset",
		ShortNames:   []string{"rs"},
		Categories:   []string{"all"},
		Namespaced:   true,
		New:          func() runtime.Object { return &appsv1.ReplicaSet{} },
		NewList:      func() runtime.Object { return &appsv1.ReplicaSetList{} },
		Strategy:     replicaSetStrategy{generic.Base{Namespaced: true}},
		Status:       true,
		Scale: &registry.ScaleAccess{
			Get: func(obj runtime.Object) (int32, int32, string) {
				rs := obj.(*appsv1.ReplicaSet)
				return replicas(rs.Spec.Replicas), rs.Status.Replicas, generic.SelectorString(rs.Spec.Selector)
			},
			Set: func(obj runtime.Object, n int32) { obj.(*appsv1.ReplicaSet).Spec.Replicas = &n },
		},
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.IntColumn("Desired", appsv1.ReplicaSetSpec{}.SwaggerDoc()["replicas"], 0),
				generic.IntColumn("Current", appsv1.ReplicaSetStatus{}.SwaggerDoc()["replicas"], 0),
				generic.IntColumn("Ready", appsv1.ReplicaSetStatus{}.SwaggerDoc()["readyReplicas"], 0),
				generic.AgeColumn(),
				generic.Column("Containers", "Names of each container in the template.", 1),
				generic.Column("Images", "Images referenced by each container in the template.", 1),
				generic.Column("Selector", appsv1.ReplicaSetSpec{}.SwaggerDoc()["selector"], 1),
			},
			Cells: func(obj runtime.Object) []interface{} {
				rs := obj.(*appsv1.ReplicaSet)
				names, images := generic.ContainerCells(rs.Spec.Template.Spec.Containers)
				return []interface{}{
					rs.Name,
					int64(replicas(rs.Spec.Replicas)),
					int64(rs.Status.Replicas),
					int64(rs.Status.ReadyReplicas),
					generic.Age(rs.CreationTimestamp),
					names,
					images,
					generic.FormatSelector(rs.Spec.Selector),
				}
			},
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.replicas": strconv.Itoa(int(obj.(*appsv1.ReplicaSet).Status.Replicas))}
		},
	}
}

type replicaSetStrategy struct{ generic.Base }

var _ registry.StatusStrategy = replicaSetStrategy{}

// Default sets replicas 1 and the pod template's PodSpec defaults.
func (replicaSetStrategy) Default(obj runtime.Object) {
	rs := obj.(*appsv1.ReplicaSet)
	if rs.Spec.Replicas == nil {
		one := int32(1)
		rs.Spec.Replicas = &one
	}
	generic.DefaultPodSpec(&rs.Spec.Template.Spec)
}

// PrepareForCreate clears status and starts at generation 1.
func (replicaSetStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	rs := obj.(*appsv1.ReplicaSet)
	generic.ResetStatus(&rs.Status)
	generic.InitGeneration(rs)
}

// PrepareForUpdate keeps status; a spec change bumps generation.
func (s replicaSetStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
	s.Default(rs) // compare defaulted specs; see generic.Base
	rs.Status = o.Status
	generic.UpdateGeneration(rs, o, generic.Changed(rs.Spec, o.Spec))
}

func (s replicaSetStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateReplicaSetSpec(&obj.(*appsv1.ReplicaSet).Spec)...)
}

func (s replicaSetStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	errs = append(errs, validateReplicaSetSpec(&rs.Spec)...)
	return append(errs, generic.ValidateImmutable(rs.Spec.Selector, o.Spec.Selector, field.NewPath("spec", "selector"))...)
}

func validateReplicaSetSpec(spec *appsv1.ReplicaSetSpec) field.ErrorList {
	p := field.NewPath("spec")
	errs := generic.ValidateNonnegative(int64(replicas(spec.Replicas)), p.Child("replicas"))
	errs = append(errs, generic.ValidateNonnegative(int64(spec.MinReadySeconds), p.Child("minReadySeconds"))...)
	return append(errs, validateSelectorAndTemplate(spec.Selector, &spec.Template, p)...)
}

// PrepareForStatusUpdate keeps the stored spec.
func (replicaSetStrategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
	rs.Spec = o.Spec
	rs.Generation = o.Generation
}

func (replicaSetStrategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	rs, o := obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet)
	errs := generic.ValidateObjectMetaUpdate(&rs.ObjectMeta, &o.ObjectMeta)
	p := field.NewPath("status")
	st := &rs.Status
	errs = append(errs, validateReplicaCounts(p, st.Replicas, map[string]int32{
		"fullyLabeledReplicas": st.FullyLabeledReplicas,
		"readyReplicas":        st.ReadyReplicas,
		"availableReplicas":    st.AvailableReplicas,
	}, st.ReadyReplicas, st.AvailableReplicas)...)
	return append(errs, generic.ValidateNonnegative(st.ObservedGeneration, p.Child("observedGeneration"))...)
}
