package scheduler

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func node(name string, mutate ...func(*v1.Node)) *v1.Node {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelHostname: name}},
		Status:     v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}},
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func notReady(status v1.ConditionStatus) func(*v1.Node) {
	return func(n *v1.Node) { n.Status.Conditions[0].Status = status }
}

func TestFilter(t *testing.T) {
	cordoned := func(n *v1.Node) { n.Spec.Unschedulable = true }
	tainted := func(effect v1.TaintEffect) func(*v1.Node) {
		return func(n *v1.Node) { n.Spec.Taints = []v1.Taint{{Key: "dedicated", Value: "db", Effect: effect}} }
	}
	tolerate := func(key string) func(*v1.Pod) {
		return func(p *v1.Pod) {
			p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: key, Operator: v1.TolerationOpExists})
		}
	}
	selector := func(k, v string) func(*v1.Pod) {
		return func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{k: v} }
	}
	tests := []struct {
		name string
		node *v1.Node
		pod  []func(*v1.Pod)
		want string
	}{
		{name: "ready node fits", node: node("n")},
		{name: "cordoned", node: node("n", cordoned), want: reasonUnschedulable},
		{name: "cordoned but tolerated", node: node("n", cordoned), pod: []func(*v1.Pod){tolerate(v1.TaintNodeUnschedulable)}},
		{name: "NoSchedule taint", node: node("n", tainted(v1.TaintEffectNoSchedule)), want: reasonTaints},
		{name: "NoExecute taint", node: node("n", tainted(v1.TaintEffectNoExecute)), want: reasonTaints},
		{name: "PreferNoSchedule is only a preference", node: node("n", tainted(v1.TaintEffectPreferNoSchedule))},
		{name: "taint tolerated", node: node("n", tainted(v1.TaintEffectNoSchedule)), pod: []func(*v1.Pod){tolerate("dedicated")}},
		{name: "not ready", node: node("n", notReady(v1.ConditionFalse)), want: reasonTaints},
		{name: "unknown", node: node("n", notReady(v1.ConditionUnknown)), want: reasonTaints},
		{name: "no Ready condition", node: node("n", func(n *v1.Node) { n.Status.Conditions = nil }), want: reasonTaints},
		{name: "not ready, tolerated", node: node("n", notReady(v1.ConditionFalse)), pod: []func(*v1.Pod){tolerate(v1.TaintNodeNotReady)}},
		{name: "unreachable needs its own toleration", node: node("n", notReady(v1.ConditionUnknown)),
			pod: []func(*v1.Pod){tolerate(v1.TaintNodeNotReady)}, want: reasonTaints},
		{name: "selector matches", node: node("n"), pod: []func(*v1.Pod){selector(v1.LabelHostname, "n")}},
		{name: "selector does not match", node: node("n"), pod: []func(*v1.Pod){selector(v1.LabelHostname, "m")}, want: reasonAffinity},
		{name: "required affinity", node: node("n"), want: reasonAffinity, pod: []func(*v1.Pod){func(p *v1.Pod) {
			p.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{
				NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{
					{Key: "zone", Operator: v1.NodeSelectorOpIn, Values: []string{"a"}},
				}}},
			}}}
		}}},
		{name: "cordon is checked first", node: node("n", cordoned, notReady(v1.ConditionFalse)),
			pod: []func(*v1.Pod){selector("x", "y")}, want: reasonUnschedulable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &v1.Pod{}
			for _, m := range tt.pod {
				m(pod)
			}
			if got := filter(pod, tt.node); got != tt.want {
				t.Fatalf("filter = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFitError(t *testing.T) {
	tests := []struct {
		nodes   int
		reasons map[string]int
		want    string
	}{
		{0, nil, "no nodes available to schedule pods"},
		{3, map[string]int{reasonAffinity: 3}, "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."},
		{5, map[string]int{reasonAffinity: 3, reasonUnschedulable: 1, reasonTaints: 1},
			"0/5 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were unschedulable, 3 node(s) didn't match Pod's node affinity/selector."},
	}
	for _, tt := range tests {
		if got := fitError(tt.nodes, tt.reasons); got != tt.want {
			t.Errorf("fitError = %q, want %q", got, tt.want)
		}
	}
}

func TestPodCacheCounts(t *testing.T) {
	yes := true
	owned := func(uid, node string, phase v1.PodPhase) *v1.Pod {
		return &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Namespace: "ns",
				OwnerReferences: []metav1.OwnerReference{{UID: "rs", Controller: &yes}}},
			Spec:   v1.PodSpec{NodeName: node},
			Status: v1.PodStatus{Phase: phase},
		}
	}
	c := newPodCache()
	c.observe(owned("a", "n1", v1.PodRunning))
	c.observe(owned("b", "n1", v1.PodRunning))
	c.observe(owned("c", "", v1.PodPending))
	c.set("c", cachedPod{node: "n2", group: "owner/rs", assumed: true})
	// An informer event older than the binding must not drop the assumption.
	c.observe(owned("c", "", v1.PodPending))
	if c.total["n1"] != 2 || c.total["n2"] != 1 || c.byGroup["n2"]["owner/rs"] != 1 || !c.assumed("c") {
		t.Fatalf("counts %v %v", c.total, c.byGroup)
	}
	c.observe(owned("c", "n2", v1.PodRunning)) // seen bound
	if c.assumed("c") || c.total["n2"] != 1 {
		t.Fatal("binding seen by the informer did not replace the assumption")
	}
	c.observe(owned("a", "n1", v1.PodSucceeded))
	c.remove("b")
	if c.total["n1"] != 0 || len(c.byGroup["n1"]) != 0 || len(c.pods) != 1 {
		t.Fatalf("after removals: %v %v", c.total, c.byGroup)
	}
}

func TestCandidateOrder(t *testing.T) {
	a := candidate{name: "a", group: 1, total: 1}
	b := candidate{name: "b", group: 0, total: 5}
	c := candidate{name: "c", group: 0, total: 2}
	d := candidate{name: "d", group: 0, total: 2}
	if !b.better(a) || !c.better(b) || !c.better(d) || d.better(c) {
		t.Fatal("candidates misordered")
	}
}
