// Package endpointslicemirroring mirrors hand-written Endpoints into
// EndpointSlices: for a Service without a selector whose Endpoints someone
// maintains, it keeps EndpointSlices labelled
// endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io
// and kubernetes.io/service-name, owned by the Endpoints, so EndpointSlice
// consumers (kube-proxy, DNS) see those endpoints too.
//
// It follows KK pkg/controller/endpointslicemirroring. Each Endpoints subset
// (after canonical repacking) maps to one slice per address family, holding
// at most MaxEndpointsPerSubset addresses (extra and invalid addresses are
// skipped with an Event); the slice copies the Endpoints' labels and
// annotations except last-change-trigger-time and last-applied-configuration.
// Slices are removed when the Endpoints goes away, gets the
// endpointslice.kubernetes.io/skip-mirror=true label (as the API server's
// own default/kubernetes Endpoints has), is a leader-election record, or
// when its Service is deleted or gains a selector. Like the EndpointSlice
// controller it tracks the generations it wrote and retries instead of
// writing from a cache that has not caught up.
package endpointslicemirroring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	endpointsliceutil "k8s.io/endpointslice/util"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/selectorindex"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

const (
	// ControllerName is the endpointslice.kubernetes.io/managed-by value of
	// mirrored slices.
	ControllerName = "endpointslicemirroring-controller.k8s.io"

	// DefaultMaxEndpointsPerSubset is kube-controller-manager's
	// --mirroring-max-endpoints-per-subset default.
	DefaultMaxEndpointsPerSubset = 1000

	maxRetries         = 15
	defaultSyncBackOff = time.Second
	maxSyncBackOff     = 100 * time.Second

	eventComponent = "endpoint-slice-mirroring-controller"
)

// Config configures a Controller.
type Config struct {
	// Logger receives the controller's logs (default slog.Default()).
	Logger *slog.Logger
	// MaxEndpointsPerSubset defaults to DefaultMaxEndpointsPerSubset.
	MaxEndpointsPerSubset int32
	// EndpointUpdatesBatchPeriod delays syncs triggered by slice changes
	// (--mirroring-endpointslice-updates-batch-period, default 0).
	EndpointUpdatesBatchPeriod time.Duration
}

// Controller mirrors selectorless Services' Endpoints into EndpointSlices.
type Controller struct {
	factory informers.SharedInformerFactory
	client  kubernetes.Interface
	logger  *slog.Logger

	eventBroadcaster record.EventBroadcaster

	endpointsLister     corelisters.EndpointsLister
	endpointSliceLister discoverylisters.EndpointSliceLister
	sliceIndexer        cache.Indexer
	serviceLister       corelisters.ServiceLister
	synced              []cache.InformerSynced

	tracker    *endpointsliceutil.EndpointSliceTracker
	reconciler *reconciler
	queue      workqueue.TypedRateLimitingInterface[string]
	// cacheBehind paces retries while the slice cache lags our writes.
	cacheBehind workqueue.TypedRateLimiter[string]
	// services are the UIDs of the Services last mirrored for.
	services ctrlqueue.Incarnations

	endpointUpdatesBatchPeriod time.Duration
	workerLoopPeriod           time.Duration
}

// New builds the controller and registers its informer handlers (and
// indexes) on factory; call it before starting factory. Run starts the
// factory too, which is harmless if the caller already did.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	if client == nil || factory == nil {
		return nil, errors.New("endpointslicemirroring: a client and an informer factory are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.MaxEndpointsPerSubset <= 0 {
		cfg.MaxEndpointsPerSubset = DefaultMaxEndpointsPerSubset
	}
	broadcaster := record.NewBroadcaster()
	c := &Controller{
		factory:          factory,
		client:           client,
		logger:           logger.With("component", "endpointslicemirroring-controller"),
		eventBroadcaster: broadcaster,
		tracker:          endpointsliceutil.NewEndpointSliceTracker(),
		cacheBehind:      ctrlqueue.NewCacheBehindBackoff(),
		// Upstream's limiter: 1 s doubling to 100 s per key, 10 qps overall.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedMaxOfRateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](defaultSyncBackOff, maxSyncBackOff),
				&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
			),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint_slice_mirroring"},
		),
		endpointUpdatesBatchPeriod: cfg.EndpointUpdatesBatchPeriod,
		workerLoopPeriod:           time.Second,
	}
	c.reconciler = &reconciler{
		client:                client,
		tracker:               c.tracker,
		eventRecorder:         broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventComponent}),
		maxEndpointsPerSubset: cfg.MaxEndpointsPerSubset,
		logger:                c.logger,
	}

	epInformer := factory.Core().V1().Endpoints()
	sliceInformer := factory.Discovery().V1().EndpointSlices()
	svcInformer := factory.Core().V1().Services()
	if err := selectorindex.AddSliceIndex(sliceInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpointslicemirroring: %w", err)
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{epInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onEndpointsAdd,
			UpdateFunc: c.onEndpointsUpdate,
			DeleteFunc: c.onEndpointsDelete,
		}},
		{sliceInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onEndpointSliceAdd,
			UpdateFunc: c.onEndpointSliceUpdate,
			DeleteFunc: c.onEndpointSliceDelete,
		}},
		{svcInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onServiceAdd,
			UpdateFunc: c.onServiceUpdate,
			DeleteFunc: c.onServiceDelete,
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("endpointslicemirroring: add event handler: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	c.endpointsLister = epInformer.Lister()
	c.endpointSliceLister = sliceInformer.Lister()
	c.sliceIndexer = sliceInformer.Informer().GetIndexer()
	c.serviceLister = svcInformer.Lister()
	return c, nil
}

// Run mirrors until ctx is cancelled; workers is the number of Endpoints
// synced in parallel (--mirroring-concurrent-service-endpoint-syncs,
// default 5).
func (c *Controller) Run(ctx context.Context, workers int) {
	c.eventBroadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.eventBroadcaster.Shutdown()

	c.logger.Info("starting")
	var wg sync.WaitGroup
	defer func() {
		c.queue.ShutDown()
		wg.Wait()
		c.logger.Info("stopped")
	}()
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	c.queueLeftoverSlices()
	if workers < 1 {
		workers = 1
	}
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, c.workerLoopPeriod) })
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	ctrlqueue.Worker{Queue: c.queue, Sync: c.syncEndpoints, MaxRetries: maxRetries, CacheBehind: c.cacheBehind,
		OnError: func(key string, err error, retries int, dropped bool) {
			if dropped {
				c.logger.Error("retry budget exceeded, dropping endpoints out of the queue", "endpoints", key, "err", err)
			} else {
				c.logger.Info("error mirroring endpoints, retrying", "endpoints", key, "retries", retries, "err", err)
			}
		}}.Run(ctx)
}

// syncEndpoints mirrors one Endpoints (or removes its mirrored slices).
func (c *Controller) syncEndpoints(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return fmt.Errorf("endpointslicemirroring: bad key %q: %w", key, err)
	}
	endpoints, err := c.endpointsLister.Endpoints(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return c.deleteMirroredSlices(ctx, namespace, name)
	}
	if err != nil {
		return fmt.Errorf("endpointslicemirroring: get endpoints %s: %w", key, err)
	}
	if !shouldMirror(endpoints) {
		return c.deleteMirroredSlices(ctx, namespace, name)
	}
	svc, err := c.serviceLister.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return c.deleteMirroredSlices(ctx, namespace, name)
	}
	if err != nil {
		return fmt.Errorf("endpointslicemirroring: get service %s: %w", key, err)
	}
	if svc.Spec.Selector != nil {
		// The EndpointSlice controller owns the slices of selector Services.
		return c.deleteMirroredSlices(ctx, namespace, name)
	}
	if c.services.Replaced(key, svc.UID) {
		// Deleted and created again (see ctrlqueue.Incarnations): the
		// API server deleted the old Service's slices, possibly before
		// the informer saw them; the tracker must not wait for them.
		c.tracker.DeleteService(namespace, name)
	}
	slices, err := c.mirroredSlices(namespace, name)
	if err != nil {
		return err
	}
	if c.tracker.StaleSlices(svc, slices) {
		return errStaleCache
	}
	return c.reconciler.reconcile(ctx, endpoints, slices)
}

// deleteMirroredSlices deletes the slices mirrored for an Endpoints.
func (c *Controller) deleteMirroredSlices(ctx context.Context, namespace, name string) error {
	slices, err := c.mirroredSlices(namespace, name)
	if err != nil {
		return err
	}
	c.tracker.DeleteService(namespace, name)
	c.services.Forget(namespace + "/" + name)
	return c.reconciler.deleteSlices(ctx, namespace, name, slices)
}

func (c *Controller) mirroredSlices(namespace, name string) ([]*discoveryv1.EndpointSlice, error) {
	slices, err := selectorindex.SlicesFor(c.sliceIndexer, namespace, name, ControllerName)
	if err != nil {
		return nil, fmt.Errorf("endpointslicemirroring: %w", err)
	}
	return slices, nil
}

// queueLeftoverSlices queues, once at start, the Endpoints key of every
// mirrored slice, so slices of Endpoints or Services deleted while the
// controller was down are removed.
func (c *Controller) queueLeftoverSlices() {
	sel := labels.Set{discoveryv1.LabelManagedBy: ControllerName}.AsSelectorPreValidated()
	slices, err := c.endpointSliceLister.List(sel)
	if err != nil {
		c.logger.Error("listing mirrored slices", "err", err)
		return
	}
	for _, s := range slices {
		c.queueForSlice(s)
	}
}

// shouldMirror is false for Endpoints labelled skip-mirror and for leader
// election records. (Whether the Service is selectorless is checked apart.)
func shouldMirror(ep *corev1.Endpoints) bool {
	if ep == nil || ep.Labels[discoveryv1.LabelSkipMirror] == "true" {
		return false
	}
	_, leader := ep.Annotations[resourcelock.LeaderElectionRecordAnnotationKey]
	return !leader
}

func (c *Controller) queueKey(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.logger.Error("object key", "err", err)
		return
	}
	c.queue.Add(key)
}

func (c *Controller) onServiceAdd(obj interface{}) {
	if svc, ok := obj.(*corev1.Service); ok && svc.Spec.Selector == nil {
		c.queueKey(obj)
	}
}

func (c *Controller) onServiceUpdate(prevObj, obj interface{}) {
	prev, ok1 := prevObj.(*corev1.Service)
	svc, ok2 := obj.(*corev1.Service)
	// A new UID is a replaced Service (deleted and created again, seen as
	// one update after a re-list): its old slices went with it.
	if ok1 && ok2 && ((prev.Spec.Selector == nil) != (svc.Spec.Selector == nil) || prev.UID != svc.UID) {
		c.queueKey(obj)
	}
}

func (c *Controller) onServiceDelete(obj interface{}) {
	svc, ok := obj.(*corev1.Service)
	if t, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
		svc, ok = t.Obj.(*corev1.Service)
	}
	if ok && svc.Spec.Selector == nil {
		c.queueKey(obj)
	}
}

func (c *Controller) onEndpointsAdd(obj interface{}) {
	if ep, ok := obj.(*corev1.Endpoints); ok && shouldMirror(ep) {
		c.queueKey(obj)
	}
}

func (c *Controller) onEndpointsUpdate(prevObj, obj interface{}) {
	prev, ok1 := prevObj.(*corev1.Endpoints)
	ep, ok2 := obj.(*corev1.Endpoints)
	// Queued also when it stops being mirrored, to remove the slices.
	if ok1 && ok2 && (shouldMirror(ep) || shouldMirror(prev)) {
		c.queueKey(obj)
	}
}

func (c *Controller) onEndpointsDelete(obj interface{}) {
	ep, ok := obj.(*corev1.Endpoints)
	if t, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
		ep, ok = t.Obj.(*corev1.Endpoints)
	}
	if ok && shouldMirror(ep) {
		c.queueKey(obj)
	}
}

func (c *Controller) onEndpointSliceAdd(obj interface{}) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if ok && managedByUs(s) && c.tracker.ShouldSync(s) {
		c.queueForSlice(s)
	}
}

func (c *Controller) onEndpointSliceUpdate(prevObj, obj interface{}) {
	prev, ok1 := prevObj.(*discoveryv1.EndpointSlice)
	s, ok2 := obj.(*discoveryv1.EndpointSlice)
	if !ok1 || !ok2 {
		return
	}
	if s.Labels[discoveryv1.LabelServiceName] != prev.Labels[discoveryv1.LabelServiceName] {
		c.queueForSlice(s)
		c.queueForSlice(prev)
		return
	}
	if managedByUs(prev) != managedByUs(s) || (managedByUs(s) && c.tracker.ShouldSync(s)) {
		c.queueForSlice(s)
	}
}

// onEndpointSliceDelete queues the Endpoints when a mirrored slice we did
// not delete disappears (including slices a restarted controller never
// tracked), so it is recreated.
func (c *Controller) onEndpointSliceDelete(obj interface{}) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || !managedByUs(s) {
		return
	}
	if !c.tracker.Has(s) || !c.tracker.HandleDeletion(s) {
		c.queueForSlice(s)
	}
}

func (c *Controller) queueForSlice(s *discoveryv1.EndpointSlice) {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return
	}
	c.queue.AddAfter(s.Namespace+"/"+name, c.endpointUpdatesBatchPeriod)
}

func managedByUs(s *discoveryv1.EndpointSlice) bool {
	return s.Labels[discoveryv1.LabelManagedBy] == ControllerName
}

var errStaleCache = fmt.Errorf("endpointslicemirroring: EndpointSlice informer cache is out of date: %w", ctrlqueue.ErrCacheBehind)
