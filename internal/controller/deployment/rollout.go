package deployment

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// rolloutRolling moves one step of a RollingUpdate: grow the new
// ReplicaSet within maxSurge, else shrink old ones within maxUnavailable;
// once complete, clean up old revisions.
func (c *Controller) rolloutRolling(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, olds, err := c.replicaSetsAndRevision(ctx, d, rsList, true)
	if err != nil {
		return err
	}
	all := append(slices.Clone(olds), newRS)

	scaledUp, err := c.reconcileNewRS(ctx, d, all, newRS)
	if err != nil {
		return err
	}
	if scaledUp {
		return c.syncRolloutStatus(ctx, d, all, newRS)
	}
	scaledDown, err := c.reconcileOldRSs(ctx, d, all, activeRSs(olds), newRS)
	if err != nil {
		return err
	}
	if scaledDown {
		return c.syncRolloutStatus(ctx, d, all, newRS)
	}
	if deploymentComplete(d, &d.Status) {
		if err := c.cleanup(ctx, d, olds); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, d, all, newRS)
}

func (c *Controller) reconcileNewRS(ctx context.Context, d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) (bool, error) {
	switch want := dReplicas(d); {
	case rsReplicas(newRS) == want:
		return false, nil
	case rsReplicas(newRS) > want:
		scaled, _, err := c.scaleReplicaSet(ctx, newRS, want, d, false)
		return scaled, err
	}
	scaled, _, err := c.scaleReplicaSet(ctx, newRS, newRSNewReplicas(d, all, newRS), d, false)
	return scaled, err
}

// reconcileOldRSs scales old ReplicaSets down as far as availability
// allows: first their unhealthy pods (which do not count as available
// anyway), then healthy ones while available > replicas - maxUnavailable.
func (c *Controller) reconcileOldRSs(ctx context.Context, d *appsv1.Deployment, all, olds []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) (bool, error) {
	if sumSpec(olds) == 0 {
		return false, nil
	}
	minAvailable := dReplicas(d) - maxUnavailable(d)
	newUnavailable := rsReplicas(newRS) - newRS.Status.AvailableReplicas
	maxScaledDown := sumSpec(all) - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return false, nil
	}
	olds, cleaned, err := c.cleanupUnhealthyReplicas(ctx, d, olds, maxScaledDown)
	if err != nil {
		return false, nil // as upstream: retried on the next sync
	}
	all = append(slices.Clone(olds), newRS)
	scaled, err := c.scaleDownOldForRollingUpdate(ctx, d, all, olds)
	if err != nil {
		return false, nil
	}
	return cleaned+scaled > 0, nil
}

func (c *Controller) cleanupUnhealthyReplicas(ctx context.Context, d *appsv1.Deployment, olds []*appsv1.ReplicaSet, maxCleanup int32) ([]*appsv1.ReplicaSet, int32, error) {
	slices.SortFunc(olds, byCreation)
	total := int32(0)
	for i, rs := range olds {
		if total >= maxCleanup {
			break
		}
		if rsReplicas(rs) == 0 || rsReplicas(rs) == rs.Status.AvailableReplicas {
			continue
		}
		n := min(maxCleanup-total, rsReplicas(rs)-rs.Status.AvailableReplicas)
		target := rsReplicas(rs) - n
		if target > rsReplicas(rs) {
			return nil, 0, fmt.Errorf("deployment: invalid scale down of %s/%s %d -> %d", rs.Namespace, rs.Name, rsReplicas(rs), target)
		}
		_, updated, err := c.scaleReplicaSet(ctx, rs, target, d, false)
		if err != nil {
			return nil, total, err
		}
		total += n
		olds[i] = updated
	}
	return olds, total, nil
}

func (c *Controller) scaleDownOldForRollingUpdate(ctx context.Context, d *appsv1.Deployment, all, olds []*appsv1.ReplicaSet) (int32, error) {
	minAvailable := dReplicas(d) - maxUnavailable(d)
	avail := sumStatus(all, available)
	if avail <= minAvailable {
		return 0, nil
	}
	slices.SortFunc(olds, byCreation)
	want := avail - minAvailable
	total := int32(0)
	for _, rs := range olds {
		if total >= want {
			break
		}
		if rsReplicas(rs) == 0 {
			continue
		}
		n := min(rsReplicas(rs), want-total)
		if _, _, err := c.scaleReplicaSet(ctx, rs, rsReplicas(rs)-n, d, false); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// rolloutRecreate scales every old ReplicaSet to 0, waits until their pods
// are gone, then creates and scales up the new one.
func (c *Controller) rolloutRecreate(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, olds, err := c.replicaSetsAndRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	all := append(slices.Clone(olds), newRS)

	scaledDown := false
	for _, rs := range activeRSs(olds) {
		scaled, _, err := c.scaleReplicaSet(ctx, rs, 0, d, false)
		if err != nil {
			return err
		}
		scaledDown = scaledDown || scaled
	}
	if scaledDown {
		return c.syncRolloutStatus(ctx, d, all, newRS)
	}
	running, err := c.oldPodsRunning(newRS, olds)
	if err != nil {
		return err
	}
	if running {
		return c.syncRolloutStatus(ctx, d, all, newRS)
	}
	if newRS == nil {
		if newRS, olds, err = c.replicaSetsAndRevision(ctx, d, rsList, true); err != nil {
			return err
		}
		all = append(slices.Clone(olds), newRS)
	}
	if _, _, err := c.scaleReplicaSet(ctx, newRS, dReplicas(d), d, false); err != nil {
		return err
	}
	if deploymentComplete(d, &d.Status) {
		if err := c.cleanup(ctx, d, olds); err != nil {
			return err
		}
	}
	return c.syncRolloutStatus(ctx, d, all, newRS)
}

// oldPodsRunning: an old ReplicaSet still reports pods, or some pod of an
// old ReplicaSet has not finished (it may be terminating).
func (c *Controller) oldPodsRunning(newRS *appsv1.ReplicaSet, olds []*appsv1.ReplicaSet) (bool, error) {
	if sumStatus(olds, actual) > 0 {
		return true, nil
	}
	for _, rs := range olds {
		if newRS != nil && rs.UID == newRS.UID {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil {
			continue
		}
		pods, err := c.pods.Pods(rs.Namespace).List(sel)
		if err != nil {
			return false, err
		}
		for _, p := range pods {
			if !metav1.IsControlledBy(p, rs) {
				continue
			}
			if p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
				return true, nil
			}
		}
	}
	return false, nil
}

// syncRolloutStatus writes status plus the Progressing condition: complete
// (NewReplicaSetAvailable), progressing (ReplicaSetUpdated) or timed out
// (ProgressDeadlineExceeded); it mirrors ReplicaFailure from the
// ReplicaSets and requeues a Deployment that must be checked against its
// deadline.
func (c *Controller) syncRolloutStatus(ctx context.Context, d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) error {
	st := c.calculateStatus(d, all, newRS)
	now := c.now()
	if !hasProgressDeadline(d) {
		removeCondition(&st, appsv1.DeploymentProgressing)
	}
	cur := getCondition(d.Status, appsv1.DeploymentProgressing)
	complete := st.Replicas == st.UpdatedReplicas && cur != nil && cur.Reason == NewRSAvailableReason
	if hasProgressDeadline(d) && !complete {
		switch {
		case deploymentComplete(d, &st):
			msg := fmt.Sprintf("Deployment %q has successfully progressed.", d.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q has successfully progressed.", newRS.Name)
			}
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, NewRSAvailableReason, msg, now))
		case deploymentProgressing(d, &st):
			msg := fmt.Sprintf("Deployment %q is progressing.", d.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q is progressing.", newRS.Name)
			}
			cond := newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, ReplicaSetUpdatedReason, msg, now)
			// Progress updates lastUpdateTime even when the reason stays.
			if cur != nil {
				if cur.Status == corev1.ConditionTrue {
					cond.LastTransitionTime = cur.LastTransitionTime
				}
				removeCondition(&st, appsv1.DeploymentProgressing)
			}
			setCondition(&st, cond)
		case deploymentTimedOut(d, &st, now):
			msg := fmt.Sprintf("Deployment %q has timed out progressing.", d.Name)
			if newRS != nil {
				msg = fmt.Sprintf("ReplicaSet %q has timed out progressing.", newRS.Name)
			}
			setCondition(&st, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, TimedOutReason, msg, now))
			if cur == nil || cur.Reason != TimedOutReason {
				c.recorder.Eventf(d, corev1.EventTypeWarning, TimedOutReason, "%s", msg)
			}
		}
	}
	if f := replicaFailure(all, newRS); f != nil {
		setCondition(&st, *f)
	} else {
		removeCondition(&st, appsv1.DeploymentReplicaFailure)
	}
	if reflect.DeepEqual(d.Status, st) {
		c.requeueStuck(d, st, now)
		return nil
	}
	d.Status = st
	return c.writeStatus(ctx, d)
}

// replicaFailure returns the new ReplicaSet's ReplicaFailure condition,
// else any old one's, as a Deployment condition.
func replicaFailure(all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) *appsv1.DeploymentCondition {
	for _, set := range [][]*appsv1.ReplicaSet{{newRS}, all} {
		for _, rs := range set {
			if rs == nil {
				continue
			}
			for _, rc := range rs.Status.Conditions {
				if rc.Type == appsv1.ReplicaSetReplicaFailure {
					return &appsv1.DeploymentCondition{
						Type: appsv1.DeploymentConditionType(rc.Type), Status: rc.Status,
						LastTransitionTime: rc.LastTransitionTime, LastUpdateTime: rc.LastTransitionTime,
						Reason: rc.Reason, Message: rc.Message,
					}
				}
			}
		}
	}
	return nil
}

// requeueStuck schedules a sync for when an unchanged, incomplete rollout
// would pass its progress deadline, so the timeout is noticed without any
// event.
func (c *Controller) requeueStuck(d *appsv1.Deployment, st appsv1.DeploymentStatus, now time.Time) {
	cur := getCondition(d.Status, appsv1.DeploymentProgressing)
	if !hasProgressDeadline(d) || cur == nil || deploymentComplete(d, &st) || cur.Reason == TimedOutReason {
		return
	}
	after := cur.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Sub(now)
	if after < time.Second {
		c.queue.AddRateLimited(d.Namespace + "/" + d.Name)
		return
	}
	c.enqueueAfter(d, after+time.Second)
}
