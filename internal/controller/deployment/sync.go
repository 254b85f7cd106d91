package deployment

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// findNewRS returns the oldest ReplicaSet whose template equals the
// Deployment's (ignoring pod-template-hash).
func findNewRS(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	slices.SortFunc(rsList, byCreation)
	for _, rs := range rsList {
		if equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			return rs
		}
	}
	return nil
}

// oldRSs returns every ReplicaSet but the new one.
func oldRSs(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	newRS := findNewRS(d, rsList)
	var out []*appsv1.ReplicaSet
	for _, rs := range rsList {
		if newRS == nil || rs.UID != newRS.UID {
			out = append(out, rs)
		}
	}
	return out
}

// replicaSetsAndRevision returns the new ReplicaSet (created when create
// is set and it does not exist; nil otherwise) and the old ones, bringing
// the new one's revision and the Deployment's revision annotation up to
// date (upstream getAllReplicaSetsAndSyncRevision).
func (c *Controller) replicaSetsAndRevision(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, []*appsv1.ReplicaSet, error) {
	olds := oldRSs(d, rsList)
	newRS, err := c.newReplicaSet(ctx, d, rsList, olds, create)
	if err != nil {
		return nil, nil, err
	}
	return newRS, olds, nil
}

func (c *Controller) newReplicaSet(ctx context.Context, d *appsv1.Deployment, rsList, olds []*appsv1.ReplicaSet, create bool) (*appsv1.ReplicaSet, error) {
	existing := findNewRS(d, rsList)
	newRevision := maxRevision(olds) + 1

	if existing != nil {
		rs := existing.DeepCopy()
		annotationsChanged := setNewRSAnnotations(d, rs, newRevision, true)
		if annotationsChanged || rs.Spec.MinReadySeconds != d.Spec.MinReadySeconds {
			rs.Spec.MinReadySeconds = d.Spec.MinReadySeconds
			return c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
		}
		needsUpdate := setDeploymentRevision(d, rs.Annotations[RevisionAnnotation])
		if hasProgressDeadline(d) && getCondition(d.Status, appsv1.DeploymentProgressing) == nil {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, FoundNewRSReason,
				fmt.Sprintf("Found new replica set %q", rs.Name), c.now()))
			needsUpdate = true
		}
		if needsUpdate {
			if err := c.writeStatus(ctx, d); err != nil {
				return nil, err
			}
		}
		return rs, nil
	}
	if !create {
		return nil, nil
	}

	tmpl := *d.Spec.Template.DeepCopy()
	hash := ComputeHash(&tmpl, d.Status.CollisionCount)
	tmpl.Labels = cloneAndAdd(d.Spec.Template.Labels, appsv1.DefaultDeploymentUniqueLabelKey, hash)
	zero := int32(0)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            replicaSetName(d.Name, hash),
			Namespace:       d.Namespace,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, controllerKind)},
			Labels:          tmpl.Labels,
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        &zero,
			MinReadySeconds: d.Spec.MinReadySeconds,
			Selector:        selectorWithHash(d.Spec.Selector, hash),
			Template:        tmpl,
		},
	}
	n := newRSNewReplicas(d, append(slices.Clone(olds), rs), rs)
	rs.Spec.Replicas = &n
	setNewRSAnnotations(d, rs, newRevision, false)

	created, err := c.client.AppsV1().ReplicaSets(d.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	alreadyExists := false
	switch {
	case apierrors.IsAlreadyExists(err):
		alreadyExists = true
		// Ours already (a stale cache)? Use it. Otherwise the hash
		// collides with a foreign ReplicaSet: bump collisionCount and retry.
		cur, getErr := c.rsLister.ReplicaSets(rs.Namespace).Get(rs.Name)
		if getErr != nil {
			return nil, getErr
		}
		if ref := metav1.GetControllerOf(cur); ref != nil && ref.UID == d.UID && equalIgnoreHash(&d.Spec.Template, &cur.Spec.Template) {
			created, err = cur, nil
			break
		}
		if d.Status.CollisionCount == nil {
			d.Status.CollisionCount = new(int32)
		}
		*d.Status.CollisionCount++
		if uerr := c.writeStatus(ctx, d); uerr == nil {
			c.log.Info("hash collision, bumped collisionCount", "deployment", d.Namespace+"/"+d.Name, "collisionCount", *d.Status.CollisionCount)
		}
		return nil, err
	case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		return nil, err
	case err != nil:
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", rs.Name, err)
		if hasProgressDeadline(d) {
			setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, FailedRSCreateReason, msg, c.now()))
			_ = c.writeStatus(ctx, d)
		}
		c.recorder.Eventf(d, corev1.EventTypeWarning, FailedRSCreateReason, "%s", msg)
		return nil, fmt.Errorf("deployment: %s", msg)
	}
	if !alreadyExists && n > 0 {
		c.recorder.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", created.Name, n)
	}
	needsUpdate := setDeploymentRevision(d, strconv.FormatInt(newRevision, 10))
	if !alreadyExists && hasProgressDeadline(d) {
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, NewReplicaSetReason,
			fmt.Sprintf("Created new replica set %q", created.Name), c.now()))
		needsUpdate = true
	}
	if needsUpdate {
		err = c.writeStatus(ctx, d)
	}
	return created, err
}

// syncScale handles a scaling event or a paused Deployment: resize the
// ReplicaSets without rolling (upstream sync).
func (c *Controller) syncScale(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, olds, err := c.replicaSetsAndRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	if err := c.scale(ctx, d, newRS, olds); err != nil {
		return err
	}
	if d.Spec.Paused {
		if err := c.cleanup(ctx, d, olds); err != nil {
			return err
		}
	}
	return c.syncStatus(ctx, d, append(olds, newRS), newRS)
}

func (c *Controller) syncStatusOnly(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) error {
	newRS, olds, err := c.replicaSetsAndRevision(ctx, d, rsList, false)
	if err != nil {
		return err
	}
	return c.syncStatus(ctx, d, append(olds, newRS), newRS)
}

// scale resizes the ReplicaSets to the Deployment's replicas: one active
// ReplicaSet takes it all; a saturated new one lets the old ones go to 0;
// mid-rollout the difference is spread proportionally, larger ReplicaSets
// first (upstream proportional scaling).
func (c *Controller) scale(ctx context.Context, d *appsv1.Deployment, newRS *appsv1.ReplicaSet, olds []*appsv1.ReplicaSet) error {
	if rs := activeOrLatest(newRS, olds); rs != nil {
		if rsReplicas(rs) == dReplicas(d) {
			return nil
		}
		_, _, err := c.scaleReplicaSet(ctx, rs, dReplicas(d), d, false)
		return err
	}
	if isSaturated(d, newRS) {
		for _, old := range activeRSs(olds) {
			if _, _, err := c.scaleReplicaSet(ctx, old, 0, d, false); err != nil {
				return err
			}
		}
		return nil
	}
	if !isRollingUpdate(d) {
		return nil
	}
	all := activeRSs(append(slices.Clone(olds), newRS))
	allowed := int32(0)
	if dReplicas(d) > 0 {
		allowed = dReplicas(d) + maxSurge(d)
	}
	toAdd := allowed - sumSpec(all)
	switch {
	case toAdd > 0:
		slices.SortFunc(all, bySizeNewer)
	case toAdd < 0:
		slices.SortFunc(all, bySizeOlder)
	}
	added := int32(0)
	size := map[string]int32{}
	for _, rs := range all {
		if toAdd != 0 {
			p := rsProportion(rs, d, toAdd, added)
			size[rs.Name] = rsReplicas(rs) + p
			added += p
		} else {
			size[rs.Name] = rsReplicas(rs)
		}
	}
	for i, rs := range all {
		if i == 0 && toAdd != 0 {
			// The leftover goes to the largest ReplicaSet.
			size[rs.Name] = max(size[rs.Name]+toAdd-added, 0)
		}
		if _, _, err := c.scaleReplicaSet(ctx, rs, size[rs.Name], d, true); err != nil {
			return err
		}
	}
	return nil
}

// activeOrLatest returns the only active ReplicaSet, or the latest when
// none is active; nil when several are.
func activeOrLatest(newRS *appsv1.ReplicaSet, olds []*appsv1.ReplicaSet) *appsv1.ReplicaSet {
	if newRS == nil && len(olds) == 0 {
		return nil
	}
	olds = slices.Clone(olds)
	slices.SortFunc(olds, func(a, b *appsv1.ReplicaSet) int { return byCreation(b, a) })
	all := activeRSs(append(olds, newRS))
	switch len(all) {
	case 0:
		if newRS != nil {
			return newRS
		}
		return olds[0]
	case 1:
		return all[0]
	}
	return nil
}

// scaleReplicaSet sets rs's replicas (and its desired/max annotations).
func (c *Controller) scaleReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet, n int32, d *appsv1.Deployment, force bool) (bool, *appsv1.ReplicaSet, error) {
	if !force && rsReplicas(rs) == n {
		return false, rs, nil
	}
	sizeChanged := rsReplicas(rs) != n
	maxR := dReplicas(d) + maxSurge(d)
	if !sizeChanged && !replicasAnnotationsNeedUpdate(rs, dReplicas(d), maxR) {
		return false, rs, nil
	}
	old := rsReplicas(rs)
	cp := rs.DeepCopy()
	cp.Spec.Replicas = &n
	setReplicasAnnotations(cp, dReplicas(d), maxR)
	out, err := c.client.AppsV1().ReplicaSets(cp.Namespace).Update(ctx, cp, metav1.UpdateOptions{})
	if err != nil {
		return false, rs, err
	}
	if sizeChanged {
		dir := "down"
		if old < n {
			dir = "up"
		}
		c.recorder.Eventf(d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, out.Name, old, n)
	}
	return sizeChanged, out, nil
}

// cleanup deletes the oldest fully scaled-down old ReplicaSets beyond
// revisionHistoryLimit.
func (c *Controller) cleanup(ctx context.Context, d *appsv1.Deployment, olds []*appsv1.ReplicaSet) error {
	if !hasRevisionHistoryLimit(d) {
		return nil
	}
	var alive []*appsv1.ReplicaSet
	for _, rs := range olds {
		if rs != nil && rs.DeletionTimestamp == nil {
			alive = append(alive, rs)
		}
	}
	diff := len(alive) - int(*d.Spec.RevisionHistoryLimit)
	if diff <= 0 {
		return nil
	}
	slices.SortFunc(alive, byRevision)
	for _, rs := range alive[:diff] {
		if rs.Status.Replicas != 0 || rsReplicas(rs) != 0 || rs.Generation > rs.Status.ObservedGeneration {
			continue
		}
		c.log.Debug("deleting old replica set", "deployment", d.Namespace+"/"+d.Name, "replicaset", rs.Name)
		err := c.client.AppsV1().ReplicaSets(rs.Namespace).Delete(ctx, rs.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// syncStatus writes the status derived from the ReplicaSets, if changed.
func (c *Controller) syncStatus(ctx context.Context, d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) error {
	st := c.calculateStatus(d, all, newRS)
	if reflect.DeepEqual(d.Status, st) {
		return nil
	}
	d.Status = st
	return c.writeStatus(ctx, d)
}

func (c *Controller) calculateStatus(d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) appsv1.DeploymentStatus {
	avail := sumStatus(all, available)
	unavail := max(sumSpec(all)-avail, 0)
	st := appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            sumStatus(all, actual),
		UpdatedReplicas:     sumStatus([]*appsv1.ReplicaSet{newRS}, actual),
		ReadyReplicas:       sumStatus(all, ready),
		AvailableReplicas:   avail,
		UnavailableReplicas: unavail,
		TerminatingReplicas: terminating(all),
		CollisionCount:      d.Status.CollisionCount,
		Conditions:          slices.Clone(d.Status.Conditions),
	}
	if avail >= dReplicas(d)-maxUnavailable(d) {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionTrue, MinimumReplicasAvailable, "Deployment has minimum availability.", c.now()))
	} else {
		setCondition(&st, newCondition(appsv1.DeploymentAvailable, corev1.ConditionFalse, MinimumReplicasUnavailable, "Deployment does not have minimum availability.", c.now()))
	}
	return st
}

// isScalingEvent: some active ReplicaSet was sized for a different
// spec.replicas than the Deployment's (its desired-replicas annotation).
func (c *Controller) isScalingEvent(ctx context.Context, d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) (bool, error) {
	newRS, olds, err := c.replicaSetsAndRevision(ctx, d, rsList, false)
	if err != nil {
		return false, err
	}
	for _, rs := range activeRSs(append(olds, newRS)) {
		if desired, ok := int32Annotation(rs, DesiredReplicasAnnotation); ok && desired != dReplicas(d) {
			return true, nil
		}
	}
	return false, nil
}

// checkPausedConditions records pausing and resuming in Progressing (with
// status Unknown, so that the time paused does not count towards the
// progress deadline).
func (c *Controller) checkPausedConditions(ctx context.Context, d *appsv1.Deployment) error {
	if !hasProgressDeadline(d) {
		return nil
	}
	cond := getCondition(d.Status, appsv1.DeploymentProgressing)
	if cond != nil && cond.Reason == TimedOutReason {
		return nil
	}
	pausedCond := cond != nil && cond.Reason == PausedDeployReason
	switch {
	case d.Spec.Paused && !pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, PausedDeployReason, "Deployment is paused", c.now()))
	case !d.Spec.Paused && pausedCond:
		setCondition(&d.Status, newCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, ResumedDeployReason, "Deployment is resumed", c.now()))
	default:
		return nil
	}
	return c.writeStatus(ctx, d)
}

// writeStatus writes d's status (and annotations, which /status keeps as
// kube-apiserver does) and takes the new resourceVersion, so a second
// write in the same sync does not conflict with the first.
func (c *Controller) writeStatus(ctx context.Context, d *appsv1.Deployment) error {
	out, err := c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("deployment: update status of %s/%s: %w", d.Namespace, d.Name, err)
	}
	d.ResourceVersion = out.ResourceVersion
	return nil
}
