package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// eventually polls cond until it holds; the deadline only keeps a broken
// server from hanging the suite.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder notes the list and watch requests of the informers and can hold
// new watches (a "gate") to make a reconnection wait.
type recorder struct {
	mu       sync.Mutex // guards the fields below
	requests []recorded
	gate     chan struct{} // non-nil while closed gate: watches wait on it
}

type recorded struct {
	resource          string
	watch             bool
	sendInitialEvents bool
	resourceVersion   string
	held              bool
	at                time.Time
}

func (rec *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := parseRequestInfo(r)
		if r.Method == http.MethodGet && (info.verb == "list" || info.verb == "watch") && (info.resource == "services" || info.resource == "pods") {
			q := r.URL.Query()
			rr := recorded{resource: info.resource, watch: info.verb == "watch", sendInitialEvents: q.Get("sendInitialEvents") == "true",
				resourceVersion: q.Get("resourceVersion"), at: time.Now()}
			rec.mu.Lock()
			gate := rec.gate
			rr.held = gate != nil && rr.watch
			rec.requests = append(rec.requests, rr)
			rec.mu.Unlock()
			if rr.held {
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (rec *recorder) snapshot() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.requests...)
}

func (rec *recorder) closeGate() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.gate = make(chan struct{})
}

func (rec *recorder) openGate() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	close(rec.gate)
	rec.gate = nil
}

// tracker keeps what an informer's handler has seen.
type tracker struct {
	mu     sync.Mutex
	events []string // "add x", "update x", "delete x"
}

func (tr *tracker) handler() cache.ResourceEventHandler {
	name := func(obj interface{}) string {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return fmt.Sprintf("<%T>", obj)
		}
		return m.GetName()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { tr.add("add " + name(obj)) },
		UpdateFunc: func(_, obj interface{}) { tr.add("update " + name(obj)) },
		DeleteFunc: func(obj interface{}) { tr.add("delete " + name(obj)) },
	}
}

func (tr *tracker) add(ev string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, ev)
}

func (tr *tracker) saw(ev string) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, e := range tr.events {
		if e == ev {
			return true
		}
	}
	return false
}

// TestInformers is issue 2's acceptance point 2: informers sync and see
// create/update/delete with WatchList on and off, and recover from a watch
// whose revision was compacted (410).
func TestInformers(t *testing.T) {
	for _, watchList := range []bool{true, false} {
		t.Run(fmt.Sprintf("WatchListClient=%v", watchList), func(t *testing.T) {
			rec := &recorder{}
			env := newTestEnv(t, withWrap(rec.wrap))
			testInformers(t, env, rec, watchList, "")
		})
	}
}

// testInformers runs the informer checks against env, whose handler must be
// wrapped by rec; suffix makes object names unique on a shared store.
func testInformers(t *testing.T, env *testEnv, rec *recorder, watchList bool, suffix string) {
	clientfeaturestesting.SetFeatureDuringTest(t, clientfeatures.WatchListClient, watchList)
	ctx, cancel := context.WithCancel(context.Background())
	pre, live, post, prePod, livePod := "pre"+suffix, "live"+suffix, "post"+suffix, "pre-pod"+suffix, "live-pod"+suffix
	start := len(rec.snapshot())
	defer cancel()
	svcs := env.cs.CoreV1().Services("default")
	pods := env.cs.CoreV1().Pods("default")

	if _, err := svcs.Create(ctx, webService(pre), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: prePod}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	factory := informers.NewSharedInformerFactory(env.cs, 0)
	svcTrack, podTrack := &tracker{}, &tracker{}
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(svcTrack.handler()); err != nil {
		t.Fatal(err)
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(podTrack.handler()); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	syncCtx, syncCancel := context.WithTimeout(ctx, 20*time.Second)
	defer syncCancel()
	for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}
	eventually(t, "initial objects delivered", func() bool {
		return svcTrack.saw("add "+pre) && podTrack.saw("add "+prePod)
	})

	// The informers used the protocol we asked for.
	for _, r := range rec.snapshot()[start:] {
		if watchList && !r.watch {
			t.Errorf("WatchList client sent a LIST: %+v", r)
		}
		if !watchList && r.sendInitialEvents {
			t.Errorf("non-WatchList client sent sendInitialEvents: %+v", r)
		}
	}

	// Live add, update, delete.
	if _, err := svcs.Create(ctx, webService(live), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Patch(ctx, live, types.MergePatchType, []byte(`{"metadata":{"labels":{"v":"2"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := svcs.Delete(ctx, live, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: livePod}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, livePod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "live service events", func() bool {
		return svcTrack.saw("add "+live) && svcTrack.saw("update "+live) && svcTrack.saw("delete "+live)
	})
	eventually(t, "live pod events", func() bool {
		return podTrack.saw("add "+livePod) && podTrack.saw("delete "+livePod)
	})

	// Recovery from a compacted revision: hold the informers'
	// reconnection, change things and compact meanwhile, then let
	// them in. Their watch from the old revision gets 410 and they
	// relist.
	before := len(rec.snapshot())
	watchesOpenedLongEnough(t, rec)
	rec.closeGate()
	env.srv.CloseClientConnections()
	eventually(t, "held re-watches of services and pods", func() bool {
		held := map[string]bool{}
		for _, r := range rec.snapshot()[before:] {
			if r.held {
				held[r.resource] = true
			}
		}
		return held["services"] && held["pods"]
	})
	if err := svcs.Delete(ctx, pre, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, webService(post), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("filler", suffix, i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	compactAt, _ := env.store.CurrentRevision(ctx)
	if err := env.store.Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	rec.openGate()

	eventually(t, "informer recovery after 410", func() bool {
		return svcTrack.saw("delete "+pre) && svcTrack.saw("add "+post)
	})
	var held, relisted bool
	for _, r := range rec.snapshot()[before:] {
		if r.resource != "services" {
			continue
		}
		if r.held {
			rv, _ := strconv.ParseInt(r.resourceVersion, 10, 64)
			if rv == 0 || rv+1 >= compactAt {
				t.Errorf("held watch from RV %q is not compacted (compacted at %d)", r.resourceVersion, compactAt)
			}
			held = true
		} else if held && (!r.watch || r.sendInitialEvents) {
			relisted = true
		}
	}
	if !held || !relisted {
		t.Errorf("expected a held watch and then a relist: %+v", rec.snapshot()[before:])
	}
	lister := factory.Core().V1().Services().Lister()
	if _, err := lister.Services("default").Get(pre); err == nil {
		t.Errorf("lister still has the deleted service")
	}
}

// watchesOpenedLongEnough waits until the informers' current watches are
// over a second old: client-go treats a watch that ends sooner without events
// as an error and relists without trying the watch again, which would skip
// the 410 this test is about.
func watchesOpenedLongEnough(t *testing.T, rec *recorder) {
	t.Helper()
	var last time.Time
	for _, r := range rec.snapshot() {
		if r.watch && r.at.After(last) {
			last = r.at
		}
	}
	if d := time.Until(last.Add(1100 * time.Millisecond)); d > 0 {
		time.Sleep(d)
	}
}
