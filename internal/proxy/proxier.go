package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Options configures a Proxier.
type Options struct {
	// NodeName is this node's name (required).
	NodeName string
	// SyncPeriod is the full resync period (default 30 s); /healthz fails
	// after 2 × SyncPeriod without progress.
	SyncPeriod time.Duration
	// BurstInterval is the minimum spacing of back-to-back syncs
	// (default 100 ms; see Runner).
	BurstInterval time.Duration
	// ConfigSyncPeriod is the informers' resync period (0 = none).
	ConfigSyncPeriod time.Duration
	// HealthzAddr serves /healthz and /livez ("" = disabled),
	// e.g. "0.0.0.0:10256".
	HealthzAddr string
	// MetricsAddr serves /metrics and /proxyMode ("" = disabled),
	// e.g. "127.0.0.1:10249".
	MetricsAddr string
	// HealthCheckBindAddrs are the addresses healthCheckNodePort servers
	// listen on (default all).
	HealthCheckBindAddrs []string
	// DisableServiceHealth turns the healthCheckNodePort servers off.
	DisableServiceHealth bool
	Logger               *slog.Logger
}

// Proxier runs the backend-neutral proxy: informers feed a Tracker, a
// Runner coalesces changes into syncs of the Backend, and HTTP servers
// expose health, metrics and healthCheckNodePorts.
type Proxier struct {
	opts    Options
	client  kubernetes.Interface
	backend Backend
	log     *slog.Logger

	Tracker       *Tracker
	Runner        *Runner
	Health        *Health
	Metrics       *Metrics
	ServiceHealth *ServiceHealth

	// boundHealthz and boundMetrics receive the bound addresses.
	boundHealthz, boundMetrics chan string
	// skippedFull is owned by the Runner goroutine: a full sync was
	// requested before the informers synced.
	skippedFull bool
}

// NewProxier returns a Proxier for backend.
func NewProxier(client kubernetes.Interface, backend Backend, opts Options) (*Proxier, error) {
	if opts.NodeName == "" {
		return nil, errors.New("proxy: node name is required")
	}
	if opts.SyncPeriod <= 0 {
		opts.SyncPeriod = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxier{
		opts:         opts,
		client:       client,
		backend:      backend,
		log:          opts.Logger.With("component", "proxy", "mode", backend.Name()),
		Tracker:      NewTracker(opts.NodeName),
		Health:       NewHealth(2 * opts.SyncPeriod),
		Metrics:      NewMetrics(backend.Name()),
		boundHealthz: make(chan string, 1),
		boundMetrics: make(chan string, 1),
	}
	p.ServiceHealth = &ServiceHealth{BindAddrs: opts.HealthCheckBindAddrs, Log: p.log,
		Healthy: func() bool { ok, _, _ := p.Health.Healthy(); return ok }}
	p.Runner = NewRunner(p.syncOnce)
	p.Runner.Period = opts.SyncPeriod
	if opts.BurstInterval > 0 {
		p.Runner.BurstInterval = opts.BurstInterval
	}
	return p, nil
}

// HealthzAddr waits for and returns the bound /healthz address.
func (p *Proxier) HealthzAddr(ctx context.Context) (string, error) {
	return waitAddr(ctx, p.boundHealthz)
}

// MetricsAddr waits for and returns the bound /metrics address.
func (p *Proxier) MetricsAddr(ctx context.Context) (string, error) {
	return waitAddr(ctx, p.boundMetrics)
}

func waitAddr(ctx context.Context, ch chan string) (string, error) {
	select {
	case a := <-ch:
		ch <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// changed is called by informer handlers after a tracked change.
func (p *Proxier) changed() {
	p.Health.Queued()
	if p.Tracker.Ready() {
		p.Runner.Trigger()
	}
}

// syncOnce is the Runner's sync function.
func (p *Proxier) syncOnce(ctx context.Context, full bool) error {
	if !p.Tracker.Ready() {
		// Not all initial lists are in: syncing now would delete services.
		// Run triggers again once they are; that sync must be full.
		p.skippedFull = p.skippedFull || full
		return nil
	}
	full = full || p.skippedFull
	p.skippedFull = false
	st, times := p.Tracker.Snapshot(full)
	// Nothing keeps st's maps after this function (backends copy what they
	// keep), so the next snapshot may reuse them.
	defer p.Tracker.Release(st)
	start := time.Now()
	err := p.backend.Sync(ctx, st)
	took := time.Since(start).Seconds()
	p.Metrics.SyncDuration.Observe(took)
	partial := !st.Full
	rules := -1
	if s, ok := p.backend.(SyncStats); ok && err == nil {
		partial, rules = s.LastSyncStats()
	}
	if partial {
		p.Metrics.SyncPartialDuration.Observe(took)
	} else {
		p.Metrics.SyncFullDuration.Observe(took)
	}
	if err != nil {
		p.Metrics.SyncFailures.Inc()
		p.Tracker.Requeue(st)
		if ctx.Err() != nil {
			// Stopping: the sync was cut short (an nft or iptables-restore
			// run killed with the context), not a failure of the rules.
			return err
		}
		p.log.Error("sync failed; retrying with a full sync", "err", err, "full", st.Full)
		return err
	}
	now := time.Now()
	for _, t := range times {
		p.Metrics.ProgrammingLatency.Observe(now.Sub(t).Seconds())
	}
	p.Health.Updated()
	if p.Tracker.Pending() {
		p.Health.Queued()
	}
	p.Metrics.LastSync.SetToCurrentTime()
	if rules >= 0 {
		p.Metrics.Rules.Set(float64(rules))
	}
	neps := 0
	for _, e := range st.Endpoints {
		neps += len(e)
	}
	p.Metrics.Services.Set(float64(len(st.Services)))
	p.Metrics.Endpoints.Set(float64(neps))
	if !p.opts.DisableServiceHealth {
		if err := p.ServiceHealth.Sync(st); err != nil {
			p.log.Error("healthCheckNodePort servers", "err", err)
		}
	}
	p.log.Debug("synced", "full", st.Full, "partial", partial, "services", len(st.Services), "changed", len(st.Changed), "took", time.Since(start))
	return nil
}

// Run starts informers, servers and the sync loop, and blocks until ctx is
// cancelled. It does not clean up the dataplane (rules stay across
// restarts).
func (p *Proxier) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer p.ServiceHealth.Close()

	if err := p.serve(ctx, p.opts.HealthzAddr, HealthzHandler(p.Health, p.Metrics), p.boundHealthz); err != nil {
		return err
	}
	if err := p.serve(ctx, p.opts.MetricsAddr, MetricsHandler(p.Metrics, p.backend.Name), p.boundMetrics); err != nil {
		return err
	}

	noProxyName, err := labels.NewRequirement(LabelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	noHeadless, err := labels.NewRequirement(LabelHeadless, selection.DoesNotExist, nil)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	svcSel := labels.NewSelector().Add(*noProxyName).String()
	sliceSel := labels.NewSelector().Add(*noHeadless).String()

	// The caches hold every Service and EndpointSlice of the cluster; their
	// managedFields are never read here (upstream kube-proxy drops them too).
	trim := informers.WithTransform(trimManagedFields)
	svcFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.opts.ConfigSyncPeriod, trim,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = svcSel }))
	sliceFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.opts.ConfigSyncPeriod, trim,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sliceSel }))
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.opts.ConfigSyncPeriod, trim,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.opts.NodeName).String()
		}))

	svcInf := svcFactory.Core().V1().Services().Informer()
	sliceInf := sliceFactory.Discovery().V1().EndpointSlices().Informer()
	nodeInf := nodeFactory.Core().V1().Nodes().Informer()

	on := func(changed bool) {
		if changed {
			p.changed()
		}
	}
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { on(p.Tracker.UpdateService(o.(*v1.Service))) },
		UpdateFunc: func(_, o any) { on(p.Tracker.UpdateService(o.(*v1.Service))) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if s, ok := o.(*v1.Service); ok {
				on(p.Tracker.DeleteService(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}))
			}
		},
	}); err != nil {
		return fmt.Errorf("proxy: service handler: %w", err)
	}
	if _, err := sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { on(p.Tracker.UpdateSlice(o.(*discovery.EndpointSlice))) },
		UpdateFunc: func(_, o any) { on(p.Tracker.UpdateSlice(o.(*discovery.EndpointSlice))) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if s, ok := o.(*discovery.EndpointSlice); ok {
				on(p.Tracker.DeleteSlice(s))
			}
		},
	}); err != nil {
		return fmt.Errorf("proxy: endpointslice handler: %w", err)
	}
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.onNode(o.(*v1.Node)) },
		UpdateFunc: func(_, o any) { p.onNode(o.(*v1.Node)) },
		DeleteFunc: func(any) { p.Health.SetNodeDeleting(true) },
	}); err != nil {
		return fmt.Errorf("proxy: node handler: %w", err)
	}

	cidrsSynced, err := watchServiceCIDRs(p.client, p.opts.ConfigSyncPeriod, p.Tracker, p.changed, p.log, ctx.Done())
	if err != nil {
		return err
	}

	svcFactory.Start(ctx.Done())
	sliceFactory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	defer svcFactory.Shutdown()
	defer sliceFactory.Shutdown()
	defer nodeFactory.Shutdown()

	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		p.Runner.Run(ctx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.HasSynced, sliceInf.HasSynced) {
		<-runDone
		return ctx.Err()
	}
	if cidrsSynced != nil {
		// Give the ServiceCIDRs a moment so the first sync already drops
		// the right ranges, but never hold the proxy back for them (a
		// credential that may not list them would): when they arrive
		// later, the next sync is a full one.
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		if !cache.WaitForCacheSync(wctx.Done(), cidrsSynced) && ctx.Err() == nil {
			p.log.Warn("ServiceCIDRs not listed within 5s; starting with the configured service CIDRs")
		}
		wcancel()
	}
	p.Tracker.SetSynced(true, true)
	p.Health.Queued()
	p.Runner.Trigger()
	p.log.Info("proxy started", "node", p.opts.NodeName)
	<-runDone
	return nil
}

// trimManagedFields is the informers' transform: it drops
// metadata.managedFields, which no proxy code reads, and keeps
// EndpointSlices in their compact form (CompactSlice).
func trimManagedFields(obj any) (any, error) {
	if s, ok := obj.(*discovery.EndpointSlice); ok {
		return CompactSlice(s), nil
	}
	if m, err := meta.Accessor(obj); err == nil && m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (p *Proxier) onNode(n *v1.Node) {
	p.Health.SetNodeDeleting(n.DeletionTimestamp != nil)
	if p.Tracker.UpdateNode(n) {
		p.changed()
	}
}

// serve starts an HTTP server on addr (if set) until ctx ends and reports
// the bound address on bound.
func (p *Proxier) serve(ctx context.Context, addr string, h http.Handler, bound chan string) error {
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("http server", "addr", addr, "err", err)
		}
	}()
	bound <- l.Addr().String()
	return nil
}
