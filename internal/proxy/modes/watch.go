package modes

import (
	"context"
	"log/slog"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// WatchConfigMap follows ConfigMap kube-system/kube-proxy (key config.conf,
// as in the seed's `kubectl edit cm kube-proxy -n kube-system`) and switches
// sw to the mode it names, calling trigger so the proxy syncs (and thereby
// switches) at once. An empty mode means the default, nftables. A config
// that does not parse, or names an unsupported mode, is logged and ignored:
// the running mode stays. It returns when ctx ends.
func WatchConfigMap(ctx context.Context, client kubernetes.Interface, sw *Switcher, trigger func(), log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(metav1.NamespaceSystem),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", proxy.ConfigMapName).String()
		}))
	apply := func(obj any) {
		cm, ok := obj.(*v1.ConfigMap)
		if !ok {
			return
		}
		cfg, err := proxy.DecodeConfig([]byte(cm.Data[proxy.ConfigMapKey]))
		if err != nil {
			log.Warn("kube-proxy ConfigMap does not parse; keeping the current mode", "err", err)
			return
		}
		mode := string(cfg.Mode)
		if mode == "" {
			mode = NFTables
		}
		changed, err := sw.SetMode(mode)
		if err != nil {
			log.Warn("kube-proxy ConfigMap names an unsupported mode; keeping the current mode", "err", err)
			return
		}
		if changed {
			log.Info("proxy mode change requested by ConfigMap kube-system/kube-proxy", "mode", mode)
			trigger()
		}
	}
	inf := factory.Core().V1().ConfigMaps().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// Run runs the node proxy with kc's mode until ctx ends, following the
// kube-proxy ConfigMap for live mode switches when follow is set. It
// returns the Switcher so the caller can Cleanup after Run returns.
func Run(ctx context.Context, client kubernetes.Interface, kc *kpconfig.KubeProxyConfiguration, o Options, follow bool, ready func(*Switcher)) error {
	mode := string(kc.Mode)
	if mode == "" {
		mode = NFTables
	}
	sw, err := NewSwitcher(mode, o)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(sw)
	}
	p, err := proxy.NewProxier(client, sw, proxy.Options{
		NodeName:         o.NodeName,
		SyncPeriod:       kc.NFTables.SyncPeriod.Duration,
		BurstInterval:    kc.NFTables.MinSyncPeriod.Duration,
		ConfigSyncPeriod: kc.ConfigSyncPeriod.Duration,
		HealthzAddr:      kc.HealthzBindAddress,
		MetricsAddr:      kc.MetricsBindAddress,
		Logger:           o.Logger,
	})
	if err != nil {
		return err
	}
	if follow {
		go WatchConfigMap(ctx, client, sw, p.Runner.Trigger, o.Logger)
	}
	return p.Run(ctx)
}
