package dns

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// Watch runs informers for Services and EndpointSlices (and Pods with
// PodsVerified) and keeps s's index current until ctx is done. Informer
// handlers only record which Service (or Pod) changed and poke a one-slot
// channel; this goroutine alone applies the changes to its copy-on-write
// indexState and publishes the result, so bursts of events coalesce into one
// publish. s becomes ready once the first full sync is published.
func Watch(ctx context.Context, client kubernetes.Interface, s *Server) error {
	log := s.log
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trimObject))
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	if err := sliceInf.Informer().AddIndexers(toolscache.Indexers{byService: sliceServiceIndex}); err != nil {
		return fmt.Errorf("dns: endpointslice indexer: %w", err)
	}
	poke := make(chan struct{}, 1)
	const dirtySvc, dirtyPod = 0, 1
	var mu sync.Mutex // guards dirty
	dirty := [2]map[string]struct{}{{}, {}}
	mark := func(which int, keys ...string) {
		mu.Lock()
		for _, k := range keys {
			if k != "" {
				dirty[which][k] = struct{}{}
			}
		}
		mu.Unlock()
		notify(poke)
	}
	svcKey := func(obj any) string {
		k, _ := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		return k
	}
	sliceKey := func(obj any) string {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		keys, _ := sliceServiceIndex(obj)
		if len(keys) == 0 {
			return ""
		}
		return keys[0]
	}
	if _, err := svcInf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { mark(dirtySvc, svcKey(o)) },
		UpdateFunc: func(old, o any) {
			if !sameVersion(old, o) {
				mark(dirtySvc, svcKey(o))
			}
		},
		DeleteFunc: func(o any) { mark(dirtySvc, svcKey(o)) },
	}); err != nil {
		return fmt.Errorf("dns: service handler: %w", err)
	}
	if _, err := sliceInf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { mark(dirtySvc, sliceKey(o)) },
		UpdateFunc: func(old, o any) {
			if !sameVersion(old, o) {
				mark(dirtySvc, sliceKey(old), sliceKey(o))
			}
		},
		DeleteFunc: func(o any) { mark(dirtySvc, sliceKey(o)) },
	}); err != nil {
		return fmt.Errorf("dns: endpointslice handler: %w", err)
	}
	var podInf toolscache.SharedIndexInformer
	if s.cfg.Records.Pods == PodsVerified {
		podInf = factory.Core().V1().Pods().Informer()
		if _, err := podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { mark(dirtyPod, svcKey(o)) },
			UpdateFunc: func(old, o any) {
				if !sameVersion(old, o) {
					mark(dirtyPod, svcKey(o))
				}
			},
			DeleteFunc: func(o any) { mark(dirtyPod, svcKey(o)) },
		}); err != nil {
			return fmt.Errorf("dns: pod handler: %w", err)
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	log.Info("waiting for informers to sync")
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("dns: informer %v did not sync: %w", typ, ctx.Err())
		}
	}
	st := newIndexState(s.cfg.Records)
	sliceIdx := sliceInf.Informer().GetIndexer()
	apply := func() {
		mu.Lock()
		svcKeys, podKeys := dirty[dirtySvc], dirty[dirtyPod]
		dirty = [2]map[string]struct{}{{}, {}}
		mu.Unlock()
		start := time.Now()
		changes := make(map[string]serviceInput, len(svcKeys))
		for k := range svcKeys {
			in := serviceInput{}
			if o, ok, _ := svcInf.Informer().GetStore().GetByKey(k); ok {
				in.svc = o.(*corev1.Service)
				objs, _ := sliceIdx.ByIndex(byService, k)
				for _, so := range objs {
					in.slices = append(in.slices, so.(*discoveryv1.EndpointSlice))
				}
			}
			changes[k] = in
		}
		pods := make(map[string]*corev1.Pod, len(podKeys))
		for k := range podKeys {
			pods[k] = nil
			if o, ok, _ := podInf.GetStore().GetByKey(k); ok {
				pods[k] = o.(*corev1.Pod)
			}
		}
		s.publish(st.apply(changes, pods, nowSerial()), time.Since(start))
		log.Debug("index published", "services changed", len(changes), "pods changed", len(pods), "took", time.Since(start))
	}
	// Every object seen so far is dirty already (the handlers ran for the
	// initial list); the first apply is the full build.
	apply()
	s.SetReady(true)
	// The initial LIST decoded every full object before trimObject ran;
	// hand that one-time garbage back to the OS instead of carrying it as
	// heap headroom (RSS should follow what is served).
	debug.FreeOSMemory()
	log.Info("informers synced; serving cluster names", "names", len(st.names))
	for {
		select {
		case <-ctx.Done():
			s.SetReady(false)
			return nil
		case <-poke:
			apply()
		}
	}
}

const byService = "service"

// sameVersion reports an update that changes nothing (a relist replaying
// the same object): no rebuild for it.
func sameVersion(old, cur any) bool {
	a, ok1 := old.(metav1.Object)
	b, ok2 := cur.(metav1.Object)
	return ok1 && ok2 && a.GetResourceVersion() != "" && a.GetResourceVersion() == b.GetResourceVersion()
}

// sliceServiceIndex indexes an EndpointSlice by its Service "<ns>/<name>".
func sliceServiceIndex(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	n := sl.Labels[discoveryv1.LabelServiceName]
	if n == "" {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + n}, nil
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// trimObject keeps only what DNS needs of each object, so memory follows
// what is served (informer transform; runs before the object is stored).
func trimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		t := &corev1.Service{ObjectMeta: trimMeta(o.ObjectMeta, true)}
		t.Spec.Type = o.Spec.Type
		t.Spec.ClusterIP = o.Spec.ClusterIP
		if len(o.Spec.ClusterIPs) > 1 || (len(o.Spec.ClusterIPs) == 1 && o.Spec.ClusterIPs[0] != o.Spec.ClusterIP) {
			t.Spec.ClusterIPs = o.Spec.ClusterIPs
		}
		t.Spec.ExternalName = o.Spec.ExternalName
		if len(o.Spec.Ports) > 0 {
			t.Spec.Ports = make([]corev1.ServicePort, len(o.Spec.Ports))
			for i, p := range o.Spec.Ports {
				t.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port}
			}
		}
		return t, nil
	case *discoveryv1.EndpointSlice:
		t := &discoveryv1.EndpointSlice{ObjectMeta: trimMeta(o.ObjectMeta, false), AddressType: o.AddressType, Ports: o.Ports}
		if n := o.Labels[discoveryv1.LabelServiceName]; n != "" {
			t.Labels = map[string]string{discoveryv1.LabelServiceName: n}
		}
		t.Endpoints = make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			t.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Hostname: e.Hostname,
				Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
		}
		return t, nil
	case *corev1.Pod:
		t := &corev1.Pod{ObjectMeta: trimMeta(o.ObjectMeta, false)}
		t.Status.PodIP, t.Status.PodIPs = o.Status.PodIP, o.Status.PodIPs
		return t, nil
	}
	return obj, nil
}

func trimMeta(m metav1.ObjectMeta, keepTolerate bool) metav1.ObjectMeta {
	t := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	if keepTolerate {
		if v, ok := m.Annotations[tolerateUnreadyAnnotation]; ok {
			t.Annotations = map[string]string{tolerateUnreadyAnnotation: v}
		}
	}
	return t
}

// Run serves DNS with cfg, fed from client, until ctx is done or a loop is
// detected. It is what `svcnet dns` and the agent call.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Stop()
	watchErr := make(chan error, 1)
	go func() { watchErr <- Watch(ctx, client, s) }()
	select {
	case <-ctx.Done():
		<-watchErr
		return nil
	case err := <-s.Fatal():
		cancel()
		<-watchErr
		return err
	case err := <-watchErr:
		if err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	}
}
