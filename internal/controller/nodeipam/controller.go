// Package nodeipam gives every Node its pod CIDR: spec.podCIDR and
// spec.podCIDRs, one subnet (NodeCIDRMaskSize, /24 by default) of each
// cluster CIDR (10.244.0.0/16 by default; a comma list makes it dual-stack),
// as kube-controller-manager's range allocator does. The node agent takes
// pod addresses from it and routes other nodes' subnets to them.
//
// Design:
//
//   - One cidrSet (cidrset.go) per cluster CIDR records the taken subnets;
//     owners maps each taken subnet to its node so a subnet is only freed by
//     the node that holds it. The mutex guards both; workers decide under it
//     and write to the server outside it, so parallel workers never hand out
//     one subnet twice.
//   - Before any worker runs, every existing Node's podCIDRs are marked taken
//     (the state lives only in the Nodes), so subnets are stable across
//     restarts and a restart never reuses a subnet in use.
//   - A Node without podCIDRs gets a subnet per cluster CIDR, written with
//     Update and the resourceVersion the decision was based on; a conflict
//     is retried with the same subnets (they stay held for that node UID),
//     so a stale cache cannot make two writes disagree. podCIDRs are
//     immutable once set (the API server enforces it).
//   - A deleted Node frees its subnets; Nodes waiting because the cluster
//     CIDR was full are then retried. A full cluster CIDR records the
//     upstream Event CIDRNotAvailable on the Node.
package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

// Name is the controller's name for --controllers and logs.
const Name = "node-ipam"

// ReasonCIDRNotAvailable is upstream's event reason for a full cluster CIDR.
const ReasonCIDRNotAvailable = "CIDRNotAvailable"

// Defaults, as kube-controller-manager's.
const (
	DefaultClusterCIDR          = "10.244.0.0/16"
	DefaultNodeCIDRMaskSize     = 24
	DefaultNodeCIDRMaskSizeIPv6 = 64
)

// Config configures the controller.
type Config struct {
	// ClusterCIDR is one CIDR, or two (IPv4 and IPv6) separated by a comma;
	// empty means DefaultClusterCIDR.
	ClusterCIDR string
	// NodeCIDRMaskSize is the IPv4 subnet size; 0 means 24.
	NodeCIDRMaskSize int
	// NodeCIDRMaskSizeIPv6 is the IPv6 subnet size; 0 means 64.
	NodeCIDRMaskSizeIPv6 int
	// Logger is required; the controller adds a component attribute.
	Logger *slog.Logger
	// Recorder, when set, records events; otherwise the controller starts
	// its own event broadcaster for the duration of Run.
	Recorder record.EventRecorder
}

// Controller allocates node pod CIDRs.
type Controller struct {
	client       kubernetes.Interface
	factory      informers.SharedInformerFactory
	nodeInformer cache.SharedIndexInformer
	nodeLister   corelisters.NodeLister
	queue        workqueue.TypedRateLimitingInterface[string]
	log          *slog.Logger
	recorder     record.EventRecorder
	broadcaster  record.EventBroadcaster // nil when Config.Recorder was given
	handler      cache.ResourceEventHandlerRegistration

	mu      sync.Mutex              // guards the fields below
	sets    []*cidrSet              // one per cluster CIDR, in order
	owners  map[netip.Prefix]string // taken subnet -> node name
	held    map[string]holding      // node name -> its subnets
	waiting map[string]struct{}     // nodes waiting for a free subnet
}

type holding struct {
	uid   types.UID
	cidrs []netip.Prefix
}

// ParseClusterCIDRs parses a comma list of at most one CIDR per family.
func ParseClusterCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("nodeipam: bad cluster CIDR %q: %w", part, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("nodeipam: cluster CIDR %q has host bits set", part)
		}
		for _, o := range out {
			if o.Addr().Is4() == p.Addr().Is4() {
				return nil, fmt.Errorf("nodeipam: cluster CIDRs %q: at most one per IP family", s)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("nodeipam: no cluster CIDR in %q", s)
	}
	return out, nil
}

// New builds the controller and registers its informer handlers; call it
// before the informer factory is started (Run starts it too, which is
// harmless if the caller already did).
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	if cfg.Logger == nil {
		return nil, errors.New("nodeipam: Config.Logger is required")
	}
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	if cfg.NodeCIDRMaskSize == 0 {
		cfg.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
	if cfg.NodeCIDRMaskSizeIPv6 == 0 {
		cfg.NodeCIDRMaskSizeIPv6 = DefaultNodeCIDRMaskSizeIPv6
	}
	cidrs, err := ParseClusterCIDRs(cfg.ClusterCIDR)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		client:  client,
		factory: factory,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		log:      cfg.Logger.With("component", Name),
		recorder: cfg.Recorder,
		owners:   map[netip.Prefix]string{},
		held:     map[string]holding{},
		waiting:  map[string]struct{}{},
	}
	for _, p := range cidrs {
		mask := cfg.NodeCIDRMaskSize
		if p.Addr().Is6() {
			mask = cfg.NodeCIDRMaskSizeIPv6
		}
		set, err := newCIDRSet(p, mask)
		if err != nil {
			return nil, err
		}
		c.sets = append(c.sets, set)
	}
	nodes := factory.Core().V1().Nodes()
	c.nodeInformer, c.nodeLister = nodes.Informer(), nodes.Lister()
	if c.recorder == nil {
		c.broadcaster = record.NewBroadcaster()
		c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "cidrAllocator"})
	}
	c.handler, err = c.nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(old, obj any) {
			o, n := old.(*v1.Node), obj.(*v1.Node)
			if o.Spec.PodCIDR != n.Spec.PodCIDR || len(o.Spec.PodCIDRs) != len(n.Spec.PodCIDRs) || o.UID != n.UID {
				c.enqueue(obj)
			}
		},
		DeleteFunc: c.enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("nodeipam: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key)
}

// Run waits for the cache, marks every Node's subnets taken, then runs
// workers until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	defer func() { _ = c.nodeInformer.RemoveEventHandler(c.handler) }()
	if c.broadcaster != nil {
		c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer c.broadcaster.Shutdown()
	}
	c.factory.Start(ctx.Done())

	var cidrs []string
	for _, s := range c.sets {
		cidrs = append(cidrs, fmt.Sprintf("%s(/%d)", s.cluster, s.maskSize))
	}
	c.log.Info("starting", "clusterCIDRs", strings.Join(cidrs, ","))
	defer c.log.Info("stopped")
	if !cache.WaitForNamedCacheSync(Name, ctx.Done(), c.nodeInformer.HasSynced, c.handler.HasSynced) {
		return
	}
	nodes, err := c.nodeLister.List(labels.Everything())
	if err != nil {
		c.log.Error("listing nodes", "err", err)
		return
	}
	c.mu.Lock()
	for _, n := range nodes {
		c.recordLocked(n)
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, time.Second) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) worker(ctx context.Context) {
	ctrlqueue.Worker{Queue: c.queue, Sync: c.sync, OnError: func(key string, err error, _ int, _ bool) {
		c.log.Info("sync failed, will retry", "node", key, "err", err)
	}}.Run(ctx)
}

// nodeCIDRs parses what the Node already has.
func nodeCIDRs(node *v1.Node) []netip.Prefix {
	raw := node.Spec.PodCIDRs
	if len(raw) == 0 && node.Spec.PodCIDR != "" {
		raw = []string{node.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range raw {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// recordLocked marks the subnets a Node already has as its own, freeing
// any other subnets held under its name.
func (c *Controller) recordLocked(node *v1.Node) bool {
	cidrs := nodeCIDRs(node)
	if len(cidrs) == 0 {
		return false
	}
	if h, ok := c.held[node.Name]; ok {
		for _, p := range h.cidrs {
			if !containsPrefix(cidrs, p) {
				c.freeLocked(node.Name, p)
			}
		}
	}
	var kept []netip.Prefix
	for _, p := range cidrs {
		set := c.setFor(p)
		if set == nil {
			c.log.Warn("node podCIDR outside the cluster CIDRs", "node", node.Name, "podCIDR", p)
			continue
		}
		if o, ok := c.owners[p]; ok && o != node.Name {
			c.log.Warn("two nodes have the same podCIDR", "podCIDR", p, "nodes", []string{o, node.Name})
			continue
		}
		if err := set.Occupy(p); err != nil {
			c.log.Warn("cannot occupy node podCIDR", "node", node.Name, "podCIDR", p, "err", err)
			continue
		}
		c.owners[p] = node.Name
		kept = append(kept, p)
	}
	c.held[node.Name] = holding{uid: node.UID, cidrs: kept}
	delete(c.waiting, node.Name)
	return true
}

func (c *Controller) setFor(p netip.Prefix) *cidrSet {
	for _, s := range c.sets {
		if s.cluster.Addr().Is4() == p.Addr().Is4() && s.cluster.Contains(p.Addr()) && p.Bits() >= s.cluster.Bits() {
			return s
		}
	}
	return nil
}

func (c *Controller) freeLocked(name string, p netip.Prefix) bool {
	if c.owners[p] != name {
		return false
	}
	delete(c.owners, p)
	if s := c.setFor(p); s != nil {
		_ = s.Release(p)
	}
	return true
}

// releaseLocked frees what a node holds and retries waiting nodes.
func (c *Controller) releaseLocked(name string) {
	h, ok := c.held[name]
	if !ok {
		return
	}
	delete(c.held, name)
	freed := false
	for _, p := range h.cidrs {
		if c.freeLocked(name, p) {
			freed = true
		}
	}
	if freed {
		c.log.Info("released", "node", name, "podCIDRs", prefixStrings(h.cidrs))
		for n := range c.waiting {
			c.queue.Add(n)
		}
	}
}

func (c *Controller) sync(ctx context.Context, name string) error {
	node, err := c.nodeLister.Get(name)
	if apierrors.IsNotFound(err) {
		c.mu.Lock()
		c.releaseLocked(name)
		delete(c.waiting, name)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("nodeipam: %w", err)
	}

	c.mu.Lock()
	if c.recordLocked(node) {
		c.mu.Unlock()
		return nil
	}
	cidrs, err := c.allocateLocked(node)
	c.mu.Unlock()
	if errors.Is(err, ErrCIDRSetFull) {
		c.recorder.Eventf(node, v1.EventTypeNormal, ReasonCIDRNotAvailable, "Node %s status is now: %s", node.Name, ReasonCIDRNotAvailable)
		c.log.Warn("no free pod CIDR", "node", name)
		return nil // retried when a subnet is released
	}

	upd := node.DeepCopy()
	upd.Spec.PodCIDRs = prefixStrings(cidrs)
	upd.Spec.PodCIDR = upd.Spec.PodCIDRs[0]
	if _, err := c.client.CoreV1().Nodes().Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // the delete event releases
		}
		// The subnets stay held for this node UID and are tried again.
		return fmt.Errorf("nodeipam: setting podCIDRs of %s: %w", name, err)
	}
	c.log.Info("allocated", "node", name, "podCIDRs", upd.Spec.PodCIDRs)
	return nil
}

// allocateLocked picks a subnet per cluster CIDR for a node that has none,
// reusing what an earlier, unconfirmed attempt picked for the same node.
func (c *Controller) allocateLocked(node *v1.Node) ([]netip.Prefix, error) {
	if h, ok := c.held[node.Name]; ok {
		if h.uid == node.UID && len(h.cidrs) == len(c.sets) {
			return h.cidrs, nil
		}
		c.releaseLocked(node.Name)
	}
	var cidrs []netip.Prefix
	for _, s := range c.sets {
		p, err := s.AllocateNext()
		if err != nil {
			for _, q := range cidrs {
				c.freeLocked(node.Name, q)
			}
			c.waiting[node.Name] = struct{}{}
			return nil, err
		}
		c.owners[p] = node.Name
		cidrs = append(cidrs, p)
	}
	c.held[node.Name] = holding{uid: node.UID, cidrs: cidrs}
	delete(c.waiting, node.Name)
	return cidrs, nil
}

func containsPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
