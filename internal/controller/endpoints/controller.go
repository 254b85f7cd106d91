// Package endpoints is the Endpoints controller: for every Service with a
// selector it writes a v1 Endpoints of the same name listing the selected
// pods, ready ones under addresses and the others under notReadyAddresses
// (all under addresses with publishNotReadyAddresses). kubectl describe svc
// and pre-EndpointSlice clients read it.
//
// It follows KK pkg/controller/endpoint: pod events are mapped to the
// Services whose selectors match the pod's old or new labels (through the
// selectorindex indexes here), each Service is synced from the informer
// caches, the subsets are repacked into canonical form and written only
// when they, the labels or the over-capacity annotation differ. Terminating
// pods are left out unless publishNotReadyAddresses is set; at most 1000
// addresses are kept (endpoints.kubernetes.io/over-capacity: truncated).
// The endpoints.kubernetes.io/last-change-trigger-time annotation carries
// the earliest pod-readiness or Service-creation change not yet published.
// After a write the controller remembers the resourceVersion it replaced,
// and retries later when the cache still shows it (stale cache), so it never
// writes from outdated state. Endpoints of deleted Services are deleted, and
// at start every Endpoints is checked once for a leftover of a Service
// deleted while the controller was down.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	endpointslicerec "k8s.io/endpointslice"
	endpointsliceutil "k8s.io/endpointslice/util"
	utilnet "k8s.io/utils/net"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/selectorindex"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

const (
	// ControllerName is the endpoints.kubernetes.io/managed-by value of the
	// Endpoints this controller writes.
	ControllerName = "endpoint-controller"
	// LabelManagedBy marks Endpoints written by this controller.
	LabelManagedBy = "endpoints.kubernetes.io/managed-by"

	// maxCapacity is the most addresses kept in one Endpoints.
	maxCapacity = 1000
	// truncated is the endpoints.kubernetes.io/over-capacity value.
	truncated = "truncated"

	// maxRetries bounds the retries of one Service (5 ms doubling).
	maxRetries = 15
)

// Config configures a Controller.
type Config struct {
	// Logger receives the controller's logs (default slog.Default()).
	Logger *slog.Logger
	// EndpointUpdatesBatchPeriod delays syncs triggered by pod changes
	// (--endpoint-updates-batch-period, default 0).
	EndpointUpdatesBatchPeriod time.Duration
}

// Controller keeps the Endpoints of selector Services.
type Controller struct {
	factory informers.SharedInformerFactory
	client  kubernetes.Interface
	logger  *slog.Logger

	eventBroadcaster record.EventBroadcaster
	eventRecorder    record.EventRecorder

	serviceLister   corelisters.ServiceLister
	serviceIndexer  cache.Indexer
	podIndexer      cache.Indexer
	endpointsLister corelisters.EndpointsLister
	synced          []cache.InformerSynced

	queue    workqueue.TypedRateLimitingInterface[string]
	podQueue workqueue.TypedRateLimitingInterface[*endpointsliceutil.PodProjectionKey]

	triggerTimeTracker *endpointsliceutil.TriggerTimeTracker
	stale              staleTracker
	cacheBehind        workqueue.TypedRateLimiter[string] // retries while stale shows our replaced writes

	endpointUpdatesBatchPeriod time.Duration
	workerLoopPeriod           time.Duration
}

// New builds the controller and registers its informer handlers (and
// indexes) on factory; call it before starting factory. Run starts the
// factory too, which is harmless if the caller already did.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	if client == nil || factory == nil {
		return nil, errors.New("endpoints: a client and an informer factory are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	broadcaster := record.NewBroadcaster()
	c := &Controller{
		factory:          factory,
		client:           client,
		logger:           logger.With("component", "endpoints-controller"),
		eventBroadcaster: broadcaster,
		eventRecorder:    broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: ControllerName}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoint"},
		),
		podQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[*endpointsliceutil.PodProjectionKey](),
			workqueue.TypedRateLimitingQueueConfig[*endpointsliceutil.PodProjectionKey]{Name: "endpoint_pod"},
		),
		triggerTimeTracker:         endpointsliceutil.NewTriggerTimeTracker(),
		stale:                      staleTracker{rv: map[types.NamespacedName]string{}},
		cacheBehind:                ctrlqueue.NewCacheBehindBackoff(),
		endpointUpdatesBatchPeriod: cfg.EndpointUpdatesBatchPeriod,
		workerLoopPeriod:           time.Second,
	}

	svcInformer := factory.Core().V1().Services()
	podInformer := factory.Core().V1().Pods()
	epInformer := factory.Core().V1().Endpoints()
	if err := selectorindex.AddServiceIndex(svcInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}
	if err := selectorindex.AddPodIndex(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.queueKey,
			UpdateFunc: func(_, cur interface{}) { c.queueKey(cur) },
			DeleteFunc: c.queueKey,
		}},
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj interface{}) { c.onPodUpdate(nil, obj) },
			UpdateFunc: c.onPodUpdate,
			DeleteFunc: func(obj interface{}) { c.onPodUpdate(obj, nil) },
		}},
		// Someone deleting our Endpoints gets them back.
		{epInformer.Informer(), cache.ResourceEventHandlerFuncs{DeleteFunc: c.queueKey}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("endpoints: add event handler: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	c.serviceLister = svcInformer.Lister()
	c.serviceIndexer = svcInformer.Informer().GetIndexer()
	c.podIndexer = podInformer.Informer().GetIndexer()
	c.endpointsLister = epInformer.Lister()
	return c, nil
}

// Run processes Services until ctx is cancelled; workers is the number
// synced in parallel (--concurrent-endpoint-syncs, default 5).
func (c *Controller) Run(ctx context.Context, workers int) {
	c.eventBroadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.eventBroadcaster.Shutdown()

	c.logger.Info("starting")
	var wg sync.WaitGroup
	defer func() {
		c.queue.ShutDown()
		c.podQueue.ShutDown()
		wg.Wait()
		c.logger.Info("stopped")
	}()
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	if workers < 1 {
		workers = 1
	}
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, c.workerLoopPeriod) })
		wg.Go(func() { wait.UntilWithContext(ctx, c.podWorker, c.workerLoopPeriod) })
	}
	c.checkLeftoverEndpoints()
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	ctrlqueue.Worker{Queue: c.queue, Sync: c.syncService, MaxRetries: maxRetries, CacheBehind: c.cacheBehind,
		OnError: func(key string, err error, retries int, dropped bool) {
			if dropped {
				c.logger.Error("dropping service out of the queue", "service", key, "err", err)
			} else {
				c.logger.Debug("error syncing endpoints, retrying", "service", key, "retries", retries, "err", err)
			}
		}}.Run(ctx)
}

// syncService writes the Endpoints of one Service.
func (c *Controller) syncService(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return fmt.Errorf("endpoints: bad key %q: %w", key, err)
	}
	service, err := c.serviceLister.Services(namespace).Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpoints: get service %s: %w", key, err)
		}
		// The Service is gone: so are its Endpoints. (A Service deleted
		// while we were down is caught by checkLeftoverEndpoints.)
		err := c.client.CoreV1().Endpoints(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpoints: delete %s: %w", key, err)
		}
		c.triggerTimeTracker.DeleteService(namespace, name)
		c.stale.forget(namespace, name)
		return nil
	}
	if service.Spec.Type == corev1.ServiceTypeExternalName || service.Spec.Selector == nil {
		// No endpoints from us: ExternalName has none, and a Service
		// without a selector gets hand-written Endpoints.
		return nil
	}

	pods, err := selectorindex.PodsForSelector(c.podIndexer, namespace, service.Spec.Selector)
	if err != nil {
		return fmt.Errorf("endpoints: %w", err)
	}
	// Computed even when nothing is written, so the tracker moves on.
	trigger := c.triggerTimeTracker.ComputeEndpointLastChangeTriggerTime(namespace, service, pods)
	subsets, ready, notReady := desiredSubsets(service, pods)

	current, err := c.endpointsLister.Endpoints(namespace).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		current = &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: service.Labels}}
	case err != nil:
		return fmt.Errorf("endpoints: get %s: %w", key, err)
	case c.stale.isStale(current):
		return fmt.Errorf("endpoints: cache still shows resourceVersion %s of %s, already replaced: %w", current.ResourceVersion, key, ctrlqueue.ErrCacheBehind)
	}
	create := current.ResourceVersion == ""
	if !create &&
		(subsetsEqual(current.Subsets, subsets) || subsetsEqual(RepackSubsets(current.Subsets), subsets)) &&
		labelsCorrect(current.Labels, service.Labels) &&
		capacityAnnotationCorrect(current.Annotations, current.Subsets) {
		return nil
	}

	next := current.DeepCopy()
	next.Subsets = subsets
	next.Labels = map[string]string{}
	for k, v := range service.Labels {
		next.Labels[k] = v
	}
	if !serviceIPSet(service) {
		next.Labels[corev1.IsHeadlessService] = ""
	} else {
		delete(next.Labels, corev1.IsHeadlessService)
	}
	next.Labels[LabelManagedBy] = ControllerName
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	if !trigger.IsZero() {
		next.Annotations[corev1.EndpointsLastChangeTriggerTime] = trigger.UTC().Format(time.RFC3339Nano)
	} else {
		delete(next.Annotations, corev1.EndpointsLastChangeTriggerTime)
	}
	if truncateEndpoints(next) {
		next.Annotations[corev1.EndpointsOverCapacity] = truncated
	} else {
		delete(next.Annotations, corev1.EndpointsOverCapacity)
	}

	c.logger.Debug("writing endpoints", "service", key, "ready", ready, "notReady", notReady)
	var updated *corev1.Endpoints
	if create {
		_, err = c.client.CoreV1().Endpoints(namespace).Create(ctx, next, metav1.CreateOptions{})
	} else {
		updated, err = c.client.CoreV1().Endpoints(namespace).Update(ctx, next, metav1.UpdateOptions{})
	}
	if err != nil {
		if create && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil // the namespace is going away; so will this Service
		}
		reason, verb := "FailedToUpdateEndpoint", "update"
		if create {
			reason, verb = "FailedToCreateEndpoint", "create"
		}
		c.eventRecorder.Eventf(next, corev1.EventTypeWarning, reason, "Failed to %s endpoint %s/%s: %v", verb, namespace, name, err)
		return fmt.Errorf("endpoints: %s %s: %w", verb, key, err)
	}
	if updated != nil && updated.ResourceVersion != current.ResourceVersion {
		c.stale.markStale(current)
	}
	return nil
}

// desiredSubsets builds the repacked subsets for a Service's pods and
// counts the ready and not-ready addresses.
func desiredSubsets(service *corev1.Service, pods []*corev1.Pod) (subsets []corev1.EndpointSubset, ready, notReady int) {
	publishNotReady := service.Spec.PublishNotReadyAddresses
	for _, pod := range pods {
		if !endpointsliceutil.ShouldPodBeInEndpoints(pod, publishNotReady) {
			continue
		}
		addr, ok := podAddress(service, pod)
		if !ok {
			continue // no IP of the Service's family (dual-stack mismatch)
		}
		if endpointsliceutil.ShouldSetHostname(pod, service) {
			addr.Hostname = pod.Spec.Hostname
		}
		isReady := publishNotReady || endpointsliceutil.IsPodReady(pod)
		add := func(ports []corev1.EndpointPort) {
			ss := corev1.EndpointSubset{Ports: ports}
			if isReady {
				ss.Addresses = []corev1.EndpointAddress{addr}
				ready++
			} else {
				ss.NotReadyAddresses = []corev1.EndpointAddress{addr}
				notReady++
			}
			subsets = append(subsets, ss)
		}
		if len(service.Spec.Ports) == 0 {
			// Headless Services may have no ports.
			if service.Spec.ClusterIP == corev1.ClusterIPNone {
				add(nil)
			}
			continue
		}
		for i := range service.Spec.Ports {
			sp := &service.Spec.Ports[i]
			port, err := endpointslicerec.FindPort(pod, sp)
			if err != nil {
				continue // this pod does not offer that named port
			}
			add([]corev1.EndpointPort{{Name: sp.Name, Port: int32(port), Protocol: sp.Protocol, AppProtocol: sp.AppProtocol}})
		}
	}
	return RepackSubsets(subsets), ready, notReady
}

// podAddress is the pod's address of the Service's primary IP family.
func podAddress(svc *corev1.Service, pod *corev1.Pod) (corev1.EndpointAddress, bool) {
	wantV6 := false
	switch {
	case len(svc.Spec.IPFamilies) > 0:
		wantV6 = svc.Spec.IPFamilies[0] == corev1.IPv6Protocol
	case svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone:
		wantV6 = utilnet.IsIPv6String(svc.Spec.ClusterIP)
	default:
		wantV6 = utilnet.IsIPv6String(pod.Status.PodIP)
	}
	ips := pod.Status.PodIPs
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	for _, p := range ips {
		ip := utilnet.ParseIPSloppy(p.IP)
		if ip != nil && utilnet.IsIPv6(ip) == wantV6 {
			nodeName := pod.Spec.NodeName
			return corev1.EndpointAddress{
				IP:       ip.String(),
				NodeName: &nodeName,
				TargetRef: &corev1.ObjectReference{
					Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
				},
			}, true
		}
	}
	return corev1.EndpointAddress{}, false
}

func serviceIPSet(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.ClusterIP != ""
}

// subsetsEqual compares subsets ignoring the targetRefs' resourceVersion.
func subsetsEqual(a, b []corev1.EndpointSubset) bool {
	return ignoreRV.DeepEqual(a, b)
}

var ignoreRV = conversion.EqualitiesOrDie(func(a, b corev1.ObjectReference) bool {
	a.ResourceVersion, b.ResourceVersion = "", ""
	return a == b
})

// labelsCorrect reports whether epLabels are the Service's labels plus our
// managed-by label (and the headless label, which is not compared).
func labelsCorrect(epLabels, svcLabels map[string]string) bool {
	if epLabels[LabelManagedBy] != ControllerName {
		return false
	}
	skipped := 0
	for k, v := range epLabels {
		if k == corev1.IsHeadlessService || k == LabelManagedBy {
			skipped++
		} else if sv, ok := svcLabels[k]; !ok || sv != v {
			return false
		}
	}
	return len(svcLabels) == len(epLabels)-skipped
}

func capacityAnnotationCorrect(annotations map[string]string, subsets []corev1.EndpointSubset) bool {
	n := 0
	for _, ss := range subsets {
		n += len(ss.Addresses) + len(ss.NotReadyAddresses)
	}
	if n > maxCapacity {
		return false
	}
	_, ok := annotations[corev1.EndpointsOverCapacity]
	return !ok
}

// truncateEndpoints keeps at most maxCapacity addresses, preferring ready
// ones and cutting each subset in proportion to its size; it reports
// whether anything was cut.
func truncateEndpoints(ep *corev1.Endpoints) bool {
	totalReady, totalNotReady := 0, 0
	for _, ss := range ep.Subsets {
		totalReady += len(ss.Addresses)
		totalNotReady += len(ss.NotReadyAddresses)
	}
	if totalReady+totalNotReady <= maxCapacity {
		return false
	}
	truncateReady := totalReady > maxCapacity
	limit, total := maxCapacity-totalReady, totalNotReady
	if truncateReady {
		limit, total = maxCapacity, totalReady
	}
	left := limit
	for i := range ep.Subsets {
		ss := &ep.Subsets[i]
		n := len(ss.NotReadyAddresses)
		if truncateReady {
			n = len(ss.Addresses)
		}
		keep := min(int(math.Ceil(float64(n)/float64(total)*float64(limit))), left)
		if truncateReady {
			ss.Addresses = ss.Addresses[:min(keep, len(ss.Addresses))]
			ss.NotReadyAddresses = nil
			left -= len(ss.Addresses)
		} else {
			ss.NotReadyAddresses = ss.NotReadyAddresses[:min(keep, len(ss.NotReadyAddresses))]
			left -= len(ss.NotReadyAddresses)
		}
	}
	return true
}

func (c *Controller) podWorker(ctx context.Context) {
	for {
		key, quit := c.podQueue.Get()
		if quit {
			return
		}
		services, err := selectorindex.ServicesToUpdate(c.serviceIndexer, key)
		if err != nil {
			c.logger.Error("mapping pod to services", "namespace", key.Namespace, "err", err)
			c.podQueue.AddRateLimited(key)
		} else {
			for svc := range services {
				c.queue.AddAfter(svc, c.endpointUpdatesBatchPeriod)
			}
			c.podQueue.Forget(key)
		}
		c.podQueue.Done(key)
	}
}

// checkLeftoverEndpoints queues every Endpoints once at start, so those of
// Services deleted while the controller was down are removed. Leader
// election records (Endpoints without a Service) are skipped.
func (c *Controller) checkLeftoverEndpoints() {
	list, err := c.endpointsLister.List(labels.Everything())
	if err != nil {
		c.logger.Error("listing endpoints; orphans will not be cleaned up", "err", err)
		return
	}
	for _, ep := range list {
		if _, ok := ep.Annotations[resourcelock.LeaderElectionRecordAnnotationKey]; ok {
			continue
		}
		c.queueKey(ep)
	}
}

func (c *Controller) queueKey(obj interface{}) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		c.logger.Error("object key", "err", err)
		return
	}
	c.queue.Add(key)
}

func (c *Controller) onPodUpdate(old, cur interface{}) {
	if key := endpointsliceutil.GetPodUpdateProjectionKey(old, cur); key != nil {
		c.podQueue.Add(key)
	}
}

// staleTracker remembers, per Endpoints, the resourceVersion our last write
// replaced: seeing it again in the cache means the cache is behind.
type staleTracker struct {
	mu sync.Mutex // guards rv
	rv map[types.NamespacedName]string
}

func (t *staleTracker) markStale(ep *corev1.Endpoints) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rv[types.NamespacedName{Namespace: ep.Namespace, Name: ep.Name}] = ep.ResourceVersion
}

func (t *staleTracker) isStale(ep *corev1.Endpoints) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	rv, ok := t.rv[types.NamespacedName{Namespace: ep.Namespace, Name: ep.Name}]
	return ok && rv == ep.ResourceVersion
}

func (t *staleTracker) forget(namespace, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.rv, types.NamespacedName{Namespace: namespace, Name: name})
}
