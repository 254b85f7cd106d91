package core

import (
	"context"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Nodes returns the Kind for core/v1 nodes.
func Nodes() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("nodes"),
		Kind:         "Node",
		SingularName: "node",
		ShortNames:   []string{"no"},
		Namespaced:   false,
		New:          func() runtime.Object { return &corev1.Node{} },
		NewList:      func() runtime.Object { return &corev1.NodeList{} },
		Strategy:     nodeStrategy{generic.Base{}},
		Status:       true,
		Table: &registry.TableConvertor{
			Columns: []metav1.TableColumnDefinition{
				generic.NameColumn(),
				generic.Column("Status", "The status of the node", 0),
				generic.Column("Roles", "The roles of the node", 0),
				generic.AgeColumn(),
				generic.Column("Version", corev1.NodeSystemInfo{}.SwaggerDoc()["kubeletVersion"], 0),
				generic.Column("Internal-IP", corev1.NodeStatus{}.SwaggerDoc()["addresses"], 1),
				generic.Column("External-IP", corev1.NodeStatus{}.SwaggerDoc()["addresses"], 1),
				generic.Column("OS-Image", corev1.NodeSystemInfo{}.SwaggerDoc()["osImage"], 1),
				generic.Column("Kernel-Version", corev1.NodeSystemInfo{}.SwaggerDoc()["kernelVersion"], 1),
				generic.Column("Container-Runtime", corev1.NodeSystemInfo{}.SwaggerDoc()["containerRuntimeVersion"], 1),
			},
			Cells: nodeCells,
		},
		Fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"spec.unschedulable": strconv.FormatBool(obj.(*corev1.Node).Spec.Unschedulable)}
		},
	}
}

func nodeCells(obj runtime.Object) []interface{} {
	node := obj.(*corev1.Node)
	var status []string
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = []string{"Ready"}
			} else {
				status = []string{"NotReady"}
			}
		}
	}
	if len(status) == 0 {
		status = []string{"Unknown"}
	}
	if node.Spec.Unschedulable {
		status = append(status, "SchedulingDisabled")
	}
	roles := map[string]bool{}
	for k, v := range node.Labels {
		switch {
		case strings.HasPrefix(k, "node-role.kubernetes.io/"):
			if r := strings.TrimPrefix(k, "node-role.kubernetes.io/"); r != "" {
				roles[r] = true
			}
		case k == "kubernetes.io/role" && v != "":
			roles[v] = true
		}
	}
	roleList := make([]string, 0, len(roles))
	for r := range roles {
		roleList = append(roleList, r)
	}
	slices.Sort(roleList)
	info := node.Status.NodeInfo
	kernel := unknownIfEmpty(info.KernelVersion)
	if info.Architecture != "" {
		kernel += " (" + info.Architecture + ")"
	}
	return []interface{}{
		node.Name,
		strings.Join(status, ","),
		orNone(strings.Join(roleList, ",")),
		generic.Age(node.CreationTimestamp),
		info.KubeletVersion,
		nodeAddress(node, corev1.NodeInternalIP),
		nodeAddress(node, corev1.NodeExternalIP),
		unknownIfEmpty(info.OSImage),
		kernel,
		unknownIfEmpty(info.ContainerRuntimeVersion),
	}
}

func nodeAddress(node *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range node.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func unknownIfEmpty(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

type nodeStrategy struct{ generic.Base }

var _ registry.StatusStrategy = nodeStrategy{}

// Default keeps spec.podCIDR and spec.podCIDRs in step (what upstream's
// v1 conversion does) and defaults allocatable from capacity.
func (nodeStrategy) Default(obj runtime.Object) {
	node := obj.(*corev1.Node)
	syncPodCIDRs(&node.Spec)
	if node.Status.Allocatable == nil && node.Status.Capacity != nil {
		node.Status.Allocatable = node.Status.Capacity.DeepCopy()
	}
}

func syncPodCIDRs(spec *corev1.NodeSpec) {
	switch {
	case spec.PodCIDR != "" && (len(spec.PodCIDRs) == 0 || spec.PodCIDRs[0] != spec.PodCIDR):
		spec.PodCIDRs = []string{spec.PodCIDR}
	case spec.PodCIDR == "" && len(spec.PodCIDRs) > 0:
		spec.PodCIDR = spec.PodCIDRs[0]
	}
}

// PrepareForCreate drops the retired dynamic-config fields. Unlike most
// kinds, a node may be created with its status (agents register that way).
func (nodeStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	node := obj.(*corev1.Node)
	//lint:ignore SA1019 the retired field is dropped, as upstream does
	node.Spec.ConfigSource = nil
	node.Status.Config = nil
}

// PrepareForUpdate keeps the stored status.
func (s nodeStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	s.Base.PrepareForUpdate(ctx, obj, old)
	node, oldNode := obj.(*corev1.Node), old.(*corev1.Node)
	node.Status = oldNode.Status
	//lint:ignore SA1019 the retired field is dropped unless stored, as upstream does
	if oldNode.Spec.ConfigSource == nil {
		//lint:ignore SA1019 see above
		node.Spec.ConfigSource = nil
	}
}

func (s nodeStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	node := obj.(*corev1.Node)
	return append(s.Base.Validate(ctx, obj), validateNode(node)...)
}

func validateNode(node *corev1.Node) field.ErrorList {
	// Upstream reports taint errors under metadata.taints; so do we, so
	// kubectl prints the same line.
	errs := validateTaints(node.Spec.Taints, field.NewPath("metadata", "taints"))
	p := field.NewPath("spec", "podCIDRs")
	v4, v6 := 0, 0
	for i, cidr := range node.Spec.PodCIDRs {
		cErrs := validation.IsValidCIDRForLegacyField(p.Index(i), cidr, true, nil)
		errs = append(errs, cErrs...)
		if len(cErrs) == 0 {
			if strings.Contains(cidr, ":") {
				v6++
			} else {
				v4++
			}
		}
	}
	if n := len(node.Spec.PodCIDRs); n > 1 && (n > 2 || v4 != 1 || v6 != 1) {
		errs = append(errs, field.Invalid(p, node.Spec.PodCIDRs, "may specify no more than one CIDR for each IP family"))
	}
	return errs
}

func validateTaints(taints []corev1.Taint, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	seen := map[corev1.TaintEffect]map[string]bool{}
	for i, t := range taints {
		ip := path.Index(i)
		errs = append(errs, metav1validation.ValidateLabelName(t.Key, ip.Child("key"))...)
		if msgs := validation.IsValidLabelValue(t.Value); len(msgs) > 0 {
			errs = append(errs, field.Invalid(ip.Child("value"), t.Value, strings.Join(msgs, ";")))
		}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		case "":
			errs = append(errs, field.Required(ip.Child("effect"), ""))
		default:
			errs = append(errs, field.NotSupported(ip.Child("effect"), t.Effect,
				[]corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute}))
		}
		if seen[t.Effect][t.Key] {
			d := field.Duplicate(ip, t)
			d.Detail = "taints must be unique by key and effect pair"
			errs = append(errs, d)
			continue
		}
		if seen[t.Effect] == nil {
			seen[t.Effect] = map[string]bool{}
		}
		seen[t.Effect][t.Key] = true
	}
	return errs
}

func (s nodeStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	node, oldNode := obj.(*corev1.Node), old.(*corev1.Node)
	errs := s.Base.ValidateUpdate(ctx, obj, old)
	errs = append(errs, validateNode(node)...)
	return append(errs, validateNodeUpdate(node, oldNode)...)
}

// validateNodeUpdate holds upstream ValidateNodeUpdate's rules: podCIDRs
// and providerID are set once, addresses are unique.
func validateNodeUpdate(node, oldNode *corev1.Node) field.ErrorList {
	var errs field.ErrorList
	seen := map[corev1.NodeAddress]bool{}
	for i, a := range node.Status.Addresses {
		if seen[a] {
			errs = append(errs, field.Duplicate(field.NewPath("status", "addresses").Index(i), a))
		}
		seen[a] = true
	}
	if len(oldNode.Spec.PodCIDRs) > 0 && !slices.Equal(oldNode.Spec.PodCIDRs, node.Spec.PodCIDRs) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "podCIDRs"), "node updates may not change podCIDR except from \"\" to valid"))
	}
	if o, n := oldNode.Spec.ProviderID, node.Spec.ProviderID; o != "" && n != "" && o != n {
		errs = append(errs, field.Invalid(field.NewPath("spec", "providerID"), nil, "field cannot be modified once set"))
	} else if o != "" && n == "" {
		errs = append(errs, field.Invalid(field.NewPath("spec", "providerID"), nil, "field cannot be cleared once set"))
	}
	if node.Spec.DoNotUseExternalID != oldNode.Spec.DoNotUseExternalID {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "externalID"), "may not be updated"))
	}
	return errs
}

// PrepareForStatusUpdate keeps the stored spec.
func (nodeStrategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	node, oldNode := obj.(*corev1.Node), old.(*corev1.Node)
	node.Spec = oldNode.Spec
	node.Generation = oldNode.Generation
	if oldNode.Status.Config == nil {
		node.Status.Config = nil
	}
}

func (nodeStrategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	node, oldNode := obj.(*corev1.Node), old.(*corev1.Node)
	errs := generic.ValidateObjectMetaUpdate(&node.ObjectMeta, &oldNode.ObjectMeta)
	return append(errs, validateNodeUpdate(node, oldNode)...)
}
