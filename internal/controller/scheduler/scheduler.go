// Package scheduler binds pods to nodes: a small kube-scheduler for process
// pods. A pod with no spec.nodeName whose schedulerName is ours
// ("default-scheduler", the API default) goes to a node that fits and is
// least crowded.
//
// Filtering follows kube-scheduler's default plugins, in its order:
// NodeUnschedulable (spec.unschedulable unless tolerated), TaintToleration
// (NoSchedule/NoExecute taints, plus the not-ready/unreachable taint on a node
// that is not Ready, even before the lifecycle controller writes it), and
// NodeAffinity (nodeSelector and required node affinity). There are no
// resource or port checks: svcnet pods are processes.
//
// Scoring spreads: fewest pods of the same group on the node (same
// controller ownerReference, else same labels), then fewest pods overall,
// then node name. Counts come from a cache fed by the pod informer plus the
// pods this scheduler has just bound ("assumed", as upstream), so a burst of
// pods from one ReplicaSet spreads even before the informer catches up.
// Decisions are made one at a time under the mutex.
//
// Binding: svcnet has no pods/binding subresource; the API server lets
// spec.nodeName be set once, from empty, by an ordinary update. The update
// carries the resourceVersion the decision was based on, so two schedulers
// cannot both bind a pod. Then PodScheduled=True is written through
// pods/status and a Normal "Scheduled" event recorded, as upstream.
//
// When nothing fits, the pod stays Pending with PodScheduled=False, reason
// Unschedulable and upstream's message ("0/3 nodes are available: 3 node(s)
// didn't match Pod's node affinity/selector."), plus a Warning event
// FailedScheduling. Unschedulable pods are retried when a node is added,
// deleted, or changes labels, taints, schedulability or readiness, and
// when the pod's own spec changes; never in a loop.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

// Name is the controller's name for --controllers and logs.
const Name = "scheduler"

// DefaultSchedulerName is the schedulerName the API server defaults pods to.
const DefaultSchedulerName = v1.DefaultSchedulerName

// Event reasons and condition reasons, as upstream.
const (
	ReasonScheduled        = "Scheduled"
	ReasonFailedScheduling = "FailedScheduling"
)

// Config configures the scheduler.
type Config struct {
	// SchedulerName is the spec.schedulerName served; empty means
	// "default-scheduler".
	SchedulerName string
	// Logger is required; the scheduler adds a component attribute.
	Logger *slog.Logger
	// Recorder, when set, records events; otherwise the scheduler starts
	// its own event broadcaster for the duration of Run.
	Recorder record.EventRecorder
}

// Scheduler binds pending pods to nodes.
type Scheduler struct {
	name         string
	client       kubernetes.Interface
	factory      informers.SharedInformerFactory
	podInformer  cache.SharedIndexInformer
	nodeInformer cache.SharedIndexInformer
	podLister    corelisters.PodLister
	nodeLister   corelisters.NodeLister
	queue        workqueue.TypedRateLimitingInterface[string]
	log          *slog.Logger
	recorder     record.EventRecorder
	broadcaster  record.EventBroadcaster // nil when Config.Recorder was given
	handlers     []func()                // remove the informer handlers
	synced       []cache.InformerSynced

	mu            sync.Mutex // guards the fields below
	cache         *podCache
	unschedulable map[string]struct{} // pod keys waiting for a node change
}

// New builds the scheduler and registers its informer handlers; call it
// before the informer factory is started (Run starts it too, which is
// harmless if the caller already did).
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Scheduler, error) {
	if cfg.Logger == nil {
		return nil, errors.New("scheduler: Config.Logger is required")
	}
	if cfg.SchedulerName == "" {
		cfg.SchedulerName = DefaultSchedulerName
	}
	pods, nodes := factory.Core().V1().Pods(), factory.Core().V1().Nodes()
	s := &Scheduler{
		name:         cfg.SchedulerName,
		client:       client,
		factory:      factory,
		podInformer:  pods.Informer(),
		nodeInformer: nodes.Informer(),
		podLister:    pods.Lister(),
		nodeLister:   nodes.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		log:           cfg.Logger.With("component", Name),
		recorder:      cfg.Recorder,
		cache:         newPodCache(),
		unschedulable: map[string]struct{}{},
	}
	if s.recorder == nil {
		s.broadcaster = record.NewBroadcaster()
		s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: cfg.SchedulerName})
	}
	if err := s.addHandler(s.podInformer, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.podChanged(nil, obj.(*v1.Pod)) },
		UpdateFunc: func(old, obj any) { s.podChanged(old.(*v1.Pod), obj.(*v1.Pod)) },
		DeleteFunc: s.podDeleted,
	}); err != nil {
		return nil, err
	}
	if err := s.addHandler(s.nodeInformer, cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.retryUnschedulable() },
		UpdateFunc: func(old, obj any) {
			if nodeSchedulingChanged(old.(*v1.Node), obj.(*v1.Node)) {
				s.retryUnschedulable()
			}
		},
		DeleteFunc: func(any) { s.retryUnschedulable() },
	}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Scheduler) addHandler(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
	reg, err := inf.AddEventHandler(h)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.handlers = append(s.handlers, func() { _ = inf.RemoveEventHandler(reg) })
	s.synced = append(s.synced, inf.HasSynced, reg.HasSynced)
	return nil
}

// ours reports whether the pod waits for this scheduler.
func (s *Scheduler) ours(pod *v1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil && !terminal(pod) &&
		(pod.Spec.SchedulerName == s.name || (pod.Spec.SchedulerName == "" && s.name == DefaultSchedulerName))
}

// staleUnschedulable reports a bound pod still carrying our Unschedulable
// condition (its status write after binding failed).
func staleUnschedulable(pod *v1.Pod) bool {
	c := podScheduledCondition(pod)
	return pod.Spec.NodeName != "" && c != nil && c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable
}

func (s *Scheduler) podChanged(old, pod *v1.Pod) {
	s.mu.Lock()
	s.cache.observe(pod)
	s.mu.Unlock()
	switch {
	case !s.ours(pod):
		if staleUnschedulable(pod) {
			s.enqueue(pod)
		}
	case old == nil || !s.ours(old):
		s.enqueue(pod)
	case !apiequality.Semantic.DeepEqual(old.Spec, pod.Spec) || !apiequality.Semantic.DeepEqual(old.Labels, pod.Labels):
		s.enqueue(pod) // tolerations added or scheduling gates removed
	}
}

func (s *Scheduler) podDeleted(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if pod, ok = tomb.Obj.(*v1.Pod); !ok {
			return
		}
	}
	s.mu.Lock()
	s.cache.remove(pod.UID)
	delete(s.unschedulable, pod.Namespace+"/"+pod.Name)
	s.mu.Unlock()
}

func (s *Scheduler) enqueue(pod *v1.Pod) {
	s.queue.Add(pod.Namespace + "/" + pod.Name)
}

func (s *Scheduler) retryUnschedulable() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.unschedulable {
		s.queue.Add(key)
	}
}

// nodeSchedulingChanged reports a change that can make a pod fit.
func nodeSchedulingChanged(old, node *v1.Node) bool {
	return old.Spec.Unschedulable != node.Spec.Unschedulable ||
		readyStatus(old) != readyStatus(node) ||
		!apiequality.Semantic.DeepEqual(old.Labels, node.Labels) ||
		!apiequality.Semantic.DeepEqual(old.Spec.Taints, node.Spec.Taints)
}

// Run waits for the caches, then schedules with workers until ctx is done.
func (s *Scheduler) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer s.queue.ShutDown()
	defer func() {
		for _, remove := range s.handlers {
			remove()
		}
	}()
	if s.broadcaster != nil {
		s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
		defer s.broadcaster.Shutdown()
	}
	s.factory.Start(ctx.Done())
	s.log.Info("starting", "schedulerName", s.name)
	defer s.log.Info("stopped")
	if !cache.WaitForNamedCacheSync(Name, ctx.Done(), s.synced...) {
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() { wait.UntilWithContext(ctx, s.worker, time.Second) })
	}
	<-ctx.Done()
	s.queue.ShutDown()
	wg.Wait()
}

func (s *Scheduler) worker(ctx context.Context) {
	ctrlqueue.Worker{Queue: s.queue, Sync: s.sync, OnError: func(key string, err error, _ int, _ bool) {
		s.log.Info("scheduling failed, will retry", "pod", key, "err", err)
	}}.Run(ctx)
}

func (s *Scheduler) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := s.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		s.mu.Lock()
		delete(s.unschedulable, key)
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	if !s.ours(pod) {
		s.mu.Lock()
		delete(s.unschedulable, key)
		s.mu.Unlock()
		if staleUnschedulable(pod) {
			return s.setCondition(ctx, pod, v1.PodCondition{Type: v1.PodScheduled, Status: v1.ConditionTrue})
		}
		return nil
	}
	if len(pod.Spec.SchedulingGates) > 0 {
		return s.setCondition(ctx, pod, v1.PodCondition{
			Type: v1.PodScheduled, Status: v1.ConditionFalse, Reason: v1.PodReasonSchedulingGated,
			Message: "Scheduling is blocked due to non-empty scheduling gates",
		})
	}

	node, msg, err := s.decide(pod)
	if err != nil {
		return err
	}
	if node == "" {
		if msg == "" {
			return nil // already bound by us; the informer has not caught up
		}
		s.recorder.Event(pod, v1.EventTypeWarning, ReasonFailedScheduling, msg)
		s.log.Info("unschedulable", "pod", key, "reason", msg)
		return s.setCondition(ctx, pod, v1.PodCondition{
			Type: v1.PodScheduled, Status: v1.ConditionFalse, Reason: v1.PodReasonUnschedulable, Message: msg,
		})
	}
	return s.bind(ctx, pod, node)
}

// decide picks a node for pod and assumes the pod bound there; with no node
// it returns the reason (or "" if the pod is already assumed bound).
func (s *Scheduler) decide(pod *v1.Pod) (node, msg string, err error) {
	nodes, err := s.nodeLister.List(labels.Everything())
	if err != nil {
		return "", "", fmt.Errorf("scheduler: listing nodes: %w", err)
	}
	key := pod.Namespace + "/" + pod.Name
	group := groupKey(pod)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache.assumed(pod.UID) {
		return "", "", nil
	}
	reasons := map[string]int{}
	var best *candidate
	for _, n := range nodes {
		if r := filter(pod, n); r != "" {
			reasons[r]++
			continue
		}
		c := candidate{name: n.Name, total: s.cache.total[n.Name]}
		if group != "" {
			c.group = s.cache.byGroup[n.Name][group]
		}
		if best == nil || c.better(*best) {
			best = &c
		}
	}
	if best == nil {
		s.unschedulable[key] = struct{}{}
		return "", fitError(len(nodes), reasons), nil
	}
	delete(s.unschedulable, key)
	s.cache.set(pod.UID, cachedPod{node: best.name, group: group, assumed: true})
	return best.name, "", nil
}

// bind sets spec.nodeName with the resourceVersion the decision saw, then
// PodScheduled=True.
func (s *Scheduler) bind(ctx context.Context, pod *v1.Pod, node string) error {
	upd := pod.DeepCopy()
	upd.Spec.NodeName = node
	bound, err := s.client.CoreV1().Pods(pod.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		s.mu.Lock()
		if s.cache.assumed(pod.UID) {
			s.cache.remove(pod.UID)
		}
		s.mu.Unlock()
		if apierrors.IsNotFound(err) {
			return nil
		}
		// A conflict means the pod changed (or another scheduler bound it):
		// decide again from the fresh state.
		return fmt.Errorf("scheduler: binding %s/%s to %s: %w", pod.Namespace, pod.Name, node, err)
	}
	s.log.Info("bound", "pod", pod.Namespace+"/"+pod.Name, "node", node)
	s.recorder.Eventf(bound, v1.EventTypeNormal, ReasonScheduled, "Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
	return s.setCondition(ctx, bound, v1.PodCondition{Type: v1.PodScheduled, Status: v1.ConditionTrue})
}

func podScheduledCondition(pod *v1.Pod) *v1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == v1.PodScheduled {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// setCondition writes cond into pod's status unless it is already there,
// re-reading the pod on conflicts.
func (s *Scheduler) setCondition(ctx context.Context, pod *v1.Pod, cond v1.PodCondition) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := podScheduledCondition(pod)
		if cur != nil && cur.Status == cond.Status && cur.Reason == cond.Reason && cur.Message == cond.Message {
			return nil
		}
		if cond.Status == v1.ConditionFalse && pod.Spec.NodeName != "" {
			return nil // bound meanwhile (re-read after a conflict)
		}
		upd := pod.DeepCopy()
		now := metav1.Now()
		cond.LastTransitionTime = now
		if cur != nil && cur.Status == cond.Status {
			cond.LastTransitionTime = cur.LastTransitionTime
		}
		if cond.Status == v1.ConditionFalse {
			cond.LastProbeTime = now
		}
		if c := podScheduledCondition(upd); c != nil {
			*c = cond
		} else {
			upd.Status.Conditions = append(upd.Status.Conditions, cond)
		}
		_, err := s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			fresh, gerr := s.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if gerr != nil {
				return gerr
			}
			pod = fresh
		}
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scheduler: setting PodScheduled on %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
