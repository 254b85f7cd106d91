package dns

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
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
	// No namespace index (the typed informers' default): nothing reads it.
	svcInf := factory.InformerFor(&corev1.Service{}, func(c kubernetes.Interface, resync time.Duration) toolscache.SharedIndexInformer {
		return coreinformers.NewServiceInformer(c, metav1.NamespaceAll, resync, toolscache.Indexers{})
	})
	sliceInf := factory.InformerFor(&discoveryv1.EndpointSlice{}, func(c kubernetes.Interface, resync time.Duration) toolscache.SharedIndexInformer {
		return discoveryinformers.NewEndpointSliceInformer(c, metav1.NamespaceAll, resync, toolscache.Indexers{byService: sliceServiceIndex})
	})
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
	if _, err := svcInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
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
	if _, err := sliceInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
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
		podInf = factory.InformerFor(&corev1.Pod{}, func(c kubernetes.Interface, resync time.Duration) toolscache.SharedIndexInformer {
			return coreinformers.NewPodInformer(c, metav1.NamespaceAll, resync, toolscache.Indexers{})
		})
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
	sliceIdx := sliceInf.GetIndexer()
	apply := func() {
		mu.Lock()
		svcKeys, podKeys := dirty[dirtySvc], dirty[dirtyPod]
		dirty = [2]map[string]struct{}{{}, {}}
		mu.Unlock()
		start := time.Now()
		changes := make(map[string]serviceInput, len(svcKeys))
		for k := range svcKeys {
			in := serviceInput{}
			if o, ok, _ := svcInf.GetStore().GetByKey(k); ok {
				in.svc = o.(*svcObj)
				objs, _ := sliceIdx.ByIndex(byService, k)
				for _, so := range objs {
					in.slices = append(in.slices, so.(*sliceObj))
				}
			}
			changes[k] = in
		}
		pods := make(map[string]*podObj, len(podKeys))
		for k := range podKeys {
			pods[k] = nil
			if o, ok, _ := podInf.GetStore().GetByKey(k); ok {
				pods[k] = o.(*podObj)
			}
		}
		s.publish(st.apply(changes, pods, nowSerial()), time.Since(start))
		log.Debug("index published", "services changed", len(changes), "pods changed", len(pods), "took", time.Since(start))
	}
	// Every object seen so far is dirty already (the handlers ran for the
	// initial list); the first apply is the full build.
	apply()
	s.SetReady(true)
	// The initial list decoded every full object before trimObject
	// compacted it: hand that one-time garbage back to the OS instead of
	// carrying it as heap headroom, and (own process) the binary's pages
	// touched only while starting (RSS should follow what is served).
	s.releaseMemory()
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
	a, err1 := meta.Accessor(old)
	b, err2 := meta.Accessor(cur)
	return err1 == nil && err2 == nil && a.GetResourceVersion() != "" && a.GetResourceVersion() == b.GetResourceVersion()
}

// sliceServiceIndex indexes an EndpointSlice by its Service "<ns>/<name>".
func sliceServiceIndex(obj any) ([]string, error) {
	sl, ok := obj.(*sliceObj)
	if !ok || sl.service == "" {
		return nil, nil
	}
	return []string{sl.ns + "/" + sl.service}, nil
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run serves DNS with cfg, fed from client, until ctx is done or a loop is
// detected. It is what `svcnet dns` and the agent call.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	if cfg.OwnProcess {
		tuneOwnProcessGC()
		// What the package initialisers of the whole binary touched.
		s.releaseMemory()
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
