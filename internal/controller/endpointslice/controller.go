package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	endpointslicerec "k8s.io/endpointslice"
	endpointslicemetrics "k8s.io/endpointslice/metrics"
	"k8s.io/endpointslice/topologycache"
	endpointsliceutil "k8s.io/endpointslice/util"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
	"github.com/svcnet/svcnet/internal/controller/endpointslice/selectorindex"
)

const (
	// ControllerName is the endpointslice.kubernetes.io/managed-by value of
	// the slices this controller owns.
	ControllerName = "endpointslice-controller.k8s.io"

	// DefaultMaxEndpointsPerSlice is kube-controller-manager's
	// --max-endpoints-per-slice default.
	DefaultMaxEndpointsPerSlice = 100

	// maxRetries bounds the error retries of one Service (1 s doubling).
	maxRetries = 15

	// endpointSliceChangeMinSyncDelay batches the syncs that slice changes
	// made by others trigger (upstream's value).
	endpointSliceChangeMinSyncDelay = time.Second

	defaultSyncBackOff = time.Second
	maxSyncBackOff     = 1000 * time.Second

	topologyQueueItemKey = "topologyQueueItemKey"

	eventComponent = "endpoint-slice-controller"
)

// Config configures a Controller.
type Config struct {
	// Logger receives the controller's logs (default slog.Default()).
	Logger *slog.Logger
	// MaxEndpointsPerSlice defaults to DefaultMaxEndpointsPerSlice.
	MaxEndpointsPerSlice int32
	// EndpointUpdatesBatchPeriod delays syncs triggered by pod changes
	// (kube-controller-manager's --endpointslice-updates-batch-period,
	// default 0).
	EndpointUpdatesBatchPeriod time.Duration
}

// Controller keeps the EndpointSlices of selector Services.
type Controller struct {
	factory informers.SharedInformerFactory
	client  kubernetes.Interface
	logger  *slog.Logger
	klogger logr.Logger // the same sink, for the reconciler library

	eventBroadcaster record.EventBroadcaster
	eventRecorder    record.EventRecorder

	serviceLister       corelisters.ServiceLister
	serviceIndexer      cache.Indexer
	podIndexer          cache.Indexer
	nodeLister          corelisters.NodeLister
	endpointSliceLister discoverylisters.EndpointSliceLister
	sliceIndexer        cache.Indexer
	synced              []cache.InformerSynced

	reconciler           *endpointslicerec.Reconciler
	endpointSliceTracker *endpointsliceutil.EndpointSliceTracker
	triggerTimeTracker   *endpointsliceutil.TriggerTimeTracker
	topologyCache        *topologycache.TopologyCache
	// services are the UIDs of the Services last synced; see
	// forgetReplacedService.
	services ctrlqueue.Incarnations

	serviceQueue  workqueue.TypedRateLimitingInterface[string]
	podQueue      workqueue.TypedRateLimitingInterface[*endpointsliceutil.PodProjectionKey]
	topologyQueue workqueue.TypedRateLimitingInterface[string]
	// staleBackoff paces stale-cache retries (see the package doc).
	staleBackoff workqueue.TypedRateLimiter[string]

	maxEndpointsPerSlice       int32
	endpointUpdatesBatchPeriod time.Duration
	workerLoopPeriod           time.Duration
}

// New builds the controller and registers its informer handlers (and
// indexes) on factory; call it before starting factory. Run starts the
// factory too, which is harmless if the caller already did.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	if client == nil || factory == nil {
		return nil, errors.New("endpointslice: a client and an informer factory are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "endpointslice-controller")
	if cfg.MaxEndpointsPerSlice <= 0 {
		cfg.MaxEndpointsPerSlice = DefaultMaxEndpointsPerSlice
	}
	endpointslicemetrics.RegisterMetrics()

	broadcaster := record.NewBroadcaster()
	c := &Controller{
		factory:          factory,
		client:           client,
		logger:           logger,
		klogger:          logr.FromSlogHandler(logger.Handler()),
		eventBroadcaster: broadcaster,
		eventRecorder:    broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventComponent}),
		// Upstream's limiter: 1 s doubling per Service, 10 qps overall for
		// retries, so a broken Service cannot hammer the API server.
		serviceQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedMaxOfRateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](defaultSyncBackOff, maxSyncBackOff),
				&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
			),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint_slice"},
		),
		podQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[*endpointsliceutil.PodProjectionKey](),
			workqueue.TypedRateLimitingQueueConfig[*endpointsliceutil.PodProjectionKey]{Name: "endpoint_slice_pod"},
		),
		topologyQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint_slice_topology"},
		),
		staleBackoff:               ctrlqueue.NewCacheBehindBackoff(),
		endpointSliceTracker:       endpointsliceutil.NewEndpointSliceTracker(),
		triggerTimeTracker:         endpointsliceutil.NewTriggerTimeTracker(),
		topologyCache:              topologycache.NewTopologyCache(),
		maxEndpointsPerSlice:       cfg.MaxEndpointsPerSlice,
		endpointUpdatesBatchPeriod: cfg.EndpointUpdatesBatchPeriod,
		workerLoopPeriod:           time.Second,
	}

	svcInformer := factory.Core().V1().Services()
	podInformer := factory.Core().V1().Pods()
	nodeInformer := factory.Core().V1().Nodes()
	sliceInformer := factory.Discovery().V1().EndpointSlices()
	if err := selectorindex.AddServiceIndex(svcInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpointslice: %w", err)
	}
	if err := selectorindex.AddPodIndex(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpointslice: %w", err)
	}
	if err := selectorindex.AddSliceIndex(sliceInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpointslice: %w", err)
	}

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.queueService,
			UpdateFunc: func(_, cur interface{}) { c.queueService(cur) },
			DeleteFunc: c.queueService,
		}},
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj interface{}) { c.onPodUpdate(nil, obj) },
			UpdateFunc: c.onPodUpdate,
			DeleteFunc: func(obj interface{}) { c.onPodUpdate(obj, nil) },
		}},
		{nodeInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(interface{}) { c.topologyQueue.Add(topologyQueueItemKey) },
			UpdateFunc: c.onNodeUpdate,
			DeleteFunc: func(interface{}) { c.topologyQueue.Add(topologyQueueItemKey) },
		}},
		{sliceInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onEndpointSliceAdd,
			UpdateFunc: c.onEndpointSliceUpdate,
			DeleteFunc: c.onEndpointSliceDelete,
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("endpointslice: add event handler: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	c.serviceLister = svcInformer.Lister()
	c.serviceIndexer = svcInformer.Informer().GetIndexer()
	c.podIndexer = podInformer.Informer().GetIndexer()
	c.nodeLister = nodeInformer.Lister()
	c.endpointSliceLister = sliceInformer.Lister()
	c.sliceIndexer = sliceInformer.Informer().GetIndexer()

	c.reconciler = endpointslicerec.NewReconciler(
		c.client,
		c.nodeLister,
		c.maxEndpointsPerSlice,
		c.endpointSliceTracker,
		c.topologyCache,
		c.eventRecorder,
		ControllerName,
		endpointslicerec.WithPreferSameTrafficDistributionEnabled(true),
	)
	return c, nil
}

// Run processes Services until ctx is cancelled. workers is the number of
// Services synced in parallel (kube-controller-manager's
// --concurrent-service-endpoint-syncs, default 5).
func (c *Controller) Run(ctx context.Context, workers int) {
	c.eventBroadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.eventBroadcaster.Shutdown()

	c.logger.Info("starting")
	var wg sync.WaitGroup
	defer func() {
		c.serviceQueue.ShutDown()
		c.podQueue.ShutDown()
		c.topologyQueue.ShutDown()
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
		wg.Go(func() { wait.UntilWithContext(ctx, c.serviceWorker, c.workerLoopPeriod) })
		wg.Go(func() { wait.UntilWithContext(ctx, c.podWorker, c.workerLoopPeriod) })
	}
	wg.Go(func() { wait.UntilWithContext(ctx, c.topologyWorker, c.workerLoopPeriod) })
	<-ctx.Done()
}

func (c *Controller) serviceWorker(ctx context.Context) {
	ctrlqueue.Worker{Queue: c.serviceQueue, Sync: c.syncService, MaxRetries: maxRetries, CacheBehind: c.staleBackoff,
		OnError: func(key string, err error, retries int, dropped bool) {
			if dropped {
				c.logger.Error("retry budget exceeded, dropping service out of the queue", "service", key, "err", err)
			} else {
				c.logger.Info("error syncing endpoint slices, retrying", "service", key, "retries", retries, "err", err)
			}
		}}.Run(ctx)
}

// syncService makes the managed slices of one Service match its pods.
func (c *Controller) syncService(ctx context.Context, key string) error {
	start := time.Now()
	defer func() { c.logger.Debug("synced service", "service", key, "elapsed", time.Since(start)) }()

	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return fmt.Errorf("endpointslice: bad key %q: %w", key, err)
	}
	service, err := c.serviceLister.Services(namespace).Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpointslice: get service %s: %w", key, err)
		}
		return c.forgetService(ctx, namespace, name)
	}
	c.forgetReplacedService(key, service)
	// ExternalName Services and Services without a selector get no slices
	// from this controller (selectorless ones get hand-written Endpoints,
	// mirrored by endpointslicemirroring).
	if service.Spec.Type == corev1.ServiceTypeExternalName || service.Spec.Selector == nil {
		return c.forgetService(ctx, namespace, name)
	}

	pods, err := selectorindex.PodsForSelector(c.podIndexer, namespace, service.Spec.Selector)
	if err != nil {
		return fmt.Errorf("endpointslice: %w", err)
	}
	slices, err := c.managedSlices(namespace, name)
	if err != nil {
		return err
	}
	slices = dropPendingDeletion(slices)
	if c.endpointSliceTracker.StaleSlices(service, slices) {
		if c.logger.Enabled(ctx, slog.LevelDebug) {
			c.logger.Debug("cached slices older than our writes", "service", key, "cached", sliceVersions(slices))
		}
		return errStaleCache
	}
	slices, err = c.deleteForeignSlices(ctx, service, slices)
	if err != nil {
		return err
	}
	// Computed even for a no-op sync so the tracker state moves on.
	trigger := c.triggerTimeTracker.ComputeEndpointLastChangeTriggerTime(namespace, service, pods)
	if err := c.reconciler.Reconcile(c.klogger, service, pods, slices, trigger); err != nil {
		c.eventRecorder.Eventf(service, corev1.EventTypeWarning, "FailedToUpdateEndpointSlices",
			"Error updating Endpoint Slices for Service %s/%s: %v", namespace, name, err)
		return fmt.Errorf("endpointslice: reconcile %s: %w", key, err)
	}
	return nil
}

// forgetReplacedService drops the trackers' state of key when the Service
// now in the cache is not the one key was last synced for (deleted and
// created again). The slice tracker is keyed by Service name and expects
// every slice it recorded a write of to show up in the cache; the API
// server deletes a Service's slices with it, so a slice written for the
// old Service just before that may never reach an informer that was
// re-listing at the time (a server restart), and then neither its ADD
// nor its DELETE arrives. When the deletion and the new Service are seen
// as one update (a re-list), forgetService never runs, and the tracker
// would report the cache behind for that slice forever: the Service would
// get no slices until the controller restarted.
func (c *Controller) forgetReplacedService(key string, service *corev1.Service) {
	if c.services.Replaced(key, service.UID) {
		c.logger.Debug("service replaced; forgetting the slices tracked for the old one", "service", key, "uid", service.UID)
		c.triggerTimeTracker.DeleteService(service.Namespace, service.Name)
		c.reconciler.DeleteService(service.Namespace, service.Name)
		c.endpointSliceTracker.DeleteService(service.Namespace, service.Name)
	}
}

// forgetService drops the trackers' state for a Service that is gone (or
// gets no slices from us) and deletes the slices we manage for it.
func (c *Controller) forgetService(ctx context.Context, namespace, name string) error {
	c.services.Forget(namespace + "/" + name)
	c.triggerTimeTracker.DeleteService(namespace, name)
	c.reconciler.DeleteService(namespace, name)
	c.endpointSliceTracker.DeleteService(namespace, name)
	slices, err := c.managedSlices(namespace, name)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range dropPendingDeletion(slices) {
		err := c.client.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, s.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &s.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("endpointslice: delete slices of %s/%s: %w", namespace, name, errors.Join(errs...))
	}
	return nil
}

// deleteForeignSlices deletes the managed slices of a Service's name that
// the Service does not own (left by an earlier Service of the same name, or
// made by hand) and returns the others. The reconciler would delete them
// too, except when the Service has no endpoints: it then takes a foreign
// empty slice for its placeholder (its comparison ignores ownerReferences)
// and keeps it, owned by a Service that no longer exists, until a garbage
// collector removes it.
func (c *Controller) deleteForeignSlices(ctx context.Context, service *corev1.Service, slices []*discoveryv1.EndpointSlice) ([]*discoveryv1.EndpointSlice, error) {
	owned := slices[:0:0]
	var errs []error
	for _, s := range slices {
		if ownedBy(s, service) {
			owned = append(owned, s)
			continue
		}
		err := c.client.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &s.UID},
		})
		switch {
		case err == nil, apierrors.IsNotFound(err):
			c.endpointSliceTracker.ExpectDeletion(s)
		case apierrors.IsConflict(err):
			// Replaced meanwhile; the informer will bring the new one.
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("endpointslice: delete slices not owned by %s/%s: %w", service.Namespace, service.Name, errors.Join(errs...))
	}
	return owned, nil
}

// ownedBy is the reconciler's test: an ownerReference to this Service UID.
func ownedBy(s *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	for _, o := range s.OwnerReferences {
		if o.UID == svc.UID && o.Kind == "Service" && o.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// managedSlices lists, from the cache, the slices we manage for a Service.
func (c *Controller) managedSlices(namespace, name string) ([]*discoveryv1.EndpointSlice, error) {
	slices, err := selectorindex.SlicesFor(c.sliceIndexer, namespace, name, ControllerName)
	if err != nil {
		return nil, fmt.Errorf("endpointslice: %w", err)
	}
	return slices, nil
}

// queueLeftoverSlices queues the Service of every managed slice whose
// Service is not in the cache, so slices left by a Service deleted while
// the controller was down are removed.
func (c *Controller) queueLeftoverSlices() {
	sel := labels.Set{discoveryv1.LabelManagedBy: ControllerName}.AsSelectorPreValidated()
	slices, err := c.endpointSliceLister.List(sel)
	if err != nil {
		c.logger.Error("listing managed slices", "err", err)
		return
	}
	for _, s := range slices {
		key, err := endpointslicerec.ServiceControllerKey(s)
		if err != nil {
			continue
		}
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		if _, err := c.serviceLister.Services(ns).Get(name); apierrors.IsNotFound(err) {
			c.serviceQueue.Add(key)
		}
	}
}

func (c *Controller) podWorker(ctx context.Context) {
	for {
		key, quit := c.podQueue.Get()
		if quit {
			return
		}
		if err := c.syncPod(key); err != nil {
			c.logger.Error("mapping pod to services", "namespace", key.Namespace, "err", err)
			c.podQueue.AddRateLimited(key)
		} else {
			c.podQueue.Forget(key)
		}
		c.podQueue.Done(key)
	}
}

// syncPod queues the Services a pod change may affect.
func (c *Controller) syncPod(key *endpointsliceutil.PodProjectionKey) error {
	services, err := selectorindex.ServicesToUpdate(c.serviceIndexer, key)
	if err != nil {
		return err
	}
	for svc := range services {
		c.serviceQueue.AddAfter(svc, c.endpointUpdatesBatchPeriod)
	}
	return nil
}

func (c *Controller) topologyWorker(ctx context.Context) {
	for {
		key, quit := c.topologyQueue.Get()
		if quit {
			return
		}
		c.checkNodeTopologyDistribution()
		c.topologyQueue.Done(key)
	}
}

// checkNodeTopologyDistribution feeds the Nodes to the topology cache (for
// topology-aware hints) and queues the Services it finds overloaded.
func (c *Controller) checkNodeTopologyDistribution() {
	nodes, err := c.nodeLister.List(labels.Everything())
	if err != nil {
		c.logger.Error("listing nodes", "err", err)
		return
	}
	c.topologyCache.SetNodes(c.klogger, nodes)
	for _, key := range c.topologyCache.GetOverloadedServices() {
		c.serviceQueue.Add(key)
	}
}

func (c *Controller) queueService(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.logger.Error("key for service", "err", err)
		return
	}
	c.serviceQueue.Add(key)
}

func (c *Controller) onPodUpdate(old, cur interface{}) {
	if key := endpointsliceutil.GetPodUpdateProjectionKey(old, cur); key != nil {
		c.podQueue.Add(key)
	}
}

func (c *Controller) onNodeUpdate(old, cur interface{}) {
	oldNode, ok1 := old.(*corev1.Node)
	curNode, ok2 := cur.(*corev1.Node)
	if !ok1 || !ok2 {
		return
	}
	// The zone label may arrive after the Node is created.
	if nodeReady(oldNode) != nodeReady(curNode) ||
		oldNode.Labels[corev1.LabelTopologyZone] != curNode.Labels[corev1.LabelTopologyZone] {
		c.topologyQueue.Add(topologyQueueItemKey)
	}
}

// onEndpointSliceAdd queues the Service when a managed slice appears that
// we did not write (or not at this generation).
func (c *Controller) onEndpointSliceAdd(obj interface{}) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if c.reconciler.ManagedByController(s) && c.endpointSliceTracker.ShouldSync(s) {
		c.queueServiceForSlice(s)
	}
}

func (c *Controller) onEndpointSliceUpdate(prevObj, obj interface{}) {
	prev, ok1 := prevObj.(*discoveryv1.EndpointSlice)
	s, ok2 := obj.(*discoveryv1.EndpointSlice)
	if !ok1 || !ok2 {
		return
	}
	// Generation does not change with labels; a user may move a slice to
	// another Service by relabelling it.
	if s.Labels[discoveryv1.LabelServiceName] != prev.Labels[discoveryv1.LabelServiceName] {
		c.queueServiceForSlice(s)
		c.queueServiceForSlice(prev)
		return
	}
	if c.reconciler.ManagedByChanged(prev, s) || (c.reconciler.ManagedByController(s) && c.endpointSliceTracker.ShouldSync(s)) {
		c.queueServiceForSlice(s)
	}
}

// onEndpointSliceDelete queues the Service when a slice we did not delete
// disappears, so it is recreated.
func (c *Controller) onEndpointSliceDelete(obj interface{}) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if !c.reconciler.ManagedByController(s) {
		return
	}
	// Upstream only reacts when the tracker knows the slice; a restarted
	// controller has not tracked the slices it found, so an unknown slice
	// also queues its Service (a no-op sync if nothing is missing).
	if !c.endpointSliceTracker.Has(s) || !c.endpointSliceTracker.HandleDeletion(s) {
		c.queueServiceForSlice(s)
	}
}

func (c *Controller) queueServiceForSlice(s *discoveryv1.EndpointSlice) {
	key, err := endpointslicerec.ServiceControllerKey(s)
	if err != nil {
		c.logger.Debug("slice without service", "slice", s.Namespace+"/"+s.Name, "err", err)
		return
	}
	c.serviceQueue.AddAfter(key, max(endpointSliceChangeMinSyncDelay, c.endpointUpdatesBatchPeriod))
}

// sliceVersions names slices with their UID and generation, for logs.
func sliceVersions(slices []*discoveryv1.EndpointSlice) []string {
	out := make([]string, 0, len(slices))
	for _, s := range slices {
		out = append(out, fmt.Sprintf("%s uid=%s gen=%d rv=%s", s.Name, s.UID, s.Generation, s.ResourceVersion))
	}
	return out
}

func dropPendingDeletion(slices []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices[:0:0]
	for _, s := range slices {
		if s.DeletionTimestamp == nil {
			out = append(out, s)
		}
	}
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// errStaleCache reports that the informer has not yet seen the slices this
// controller last wrote for a Service.
var errStaleCache = fmt.Errorf("endpointslice: EndpointSlice informer cache is out of date: %w", ctrlqueue.ErrCacheBehind)
