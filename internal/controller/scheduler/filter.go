package scheduler

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// Upstream's filter failure reasons (pkg/scheduler/framework/plugins), so
// the PodScheduled message reads exactly like kube-scheduler's.
const (
	reasonUnschedulable = "node(s) were unschedulable"
	reasonTaints        = "node(s) had untolerated taint(s)"
	reasonAffinity      = "node(s) didn't match Pod's node affinity/selector"
	msgNoNodes          = "no nodes available to schedule pods"
)

// unschedulableTaint is what a pod must tolerate to land on a cordoned node.
var unschedulableTaint = v1.Taint{Key: v1.TaintNodeUnschedulable, Effect: v1.TaintEffectNoSchedule}

// discard is the logger the component-helpers want; they log only at V(4+).
var discard = klog.Background().V(10)

// filter reports why pod cannot run on node, or "" if it can. The checks
// and their order follow kube-scheduler's default filter plugins
// (NodeUnschedulable, TaintToleration, NodeAffinity); only the first
// failure counts, as there.
func filter(pod *v1.Pod, node *v1.Node) string {
	if node.Spec.Unschedulable && !corev1helpers.TolerationsTolerateTaint(discard, pod.Spec.Tolerations, &unschedulableTaint, false) {
		return reasonUnschedulable
	}
	if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(discard, effectiveTaints(node), pod.Spec.Tolerations,
		func(t *v1.Taint) bool {
			return t.Effect == v1.TaintEffectNoSchedule || t.Effect == v1.TaintEffectNoExecute
		}, false); untolerated {
		return reasonTaints
	}
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); err != nil || !ok {
		return reasonAffinity
	}
	return ""
}

// effectiveTaints adds the readiness taint the node lifecycle controller
// would put on a node that is not Ready, so a pod never lands on such a
// node in the window before the taint is written (or when that controller
// is off); pods that tolerate it (as DaemonSet pods do) still may.
func effectiveTaints(node *v1.Node) []v1.Taint {
	key := ""
	switch readyStatus(node) {
	case v1.ConditionTrue:
		return node.Spec.Taints
	case v1.ConditionUnknown:
		key = v1.TaintNodeUnreachable
	default:
		key = v1.TaintNodeNotReady
	}
	for _, t := range node.Spec.Taints {
		if t.Key == key && t.Effect == v1.TaintEffectNoSchedule {
			return node.Spec.Taints
		}
	}
	return append(append([]v1.Taint(nil), node.Spec.Taints...), v1.Taint{Key: key, Effect: v1.TaintEffectNoSchedule})
}

// readyStatus is the node's Ready condition; a node that never reported
// one counts as not ready (a registering kubelet taints it not-ready too).
func readyStatus(node *v1.Node) v1.ConditionStatus {
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status
		}
	}
	return v1.ConditionFalse
}

// fitError formats upstream's FitError: "0/3 nodes are available: 1 node(s)
// were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
func fitError(numNodes int, reasons map[string]int) string {
	if numNodes == 0 {
		return msgNoNodes
	}
	var parts []string
	for r, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s.", numNodes, strings.Join(parts, ", "))
}

// groupKey says which pods should be spread apart: those of one controller
// (ReplicaSet, StatefulSet …), else those with identical labels in one
// namespace. Pods with neither form no group.
func groupKey(pod *v1.Pod) string {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			return "owner/" + string(ref.UID)
		}
	}
	if len(pod.Labels) == 0 {
		return ""
	}
	return "labels/" + pod.Namespace + "/" + labels.FormatLabels(pod.Labels)
}

// candidate is a feasible node and how crowded it is.
type candidate struct {
	name         string
	group, total int
}

// better orders candidates: fewest pods of the same group, then fewest pods
// overall, then by name so the choice is deterministic.
func (a candidate) better(b candidate) bool {
	if a.group != b.group {
		return a.group < b.group
	}
	if a.total != b.total {
		return a.total < b.total
	}
	return a.name < b.name
}

// podCache counts the pods bound (or assumed bound) to each node.
type podCache struct {
	pods    map[types.UID]cachedPod
	total   map[string]int
	byGroup map[string]map[string]int // node -> group -> pods
}

type cachedPod struct {
	node, group string
	// assumed: bound by this scheduler but not yet seen bound by the
	// informer; an older informer event must not drop it.
	assumed bool
}

func newPodCache() *podCache {
	return &podCache{pods: map[types.UID]cachedPod{}, total: map[string]int{}, byGroup: map[string]map[string]int{}}
}

func (c *podCache) set(uid types.UID, p cachedPod) {
	c.remove(uid)
	c.pods[uid] = p
	c.total[p.node]++
	if p.group != "" {
		if c.byGroup[p.node] == nil {
			c.byGroup[p.node] = map[string]int{}
		}
		c.byGroup[p.node][p.group]++
	}
}

func (c *podCache) remove(uid types.UID) {
	p, ok := c.pods[uid]
	if !ok {
		return
	}
	delete(c.pods, uid)
	if c.total[p.node]--; c.total[p.node] == 0 {
		delete(c.total, p.node)
	}
	if p.group != "" {
		g := c.byGroup[p.node]
		if g[p.group]--; g[p.group] == 0 {
			delete(g, p.group)
			if len(g) == 0 {
				delete(c.byGroup, p.node)
			}
		}
	}
}

// observe applies an informer view of pod.
func (c *podCache) observe(pod *v1.Pod) {
	switch {
	case terminal(pod):
		c.remove(pod.UID)
	case pod.Spec.NodeName != "":
		c.set(pod.UID, cachedPod{node: pod.Spec.NodeName, group: groupKey(pod)})
	default:
		if p, ok := c.pods[pod.UID]; ok && !p.assumed {
			c.remove(pod.UID)
		}
	}
}

func (c *podCache) assumed(uid types.UID) bool {
	p, ok := c.pods[uid]
	return ok && p.assumed
}

func terminal(pod *v1.Pod) bool {
	return pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
}
