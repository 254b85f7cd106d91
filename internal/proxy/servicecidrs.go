package proxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ServiceCIDRs (networking.k8s.io/v1) name the ranges ClusterIPs are
// allocated from; an administrator may add ranges at run time. The proxy
// drops traffic to addresses in them that no Service holds, so it follows
// the objects, as upstream kube-proxy does. Against an API server that does
// not serve the resource it uses its configured --service-cidr instead
// (State.ServiceCIDRs stays nil).

// serviceCIDRsServed reports whether the API server serves
// networking.k8s.io/v1 servicecidrs (Kubernetes ≥ 1.33, and svcnet).
func serviceCIDRsServed(client kubernetes.Interface) bool {
	rl, err := client.Discovery().ServerResourcesForGroupVersion(networkingv1.SchemeGroupVersion.String())
	if err != nil || rl == nil {
		return false
	}
	for _, r := range rl.APIResources {
		if r.Name == "servicecidrs" {
			return true
		}
	}
	return false
}

// watchServiceCIDRs starts an informer feeding the union of every
// ServiceCIDR's spec.cidrs (terminating ones included: their addresses may
// still be in use) into t, calling changed after each change. It returns the
// informer's HasSynced, or nil when the server does not serve ServiceCIDRs.
func watchServiceCIDRs(client kubernetes.Interface, resync time.Duration, t *Tracker, changed func(), log *slog.Logger, stop <-chan struct{}) (cache.InformerSynced, error) {
	if !serviceCIDRsServed(client) {
		log.Info("the API server does not serve networking.k8s.io/v1 ServiceCIDRs; using the configured service CIDRs")
		return nil, nil
	}
	factory := informers.NewSharedInformerFactory(client, resync)
	inf := factory.Networking().V1().ServiceCIDRs()
	lister := inf.Lister()
	update := func(any) {
		objs, err := lister.List(labels.Everything())
		if err != nil {
			return
		}
		cidrs := []netip.Prefix{}
		for _, sc := range objs {
			for _, c := range sc.Spec.CIDRs {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					log.Warn("ignoring an invalid ServiceCIDR", "name", sc.Name, "cidr", c)
					continue
				}
				cidrs = append(cidrs, p)
			}
		}
		if t.SetServiceCIDRs(cidrs) {
			log.Info("service CIDRs changed", "cidrs", fmt.Sprint(cidrs))
			changed()
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, o any) { update(o) },
		DeleteFunc: update,
	}); err != nil {
		return nil, fmt.Errorf("proxy: servicecidr handler: %w", err)
	}
	factory.Start(stop)
	go func() {
		<-stop
		factory.Shutdown()
	}()
	return inf.Informer().HasSynced, nil
}
