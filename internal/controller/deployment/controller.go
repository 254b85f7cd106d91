package deployment

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

// Name is the controller's name for --controllers.
const Name = "deployment"

// maxRetries bounds the rate-limited retries of one key (upstream: 15,
// about 82 s of backoff); after that the key waits for the next event.
const maxRetries = 15

var controllerKind = appsv1.SchemeGroupVersion.WithKind("Deployment")

// Controller is the Deployment controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	dLister  appslisters.DeploymentLister
	rsLister appslisters.ReplicaSetLister
	pods     corelisters.PodLister
	synced   []cache.InformerSynced

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	queue       workqueue.TypedRateLimitingInterface[string]
	now         func() time.Time
}

// New wires a Deployment controller to the shared informers.
func New(logger *slog.Logger, client kubernetes.Interface, dInformer appsinformers.DeploymentInformer, rsInformer appsinformers.ReplicaSetInformer, podInformer coreinformers.PodInformer) (*Controller, error) {
	b := record.NewBroadcaster()
	c := &Controller{
		log:         logger.With("component", "deployment-controller"),
		client:      client,
		dLister:     dInformer.Lister(),
		rsLister:    rsInformer.Lister(),
		pods:        podInformer.Lister(),
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "deployment-controller"}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		now: time.Now,
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{dInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueue,
			UpdateFunc: func(_, n interface{}) { c.enqueue(n) },
			DeleteFunc: c.enqueue,
		}},
		{rsInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.addRS,
			UpdateFunc: c.updateRS,
			DeleteFunc: c.deleteRS,
		}},
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{DeleteFunc: c.deletePod}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("deployment: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	return c, nil
}

// Run processes Deployments with workers goroutines until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()
	c.log.Info("starting controller", "workers", workers)
	var wg sync.WaitGroup
	defer func() {
		c.queue.ShutDown()
		wg.Wait()
		c.log.Info("stopped controller")
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, time.Second) })
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	ctrlqueue.Worker{
		Queue: c.queue,
		Sync: func(ctx context.Context, key string) error {
			// A namespace being deleted will not accept the writes: done, not failed.
			if err := c.sync(ctx, key); !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return err
			}
			return nil
		},
		MaxRetries: maxRetries,
		OnError: func(key string, err error, _ int, dropped bool) {
			if dropped {
				c.log.Warn("dropping deployment out of the queue", "deployment", key, "err", err)
			} else {
				c.log.Debug("sync failed, requeued", "deployment", key, "err", err)
			}
		},
	}.Run(ctx)
}

func (c *Controller) enqueue(obj interface{}) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) enqueueAfter(d *appsv1.Deployment, after time.Duration) {
	c.queue.AddAfter(d.Namespace+"/"+d.Name, after)
}

// resolve returns the Deployment ref points at, if it is one we know.
func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *appsv1.Deployment {
	if ref.Kind != controllerKind.Kind {
		return nil
	}
	d, err := c.dLister.Deployments(ns).Get(ref.Name)
	if err != nil || d.UID != ref.UID {
		return nil
	}
	return d
}

// deploymentsSelecting returns the Deployments whose selector matches an
// orphan ReplicaSet's labels.
func (c *Controller) deploymentsSelecting(rs *appsv1.ReplicaSet) []*appsv1.Deployment {
	if len(rs.Labels) == 0 {
		return nil
	}
	ds, err := c.dLister.Deployments(rs.Namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*appsv1.Deployment
	for _, d := range ds {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(rs.Labels)) {
			continue
		}
		out = append(out, d)
	}
	return out
}

func (c *Controller) addRS(obj interface{}) {
	rs := obj.(*appsv1.ReplicaSet)
	if rs.DeletionTimestamp != nil {
		c.deleteRS(rs)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		if d := c.resolve(rs.Namespace, ref); d != nil {
			c.enqueue(d)
		}
		return
	}
	for _, d := range c.deploymentsSelecting(rs) {
		c.enqueue(d)
	}
}

func (c *Controller) updateRS(old, cur interface{}) {
	o, n := old.(*appsv1.ReplicaSet), cur.(*appsv1.ReplicaSet)
	if o.ResourceVersion == n.ResourceVersion {
		return
	}
	curRef, oldRef := metav1.GetControllerOfNoCopy(n), metav1.GetControllerOfNoCopy(o)
	refChanged := !reflect.DeepEqual(curRef, oldRef)
	if refChanged && oldRef != nil {
		if d := c.resolve(o.Namespace, oldRef); d != nil {
			c.enqueue(d)
		}
	}
	if curRef != nil {
		if d := c.resolve(n.Namespace, curRef); d != nil {
			c.enqueue(d)
		}
		return
	}
	if refChanged || !reflect.DeepEqual(o.Labels, n.Labels) {
		for _, d := range c.deploymentsSelecting(n) {
			c.enqueue(d)
		}
	}
}

func (c *Controller) deleteRS(obj interface{}) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if rs, ok = tomb.Obj.(*appsv1.ReplicaSet); !ok {
			return
		}
	}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		if d := c.resolve(rs.Namespace, ref); d != nil {
			c.enqueue(d)
		}
	}
}

// deletePod wakes a Recreate Deployment once its old pods are gone.
func (c *Controller) deletePod(obj interface{}) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if pod, ok = tomb.Obj.(*corev1.Pod); !ok {
			return
		}
	}
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return
	}
	rs, err := c.rsLister.ReplicaSets(pod.Namespace).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return
	}
	dref := metav1.GetControllerOfNoCopy(rs)
	if dref == nil {
		return
	}
	if d := c.resolve(rs.Namespace, dref); d != nil && d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		c.enqueue(d)
	}
}

// sync reconciles one Deployment (upstream syncDeployment).
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := c.dLister.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	d := cached.DeepCopy()

	if reflect.DeepEqual(d.Spec.Selector, &metav1.LabelSelector{}) {
		c.recorder.Eventf(d, corev1.EventTypeWarning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		if d.Status.ObservedGeneration < d.Generation {
			d.Status.ObservedGeneration = d.Generation
			_ = c.writeStatus(ctx, d)
		}
		return nil
	}

	rsList, err := c.claimReplicaSets(ctx, d)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return c.syncStatusOnly(ctx, d, rsList)
	}
	if err := c.checkPausedConditions(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused {
		return c.syncScale(ctx, d, rsList)
	}
	scaling, err := c.isScalingEvent(ctx, d, rsList)
	if err != nil {
		return err
	}
	if scaling {
		return c.syncScale(ctx, d, rsList)
	}
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		return c.rolloutRecreate(ctx, d, rsList)
	case appsv1.RollingUpdateDeploymentStrategyType:
		return c.rolloutRolling(ctx, d, rsList)
	}
	return fmt.Errorf("deployment: unexpected strategy type %q", d.Spec.Strategy.Type)
}

// claimReplicaSets adopts matching orphan ReplicaSets and releases owned
// ones that no longer match, returning those d owns (upstream
// ReplicaSetControllerRefManager.ClaimReplicaSets).
func (c *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	all, err := c.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s has invalid label selector: %w", d.Namespace, d.Name, err)
	}
	var (
		out          []*appsv1.ReplicaSet
		errs         []error
		canAdopt     error
		canAdoptDone bool
	)
	for _, rs := range all {
		ref := metav1.GetControllerOfNoCopy(rs)
		match := sel.Matches(labels.Set(rs.Labels))
		if ref != nil {
			if ref.UID != d.UID {
				continue
			}
			if match {
				out = append(out, rs)
			} else if d.DeletionTimestamp == nil {
				if err := c.patchRS(ctx, rs, releasePatch(rs.UID, d.UID)); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) {
					errs = append(errs, err)
				}
			}
			continue
		}
		if d.DeletionTimestamp != nil || !match || rs.DeletionTimestamp != nil {
			continue
		}
		if !canAdoptDone {
			canAdopt, canAdoptDone = c.recheck(ctx, d), true
		}
		if canAdopt != nil {
			errs = append(errs, fmt.Errorf("deployment: can't adopt ReplicaSet %s/%s: %w", rs.Namespace, rs.Name, canAdopt))
			continue
		}
		if err := c.patchRS(ctx, rs, adoptPatch(d, rs.UID)); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, rs)
	}
	return out, utilerrors.NewAggregate(errs)
}

func (c *Controller) recheck(ctx context.Context, d *appsv1.Deployment) error {
	fresh, err := c.client.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if fresh.UID != d.UID {
		return fmt.Errorf("original Deployment %s/%s is gone: got uid %v, wanted %v", d.Namespace, d.Name, fresh.UID, d.UID)
	}
	if fresh.DeletionTimestamp != nil {
		return fmt.Errorf("%s/%s has just been deleted at %v", d.Namespace, d.Name, fresh.DeletionTimestamp)
	}
	return nil
}

func (c *Controller) patchRS(ctx context.Context, rs *appsv1.ReplicaSet, patch []byte) error {
	_, err := c.client.AppsV1().ReplicaSets(rs.Namespace).Patch(ctx, rs.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("deployment: patch ReplicaSet %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	return nil
}

func adoptPatch(d *appsv1.Deployment, uid types.UID) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":             uid,
		"ownerReferences": []metav1.OwnerReference{*metav1.NewControllerRef(d, controllerKind)},
	}})
	return b
}

func releasePatch(uid, owner types.UID) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":             uid,
		"ownerReferences": []map[string]string{{"$patch": "delete", "uid": string(owner)}},
	}})
	return b
}
