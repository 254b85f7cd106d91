package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/svcnet/svcnet/internal/controller/endpointslice"
)

// observer watches the managed EndpointSlices and the Endpoints of one
// namespace the way a consumer (kube-proxy) would, and records when
// endpoints reach the readiness a waiter asked for and how many Services are
// complete.
type observer struct {
	mu sync.Mutex // guards the fields below
	// ready is the last seen readiness of each pod's endpoint.
	ready map[string]bool
	// waiters wait for a pod's endpoint to reach a readiness.
	waiters map[string]waiter
	// sliceReady is the ready-endpoint count of each slice, by service.
	sliceReady map[string]sliceCount
	svcReady   map[string]int
	// epReady is the ready-address count of each Endpoints.
	epReady map[string]int
	target  int // ready endpoints that make a Service complete
	// slicesComplete / endpointsComplete count Services at target.
	slicesComplete, endpointsComplete int
	firstSlice                        time.Time
	onChange                          chan struct{} // one-slot: something counted changed

	stop func()
}

type waiter struct {
	want bool
	ch   chan time.Time
}

type sliceCount struct {
	svc string
	n   int
}

// newObserver starts watching namespace ns with its own client; target is
// the per-Service ready count that counts as complete.
func newObserver(ctx context.Context, client kubernetes.Interface, ns string, target int) (*observer, error) {
	o := &observer{
		ready:      map[string]bool{},
		waiters:    map[string]waiter{},
		sliceReady: map[string]sliceCount{},
		svcReady:   map[string]int{},
		epReady:    map[string]int{},
		target:     target,
		onChange:   make(chan struct{}, 1),
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	slices := factory.Discovery().V1().EndpointSlices().Informer()
	eps := factory.Core().V1().Endpoints().Informer()
	if _, err := slices.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { o.onSlice(obj, false) },
		UpdateFunc: func(_, obj interface{}) { o.onSlice(obj, false) },
		DeleteFunc: func(obj interface{}) { o.onSlice(obj, true) },
	}); err != nil {
		return nil, err
	}
	if _, err := eps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { o.onEndpoints(obj, false) },
		UpdateFunc: func(_, obj interface{}) { o.onEndpoints(obj, false) },
		DeleteFunc: func(obj interface{}) { o.onEndpoints(obj, true) },
	}); err != nil {
		return nil, err
	}
	octx, cancel := context.WithCancel(ctx)
	factory.Start(octx.Done())
	o.stop = func() { cancel(); factory.Shutdown() }
	for typ, ok := range factory.WaitForCacheSync(octx.Done()) {
		if !ok {
			o.stop()
			return nil, fmt.Errorf("observer: %v cache did not sync", typ)
		}
	}
	return o, nil
}

func (o *observer) onSlice(obj interface{}, deleted bool) {
	now := time.Now()
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelManagedBy] != endpointslice.ControllerName {
		return
	}
	svc := s.Labels[discoveryv1.LabelServiceName]
	n := 0
	o.mu.Lock()
	defer o.mu.Unlock()
	if !deleted {
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil {
				continue
			}
			r := ep.Conditions.Ready != nil && *ep.Conditions.Ready
			if r {
				n++
			}
			o.ready[ep.TargetRef.Name] = r
			if w, ok := o.waiters[ep.TargetRef.Name]; ok && w.want == r {
				w.ch <- now
				delete(o.waiters, ep.TargetRef.Name)
			}
		}
		if o.firstSlice.IsZero() && len(s.Endpoints) > 0 {
			o.firstSlice = now
		}
	}
	before := o.svcReady[svc] >= o.target
	old := o.sliceReady[s.Name]
	o.svcReady[svc] += n - old.n
	if deleted {
		delete(o.sliceReady, s.Name)
	} else {
		o.sliceReady[s.Name] = sliceCount{svc: svc, n: n}
	}
	after := o.svcReady[svc] >= o.target
	if before != after {
		if after {
			o.slicesComplete++
		} else {
			o.slicesComplete--
		}
		o.poke()
	}
}

func (o *observer) onEndpoints(obj interface{}, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	ep, ok := obj.(*corev1.Endpoints)
	if !ok {
		return
	}
	n := 0
	if !deleted {
		for _, ss := range ep.Subsets {
			n += len(ss.Addresses)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	before := o.epReady[ep.Name] >= o.target
	o.epReady[ep.Name] = n
	after := n >= o.target
	if before != after {
		if after {
			o.endpointsComplete++
		} else {
			o.endpointsComplete--
		}
		o.poke()
	}
}

func (o *observer) poke() {
	select {
	case o.onChange <- struct{}{}:
	default:
	}
}

// expect registers interest in pod's endpoint reaching readiness want; the
// channel receives the time it was seen.
func (o *observer) expect(pod string, want bool) <-chan time.Time {
	ch := make(chan time.Time, 1)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waiters[pod] = waiter{want: want, ch: ch}
	return ch
}

func (o *observer) cancel(pod string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.waiters, pod)
}

// counts returns how many Services are complete in slices and Endpoints.
func (o *observer) counts() (slices, endpoints int, first time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.slicesComplete, o.endpointsComplete, o.firstSlice
}

// readyCount is how many pods are seen with a ready endpoint.
func (o *observer) readyCount(want bool) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, r := range o.ready {
		if r == want {
			n++
		}
	}
	return n
}
