package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
)

// Upstream's reasons and messages.
const (
	ReasonNodeStatusUnknown      = "NodeStatusUnknown"
	MessageNodeStatusUnknown     = "Kubelet stopped posting node status."
	ReasonNodeStatusNeverUpdated = "NodeStatusNeverUpdated"
	MessageNodeStatusNeverUpd    = "Kubelet never posted node status."
	ReasonNodeNotReady           = "NodeNotReady"
	ReasonRegisteredNode         = "RegisteredNode"
)

// nodeHealth is what the monitor remembers about a node.
type nodeHealth struct {
	probe          time.Time   // last sign of life, on our clock
	readyHeartbeat metav1.Time // lastHeartbeatTime of the Ready condition last seen
	hasReady       bool
	leaseRenew     metav1.MicroTime // spec.renewTime of the lease last seen
	hasLease       bool
}

// conditionsMadeUnknown are the conditions a silent node loses (upstream
// leaves NetworkUnavailable alone: it is not the kubelet's).
var conditionsMadeUnknown = []v1.NodeConditionType{v1.NodeReady, v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure}

func condition(node *v1.Node, t v1.NodeConditionType) *v1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func readyStatus(node *v1.Node) v1.ConditionStatus {
	if c := condition(node, v1.NodeReady); c != nil {
		return c.Status
	}
	return v1.ConditionUnknown
}

// monitor is one health pass over every node.
func (c *Controller) monitor(ctx context.Context) error {
	nodes, err := c.nodeLister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("nodelifecycle: listing nodes: %w", err)
	}
	seen := make(map[string]bool, len(nodes))
	var errs []error
	for _, n := range nodes {
		seen[n.Name] = true
		if err := c.monitorNode(ctx, n.DeepCopy()); err != nil {
			errs = append(errs, err)
		}
	}
	for name := range c.health {
		if !seen[name] {
			delete(c.health, name)
			delete(c.retry, name)
		}
	}
	return errors.Join(errs...)
}

func (c *Controller) monitorNode(ctx context.Context, node *v1.Node) error {
	now := c.now()
	h, known := c.health[node.Name]
	if !known {
		h = &nodeHealth{probe: now}
		c.health[node.Name] = h
		c.recorder.Eventf(node, v1.EventTypeNormal, ReasonRegisteredNode, "Node %s event: Registered Node %s in Controller", node.Name, node.Name)
	}
	ready := condition(node, v1.NodeReady)
	grace := c.cfg.NodeMonitorGracePeriod
	if ready == nil {
		grace = c.cfg.NodeStartupGracePeriod
	} else if !h.hasReady || !ready.LastHeartbeatTime.Equal(&h.readyHeartbeat) {
		h.readyHeartbeat, h.hasReady = ready.LastHeartbeatTime, true
		h.probe = now
	}
	if l := c.lease(node.Name); l != nil && l.Spec.RenewTime != nil && (!h.hasLease || h.leaseRenew.Before(l.Spec.RenewTime)) {
		h.leaseRenew, h.hasLease = *l.Spec.RenewTime, true
		h.probe = now
	}

	observed := readyStatus(node)
	current := observed
	if now.After(h.probe.Add(grace)) && (ready == nil || observed != v1.ConditionUnknown) {
		if err := c.markUnknown(ctx, node, metav1.NewTime(now)); err != nil {
			return err // retried next pass
		}
		current = v1.ConditionUnknown
		c.log.Info("node stopped posting status", "node", node.Name, "silentFor", now.Sub(h.probe).Round(time.Millisecond))
	}

	markPods := false
	switch {
	case observed == v1.ConditionTrue && current != v1.ConditionTrue:
		c.recorder.Eventf(node, v1.EventTypeNormal, ReasonNodeNotReady, "Node %s status is now: %s", node.Name, ReasonNodeNotReady)
		markPods = true
	case c.retry[node.Name] && current != v1.ConditionTrue:
		markPods = true
	case !known && current == v1.ConditionUnknown && ready != nil && ready.Reason == ReasonNodeStatusUnknown:
		// We marked it before a restart and may have stopped half way.
		markPods = true
	}
	if !markPods {
		delete(c.retry, node.Name)
		return nil
	}
	if err := c.markPodsNotReady(ctx, node.Name); err != nil {
		c.retry[node.Name] = true
		return err
	}
	delete(c.retry, node.Name)
	return nil
}

// markUnknown sets the kubelet-owned conditions to Unknown and writes the
// status with the resourceVersion it was read at.
func (c *Controller) markUnknown(ctx context.Context, node *v1.Node, now metav1.Time) error {
	for _, t := range conditionsMadeUnknown {
		cond := condition(node, t)
		switch {
		case cond == nil:
			node.Status.Conditions = append(node.Status.Conditions, v1.NodeCondition{
				Type: t, Status: v1.ConditionUnknown, Reason: ReasonNodeStatusNeverUpdated,
				Message: MessageNodeStatusNeverUpd, LastHeartbeatTime: node.CreationTimestamp, LastTransitionTime: now,
			})
		case cond.Status != v1.ConditionUnknown:
			cond.Status = v1.ConditionUnknown
			cond.Reason = ReasonNodeStatusUnknown
			cond.Message = MessageNodeStatusUnknown
			cond.LastTransitionTime = now
		}
	}
	if _, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("nodelifecycle: marking node %s Unknown: %w", node.Name, err)
	}
	return nil
}

// markPodsNotReady sets Ready=False on every pod of the node that is not
// already so, as upstream's MarkPodsNotReady, with a Warning event each.
func (c *Controller) markPodsNotReady(ctx context.Context, nodeName string) error {
	pods, err := c.podsOnNode(nodeName)
	if err != nil {
		return err
	}
	var errs []error
	marked := 0
	for _, pod := range pods {
		if pod.Spec.NodeName != nodeName || !podReadyNotFalse(pod) {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if !podReadyNotFalse(pod) {
				return nil
			}
			upd := pod.DeepCopy()
			for i := range upd.Status.Conditions {
				cond := &upd.Status.Conditions[i]
				if cond.Type == v1.PodReady {
					cond.Status = v1.ConditionFalse
					cond.LastTransitionTime = metav1.NewTime(c.now())
				}
			}
			_, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				if fresh, gerr := c.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); gerr == nil {
					pod = fresh
				}
			}
			return err
		})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("nodelifecycle: marking pod %s/%s not ready: %w", pod.Namespace, pod.Name, err))
			continue
		}
		c.recorder.Event(pod, v1.EventTypeWarning, ReasonNodeNotReady, "Node is not ready")
		marked++
	}
	if marked > 0 {
		c.log.Info("marked pods not ready", "node", nodeName, "pods", marked)
	}
	return errors.Join(errs...)
}

// podReadyNotFalse reports a Ready condition that is present and not False.
func podReadyNotFalse(pod *v1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == v1.PodReady {
			return cond.Status != v1.ConditionFalse
		}
	}
	return false
}
