package replicaset

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

// manageReplicas creates or deletes pods so that len(active) moves to
// spec.replicas, at most BurstReplicas per call.
func (c *Controller) manageReplicas(ctx context.Context, active []*corev1.Pod, rs *appsv1.ReplicaSet) error {
	key := rs.Namespace + "/" + rs.Name
	diff := len(active) - int(replicas(rs))
	switch {
	case diff < 0:
		n := min(-diff, BurstReplicas)
		c.exp.expectCreations(key, n)
		c.log.Debug("too few replicas", "replicaset", key, "need", replicas(rs), "creating", n)
		ref := metav1.NewControllerRef(rs, controllerKind)
		ok, err := slowStartBatch(n, 1, func() error { return c.createPod(ctx, rs, ref) })
		// The pods we did not create will never be observed.
		for range n - ok {
			c.exp.creationObserved(key)
		}
		return err

	case diff > 0:
		n := min(diff, BurstReplicas)
		c.log.Debug("too many replicas", "replicaset", key, "need", replicas(rs), "deleting", n)
		victims := podsToDelete(active, c.relatedPods(rs), n, c.now())
		keys := make([]string, len(victims))
		for i, p := range victims {
			keys[i] = podKey(p)
		}
		c.exp.expectDeletions(key, keys)
		var wg sync.WaitGroup
		errs := make([]error, len(victims))
		for i, p := range victims {
			wg.Go(func() {
				err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
				if err == nil {
					c.recorder.Eventf(rs, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %v", p.Name)
					return
				}
				// This deletion will not be observed as ours.
				c.exp.deletionObserved(key, podKey(p))
				if !apierrors.IsNotFound(err) {
					c.recorder.Eventf(rs, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
					errs[i] = fmt.Errorf("replicaset: delete pod %s: %w", podKey(p), err)
				}
			})
		}
		wg.Wait()
		return utilerrors.NewAggregate(errs)
	}
	return nil
}

func (c *Controller) createPod(ctx context.Context, rs *appsv1.ReplicaSet, ref *metav1.OwnerReference) error {
	pod := podFromTemplate(rs, ref)
	if len(pod.Labels) == 0 {
		return errNoLabels
	}
	out, err := c.client.CoreV1().Pods(rs.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		if errNamespaceTerminating(err) {
			return nil // the namespace is going away; nothing to retry
		}
		c.recorder.Eventf(rs, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		return fmt.Errorf("replicaset: create pod for %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	c.recorder.Eventf(rs, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %v", out.Name)
	return nil
}

// slowStartBatch calls fn count times in batches of initial, 2·initial, …
// running each batch in parallel and stopping at the first batch with an
// error. It returns the number of successful calls.
func slowStartBatch(count, initial int, fn func() error) (int, error) {
	remaining, ok := count, 0
	for batch := min(remaining, initial); batch > 0; batch = min(2*batch, remaining) {
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Go(func() {
				if err := fn(); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		ok += batch - len(errs)
		if len(errs) > 0 {
			return ok, <-errs
		}
		remaining -= batch
	}
	return ok, nil
}

// relatedPods returns the pods of every ReplicaSet that shares rs's
// controller (a Deployment's revisions), for the same-node ranking.
func (c *Controller) relatedPods(rs *appsv1.ReplicaSet) []*corev1.Pod {
	ref := metav1.GetControllerOfNoCopy(rs)
	siblings := []*appsv1.ReplicaSet{rs}
	if ref != nil {
		siblings = siblings[:0]
		objs, _ := c.rsIndex.ByIndex(rsControllerIndex, string(ref.UID))
		for _, o := range objs {
			siblings = append(siblings, o.(*appsv1.ReplicaSet))
		}
	}
	seen := map[types.UID]bool{}
	var out []*corev1.Pod
	for _, s := range siblings {
		sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
		if err != nil {
			continue
		}
		pods, _ := c.pods.Pods(s.Namespace).List(sel)
		for _, p := range pods {
			if !seen[p.UID] {
				seen[p.UID] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// claimPods adopts matching orphans and releases owned pods that no
// longer match, returning the pods rs now owns (upstream
// PodControllerRefManager.ClaimPods).
func (c *Controller) claimPods(ctx context.Context, rs *appsv1.ReplicaSet, sel labels.Selector, pods []*corev1.Pod) ([]*corev1.Pod, error) {
	var (
		claimed []*corev1.Pod
		errs    []error
		// canAdopt re-reads rs once, uncached, before the first adoption so
		// that a ReplicaSet being deleted does not adopt (upstream #42639).
		canAdopt     error
		canAdoptDone bool
	)
	for _, p := range pods {
		ref := metav1.GetControllerOfNoCopy(p)
		match := sel.Matches(labels.Set(p.Labels))
		if ref != nil {
			if ref.UID != rs.UID {
				continue // someone else's
			}
			if match {
				claimed = append(claimed, p)
				continue
			}
			if rs.DeletionTimestamp != nil {
				continue
			}
			if err := c.releasePod(ctx, rs, p); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if rs.DeletionTimestamp != nil || !match || p.DeletionTimestamp != nil || p.Namespace != rs.Namespace {
			continue
		}
		if !canAdoptDone {
			canAdopt, canAdoptDone = c.recheck(ctx, rs), true
		}
		if canAdopt != nil {
			errs = append(errs, fmt.Errorf("replicaset: can't adopt pod %s: %w", podKey(p), canAdopt))
			continue
		}
		if err := c.adoptPod(ctx, rs, p); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		claimed = append(claimed, p)
	}
	return claimed, utilerrors.NewAggregate(errs)
}

func (c *Controller) recheck(ctx context.Context, rs *appsv1.ReplicaSet) error {
	fresh, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Get(ctx, rs.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if fresh.UID != rs.UID {
		return fmt.Errorf("original ReplicaSet %s/%s is gone: got uid %v, wanted %v", rs.Namespace, rs.Name, fresh.UID, rs.UID)
	}
	if fresh.DeletionTimestamp != nil {
		return fmt.Errorf("%s/%s has just been deleted at %v", rs.Namespace, rs.Name, fresh.DeletionTimestamp)
	}
	return nil
}

// adoptPod adds rs as the pod's controller with a strategic merge patch
// that carries the pod's uid as a precondition.
func (c *Controller) adoptPod(ctx context.Context, rs *appsv1.ReplicaSet, p *corev1.Pod) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":             p.UID,
		"ownerReferences": []metav1.OwnerReference{*metav1.NewControllerRef(rs, controllerKind)},
	}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("replicaset: adopt pod %s: %w", podKey(p), err)
	}
	return nil
}

// releasePod removes rs's ownerReference from the pod.
func (c *Controller) releasePod(ctx context.Context, rs *appsv1.ReplicaSet, p *corev1.Pod) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":             p.UID,
		"ownerReferences": []map[string]string{{"$patch": "delete", "uid": string(rs.UID)}},
	}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) {
		return fmt.Errorf("replicaset: release pod %s: %w", podKey(p), err)
	}
	return nil
}
