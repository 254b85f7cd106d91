package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/svcnet/svcnet/internal/agent/kubeletserver"
	"github.com/svcnet/svcnet/internal/agent/podnet"
	"github.com/svcnet/svcnet/internal/agent/runtime"
	"github.com/svcnet/svcnet/internal/controller/ctrlqueue"
)

// Defaults of Config.
const (
	DefaultKubeletPort     = 10250
	DefaultClusterDomain   = "cluster.local"
	DefaultLeaseDuration   = 40 * time.Second
	DefaultRestartBackoff  = 10 * time.Second
	DefaultMaxBackoff      = 5 * time.Minute
	DefaultStatusFrequency = time.Minute
	defaultWorkers         = 16
)

// DefaultClusterDNS is the kube-dns Service IP the server bootstraps.
var DefaultClusterDNS = netip.MustParseAddr("10.96.0.10")

// Config is what an Agent needs. Rest, NodeName, NodeIP and RootDir are
// required; everything else has a default.
type Config struct {
	Rest     *rest.Config
	NodeName string
	NodeIP   netip.Addr
	// RootDir keeps the agent's state across restarts: the runtime's pod
	// directories (RootDir/pods), the IPAM file and the kubelet serving cert.
	RootDir string
	// Exe is the svcnet binary run for sandboxes, shims and agnhost images
	// (default: this process's executable).
	Exe string

	ClusterDNS    []netip.Addr // nameservers of ClusterFirst pods (default 10.96.0.10)
	ClusterDomain string       // default cluster.local

	// KubeletPort is where /containerLogs and /exec are served (default
	// 10250; -1 picks a free port, for tests).
	KubeletPort int
	// ClientCA verifies the API server's client certificate on the kubelet
	// port (default: the CA of Rest).
	ClientCA *x509.CertPool

	RestartBackoff  time.Duration // first crash-loop delay, doubled per restart (default 10s)
	MaxBackoff      time.Duration // default 5m
	LeaseDuration   time.Duration // default 40s; renewed every quarter of it
	StatusFrequency time.Duration // node status heartbeat (default 1m)

	// Proxy, when set, runs the node proxy in the agent; DNS the node-local
	// cluster DNS.
	Proxy *ProxyConfig
	DNS   *DNSConfig

	// CleanupOnExit stops every pod and removes their networking when Run
	// returns (`svcnet agent --cleanup`); otherwise pods keep running and a
	// restarted agent adopts them, as with the kubelet.
	CleanupOnExit bool

	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Rest == nil || c.NodeName == "" || !c.NodeIP.IsValid() || c.RootDir == "" {
		return errors.New("agent: Rest, NodeName, NodeIP and RootDir are required")
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("agent: find own executable: %w", err)
		}
		c.Exe = exe
	}
	if len(c.ClusterDNS) == 0 {
		c.ClusterDNS = []netip.Addr{DefaultClusterDNS}
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = DefaultKubeletPort
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = DefaultRestartBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.StatusFrequency == 0 {
		c.StatusFrequency = DefaultStatusFrequency
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ClientCA == nil {
		pool, err := caPoolFromRest(c.Rest)
		if err != nil {
			return err
		}
		c.ClientCA = pool
	}
	return nil
}

// caPoolFromRest returns the CA pool the rest config trusts.
func caPoolFromRest(rc *rest.Config) (*x509.CertPool, error) {
	data := rc.CAData
	if len(data) == 0 && rc.CAFile != "" {
		b, err := os.ReadFile(rc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("agent: read CA: %w", err)
		}
		data = b
	}
	pool := x509.NewCertPool()
	if len(data) == 0 || !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("agent: the kubeconfig has no CA certificate to verify the API server's calls to the kubelet port with")
	}
	return pool, nil
}

// Agent runs one node. Create it with New and start it with Run.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	client kubernetes.Interface
	rt     *runtime.Runtime
	net    *podnet.Network
	rec    record.EventRecorder

	podLister  corelisters.PodLister
	podIndex   cache.Indexer // by UID
	svcLister  corelisters.ServiceLister
	nodeLister corelisters.NodeLister
	// sliceLister and lbKick serve the LoadBalancer IP announcer.
	sliceLister discoverylisters.EndpointSliceLister
	lbKick      chan struct{}
	queue       workqueue.TypedRateLimitingInterface[string]
	kubelet     *kubeletserver.Server

	mu   sync.Mutex
	pods map[types.UID]*podRecord // agent-side bookkeeping per pod
	// lastSeen keeps the last version of every pod the informer showed,
	// so a pod deleted from the API can still be stopped by name.
	lastSeen map[types.UID]*v1.Pod
}

// New checks cfg and prepares an Agent; it touches neither the API nor the
// node until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	rc := rest.CopyConfig(cfg.Rest)
	if rc.UserAgent == "" {
		rc.UserAgent = "svcnet-agent/" + cfg.NodeName
	}
	// The kubelet's defaults (kubeAPIQPS 50, kubeAPIBurst 100): client-go's
	// own 5/10 throttles pod status writes and events of busy nodes by
	// seconds.
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 50, 100
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("agent: client: %w", err)
	}
	return &Agent{
		cfg:      cfg,
		log:      cfg.Log.With("node", cfg.NodeName),
		client:   client,
		pods:     map[types.UID]*podRecord{},
		lastSeen: map[types.UID]*v1.Pod{},
		lbKick:   make(chan struct{}, 1),
	}, nil
}

// Run registers the node and runs its pods until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.RootDir, 0o700); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	rt, err := runtime.New(runtime.Config{RootDir: a.cfg.RootDir, Exe: a.cfg.Exe, Log: a.log})
	if err != nil {
		return fmt.Errorf("agent: runtime: %w", err)
	}
	a.rt = rt
	if a.cfg.CleanupOnExit {
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if cerr := a.cleanupAll(cctx); cerr != nil {
				a.log.Warn("cleanup", "err", cerr)
			}
		}()
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	a.rec = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: a.cfg.NodeName})

	// The kubelet port first: the Node object advertises its port.
	ks, err := kubeletserver.New(kubeletserver.Config{
		Addr:      listenAddr(a.cfg.KubeletPort),
		ClientCAs: a.cfg.ClientCA,
		CertDir:   filepath.Join(a.cfg.RootDir, "pki"),
		NodeName:  a.cfg.NodeName,
		NodeIPs:   []netip.Addr{a.cfg.NodeIP},
		Provider:  provider{a},
		Log:       a.log,
	})
	if err != nil {
		return fmt.Errorf("agent: kubelet server: %w", err)
	}
	a.kubelet = ks
	ksErr := make(chan error, 1)
	go func() { ksErr <- ks.Run(ctx) }()

	node, err := a.registerNode(ctx)
	if err != nil {
		return err
	}
	a.log.Info("node registered", "ip", a.cfg.NodeIP, "kubeletAddr", ks.Addr())
	heartbeatDone := make(chan struct{})
	go func() { defer close(heartbeatDone); a.heartbeat(ctx) }()
	var services sync.WaitGroup
	sctx, stopServices := context.WithCancel(ctx)
	defer func() { stopServices(); services.Wait() }()
	if a.cfg.Proxy != nil {
		services.Add(1)
		go func() {
			defer services.Done()
			if err := a.runProxy(sctx); err != nil {
				a.log.Error("node proxy stopped", "err", err)
			}
		}()
	}
	if a.cfg.DNS != nil {
		services.Add(1)
		go func() {
			defer services.Done()
			if err := a.runDNS(sctx); err != nil {
				a.log.Error("node DNS stopped", "err", err)
			}
		}()
	}

	cidr, err := a.waitPodCIDR(ctx, node)
	if err != nil {
		return err
	}
	a.net, err = podnet.New(podnet.Config{
		PodCIDR:   cidr,
		StateFile: filepath.Join(a.cfg.RootDir, "ipam.json"),
		Log:       a.log,
	})
	if err != nil {
		return fmt.Errorf("agent: pod network: %w", err)
	}
	a.log.Info("pod network ready", "podCIDR", cidr)

	if err := a.startInformers(ctx); err != nil {
		return err
	}
	a.adopt(ctx)

	var wg sync.WaitGroup
	w := ctrlqueue.Worker{
		Queue: a.queue,
		Sync:  a.syncPod,
		OnError: func(key string, err error, retries int, _ bool) {
			if ctx.Err() != nil {
				return // stopping: the next agent picks the pod up
			}
			a.log.Warn("pod sync failed; retrying", "uid", key, "retries", retries, "err", err)
		},
	}
	for range defaultWorkers {
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.forwardRuntimeEvents(ctx) }()
	if a.cfg.Proxy != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.announceLoop(ctx) }()
		if a.cfg.CleanupOnExit && !a.cfg.Proxy.KeepRules {
			defer func() {
				if err := a.withdrawLBIPs(); err != nil {
					a.log.Warn("withdraw LoadBalancer IPs", "err", err)
				}
			}()
		}
	}
	a.log.Info("agent ready", "pods", len(a.rt.Pods()))

	select {
	case <-ctx.Done():
	case err = <-ksErr:
		if err != nil {
			err = fmt.Errorf("agent: kubelet server: %w", err)
		}
	}
	a.queue.ShutDown()
	wg.Wait()
	<-heartbeatDone
	return err
}

func listenAddr(port int) string {
	if port < 0 {
		port = 0
	}
	return fmt.Sprintf(":%d", port)
}

// startInformers starts the pod (this node's only), node and service
// informers and waits for their caches.
func (a *Agent) startInformers(ctx context.Context) error {
	a.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"})

	podFactory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
		}))
	podInf := podFactory.Core().V1().Pods().Informer()
	if err := podInf.AddIndexers(cache.Indexers{"uid": func(obj any) ([]string, error) {
		return []string{string(obj.(*v1.Pod).UID)}, nil
	}}); err != nil {
		return err
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(obj) },
		UpdateFunc: func(_, obj any) { a.podChanged(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			a.podChanged(obj)
		},
	}); err != nil {
		return err
	}
	a.podLister = podFactory.Core().V1().Pods().Lister()
	a.podIndex = podInf.GetIndexer()

	factory := informers.NewSharedInformerFactory(a.client, 0)
	a.svcLister = factory.Core().V1().Services().Lister()
	a.nodeLister = factory.Core().V1().Nodes().Lister()
	nodeInf := factory.Core().V1().Nodes().Informer()
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.syncNodeRoutes(ctx); a.kickLB() },
		UpdateFunc: func(any, any) { a.syncNodeRoutes(ctx); a.kickLB() },
		DeleteFunc: func(any) { a.syncNodeRoutes(ctx); a.kickLB() },
	}); err != nil {
		return err
	}
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.kickLB() },
		UpdateFunc: func(any, any) { a.kickLB() },
		DeleteFunc: func(any) { a.kickLB() },
	}
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(kick); err != nil {
		return err
	}
	if a.cfg.Proxy != nil {
		a.sliceLister = factory.Discovery().V1().EndpointSlices().Lister()
		if _, err := factory.Discovery().V1().EndpointSlices().Informer().AddEventHandler(kick); err != nil {
			return err
		}
	}
	podFactory.Start(ctx.Done())
	factory.Start(ctx.Done())
	for typ, ok := range podFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("agent: %v informer did not sync", typ)
		}
	}
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("agent: %v informer did not sync", typ)
		}
	}
	return nil
}

func (a *Agent) podChanged(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	a.lastSeen[pod.UID] = pod
	a.mu.Unlock()
	a.queue.Add(string(pod.UID))
}

// forwardRuntimeEvents turns container exits into pod syncs.
func (a *Agent) forwardRuntimeEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-a.rt.Events():
			if !ok {
				return
			}
			a.queue.Add(ev.UID)
		}
	}
}

// adopt queues every pod the runtime found on disk, so pods deleted while
// the agent was down are cleaned up and running ones are re-attached.
func (a *Agent) adopt(ctx context.Context) {
	for _, p := range a.rt.Pods() {
		a.log.Info("found pod from a previous run", "pod", p.Namespace+"/"+p.Name, "uid", p.UID, "containers", len(p.Containers))
		a.queue.Add(p.UID)
	}
	for uid := range a.net.Allocated() {
		a.queue.Add(uid)
	}
	if err := a.net.GC(ctx, func(uid string) bool {
		if _, ok := a.podByUID(types.UID(uid)); ok {
			return true
		}
		_, ok := a.rt.Sandbox(uid)
		return ok
	}); err != nil {
		a.log.Warn("pod network GC", "err", err)
	}
}

// podByUID returns the pod with uid from the informer cache.
func (a *Agent) podByUID(uid types.UID) (*v1.Pod, bool) {
	objs, err := a.podIndex.ByIndex("uid", string(uid))
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	return objs[0].(*v1.Pod), true
}

// syncNodeRoutes installs host-gw routes to every other node's podCIDR.
func (a *Agent) syncNodeRoutes(ctx context.Context) {
	if a.net == nil || a.nodeLister == nil {
		return
	}
	nodes, err := a.nodeLister.List(labels.Everything())
	if err != nil {
		return
	}
	var routes []podnet.NodeRoute
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			continue
		}
		ip := nodeInternalIP(n)
		for _, c := range podCIDRs(n) {
			if ip.IsValid() && c.Addr().Is4() == ip.Is4() {
				routes = append(routes, podnet.NodeRoute{Name: n.Name, PodCIDR: c, NodeIP: ip})
			}
		}
	}
	if err := a.net.SyncNodeRoutes(ctx, routes); err != nil {
		a.log.Warn("sync node routes", "err", err)
	}
}

// cleanupAll stops every pod of this node and removes their networking.
func (a *Agent) cleanupAll(ctx context.Context) error {
	var errs []error
	if a.net == nil {
		// Never got a podCIDR: no pod network exists, but processes may.
		for _, p := range a.rt.Pods() {
			errs = append(errs, a.rt.RemovePod(ctx, p.UID))
		}
		return errors.Join(errs...)
	}
	for _, p := range a.rt.Pods() {
		if err := a.rt.RemovePod(ctx, p.UID); err != nil {
			errs = append(errs, err)
		}
		if err := a.net.Detach(ctx, p.UID); err != nil {
			errs = append(errs, err)
		}
		if err := a.net.Release(p.UID); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, a.net.Cleanup(ctx))
	return errors.Join(errs...)
}
