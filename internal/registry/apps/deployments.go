// Package apps builds the registry.Kind values for apps/v1 Deployments and
// ReplicaSets, following kube-apiserver's pkg/registry/apps and
// pkg/apis/apps validation.
//
// Both kinds have /status and /scale. Writes to the main resource keep the
// stored status; any spec change bumps metadata.generation (for
// Deployments an annotation change does too, because annotations are copied
// to the ReplicaSets), which is what `kubectl rollout status` waits on
// against status.observedGeneration. Writes to /status keep the spec (and,
// for Deployments, the labels). The selector is required, immutable and must match the template
// labels.
package apps

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Deployments returns the Kind for apps/v1 deployments.
func Deployments() *registry.Kind {
	return &registry.Kind{
		Resource:     appsv1.SchemeGroupVersion.WithResource("deployments"),
		Kind:         "Deployment",
		SingularName: "deployment",
		ShortNames:   []string{"deploy"},
		Categories:   []string{"all"},
		Namespaced:   true,
		New:          func() runtime.Object { return &appsv1.Deployment{} },
		NewList:      func() runtime.Object { return &appsv1.DeploymentList{} },
		Strategy:     deploymentStrategy{generic.Base{Namespaced: true}},
		Status:       true,
		Scale: &registry.ScaleAccess{
			Get: func(obj runtime.Object) (int32, int32, string) {
				d := obj.(*appsv1.Deployment)
				return replicas(d.Spec.Replicas), d.Status.Replicas, generic.SelectorString(d.Spec.Selector)
			},
			Set: func(obj runtime.Object, n int32) { obj.(*appsv1.Deployment).Spec.Replicas = &n },
		},
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("Ready", "Number of the pod with ready state", 0),
				generic.Column("Up-to-date", appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"], 0),
				generic.Column("Available", appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"], 0),
				generic.AgeColumn(),
				generic.Column("Containers", "Names of each container in the template.", 1),
				generic.Column("Images", "Images referenced by each container in the template.", 1),
				generic.Column("Selector", appsv1.DeploymentSpec{}.SwaggerDoc()["selector"], 1),
			},
			Cells: deploymentCells,
		},
	}
}

// replicas reads a defaulted spec.replicas (nil only before defaulting,
// where it means 1).
func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func deploymentCells(obj runtime.Object) []interface{} {
	d := obj.(*appsv1.Deployment)
	names, images := generic.ContainerCells(d.Spec.Template.Spec.Containers)
	return []interface{}{
		d.Name,
		fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, replicas(d.Spec.Replicas)),
		int64(d.Status.UpdatedReplicas),
		int64(d.Status.AvailableReplicas),
		generic.Age(d.CreationTimestamp),
		names,
		images,
		generic.SelectorString(d.Spec.Selector),
	}
}

type deploymentStrategy struct{ generic.Base }

var _ registry.StatusStrategy = deploymentStrategy{}

// Default applies SetDefaults_Deployment: replicas 1, RollingUpdate with
// 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600, and the
// pod template's PodSpec defaults.
func (deploymentStrategy) Default(obj runtime.Object) {
	d := obj.(*appsv1.Deployment)
	if d.Spec.Replicas == nil {
		one := int32(1)
		d.Spec.Replicas = &one
	}
	st := &d.Spec.Strategy
	if st.Type == "" {
		st.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if st.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if st.RollingUpdate == nil {
			st.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if st.RollingUpdate.MaxUnavailable == nil {
			v := intstr.FromString("25%")
			st.RollingUpdate.MaxUnavailable = &v
		}
		if st.RollingUpdate.MaxSurge == nil {
			v := intstr.FromString("25%")
			st.RollingUpdate.MaxSurge = &v
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		v := int32(10)
		d.Spec.RevisionHistoryLimit = &v
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		v := int32(600)
		d.Spec.ProgressDeadlineSeconds = &v
	}
	generic.DefaultPodSpec(&d.Spec.Template.Spec)
}

// PrepareForCreate clears status and starts at generation 1.
func (deploymentStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	d := obj.(*appsv1.Deployment)
	generic.ResetStatus(&d.Status)
	generic.InitGeneration(d)
}

// PrepareForUpdate keeps status; a spec or annotation change bumps
// generation.
func (s deploymentStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
	s.Default(d) // compare defaulted specs; see generic.Base
	d.Status = o.Status
	generic.UpdateGeneration(d, o, generic.Changed(d.Spec, o.Spec) || generic.Changed(d.Annotations, o.Annotations))
}

func (s deploymentStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateDeploymentSpec(&obj.(*appsv1.Deployment).Spec)...)
}

func (s deploymentStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	errs = append(errs, validateDeploymentSpec(&d.Spec)...)
	return append(errs, generic.ValidateImmutable(d.Spec.Selector, o.Spec.Selector, field.NewPath("spec", "selector"))...)
}

func validateDeploymentSpec(spec *appsv1.DeploymentSpec) field.ErrorList {
	p := field.NewPath("spec")
	errs := generic.ValidateNonnegative(int64(replicas(spec.Replicas)), p.Child("replicas"))
	errs = append(errs, validateSelectorAndTemplate(spec.Selector, &spec.Template, p)...)
	errs = append(errs, validateStrategy(&spec.Strategy, p.Child("strategy"))...)
	errs = append(errs, generic.ValidateNonnegative(int64(spec.MinReadySeconds), p.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, generic.ValidateNonnegative(int64(*spec.RevisionHistoryLimit), p.Child("revisionHistoryLimit"))...)
	}
	if pd := spec.ProgressDeadlineSeconds; pd != nil {
		errs = append(errs, generic.ValidateNonnegative(int64(*pd), p.Child("progressDeadlineSeconds"))...)
		if *pd <= spec.MinReadySeconds {
			errs = append(errs, field.Invalid(p.Child("progressDeadlineSeconds"), pd, "must be greater than minReadySeconds"))
		}
	}
	return errs
}

// validateSelectorAndTemplate is shared by Deployments and ReplicaSets: a
// non-empty valid selector that matches the pod template's labels, and a
// valid pod template.
func validateSelectorAndTemplate(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	selPath := p.Child("selector")
	if sel == nil {
		errs = append(errs, field.Required(selPath, ""))
	} else {
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, selPath)...)
		if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(selPath, sel, "empty selector is invalid for deployment"))
		}
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return append(errs, field.Invalid(selPath, sel, "invalid label selector"))
	}
	matches := selector.Empty() || selector.Matches(labels.Set(tmpl.Labels))
	return append(errs, generic.ValidatePodTemplate(tmpl, matches, p.Child("template"))...)
}

func validateStrategy(st *appsv1.DeploymentStrategy, p *field.Path) field.ErrorList {
	switch st.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if st.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(p.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")}
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		if st.RollingUpdate == nil {
			return field.ErrorList{field.Required(p.Child("rollingUpdate"), "this should be defaulted and never be nil")}
		}
		return validateRollingUpdate(st.RollingUpdate, p.Child("rollingUpdate"))
	default:
		return field.ErrorList{field.NotSupported(p, st, []string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)})}
	}
	return nil
}

func validateRollingUpdate(ru *appsv1.RollingUpdateDeployment, p *field.Path) field.ErrorList {
	errs := validatePositiveIntOrPercent(ru.MaxUnavailable, p.Child("maxUnavailable"))
	errs = append(errs, validatePositiveIntOrPercent(ru.MaxSurge, p.Child("maxSurge"))...)
	if intOrPercent(ru.MaxUnavailable) == 0 && intOrPercent(ru.MaxSurge) == 0 {
		errs = append(errs, field.Invalid(p.Child("maxUnavailable"), ru.MaxUnavailable, "may not be 0 when `maxSurge` is 0"))
	}
	if v, pct := percent(ru.MaxUnavailable); pct && v > 100 {
		errs = append(errs, field.Invalid(p.Child("maxUnavailable"), ru.MaxUnavailable, "must not be greater than 100%"))
	}
	return errs
}

// percent returns the value of a "N%" string and whether it is one.
func percent(v *intstr.IntOrString) (int, bool) {
	if v == nil || v.Type != intstr.String || len(validation.IsValidPercent(v.StrVal)) != 0 {
		return 0, false
	}
	n, _ := strconv.Atoi(v.StrVal[:len(v.StrVal)-1])
	return n, true
}

func intOrPercent(v *intstr.IntOrString) int {
	if n, ok := percent(v); ok {
		return n
	}
	if v == nil {
		return 0
	}
	return v.IntValue()
}

func validatePositiveIntOrPercent(v *intstr.IntOrString, p *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	var errs field.ErrorList
	switch v.Type {
	case intstr.String:
		for _, msg := range validation.IsValidPercent(v.StrVal) {
			errs = append(errs, field.Invalid(p, v, msg))
		}
	case intstr.Int:
		errs = append(errs, generic.ValidateNonnegative(int64(v.IntValue()), p)...)
	default:
		errs = append(errs, field.Invalid(p, v, "must be an integer or percentage (e.g '5%')"))
	}
	return errs
}

// PrepareForStatusUpdate keeps the stored spec and labels.
func (deploymentStrategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
	d.Spec = o.Spec
	d.Labels = o.Labels
	d.Generation = o.Generation
}

func (deploymentStrategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
	errs := generic.ValidateObjectMetaUpdate(&d.ObjectMeta, &o.ObjectMeta)
	p := field.NewPath("status")
	st := &d.Status
	errs = append(errs, generic.ValidateNonnegative(st.ObservedGeneration, p.Child("observedGeneration"))...)
	errs = append(errs, validateReplicaCounts(p, st.Replicas, map[string]int32{
		"updatedReplicas":   st.UpdatedReplicas,
		"readyReplicas":     st.ReadyReplicas,
		"availableReplicas": st.AvailableReplicas,
	}, st.ReadyReplicas, st.AvailableReplicas)...)
	errs = append(errs, generic.ValidateNonnegative(int64(st.UnavailableReplicas), p.Child("unavailableReplicas"))...)
	if st.CollisionCount != nil {
		errs = append(errs, generic.ValidateNonnegative(int64(*st.CollisionCount), p.Child("collisionCount"))...)
		if o.Status.CollisionCount != nil && *st.CollisionCount < *o.Status.CollisionCount {
			errs = append(errs, field.Invalid(p.Child("collisionCount"), *st.CollisionCount, "cannot be decremented"))
		}
	} else if o.Status.CollisionCount != nil {
		errs = append(errs, field.Invalid(p.Child("collisionCount"), int32(0), "cannot be decremented"))
	}
	return errs
}

// validateReplicaCounts checks status counters: replicas and every counter
// non-negative and not above replicas, and available not above ready.
// counters is iterated in a fixed order so errors come out stable.
func validateReplicaCounts(p *field.Path, total int32, counters map[string]int32, ready, available int32) field.ErrorList {
	errs := generic.ValidateNonnegative(int64(total), p.Child("replicas"))
	for _, name := range []string{"fullyLabeledReplicas", "updatedReplicas", "readyReplicas", "availableReplicas"} {
		v, ok := counters[name]
		if !ok {
			continue
		}
		errs = append(errs, generic.ValidateNonnegative(int64(v), p.Child(name))...)
		if v > total {
			errs = append(errs, field.Invalid(p.Child(name), v, "cannot be greater than status.replicas"))
		}
	}
	if available > ready {
		errs = append(errs, field.Invalid(p.Child("availableReplicas"), available, "cannot be greater than readyReplicas"))
	}
	return errs
}
