package replicaset

import (
	"context"
	"errors"
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
const Name = "replicaset"

// BurstReplicas caps the pods created or deleted by one sync (upstream's
// value).
const BurstReplicas = 500

// Index names this package adds to the shared informers.
const (
	// PodControllerIndex indexes pods by "namespace/Kind/name/uid" of
	// their controller reference, or "namespace" for orphans.
	PodControllerIndex = "svcnet.io/pod-controller"
	rsControllerIndex  = "svcnet.io/rs-controller-uid"
)

// controllerKind is the GroupVersionKind of the controller refs we write.
var controllerKind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// Controller is the ReplicaSet controller.
type Controller struct {
	log      *slog.Logger
	client   kubernetes.Interface
	rsLister appslisters.ReplicaSetLister
	rsIndex  cache.Indexer
	pods     corelisters.PodLister
	podIndex cache.Indexer
	synced   []cache.InformerSynced

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	queue       workqueue.TypedRateLimitingInterface[string]
	exp         *expectations
	now         func() time.Time
}

// New wires a ReplicaSet controller to the shared informers. Call it
// before the informer factory starts (it adds indexers).
func New(logger *slog.Logger, client kubernetes.Interface, rsInformer appsinformers.ReplicaSetInformer, podInformer coreinformers.PodInformer) (*Controller, error) {
	logger = logger.With("component", "replicaset-controller")
	b := record.NewBroadcaster()
	c := &Controller{
		log:         logger,
		client:      client,
		rsLister:    rsInformer.Lister(),
		pods:        podInformer.Lister(),
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "replicaset-controller"}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		exp: newExpectations(),
		now: time.Now,
	}
	if err := AddPodControllerIndex(podInformer.Informer()); err != nil {
		return nil, err
	}
	if err := addIndexer(rsInformer.Informer(), rsControllerIndex, func(obj interface{}) ([]string, error) {
		rs, ok := obj.(*appsv1.ReplicaSet)
		if !ok {
			return nil, nil
		}
		if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
			return []string{string(ref.UID)}, nil
		}
		return nil, nil
	}); err != nil {
		return nil, err
	}
	c.podIndex = podInformer.Informer().GetIndexer()
	c.rsIndex = rsInformer.Informer().GetIndexer()

	if _, err := rsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { c.enqueue(obj) },
		UpdateFunc: c.updateRS,
		DeleteFunc: c.deleteRS,
	}); err != nil {
		return nil, fmt.Errorf("replicaset: %w", err)
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.addPod,
		UpdateFunc: c.updatePod,
		DeleteFunc: c.deletePod,
	}); err != nil {
		return nil, fmt.Errorf("replicaset: %w", err)
	}
	c.synced = []cache.InformerSynced{rsInformer.Informer().HasSynced, podInformer.Informer().HasSynced}
	return c, nil
}

// AddPodControllerIndex adds PodControllerIndex to a pod informer (once).
func AddPodControllerIndex(inf cache.SharedIndexInformer) error {
	return addIndexer(inf, PodControllerIndex, func(obj interface{}) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, nil
		}
		return []string{controllerIndexKey(pod.Namespace, metav1.GetControllerOfNoCopy(pod))}, nil
	})
}

func controllerIndexKey(ns string, ref *metav1.OwnerReference) string {
	if ref == nil {
		return ns
	}
	return ns + "/" + ref.Kind + "/" + ref.Name + "/" + string(ref.UID)
}

func addIndexer(inf cache.SharedIndexInformer, name string, fn cache.IndexFunc) error {
	if _, ok := inf.GetIndexer().GetIndexers()[name]; ok {
		return nil
	}
	if err := inf.AddIndexers(cache.Indexers{name: fn}); err != nil {
		return fmt.Errorf("replicaset: add index %s: %w", name, err)
	}
	return nil
}

// Run processes ReplicaSets with workers goroutines until ctx is done.
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
	ctrlqueue.Worker{Queue: c.queue, Sync: c.sync, OnError: func(key string, err error, _ int, _ bool) {
		if !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			c.log.Info("sync failed, requeued", "replicaset", key, "err", err)
		}
	}}.Run(ctx)
}

func (c *Controller) enqueue(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.queue.Add(key)
}

func (c *Controller) updateRS(old, cur interface{}) {
	o, n := old.(*appsv1.ReplicaSet), cur.(*appsv1.ReplicaSet)
	if o.UID != n.UID {
		// Deleted and recreated between two events: forget the old one.
		c.deleteRS(cache.DeletedFinalStateUnknown{Key: o.Namespace + "/" + o.Name, Obj: o})
	}
	c.enqueue(n)
}

func (c *Controller) deleteRS(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.exp.forget(key)
	c.queue.Add(key)
}

// resolve returns the ReplicaSet ref points at, if it is one we know.
func (c *Controller) resolve(ns string, ref *metav1.OwnerReference) *appsv1.ReplicaSet {
	if ref.Kind != controllerKind.Kind {
		return nil
	}
	rs, err := c.rsLister.ReplicaSets(ns).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return nil
	}
	return rs
}

// matchingReplicaSets returns the ReplicaSets whose selector matches an
// orphan pod, so they can consider adopting it.
func (c *Controller) matchingReplicaSets(pod *corev1.Pod) []*appsv1.ReplicaSet {
	if len(pod.Labels) == 0 {
		return nil
	}
	all, err := c.rsLister.ReplicaSets(pod.Namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*appsv1.ReplicaSet
	for _, rs := range all {
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, rs)
	}
	return out
}

func (c *Controller) addPod(obj interface{}) {
	pod := obj.(*corev1.Pod)
	if pod.DeletionTimestamp != nil {
		// Seen for the first time already being deleted (a restart).
		c.deletePod(pod)
		return
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		rs := c.resolve(pod.Namespace, ref)
		if rs == nil {
			return
		}
		key := rs.Namespace + "/" + rs.Name
		c.exp.creationObserved(key)
		c.queue.Add(key)
		return
	}
	for _, rs := range c.matchingReplicaSets(pod) {
		c.enqueue(rs)
	}
}

func (c *Controller) updatePod(old, cur interface{}) {
	o, n := old.(*corev1.Pod), cur.(*corev1.Pod)
	if o.ResourceVersion == n.ResourceVersion {
		return // resync
	}
	labelsChanged := !reflect.DeepEqual(o.Labels, n.Labels)
	if n.DeletionTimestamp != nil {
		// A graceful delete: the pod no longer counts, so act now rather
		// than when the kubelet finally removes it.
		c.deletePod(n)
		if labelsChanged {
			c.deletePod(o)
		}
		return
	}
	curRef, oldRef := metav1.GetControllerOfNoCopy(n), metav1.GetControllerOfNoCopy(o)
	refChanged := !reflect.DeepEqual(curRef, oldRef)
	if refChanged && oldRef != nil {
		if rs := c.resolve(o.Namespace, oldRef); rs != nil {
			c.enqueue(rs)
		}
	}
	if curRef != nil {
		rs := c.resolve(n.Namespace, curRef)
		if rs == nil {
			return
		}
		c.enqueue(rs)
		if !podutilsReady(o) && podutilsReady(n) && rs.Spec.MinReadySeconds > 0 {
			// Check availability once minReadySeconds have passed.
			c.queue.AddAfter(rs.Namespace+"/"+rs.Name, time.Duration(rs.Spec.MinReadySeconds)*time.Second)
		}
		return
	}
	if labelsChanged || refChanged {
		for _, rs := range c.matchingReplicaSets(n) {
			c.enqueue(rs)
		}
	}
}

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
	if ref == nil {
		return
	}
	rs := c.resolve(pod.Namespace, ref)
	if rs == nil {
		return
	}
	key := rs.Namespace + "/" + rs.Name
	c.exp.deletionObserved(key, podKey(pod))
	c.queue.Add(key)
}

// sync reconciles one ReplicaSet.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	rs, err := c.rsLister.ReplicaSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	needsSync := c.exp.satisfied(key)
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		c.log.Error("invalid selector", "replicaset", key, "err", err)
		return nil
	}

	// Pods we control plus orphans in the namespace (candidates to adopt).
	var all []*corev1.Pod
	for _, k := range []string{controllerIndexKey(ns, &metav1.OwnerReference{Kind: controllerKind.Kind, Name: rs.Name, UID: rs.UID}), ns} {
		objs, err := c.podIndex.ByIndex(PodControllerIndex, k)
		if err != nil {
			return fmt.Errorf("replicaset: pod index: %w", err)
		}
		for _, o := range objs {
			all = append(all, o.(*corev1.Pod))
		}
	}
	var active, terminating []*corev1.Pod
	for _, p := range all {
		switch {
		case isPodActive(p):
			active = append(active, p)
		case isPodTerminating(p) && metav1.IsControlledBy(p, rs) && sel.Matches(labels.Set(p.Labels)):
			terminating = append(terminating, p)
		}
	}
	active, err = c.claimPods(ctx, rs, sel, active)
	if err != nil {
		return err
	}

	var manageErr error
	if needsSync && rs.DeletionTimestamp == nil {
		manageErr = c.manageReplicas(ctx, active, rs)
	}
	now := c.now()
	st := calculateStatus(rs, active, terminating, manageErr, now)
	updated, err := c.updateStatus(ctx, rs, st)
	if err != nil {
		return err
	}
	if manageErr != nil {
		return manageErr
	}
	if updated.Spec.MinReadySeconds > 0 && updated.Status.ReadyReplicas != updated.Status.AvailableReplicas {
		after := time.Duration(updated.Spec.MinReadySeconds) * time.Second
		if d, ok := nextAvailabilityCheck(active, updated.Spec.MinReadySeconds, c.now()); ok {
			after = d + 10*time.Millisecond // past the strict "before now" of IsPodAvailable
		}
		c.queue.AddAfter(key, after)
	}
	return nil
}

// updateStatus writes st unless nothing changed; one retry after a
// conflict, against a fresh read (upstream statusUpdateRetries = 1).
func (c *Controller) updateStatus(ctx context.Context, rs *appsv1.ReplicaSet, st appsv1.ReplicaSetStatus) (*appsv1.ReplicaSet, error) {
	cur := rs.Status
	if cur.Replicas == st.Replicas && cur.FullyLabeledReplicas == st.FullyLabeledReplicas &&
		cur.ReadyReplicas == st.ReadyReplicas && cur.AvailableReplicas == st.AvailableReplicas &&
		int32Equal(cur.TerminatingReplicas, st.TerminatingReplicas) &&
		rs.Generation == cur.ObservedGeneration && reflect.DeepEqual(cur.Conditions, st.Conditions) {
		return rs, nil
	}
	st.ObservedGeneration = rs.Generation
	api := c.client.AppsV1().ReplicaSets(rs.Namespace)
	obj := rs.DeepCopy()
	for i := 0; ; i++ {
		obj.Status = st
		out, err := api.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		if err == nil {
			return out, nil
		}
		if i >= 1 {
			return nil, fmt.Errorf("replicaset: update status of %s/%s: %w", rs.Namespace, rs.Name, err)
		}
		if obj, err = api.Get(ctx, rs.Name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("replicaset: update status of %s/%s: %w", rs.Namespace, rs.Name, err)
		}
		st.ObservedGeneration = obj.Generation
	}
}

func int32Equal(a, b *int32) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func podutilsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// errNamespaceTerminating reports whether err is a create refused because
// the namespace is being deleted (not worth an event or a retry storm).
func errNamespaceTerminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

var errNoLabels = errors.New("replicaset: unable to create pods, no labels")
