package nodelifecycle

import (
	"context"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// conditionTaints maps node conditions to the NoSchedule taint each implies
// (upstream's nodeConditionToTaintKeyStatusMap).
var conditionTaints = map[v1.NodeConditionType]map[v1.ConditionStatus]string{
	v1.NodeReady:              {v1.ConditionFalse: v1.TaintNodeNotReady, v1.ConditionUnknown: v1.TaintNodeUnreachable},
	v1.NodeMemoryPressure:     {v1.ConditionTrue: v1.TaintNodeMemoryPressure},
	v1.NodeDiskPressure:       {v1.ConditionTrue: v1.TaintNodeDiskPressure},
	v1.NodeNetworkUnavailable: {v1.ConditionTrue: v1.TaintNodeNetworkUnavailable},
	v1.NodePIDPressure:        {v1.ConditionTrue: v1.TaintNodePIDPressure},
}

// managedTaintKeys are the NoSchedule taints this controller owns.
var managedTaintKeys = []string{
	v1.TaintNodeNotReady, v1.TaintNodeUnreachable, v1.TaintNodeMemoryPressure, v1.TaintNodeDiskPressure,
	v1.TaintNodeNetworkUnavailable, v1.TaintNodePIDPressure, v1.TaintNodeUnschedulable,
}

// taintConditions is the part of a node's status the taints depend on.
func taintConditions(node *v1.Node) map[v1.NodeConditionType]v1.ConditionStatus {
	out := map[v1.NodeConditionType]v1.ConditionStatus{}
	for _, c := range node.Status.Conditions {
		if _, ok := conditionTaints[c.Type]; ok {
			out[c.Type] = c.Status
		}
	}
	return out
}

// wantTaints is the set of managed taint keys the node should carry.
func wantTaints(node *v1.Node) []string {
	var keys []string
	for _, c := range node.Status.Conditions {
		if key, ok := conditionTaints[c.Type][c.Status]; ok {
			keys = append(keys, key)
		}
	}
	if node.Spec.Unschedulable {
		keys = append(keys, v1.TaintNodeUnschedulable)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func isManaged(t v1.Taint) bool {
	return t.Effect == v1.TaintEffectNoSchedule && slices.Contains(managedTaintKeys, t.Key)
}

// reconcileTaints returns the node's taints with the managed ones made to
// match want (keeping existing entries, and so their timeAdded), and whether
// anything changed.
func reconcileTaints(taints []v1.Taint, want []string, now metav1.Time) ([]v1.Taint, bool) {
	var out []v1.Taint
	have := map[string]bool{}
	changed := false
	for _, t := range taints {
		if isManaged(t) {
			if !slices.Contains(want, t.Key) || have[t.Key] {
				changed = true
				continue
			}
			have[t.Key] = true
		}
		out = append(out, t)
	}
	for _, key := range want {
		if !have[key] {
			out = append(out, v1.Taint{Key: key, Effect: v1.TaintEffectNoSchedule, TimeAdded: &now})
			changed = true
		}
	}
	return out, changed
}

func (c *Controller) taintWorker(ctx context.Context) {
	for c.processNextTaint(ctx) {
	}
}

func (c *Controller) processNextTaint(ctx context.Context) bool {
	name, quit := c.taintQueue.Get()
	if quit {
		return false
	}
	defer c.taintQueue.Done(name)
	if err := c.syncTaints(ctx, name); err != nil {
		c.log.Info("updating taints failed, will retry", "node", name, "err", err)
		c.taintQueue.AddRateLimited(name)
		return true
	}
	c.taintQueue.Forget(name)
	return true
}

// syncTaints is upstream's doNoScheduleTaintingPass for one node.
func (c *Controller) syncTaints(ctx context.Context, name string) error {
	node, err := c.nodeLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nodelifecycle: %w", err)
	}
	taints, changed := reconcileTaints(node.Spec.Taints, wantTaints(node), metav1.NewTime(c.now()))
	if !changed {
		return nil
	}
	upd := node.DeepCopy()
	upd.Spec.Taints = taints
	if _, err := c.client.CoreV1().Nodes().Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("nodelifecycle: updating taints of node %s: %w", name, err)
	}
	c.log.Info("taints updated", "node", name, "want", wantTaints(node))
	return nil
}
