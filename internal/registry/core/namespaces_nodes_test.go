package core

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

func TestNamespaceCreate(t *testing.T) {
	k := Namespaces()
	ns := create(k, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "prod"},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating},
	}).(*corev1.Namespace)
	if ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("phase %q, want Active", ns.Status.Phase)
	}
	if !reflect.DeepEqual(ns.Spec.Finalizers, []corev1.FinalizerName{"kubernetes"}) {
		t.Errorf("finalizers %v", ns.Spec.Finalizers)
	}
	if ns.Labels[corev1.LabelMetadataName] != "prod" {
		t.Errorf("labels %v", ns.Labels)
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, ns))

	ns.CreationTimestamp = threeDaysAgo
	expectColumns(t, k, "Name", "Status", "Age")
	expectCells(t, k, ns, "prod", "Active", "3d")
	expectFields(t, k, ns, fields.Set{"status.phase": "Active"})
}

func TestNamespaceValidate(t *testing.T) {
	k := Namespaces()
	tests := []struct {
		name string
		ns   corev1.Namespace
		want []string
	}{
		{"dots", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a.b"}},
			[]string{`metadata.name: Invalid value: "a.b": must not contain dots`}},
		{"bad finalizer", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"foo"}}},
			[]string{`spec.finalizers: Invalid value: "foo": name is neither a standard finalizer name nor is it fully qualified`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, &tt.ns), tt.want...)
		})
	}
}

func TestNamespaceUpdateAndStatus(t *testing.T) {
	k := Namespaces()
	old := create(k, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", ResourceVersion: "1"}}).(*corev1.Namespace)

	// Main resource: spec.finalizers and status are kept.
	obj := old.DeepCopy()
	obj.Spec.Finalizers = nil
	obj.Status.Phase = corev1.NamespaceTerminating
	obj.Labels = map[string]string{"team": "a"}
	update(k, obj, old)
	if len(obj.Spec.Finalizers) != 1 || obj.Status.Phase != corev1.NamespaceActive {
		t.Errorf("update changed finalizers/status: %+v", obj)
	}
	if obj.Labels[corev1.LabelMetadataName] != "prod" || obj.Labels["team"] != "a" {
		t.Errorf("labels %v", obj.Labels)
	}
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, obj, old))

	// Status: Terminating needs a deletionTimestamp.
	obj = old.DeepCopy()
	obj.Status.Phase = corev1.NamespaceTerminating
	obj.Spec.Finalizers = nil
	statusUpdate(k, obj, old)
	if len(obj.Spec.Finalizers) != 1 {
		t.Errorf("status update changed spec")
	}
	generictest.ExpectErrors(t, k.Strategy.(registry.StatusStrategy).ValidateStatusUpdate(ctx, obj, old),
		"status.Phase: Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty")
}

func TestNodeCreateKeepsStatusAndDefaults(t *testing.T) {
	k := Nodes()
	n := create(k, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24"},
		Status: corev1.NodeStatus{
			Capacity:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}).(*corev1.Node)
	if !reflect.DeepEqual(n.Spec.PodCIDRs, []string{"10.244.1.0/24"}) {
		t.Errorf("podCIDRs %v", n.Spec.PodCIDRs)
	}
	if len(n.Status.Conditions) != 1 {
		t.Errorf("node status must survive create (agents register with it)")
	}
	if q := n.Status.Allocatable[corev1.ResourceCPU]; q.String() != "2" {
		t.Errorf("allocatable not defaulted from capacity: %v", n.Status.Allocatable)
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, n))

	n2 := create(k, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.2.0/24"}}}).(*corev1.Node)
	if n2.Spec.PodCIDR != "10.244.2.0/24" {
		t.Errorf("podCIDR not synced from podCIDRs: %q", n2.Spec.PodCIDR)
	}
}

func TestNodeValidate(t *testing.T) {
	k := Nodes()
	tests := []struct {
		name string
		spec corev1.NodeSpec
		want []string
	}{
		{"bad cidr", corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/33"}},
			[]string{`spec.podCIDRs[0]: Invalid value: "10.244.1.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)`}},
		{"two v4 cidrs", corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "10.244.2.0/24"}},
			[]string{`spec.podCIDRs: Invalid value: ["10.244.1.0/24","10.244.2.0/24"]: may specify no more than one CIDR for each IP family`}},
		{"bad taint", corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: "Sometimes"}}},
			[]string{`metadata.taints[0].effect: Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: tt.spec}
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, n), tt.want...)
		})
	}
}

func TestNodeUpdate(t *testing.T) {
	k := Nodes()
	old := create(k, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: "3"},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}).(*corev1.Node)

	// podCIDR may go from "" to a value (node IPAM), then never change.
	obj := old.DeepCopy()
	obj.Spec.PodCIDR = "10.244.3.0/24"
	obj.Status = corev1.NodeStatus{}
	update(k, obj, old)
	if len(obj.Status.Conditions) != 1 {
		t.Errorf("main-resource update must keep status")
	}
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, obj, old))

	changed := obj.DeepCopy()
	changed.Spec.PodCIDR = "10.244.4.0/24"
	update(k, changed, obj)
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, changed, obj),
		`spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid`)

	// /status keeps the spec.
	st := obj.DeepCopy()
	st.Spec.Unschedulable = true
	st.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}, {Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}
	statusUpdate(k, st, obj)
	if st.Spec.Unschedulable {
		t.Errorf("status update changed spec")
	}
	generictest.ExpectErrors(t, k.Strategy.(registry.StatusStrategy).ValidateStatusUpdate(ctx, st, obj),
		`status.addresses[1]: Duplicate value: {"type":"InternalIP","address":"192.0.2.1"}`)
}

func TestNodeTable(t *testing.T) {
	k := Nodes()
	expectColumns(t, k, "Name", "Status", "Roles", "Age", "Version",
		"Internal-IP(wide)", "External-IP(wide)", "OS-Image(wide)", "Kernel-Version(wide)", "Container-Runtime(wide)")
	tests := []struct {
		name string
		node corev1.Node
		want []interface{}
	}{
		{"ready control plane", corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-1", CreationTimestamp: threeDaysAgo, Labels: map[string]string{
				"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
			Status: corev1.NodeStatus{
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-1"}, {Type: corev1.NodeInternalIP, Address: "192.0.2.10"}},
				NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2-svcnet", OSImage: "Debian GNU/Linux 13",
					KernelVersion: "6.12.0", Architecture: "amd64", ContainerRuntimeVersion: "svcnet://0.1"},
			},
		}, []interface{}{"node-1", "Ready", "control-plane,edge,worker", "3d", "v1.37.2-svcnet",
			"192.0.2.10", "<none>", "Debian GNU/Linux 13", "6.12.0 (amd64)", "svcnet://0.1"}},
		{"not ready cordoned", corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-2", CreationTimestamp: threeDaysAgo},
			Spec:       corev1.NodeSpec{Unschedulable: true},
			Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}},
		}, []interface{}{"node-2", "NotReady,SchedulingDisabled", "<none>", "3d", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"}},
		{"no conditions", corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-3", CreationTimestamp: threeDaysAgo}},
			[]interface{}{"node-3", "Unknown", "<none>", "3d", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectCells(t, k, &tt.node, tt.want...) })
	}
	expectFields(t, k, &tests[1].node, fields.Set{"spec.unschedulable": "true"})
}
