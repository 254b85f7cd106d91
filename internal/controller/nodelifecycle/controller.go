// Package nodelifecycle watches node heartbeats, as kube-controller-manager's
// node lifecycle controller does, without the pod eviction part.
//
// Health (monitor.go): every NodeMonitorPeriod one goroutine looks at each
// Node. A sign of life is a renewed Lease kube-node-lease/<node> (a newer
// spec.renewTime) or a new lastHeartbeatTime on the node's Ready condition;
// the time of the last one is taken from this controller's own clock, so
// clock skew between machines does not matter, and every node gets a full
// grace period after a controller restart. A node silent for longer than
// NodeMonitorGracePeriod (NodeStartupGracePeriod if it never posted a Ready
// condition) has its Ready, MemoryPressure, DiskPressure and PIDPressure
// conditions set to Unknown with upstream's reason NodeStatusUnknown and
// message "Kubelet stopped posting node status.". When this flips Ready away
// from True, the node gets an event NodeNotReady and every pod on it gets
// Ready=False (upstream's MarkPodsNotReady), so its endpoints become not
// ready; failed pod updates are retried on the next pass.
//
// Taints (taint.go): a workqueue keyed by node name keeps the NoSchedule
// taints that mirror node state (upstream's doNoScheduleTaintingPass):
// node.kubernetes.io/not-ready for Ready=False, unreachable for
// Ready=Unknown, memory-/disk-/pid-pressure and network-unavailable for
// those conditions, and unschedulable for spec.unschedulable. Taint changes
// are written with the node's resourceVersion.
//
// Recovery is the agent's job, as upstream's is the kubelet's: once the
// lease is renewed and the node posts Ready=True, the unreachable taint
// goes, and the agent marks its pods ready again.
//
// Not done: NoExecute taints and pod eviction (taint-eviction-controller),
// zone disruption handling.
package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Name is the controller's name for --controllers and logs.
const Name = "node-lifecycle"

// Defaults, as kube-controller-manager's.
const (
	DefaultNodeMonitorGracePeriod = 40 * time.Second
	DefaultNodeStartupGracePeriod = 60 * time.Second
	DefaultNodeMonitorPeriod      = 5 * time.Second
)

// podNodeNameIndex indexes pods by spec.nodeName.
const podNodeNameIndex = "spec.nodeName"

// Config configures the controller.
type Config struct {
	// NodeMonitorGracePeriod: how long a node may stay silent before it is
	// marked Unknown; 0 means 40s.
	NodeMonitorGracePeriod time.Duration
	// NodeStartupGracePeriod: the same for a node that never posted a
	// Ready condition; 0 means 60s, or the monitor grace period if larger.
	NodeStartupGracePeriod time.Duration
	// NodeMonitorPeriod: how often nodes are checked; 0 means 5s, or an
	// eighth of the grace period if that is shorter.
	NodeMonitorPeriod time.Duration
	// Logger is required; the controller adds a component attribute.
	Logger *slog.Logger
	// Recorder, when set, records events; otherwise the controller starts
	// its own event broadcaster for the duration of Run.
	Recorder record.EventRecorder
}

// Controller marks silent nodes Unknown and keeps their taints.
type Controller struct {
	cfg           Config
	client        kubernetes.Interface
	factory       informers.SharedInformerFactory
	nodeInformer  cache.SharedIndexInformer
	leaseInformer cache.SharedIndexInformer
	podInformer   cache.SharedIndexInformer
	nodeLister    corelisters.NodeLister
	leaseLister   coordlisters.LeaseLister
	podLister     corelisters.PodLister
	taintQueue    workqueue.TypedRateLimitingInterface[string]
	log           *slog.Logger
	recorder      record.EventRecorder
	broadcaster   record.EventBroadcaster // nil when Config.Recorder was given
	handler       cache.ResourceEventHandlerRegistration
	now           func() time.Time

	// Owned by the monitor goroutine; no lock.
	health map[string]*nodeHealth
	retry  map[string]bool // nodes whose pods still need marking not ready
}

// New builds the controller and registers its informer handlers and the pod
// index; call it before the informer factory is started (Run starts it too,
// which is harmless if the caller already did).
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	if cfg.Logger == nil {
		return nil, errors.New("nodelifecycle: Config.Logger is required")
	}
	if cfg.NodeMonitorGracePeriod <= 0 {
		cfg.NodeMonitorGracePeriod = DefaultNodeMonitorGracePeriod
	}
	if cfg.NodeStartupGracePeriod <= 0 {
		cfg.NodeStartupGracePeriod = max(DefaultNodeStartupGracePeriod, cfg.NodeMonitorGracePeriod)
	}
	if cfg.NodeMonitorPeriod <= 0 {
		cfg.NodeMonitorPeriod = min(DefaultNodeMonitorPeriod, max(cfg.NodeMonitorGracePeriod/8, 10*time.Millisecond))
	}
	nodes := factory.Core().V1().Nodes()
	leases := factory.Coordination().V1().Leases()
	pods := factory.Core().V1().Pods()
	c := &Controller{
		cfg:           cfg,
		client:        client,
		factory:       factory,
		nodeInformer:  nodes.Informer(),
		leaseInformer: leases.Informer(),
		podInformer:   pods.Informer(),
		nodeLister:    nodes.Lister(),
		leaseLister:   leases.Lister(),
		podLister:     pods.Lister(),
		taintQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		log:      cfg.Logger.With("component", Name),
		recorder: cfg.Recorder,
		now:      time.Now,
		health:   map[string]*nodeHealth{},
		retry:    map[string]bool{},
	}
	if c.recorder == nil {
		c.broadcaster = record.NewBroadcaster()
		c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "node-controller"})
	}
	if _, ok := c.podInformer.GetIndexer().GetIndexers()[podNodeNameIndex]; !ok {
		// Fails only if the informer already runs; podsOnNode then scans.
		if err := c.podInformer.AddIndexers(cache.Indexers{podNodeNameIndex: indexPodByNode}); err != nil {
			c.log.Warn("pod index by node not added; will scan all pods", "err", err)
		}
	}
	var err error
	c.handler, err = c.nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueTaint,
		UpdateFunc: func(old, obj any) {
			o, n := old.(*v1.Node), obj.(*v1.Node)
			if o.Spec.Unschedulable != n.Spec.Unschedulable ||
				!apiequality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) ||
				!apiequality.Semantic.DeepEqual(taintConditions(o), taintConditions(n)) {
				c.enqueueTaint(obj)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("nodelifecycle: %w", err)
	}
	return c, nil
}

func indexPodByNode(obj any) ([]string, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{pod.Spec.NodeName}, nil
}

func (c *Controller) enqueueTaint(obj any) {
	if n, ok := obj.(*v1.Node); ok {
		c.taintQueue.Add(n.Name)
	}
}

// Run waits for the caches, then runs the taint workers and the health
// monitor until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.taintQueue.ShutDown()
	defer func() { _ = c.nodeInformer.RemoveEventHandler(c.handler) }()
	if c.broadcaster != nil {
		c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer c.broadcaster.Shutdown()
	}
	c.factory.Start(ctx.Done())
	c.log.Info("starting", "gracePeriod", c.cfg.NodeMonitorGracePeriod, "monitorPeriod", c.cfg.NodeMonitorPeriod)
	defer c.log.Info("stopped")
	if !cache.WaitForNamedCacheSync(Name, ctx.Done(), c.nodeInformer.HasSynced, c.leaseInformer.HasSynced,
		c.podInformer.HasSynced, c.handler.HasSynced) {
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() { wait.UntilWithContext(ctx, c.taintWorker, time.Second) })
	}
	wg.Go(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			if err := c.monitor(ctx); err != nil {
				c.log.Error("monitoring node health", "err", err)
			}
		}, c.cfg.NodeMonitorPeriod)
	})
	<-ctx.Done()
	c.taintQueue.ShutDown()
	wg.Wait()
}

// lease returns the node's heartbeat lease, or nil.
func (c *Controller) lease(name string) *coordinationv1.Lease {
	l, err := c.leaseLister.Leases(v1.NamespaceNodeLease).Get(name)
	if err != nil {
		return nil
	}
	return l
}

// podsOnNode lists the pods bound to a node.
func (c *Controller) podsOnNode(name string) ([]*v1.Pod, error) {
	if objs, err := c.podInformer.GetIndexer().ByIndex(podNodeNameIndex, name); err == nil {
		pods := make([]*v1.Pod, 0, len(objs))
		for _, o := range objs {
			if p, ok := o.(*v1.Pod); ok {
				pods = append(pods, p)
			}
		}
		return pods, nil
	}
	all, err := c.podLister.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("nodelifecycle: listing pods: %w", err)
	}
	var pods []*v1.Pod
	for _, p := range all {
		if p.Spec.NodeName == name {
			pods = append(pods, p)
		}
	}
	return pods, nil
}
