package core

import (
	"context"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Pods returns the Kind for core/v1 pods.
func Pods() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("pods"),
		Kind:         "Pod",
		SingularName: "pod",
		ShortNames:   []string{"po"},
		Categories:   []string{"all"},
		Namespaced:   true,
		New:          func() runtime.Object { return &corev1.Pod{} },
		NewList:      func() runtime.Object { return &corev1.PodList{} },
		Strategy:     podStrategy{generic.Base{Namespaced: true}},
		Status:       true,
		Table:        &registry.TableConvertor{Columns: podColumns(), Cells: podCells},
		Fields:       podFields,
	}
}

func podFields(obj runtime.Object) fields.Set {
	pod := obj.(*corev1.Pod)
	podIP := ""
	if len(pod.Status.PodIPs) > 0 {
		podIP = pod.Status.PodIPs[0].IP
	}
	return fields.Set{
		"spec.nodeName":           pod.Spec.NodeName,
		"spec.restartPolicy":      string(pod.Spec.RestartPolicy),
		"spec.schedulerName":      pod.Spec.SchedulerName,
		"spec.serviceAccountName": pod.Spec.ServiceAccountName,
		"spec.hostNetwork":        strconv.FormatBool(pod.Spec.HostNetwork),
		"status.phase":            string(pod.Status.Phase),
		"status.podIP":            podIP,
		// Upstream accepts this label but never fills it, so a selector on
		// it matches as if the value were empty; keep that behaviour.
		"status.podIPs":            "",
		"status.nominatedNodeName": pod.Status.NominatedNodeName,
	}
}

type podStrategy struct{ generic.Base }

var _ registry.StatusStrategy = podStrategy{}

// Default applies SetDefaults_Pod and the PodSpec defaults.
func (podStrategy) Default(obj runtime.Object) { generic.DefaultPod(obj.(*corev1.Pod)) }

// PrepareForCreate starts the pod Pending at generation 1 with its QoS class.
func (s podStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	pod := obj.(*corev1.Pod)
	s.Default(pod) // the QoS class depends on defaulted requests; see generic.Base
	generic.InitGeneration(pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodPending}
	pod.Status.QOSClass = podQOS(&pod.Spec)
}

// PrepareForUpdate keeps the stored status and bumps generation when the
// spec changed.
func (s podStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	s.Default(pod) // compare defaulted specs; see generic.Base
	pod.Status = oldPod.Status
	generic.UpdateGeneration(pod, oldPod, generic.Changed(pod.Spec, oldPod.Spec))
}

func (s podStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	pod := obj.(*corev1.Pod)
	errs := s.Base.Validate(ctx, obj)
	errs = append(errs, generic.ValidatePodSpec(&pod.Spec, field.NewPath("spec"))...)
	if len(pod.Spec.EphemeralContainers) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "ephemeralContainers"), "cannot be set on create"))
	}
	if pod.Spec.NodeName != "" && len(pod.Spec.SchedulingGates) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "nodeName"), "cannot be set until all schedulingGates have been cleared"))
	}
	return errs
}

// updatablePodSpecFields is upstream's list, quoted in the Forbidden message.
var updatablePodSpecFields = []string{
	"`spec.containers[*].image`",
	"`spec.initContainers[*].image`",
	"`spec.activeDeadlineSeconds`",
	"`spec.tolerations` (only additions to existing tolerations)",
	"`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
}

func (s podStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	specPath := field.NewPath("spec")
	errs = append(errs, generic.ValidatePodSpec(&pod.Spec, specPath)...)

	if n, o := pod.Spec.ActiveDeadlineSeconds, oldPod.Spec.ActiveDeadlineSeconds; n != nil && o != nil && *n > *o {
		errs = append(errs, field.Invalid(specPath.Child("activeDeadlineSeconds"), *n, "must be less than or equal to previous value"))
	} else if n == nil && o != nil {
		errs = append(errs, field.Invalid(specPath.Child("activeDeadlineSeconds"), n, "must not update from a positive integer to nil value"))
	}

	// Everything else in the spec is immutable: overlay what may change on
	// a copy of the new spec and compare it with the old one.
	munged := pod.Spec.DeepCopy()
	for i := range munged.Containers {
		if i < len(oldPod.Spec.Containers) {
			munged.Containers[i].Image = oldPod.Spec.Containers[i].Image
		}
	}
	for i := range munged.InitContainers {
		if i < len(oldPod.Spec.InitContainers) {
			munged.InitContainers[i].Image = oldPod.Spec.InitContainers[i].Image
		}
	}
	munged.ActiveDeadlineSeconds = oldPod.Spec.ActiveDeadlineSeconds
	munged.SchedulingGates = oldPod.Spec.SchedulingGates
	if tolerationsOnlyAdded(pod.Spec.Tolerations, oldPod.Spec.Tolerations) {
		munged.Tolerations = oldPod.Spec.Tolerations
	}
	if g, og := munged.TerminationGracePeriodSeconds, oldPod.Spec.TerminationGracePeriodSeconds; g != nil && *g == 1 && og != nil && *og < 0 {
		munged.TerminationGracePeriodSeconds = og
	}
	// svcnet binds pods by setting spec.nodeName once (no pods/binding).
	if oldPod.Spec.NodeName == "" {
		munged.NodeName = ""
	}
	if generic.Changed(*munged, oldPod.Spec) {
		errs = append(errs, field.Forbidden(specPath, "pod updates may not change fields other than "+strings.Join(updatablePodSpecFields, ",")))
	}
	return errs
}

// tolerationsOnlyAdded reports whether every old toleration is still in new.
func tolerationsOnlyAdded(newT, oldT []corev1.Toleration) bool {
	for _, o := range oldT {
		found := false
		for _, n := range newT {
			if generic.Changed(n, o) {
				continue
			}
			found = true
			break
		}
		if !found {
			return false
		}
	}
	return true
}

// PrepareForStatusUpdate keeps what a status writer (the node agent) may
// not touch: the spec, deletionTimestamp, ownerReferences and the QoS class.
func (podStrategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	pod.Spec = oldPod.Spec
	pod.Generation = oldPod.Generation
	pod.DeletionTimestamp = oldPod.DeletionTimestamp
	pod.OwnerReferences = oldPod.OwnerReferences
	if pod.Status.QOSClass == "" {
		pod.Status.QOSClass = oldPod.Status.QOSClass
	}
	st := &pod.Status
	switch {
	case st.PodIP != "" && len(st.PodIPs) == 0:
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	case st.PodIP == "" && len(st.PodIPs) > 0:
		st.PodIP = st.PodIPs[0].IP
	}
}

func (podStrategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	pod, oldPod := obj.(*corev1.Pod), old.(*corev1.Pod)
	errs := generic.ValidateObjectMetaUpdate(&pod.ObjectMeta, &oldPod.ObjectMeta)
	st := field.NewPath("status")
	if n := pod.Status.NominatedNodeName; n != "" && n != oldPod.Status.NominatedNodeName {
		for _, msg := range validation.IsDNS1123Subdomain(n) {
			errs = append(errs, field.Invalid(st.Child("nominatedNodeName"), n, msg))
		}
	}
	if pod.Status.ObservedGeneration < 0 {
		errs = append(errs, field.Invalid(st.Child("observedGeneration"), pod.Status.ObservedGeneration, "must be a non-negative integer"))
	}
	errs = append(errs, generic.ValidateImmutable(pod.Status.QOSClass, oldPod.Status.QOSClass, st.Child("qosClass"))...)
	errs = append(errs, validatePodIPs(pod, oldPod)...)
	return errs
}

func validatePodIPs(pod, oldPod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("status", "podIPs")
	var existing []string
	for _, ip := range oldPod.Status.PodIPs {
		existing = append(existing, ip.IP)
	}
	v4, v6 := 0, 0
	for i, ip := range pod.Status.PodIPs {
		ipErrs := validation.IsValidIPForLegacyField(p.Index(i), ip.IP, true, existing)
		errs = append(errs, ipErrs...)
		if len(ipErrs) == 0 {
			if strings.Contains(ip.IP, ":") {
				v6++
			} else {
				v4++
			}
		}
	}
	if len(pod.Status.PodIPs) > 1 && (len(pod.Status.PodIPs) > 2 || v4 != 1 || v6 != 1) {
		errs = append(errs, field.Invalid(p, pod.Status.PodIPs, "may specify no more than one IP for each IP family"))
	}
	switch hasIP, hasIPs := pod.Status.PodIP != "", len(pod.Status.PodIPs) > 0; {
	case hasIP != hasIPs:
		errs = append(errs, field.Invalid(p, pod.Status.PodIPs, "podIP and podIPs must either both be set or both be unset"))
	case hasIPs && pod.Status.PodIP != pod.Status.PodIPs[0].IP:
		errs = append(errs, field.Invalid(p.Index(0).Child("ip"), pod.Status.PodIPs[0].IP, "must be equal to `podIP`"))
	}
	return errs
}

// podQOS computes status.qosClass from the containers' cpu and memory
// requests and limits (requests already defaulted from limits), as
// upstream's qos.GetPodQOS does for pods without pod-level resources.
func podQOS(spec *corev1.PodSpec) corev1.PodQOSClass {
	requests := corev1.ResourceList{}
	limits := corev1.ResourceList{}
	guaranteed := true
	supported := func(n corev1.ResourceName) bool { return n == corev1.ResourceCPU || n == corev1.ResourceMemory }
	add := func(l corev1.ResourceList, n corev1.ResourceName, q resource.Quantity) {
		if cur, ok := l[n]; ok {
			cur.Add(q)
			l[n] = cur
		} else {
			l[n] = q.DeepCopy()
		}
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		for n, q := range c.Resources.Requests {
			if supported(n) && !q.IsZero() {
				add(requests, n, q)
			}
		}
		found := map[corev1.ResourceName]bool{}
		for n, q := range c.Resources.Limits {
			if supported(n) && !q.IsZero() {
				found[n] = true
				add(limits, n, q)
			}
		}
		if !found[corev1.ResourceCPU] || !found[corev1.ResourceMemory] {
			guaranteed = false
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	if guaranteed {
		for n, req := range requests {
			if lim, ok := limits[n]; !ok || lim.Cmp(req) != 0 {
				guaranteed = false
				break
			}
		}
	}
	if guaranteed && len(requests) == len(limits) {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func podColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		generic.NameColumn(),
		generic.Column("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
		generic.Column("Status", "The aggregate status of the containers in this pod.", 0),
		generic.Column("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
		generic.AgeColumn(),
		generic.Column("IP", corev1.PodStatus{}.SwaggerDoc()["podIP"], 1),
		generic.Column("Node", corev1.PodSpec{}.SwaggerDoc()["nodeName"], 1),
		generic.Column("Nominated Node", corev1.PodStatus{}.SwaggerDoc()["nominatedNodeName"], 1),
		generic.Column("Readiness Gates", corev1.PodSpec{}.SwaggerDoc()["readinessGates"], 1),
	}
}
