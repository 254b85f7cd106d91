// Package manager runs svcnet's controllers inside `svcnet server`, as
// kube-controller-manager runs upstream's: every controller is an ordinary
// API client (client-go informers against the server), enabled or
// disabled by name with a --controllers flag.
//
// # Wiring
//
// Run builds one shared informer factory, so a resource watched by several
// controllers (pods: the endpoint controllers, ReplicaSets, the scheduler,
// node lifecycle) is listed and watched once. Each controller gets its own
// clientset whose user agent ends in the controller's name, so the
// server's logs say who wrote what. The controllers are constructed in
// Names() order (which registers their informers and handlers), the factory
// is started, and each controller's Run goes in its own goroutine. When ctx
// is cancelled every Run returns and Run returns after all of them. A
// controller that fails to construct stops Run before anything has
// started.
//
// The garbage collector is the exception to the shared factory: it watches
// every deletable resource through metadata-only informers of its own (see
// package gc).
//
// The table in controllers (one line per controller: name, workers,
// constructor) is the only place that knows them all; there is no
// registration by init().
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/svcnet/svcnet/internal/controller/deployment"
	"github.com/svcnet/svcnet/internal/controller/endpoints"
	"github.com/svcnet/svcnet/internal/controller/endpointslice"
	"github.com/svcnet/svcnet/internal/controller/endpointslicemirroring"
	"github.com/svcnet/svcnet/internal/controller/gc"
	"github.com/svcnet/svcnet/internal/controller/nodeipam"
	"github.com/svcnet/svcnet/internal/controller/nodelifecycle"
	"github.com/svcnet/svcnet/internal/controller/replicaset"
	"github.com/svcnet/svcnet/internal/controller/scheduler"
	"github.com/svcnet/svcnet/internal/controller/servicelb"
)

// Defaults for Config.
const (
	DefaultClusterCIDR            = "10.244.0.0/16"
	DefaultNodeCIDRMaskSize       = 24
	DefaultNodeMonitorGracePeriod = 40 * time.Second
	// DefaultQPS and DefaultBurst apply when Rest leaves QPS at 0 (which
	// client-go would read as 5 QPS: far too slow for controllers talking
	// to their own server, e.g. 10k Services' slices at start).
	DefaultQPS   = 500
	DefaultBurst = 1000
	// ResyncPeriod is the shared informers' resync (kube-controller-manager's
	// --min-resync-period); controllers are event driven, this is a safety net.
	ResyncPeriod = 12 * time.Hour
)

// Config configures Run.
type Config struct {
	// Rest reaches the API server (svcnet's own, or any Kubernetes API);
	// required. It is copied, never modified.
	Rest *rest.Config
	// Logger receives the controllers' logs (default slog.Default()).
	Logger *slog.Logger
	// Disabled controllers (by name, see Names) are not started.
	Disabled map[string]bool
	// ClusterCIDR is node IPAM's --cluster-cidr (default 10.244.0.0/16).
	ClusterCIDR string
	// NodeCIDRMaskSize is the size of each node's podCIDR (default 24).
	NodeCIDRMaskSize int
	// LBIPPool is service-lb's --lb-ip-pool: CIDRs or ranges.
	LBIPPool []string
	// NodeMonitorGracePeriod is how long a node's Lease may go stale before
	// the node is NotReady (default 40s).
	NodeMonitorGracePeriod time.Duration
}

// runner is what every controller is once built.
type runner interface {
	Run(ctx context.Context, workers int)
}

// deps is what a constructor may use.
type deps struct {
	client  kubernetes.Interface
	rest    *rest.Config
	factory informers.SharedInformerFactory
	log     *slog.Logger
	cfg     *Config
}

// controller is one line of the table.
type controller struct {
	name    string
	workers int // upstream's --concurrent-*-syncs where there is one
	build   func(d deps) (runner, error)
}

// controllers lists every controller in start order.
var controllers = []controller{
	{"endpointslice", 5, func(d deps) (runner, error) {
		return endpointslice.New(d.client, d.factory, endpointslice.Config{Logger: d.log})
	}},
	{"endpoints", 5, func(d deps) (runner, error) {
		return endpoints.New(d.client, d.factory, endpoints.Config{Logger: d.log})
	}},
	{"endpointslice-mirroring", 5, func(d deps) (runner, error) {
		return endpointslicemirroring.New(d.client, d.factory, endpointslicemirroring.Config{Logger: d.log})
	}},
	{deployment.Name, 5, func(d deps) (runner, error) {
		f := d.factory
		return deployment.New(d.log, d.client, f.Apps().V1().Deployments(), f.Apps().V1().ReplicaSets(), f.Core().V1().Pods())
	}},
	{replicaset.Name, 5, func(d deps) (runner, error) {
		f := d.factory
		return replicaset.New(d.log, d.client, f.Apps().V1().ReplicaSets(), f.Core().V1().Pods())
	}},
	{gc.Name, 5, func(d deps) (runner, error) {
		md, err := metadata.NewForConfig(d.rest)
		if err != nil {
			return nil, err
		}
		return gc.New(d.log, md, d.client.Discovery(), gc.Options{}), nil
	}},
	{scheduler.Name, 8, func(d deps) (runner, error) {
		return scheduler.New(d.client, d.factory, scheduler.Config{Logger: d.log})
	}},
	{nodeipam.Name, 1, func(d deps) (runner, error) {
		return nodeipam.New(d.client, d.factory, nodeipam.Config{Logger: d.log, ClusterCIDR: d.cfg.ClusterCIDR, NodeCIDRMaskSize: d.cfg.NodeCIDRMaskSize})
	}},
	{nodelifecycle.Name, 1, func(d deps) (runner, error) {
		return nodelifecycle.New(d.client, d.factory, nodelifecycle.Config{Logger: d.log, NodeMonitorGracePeriod: d.cfg.NodeMonitorGracePeriod})
	}},
	{servicelb.Name, 1, func(d deps) (runner, error) {
		return servicelb.New(d.client, d.factory, servicelb.Config{Logger: d.log, Pool: d.cfg.LBIPPool})
	}},
}

// Names returns every controller's name, in start order.
func Names() []string {
	out := make([]string, len(controllers))
	for i, c := range controllers {
		out[i] = c.name
	}
	return out
}

// ParseControllers reads a kube-controller-manager style --controllers
// value: "*" enables every controller, "name" enables one, "-name"
// disables one; the first entry naming a controller wins, and a controller
// not named is enabled only if "*" is present. Entries may also be comma
// separated within one element. Empty means "*". Unknown names are an
// error. It returns the disabled set for Config.Disabled.
func ParseControllers(flag []string) (map[string]bool, error) {
	var items []string
	for _, f := range flag {
		for _, s := range strings.Split(f, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
	}
	if len(items) == 0 {
		items = []string{"*"}
	}
	known := Names()
	for _, it := range items {
		if it != "*" && !slices.Contains(known, strings.TrimPrefix(it, "-")) {
			return nil, fmt.Errorf("manager: %q is not in the list of known controllers (%s)", it, strings.Join(known, ", "))
		}
	}
	disabled := map[string]bool{}
	for _, name := range known {
		if !enabled(name, items) {
			disabled[name] = true
		}
	}
	return disabled, nil
}

func enabled(name string, items []string) bool {
	star := false
	for _, it := range items {
		switch it {
		case name:
			return true
		case "-" + name:
			return false
		case "*":
			star = true
		}
	}
	return star
}

// Run starts every enabled controller and blocks until ctx is done and
// they have all stopped. It returns an error only if a controller cannot
// be built (nothing has started then).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Rest == nil {
		return errors.New("manager: Config.Rest is required")
	}
	for name := range cfg.Disabled {
		if !slices.Contains(Names(), name) {
			return fmt.Errorf("manager: unknown controller %q in Disabled", name)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	if cfg.NodeCIDRMaskSize == 0 {
		cfg.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
	if cfg.NodeMonitorGracePeriod == 0 {
		cfg.NodeMonitorGracePeriod = DefaultNodeMonitorGracePeriod
	}

	informerClient, err := clientFor(cfg.Rest, "shared-informers")
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(informerClient, ResyncPeriod)

	type started struct {
		name    string
		workers int
		r       runner
	}
	var runs []started
	for _, c := range controllers {
		if cfg.Disabled[c.name] {
			log.Info("controller disabled", "controller", c.name)
			continue
		}
		rc := restFor(cfg.Rest, c.name)
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("manager: client for %s: %w", c.name, err)
		}
		r, err := c.build(deps{client: client, rest: rc, factory: factory, log: log, cfg: &cfg})
		if err != nil {
			// Informers may have been requested but nothing runs yet.
			factory.Shutdown()
			return fmt.Errorf("manager: build %s: %w", c.name, err)
		}
		runs = append(runs, started{c.name, c.workers, r})
	}

	factory.Start(ctx.Done())
	var wg sync.WaitGroup
	for _, s := range runs {
		wg.Go(func() {
			log.Debug("starting controller", "controller", s.name, "workers", s.workers)
			s.r.Run(ctx, s.workers)
		})
	}
	log.Info("controllers started", "count", len(runs))
	<-ctx.Done()
	wg.Wait()
	factory.Shutdown()
	log.Info("controllers stopped")
	return nil
}

// restFor copies base for one controller: its own user agent, and the
// manager's QPS defaults when base has none.
func restFor(base *rest.Config, name string) *rest.Config {
	rc := rest.CopyConfig(base)
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = DefaultQPS, DefaultBurst
	}
	rest.AddUserAgent(rc, "svcnet-controller-manager/"+name)
	return rc
}

func clientFor(base *rest.Config, name string) (kubernetes.Interface, error) {
	c, err := kubernetes.NewForConfig(restFor(base, name))
	if err != nil {
		return nil, fmt.Errorf("manager: client for %s: %w", name, err)
	}
	return c, nil
}
