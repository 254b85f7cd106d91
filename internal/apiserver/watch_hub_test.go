package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/storage"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// hubOf returns the running hub of a resource, nil when there is none.
func hubOf(s *Server, gr string) *watchHub {
	res := s.byGR[corev1.Resource(gr)]
	hubs.Lock()
	defer hubs.Unlock()
	return hubs.m[hubKey{s: s, res: res}]
}

// collect reads n events (names with their types) from w.
func collect(t *testing.T, w watch.Interface, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ev := nextEvent(t, w)
		if ev.Type == watch.Error {
			t.Fatalf("error event: %v", ev.Object)
		}
		out = append(out, fmt.Sprintf("%s %s/%s", ev.Type, objectMeta(ev.Object).GetNamespace(), objectMeta(ev.Object).GetName()))
	}
	return out
}

// TestWatchHubSharing runs watchers of different namespaces, selectors,
// encodings and start revisions on one shared storage watch and checks each
// gets exactly the events a storage watch of its own would give.
func TestWatchHubSharing(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	for _, ns := range []string{"n1", "n2"} {
		if _, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cm := func(ns, name, color string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"color": color}}}
	}
	first, err := env.cs.CoreV1().ConfigMaps("n1").Create(ctx, cm("n1", "a", "red"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv0 := first.ResourceVersion

	open := func(cs kubernetes.Interface, ns string, opts metav1.ListOptions) watch.Interface {
		t.Helper()
		w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		return w
	}
	all := open(env.cs, "", metav1.ListOptions{ResourceVersion: rv0})
	allJSON := open(env.csJSON, "", metav1.ListOptions{ResourceVersion: rv0})
	n2 := open(env.cs, "n2", metav1.ListOptions{ResourceVersion: rv0})
	red := open(env.csJSON, "", metav1.ListOptions{ResourceVersion: rv0, LabelSelector: "color=red"})
	if hubOf(env.s, "configmaps") == nil {
		t.Fatal("no shared watch for configmaps")
	}

	if _, err := env.cs.CoreV1().ConfigMaps("n2").Create(ctx, cm("n2", "b", "blue"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mid, err := env.cs.CoreV1().ConfigMaps("n2").Create(ctx, cm("n2", "c", "red"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// b turns red (ADDED for the red watcher), c turns blue (DELETED for it).
	b, _ := env.cs.CoreV1().ConfigMaps("n2").Get(ctx, "b", metav1.GetOptions{})
	b.Labels["color"] = "red"
	if _, err := env.cs.CoreV1().ConfigMaps("n2").Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := env.cs.CoreV1().ConfigMaps("n2").Get(ctx, "c", metav1.GetOptions{})
	c.Labels["color"] = "blue"
	if _, err := env.cs.CoreV1().ConfigMaps("n2").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.cs.CoreV1().ConfigMaps("n1").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A watcher joining late from an earlier revision gets the buffered
	// events after it replayed.
	late := open(env.cs, "", metav1.ListOptions{ResourceVersion: mid.ResourceVersion})

	wantAll := []string{"ADDED n2/b", "ADDED n2/c", "MODIFIED n2/b", "MODIFIED n2/c", "DELETED n1/a"}
	for _, tc := range []struct {
		name string
		w    watch.Interface
		want []string
	}{
		{"all, protobuf", all, wantAll},
		{"all, JSON", allJSON, wantAll},
		{"namespace n2", n2, wantAll[:4]},
		{"color=red", red, []string{"ADDED n2/c", "ADDED n2/b", "DELETED n2/c", "DELETED n1/a"}},
		{"late joiner", late, wantAll[2:]},
	} {
		if got := collect(t, tc.w, len(tc.want)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: events %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWatchHubStopsWithLastWatcher checks the shared watch ends when its
// last watcher leaves, and a new watch starts a new one.
func TestWatchHubStopsWithLastWatcher(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	cm, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w1, err := env.cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: cm.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	h := hubOf(env.s, "configmaps")
	if h == nil {
		t.Fatal("no shared watch")
	}
	w1.Stop()
	// The server notices the closed connection when it next writes.
	for i := 0; i < 500 && hubOf(env.s, "configmaps") == h; i++ {
		if _, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("x", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if hubOf(env.s, "configmaps") == h {
		t.Fatal("shared watch still running after its last watcher left")
	}
	cur, _ := env.store.CurrentRevision(ctx)
	w2, err := env.cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: fmt.Sprint(cur)})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	if _, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, w2, 1); got[0] != "ADDED default/b" {
		t.Errorf("new watch: %v", got)
	}
}

// TestWatchHubCompactedJoiner: with a shared watch running that still
// holds the events, a watcher from a revision the store has compacted gets
// 410, as a storage watch would give it.
func TestWatchHubCompactedJoiner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	store, _ := etcdtest.Start(t)
	env := newTestEnv(t, withStore(store))
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	first, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Stop()
	for i := range 3 {
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("b", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	collect(t, keep, 3)
	// The hub holds the events after first; the store no longer does.
	cur, _ := store.CurrentRevision(ctx)
	if err := store.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ev := nextEvent(t, w)
	st, ok := ev.Object.(*metav1.Status)
	if ev.Type != watch.Error || !ok || st.Code != http.StatusGone || st.Message != "too old resource version: "+first.ResourceVersion {
		t.Errorf("watch from a compacted revision: %v %+v, want 410 ERROR", ev.Type, ev.Object)
	}
	// A watcher from the current revision still shares the hub.
	w2, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: fmt.Sprint(cur)})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, w2, 1); got[0] != "ADDED default/c" {
		t.Errorf("after compaction: %v", got)
	}
}

// TestWatchHubBuffer checks the replay window and slow watchers on a hub
// driven directly.
func TestWatchHubBuffer(t *testing.T) {
	env := newTestEnv(t)
	res := env.s.byGR[corev1.Resource("configmaps")]
	h := &watchHub{key: hubKey{s: env.s, res: res}, cancel: func() {}, bufStart: 10, lastRev: 10, subs: map[*watchSub]struct{}{}}
	put := func(rev int64) *watchEntry {
		return newWatchEntry(env.s, res, storage.Event{Type: storage.EventPut, Revision: rev, KV: storage.KV{Key: res.listPrefix("default") + fmt.Sprint(rev), ModRevision: rev}})
	}
	slow := h.join(10)
	slow.ch = make(chan *watchEntry, 2) // a watcher that stopped reading
	for rev := int64(11); rev <= 10+hubBuffer+hubBuffer/4+1; rev++ {
		h.publish(put(rev))
	}
	if _, open := <-slow.ch; !open {
		t.Fatal("first buffered event missing")
	}
	<-slow.ch
	if _, open := <-slow.ch; open || !errors.Is(slow.err, errSlowWatcher) {
		t.Errorf("slow watcher: channel open %v err %v, want closed with errSlowWatcher", open, slow.err)
	}
	// The oldest entries were dropped: older watchers cannot join.
	if h.bufStart <= 10 || len(h.buf) != hubBuffer {
		t.Fatalf("bufStart %d, %d entries; want the window moved to the last %d", h.bufStart, len(h.buf), hubBuffer)
	}
	if sub := h.join(h.bufStart - 1); sub != nil {
		t.Error("joined before the window")
	}
	sub := h.join(h.bufStart)
	if sub == nil || len(sub.ch) != hubBuffer {
		t.Fatalf("join at the window start: %v", sub)
	}
	if e := <-sub.ch; e.ev.Revision != h.bufStart+1 {
		t.Errorf("replay starts at %d, want %d", e.ev.Revision, h.bufStart+1)
	}
}

// TestWatchHubBufferBytes checks the replay window also stays within
// hubBufferBytes of stored values.
func TestWatchHubBufferBytes(t *testing.T) {
	env := newTestEnv(t)
	res := env.s.byGR[corev1.Resource("configmaps")]
	h := &watchHub{key: hubKey{s: env.s, res: res}, cancel: func() {}, bufStart: 10, lastRev: 10, subs: map[*watchSub]struct{}{}}
	big := make([]byte, hubBufferBytes/3)
	for rev := int64(11); rev <= 20; rev++ {
		h.publish(newWatchEntry(env.s, res, storage.Event{Type: storage.EventPut, Revision: rev, KV: storage.KV{Key: fmt.Sprint(rev), Value: big, ModRevision: rev}}))
		if h.bufBytes > hubBufferBytes {
			t.Fatalf("at %d: %d bytes buffered, bound %d", rev, h.bufBytes, hubBufferBytes)
		}
	}
	if len(h.buf) != 2 || h.bufStart != 18 || h.buf[0].ev.Revision != 19 {
		t.Errorf("buffer %d entries from %d (bufStart %d), want the last 2 after 18", len(h.buf), h.buf[0].ev.Revision, h.bufStart)
	}
}
