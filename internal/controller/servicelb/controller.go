// Package servicelb is the LoadBalancer IP allocator: it gives every Service
// of type LoadBalancer that has no spec.loadBalancerClass an address from a
// configured pool and publishes it in status.loadBalancer.ingress, the job a
// cloud provider's service controller (or MetalLB, kube-vip, Cilium LB-IPAM)
// does in other clusters. The node agents' proxies then answer on it.
//
// Design:
//
//   - One Pool (pool.go) holds every address and who has it, keyed by the
//     Service's namespace/name. The controller's mutex guards it and the held
//     map; workers decide under the lock and write to the server outside it.
//   - Requests: the annotation svcnet.io/load-balancer-ips (a comma list, at
//     most one address per family, MetalLB's loadBalancerIPs style) or else
//     the deprecated spec.loadBalancerIP. A request is honoured only if every
//     address is in the pool, of one of the Service's IP families, and free;
//     otherwise the Service gets nothing, a Warning event AllocationFailed
//     says why, and it stays <pending>.
//   - Without a request a Service gets one address per IP family it has
//     (spec.ipFamilies) that the pool can serve, all or nothing; an exhausted
//     pool leaves it <pending> with the same Warning event.
//   - Addresses are released when the Service is deleted, stops being type
//     LoadBalancer (the API server clears the status itself then) or is
//     recreated under the same name. Pending Services are retried whenever
//     an address is released.
//   - Restarts: before any worker runs, the held set is rebuilt from the
//     Services' published status (oldest Service first, so if two ever
//     claimed one address the younger loses it and is re-allocated), so
//     addresses are stable across restarts and never shared. A published
//     address that is no longer in the (reconfigured) pool is not kept: the
//     Service gets a new one, or goes pending if it asked for the old one.
//   - Services with any loadBalancerClass belong to some other implementation
//     and are never touched.
//
// The status is written with UpdateStatus and the resourceVersion the
// decision was based on, so a stale cache can only cause a retry.
package servicelb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
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
const Name = "service-lb"

// AnnotationLoadBalancerIPs requests specific addresses (comma-separated).
const AnnotationLoadBalancerIPs = "svcnet.io/load-balancer-ips"

// Event reasons.
const (
	ReasonAllocated        = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
)

// Config configures the controller.
type Config struct {
	// Pool lists CIDRs and ranges; see ParsePool.
	Pool []string
	// Logger is required; the controller adds a component attribute.
	Logger *slog.Logger
	// Recorder, when set, records events; otherwise the controller starts
	// its own event broadcaster for the duration of Run.
	Recorder record.EventRecorder
}

// Controller allocates LoadBalancer addresses.
type Controller struct {
	client      kubernetes.Interface
	factory     informers.SharedInformerFactory
	svcInformer cache.SharedIndexInformer
	svcLister   corelisters.ServiceLister
	queue       workqueue.TypedRateLimitingInterface[string]
	log         *slog.Logger
	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster // nil when Config.Recorder was given
	handler     cache.ResourceEventHandlerRegistration

	mu      sync.Mutex          // guards the fields below
	pool    *Pool               // address -> holder key
	held    map[string]holding  // holder key -> what it holds
	pending map[string]struct{} // Services waiting for an address
}

type holding struct {
	uid types.UID
	ips []netip.Addr
}

// New builds the controller and registers its informer handlers; call it
// before the informer factory is started (Run starts it too, which is
// harmless if the caller already did).
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) (*Controller, error) {
	pool, err := ParsePool(cfg.Pool)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		return nil, errors.New("servicelb: Config.Logger is required")
	}
	svcs := factory.Core().V1().Services()
	c := &Controller{
		client:      client,
		factory:     factory,
		svcInformer: svcs.Informer(),
		svcLister:   svcs.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Name}),
		log:      cfg.Logger.With("component", Name),
		recorder: cfg.Recorder,
		pool:     pool,
		held:     map[string]holding{},
		pending:  map[string]struct{}{},
	}
	if c.recorder == nil {
		c.broadcaster = record.NewBroadcaster()
		c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "service-lb-controller"})
	}
	c.handler, err = c.svcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("servicelb: %w", err)
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

// Run waits for the caches, rebuilds the allocation state from the
// Services' status, then runs workers until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	defer func() { _ = c.svcInformer.RemoveEventHandler(c.handler) }()
	if c.broadcaster != nil {
		c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer c.broadcaster.Shutdown()
	}
	c.factory.Start(ctx.Done())

	c.log.Info("starting", "pool", c.pool.String())
	defer c.log.Info("stopped")
	if !cache.WaitForNamedCacheSync(Name, ctx.Done(), c.svcInformer.HasSynced, c.handler.HasSynced) {
		return
	}
	if err := c.rebuild(); err != nil {
		c.log.Error("rebuilding allocations", "err", err)
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, time.Second) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

// rebuild marks the addresses published in Services' status as held.
func (c *Controller) rebuild() error {
	svcs, err := c.svcLister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("servicelb: listing services: %w", err)
	}
	slices.SortFunc(svcs, func(a, b *v1.Service) int {
		if d := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); d != 0 {
			return d
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, svc := range svcs {
		if !managed(svc) {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		h := holding{uid: svc.UID}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			if err := c.pool.Assign(ip, key); err != nil {
				c.log.Warn("published address not kept", "service", key, "ip", ip, "err", err)
				continue
			}
			h.ips = append(h.ips, ip)
		}
		if len(h.ips) > 0 {
			c.held[key] = h
		}
	}
	c.log.Info("rebuilt allocations", "held", c.pool.Used())
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	ctrlqueue.Worker{Queue: c.queue, Sync: c.sync, OnError: func(key string, err error, _ int, _ bool) {
		c.log.Info("sync failed, will retry", "service", key, "err", err)
	}}.Run(ctx)
}

// managed reports whether svc is ours to allocate for.
func managed(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass == nil
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // a bad key can never succeed
	}
	svc, err := c.svcLister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && !managed(svc)) {
		c.mu.Lock()
		c.releaseLocked(key)
		delete(c.pending, key)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("servicelb: %w", err)
	}

	c.mu.Lock()
	ips, failure := c.allocateLocked(key, svc)
	c.mu.Unlock()

	want := ingressFor(ips)
	if !apiequality.Semantic.DeepEqual(want, svc.Status.LoadBalancer.Ingress) {
		upd := svc.DeepCopy()
		upd.Status.LoadBalancer.Ingress = want
		if _, err := c.client.CoreV1().Services(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil // the delete event releases
			}
			return fmt.Errorf("servicelb: updating status of %s: %w", key, err)
		}
		if len(ips) > 0 {
			c.recorder.Eventf(svc, v1.EventTypeNormal, ReasonAllocated, "Assigned IP %s", joinAddrs(ips))
			c.log.Info("assigned", "service", key, "ips", joinAddrs(ips))
		}
	}
	if failure != "" {
		c.recorder.Event(svc, v1.EventTypeWarning, ReasonAllocationFailed, failure)
		c.log.Info("allocation failed", "service", key, "reason", failure)
	}
	return nil
}

// allocateLocked settles what svc holds and returns it, or an empty list
// and the reason for the AllocationFailed event.
func (c *Controller) allocateLocked(key string, svc *v1.Service) ([]netip.Addr, string) {
	if h, ok := c.held[key]; ok && h.uid != svc.UID {
		c.releaseLocked(key) // the name was reused by a new Service
	}
	families := serviceFamilies(svc)
	requested, bad := requestedIPs(svc)
	if bad != "" {
		c.releaseLocked(key)
		c.pending[key] = struct{}{}
		return nil, fmt.Sprintf("Failed to allocate IP for %q: requested IP %q is not a valid IP address", key, bad)
	}

	var ips []netip.Addr
	var failure string
	if len(requested) > 0 {
		ips, failure = c.assignRequestedLocked(key, families, requested)
	} else {
		ips, failure = c.assignDynamicLocked(key, families)
	}
	if failure != "" {
		c.releaseLocked(key)
		c.pending[key] = struct{}{}
		return nil, failure
	}
	// Drop what is held but no longer wanted, then record the holding.
	for _, ip := range c.held[key].ips {
		if !slices.Contains(ips, ip) {
			c.pool.Release(ip, key)
		}
	}
	c.held[key] = holding{uid: svc.UID, ips: ips}
	delete(c.pending, key)
	return ips, ""
}

func (c *Controller) assignRequestedLocked(key string, families []bool, requested []netip.Addr) ([]netip.Addr, string) {
	seen := map[bool]bool{}
	for _, ip := range requested {
		if !slices.Contains(families, ip.Is4()) {
			return nil, fmt.Sprintf("Failed to allocate IP for %q: requested IP %s is not of the Service's IP families (%s)", key, ip, familyNames(families))
		}
		if seen[ip.Is4()] {
			return nil, fmt.Sprintf("Failed to allocate IP for %q: at most one IP per family may be requested", key)
		}
		seen[ip.Is4()] = true
		if !c.pool.Contains(ip) {
			return nil, fmt.Sprintf("Failed to allocate IP for %q: %v", key, &NotInPoolError{IP: ip, Pool: c.pool.String()})
		}
		if o, ok := c.pool.Owner(ip); ok && o != key {
			return nil, fmt.Sprintf("Failed to allocate IP for %q: %v", key, &InUseError{IP: ip, Owner: o})
		}
	}
	for _, ip := range requested {
		_ = c.pool.Assign(ip, key) // checked above
	}
	return requested, ""
}

func (c *Controller) assignDynamicLocked(key string, families []bool) ([]netip.Addr, string) {
	held := c.held[key].ips
	var ips, fresh []netip.Addr
	for _, is4 := range families {
		if !c.pool.HasFamily(is4) {
			continue
		}
		if i := slices.IndexFunc(held, func(ip netip.Addr) bool { return ip.Is4() == is4 && c.pool.Contains(ip) }); i >= 0 {
			ips = append(ips, held[i])
			continue
		}
		ip, err := c.pool.Next(is4, key)
		if err != nil {
			for _, f := range fresh {
				c.pool.Release(f, key)
			}
			return nil, fmt.Sprintf("Failed to allocate IP for %q: no available IPs in pool %s for %s", key, c.pool.String(), familyName(is4))
		}
		fresh = append(fresh, ip)
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return nil, fmt.Sprintf("Failed to allocate IP for %q: the pool (%s) has no addresses of the Service's IP families (%s)", key, c.pool.String(), familyNames(families))
	}
	return ips, ""
}

// releaseLocked frees what key holds and, if anything was freed, retries
// every pending Service.
func (c *Controller) releaseLocked(key string) {
	h, ok := c.held[key]
	if !ok {
		return
	}
	delete(c.held, key)
	freed := false
	for _, ip := range h.ips {
		if c.pool.Release(ip, key) {
			freed = true
		}
	}
	if freed {
		c.log.Info("released", "service", key, "ips", joinAddrs(h.ips))
		for k := range c.pending {
			if k != key {
				c.queue.Add(k)
			}
		}
	}
}

// requestedIPs parses the annotation, else spec.loadBalancerIP; bad is the
// first entry that is not an address.
func requestedIPs(svc *v1.Service) (ips []netip.Addr, bad string) {
	var raw []string
	if a, ok := svc.Annotations[AnnotationLoadBalancerIPs]; ok && strings.TrimSpace(a) != "" {
		raw = strings.Split(a, ",")
	} else if svc.Spec.LoadBalancerIP != "" {
		raw = []string{svc.Spec.LoadBalancerIP}
	}
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, s
		}
		ip = ip.Unmap()
		if !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	return ips, ""
}

// serviceFamilies lists the Service's families in order (true = IPv4).
func serviceFamilies(svc *v1.Service) []bool {
	var out []bool
	for _, f := range svc.Spec.IPFamilies {
		out = append(out, f == v1.IPv4Protocol)
	}
	if len(out) == 0 {
		out = []bool{true}
	}
	return out
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func familyNames(f []bool) string {
	names := make([]string, len(f))
	for i, is4 := range f {
		names[i] = familyName(is4)
	}
	return strings.Join(names, ",")
}

func ingressFor(ips []netip.Addr) []v1.LoadBalancerIngress {
	if len(ips) == 0 {
		return nil
	}
	vip := v1.LoadBalancerIPModeVIP
	out := make([]v1.LoadBalancerIngress, len(ips))
	for i, ip := range ips {
		out[i] = v1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip}
	}
	return out
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}
