package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/svcnet/svcnet/internal/apiserver/internal/memstore"
)

// nextEvent waits for one event (no timing assertion: the timeout only keeps
// a broken server from hanging the suite).
func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatalf("watch closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("no watch event")
	}
	return watch.Event{}
}

type seen struct {
	typ  watch.EventType
	name string
	rv   string
}

func eventOf(t *testing.T, ev watch.Event) seen {
	t.Helper()
	if ev.Type == watch.Error {
		t.Fatalf("error event: %v", apierrors.FromObject(ev.Object))
	}
	m := objectMeta(ev.Object)
	return seen{ev.Type, m.GetName(), m.GetResourceVersion()}
}

func TestWatch(t *testing.T) { testWatch(t, newTestEnv(t)) }

func testWatch(t *testing.T, env *testEnv) {
	for _, tc := range []struct {
		name string
		cs   kubernetes.Interface
	}{
		{"protobuf", env.cs},
		{"json", env.csJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ns := "default"
			cms := tc.cs.CoreV1().ConfigMaps(ns)
			start, err := cms.List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: start.ResourceVersion})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()

			name := "cm-" + tc.name
			created, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"a": "1"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			created.Data["a"] = "2"
			updated, err := cms.Update(ctx, created, metav1.UpdateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			after, _ := env.store.CurrentRevision(ctx)

			want := []seen{
				{watch.Added, name, created.ResourceVersion},
				{watch.Modified, name, updated.ResourceVersion},
				{watch.Deleted, name, strconv.FormatInt(after, 10)},
			}
			for i, w0 := range want {
				ev := nextEvent(t, w)
				got := eventOf(t, ev)
				if got != w0 {
					t.Errorf("event %d = %+v, want %+v", i, got, w0)
				}
				if ev.Type == watch.Deleted && ev.Object.(*corev1.ConfigMap).Data["a"] != "2" {
					t.Errorf("DELETED does not carry the last state: %+v", ev.Object)
				}
			}
		})
	}
}

func TestWatchSelectorTransitions(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	w, err := svcs.Watch(ctx, metav1.ListOptions{FieldSelector: "spec.clusterIP!=None", LabelSelector: "!skip", ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	headless := webService("headless")
	headless.Spec.ClusterIP = "None"
	if _, err := svcs.Create(ctx, headless, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, webService("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Stops matching the label selector, then matches again.
	if _, err := svcs.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"skip":"1"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"skip":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Changes to the non-matching headless service are not seen.
	if _, err := svcs.Patch(ctx, "headless", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"1"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"y":"1"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	want := []seen{{watch.Added, "web", ""}, {watch.Deleted, "web", ""}, {watch.Added, "web", ""}, {watch.Modified, "web", ""}}
	for i, w0 := range want {
		got := eventOf(t, nextEvent(t, w))
		got.rv = ""
		if got != w0 {
			t.Errorf("event %d = %+v, want %+v", i, got, w0)
		}
	}
}

func TestWatchFromCompactedRevision(t *testing.T) { testWatchFromCompactedRevision(t, newTestEnv(t)) }

func testWatchFromCompactedRevision(t *testing.T, env *testEnv) {
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	first, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("b", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rev, _ := env.store.CurrentRevision(ctx)
	if err := env.store.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for _, cs := range []kubernetes.Interface{env.cs, env.csJSON} {
		w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, w)
		if ev.Type != watch.Error {
			t.Fatalf("event %v, want ERROR", ev.Type)
		}
		st, ok := ev.Object.(*metav1.Status)
		if !ok || st.Code != http.StatusGone || st.Reason != metav1.StatusReasonExpired || st.Message != "too old resource version: "+first.ResourceVersion {
			t.Errorf("error event %+v", ev.Object)
		}
		w.Stop()
	}

	// A list at the compacted revision is 410 too.
	_, err = cms.List(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("exact list at compacted RV: %v, want 410", err)
	}
}

// rawWatch opens a JSON watch with query q and returns a function reading
// one event.
func rawWatch(t *testing.T, env *testEnv, path string) func() (string, map[string]interface{}) {
	t.Helper()
	return rawWatchAccept(t, env, path, "")
}

// rawWatchAccept is rawWatch with an Accept header.
func rawWatchAccept(t *testing.T, env *testEnv, path, accept string) func() (string, map[string]interface{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.srv.URL+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: %s", path, resp.Status)
	}
	lines := make(chan []byte)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
		close(lines)
	}()
	return func() (string, map[string]interface{}) {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				return "", nil
			}
			var ev struct {
				Type   string                 `json:"type"`
				Object map[string]interface{} `json:"object"`
			}
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("bad watch line %q: %v", line, err)
			}
			return ev.Type, ev.Object
		case <-time.After(10 * time.Second):
			t.Fatalf("no watch event")
		}
		return "", nil
	}
}

func TestWatchList(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	for _, n := range []string{"a", "b"} {
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	snapshot, _ := env.store.CurrentRevision(ctx)
	next := rawWatch(t, env, "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
	for _, n := range []string{"a", "b"} {
		typ, obj := next()
		if typ != "ADDED" || obj["metadata"].(map[string]interface{})["name"] != n {
			t.Errorf("initial event %s %v, want ADDED %s", typ, obj["metadata"], n)
		}
	}
	typ, obj := next()
	md, _ := obj["metadata"].(map[string]interface{})
	ann, _ := md["annotations"].(map[string]interface{})
	if typ != "BOOKMARK" || obj["kind"] != "ConfigMap" || md["resourceVersion"] != strconv.FormatInt(snapshot, 10) || ann[metav1.InitialEventsAnnotationKey] != "true" {
		t.Errorf("after initial events: %s %v, want the initial-events-end BOOKMARK at %d", typ, obj, snapshot)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	typ, obj = next()
	if typ != "ADDED" || obj["metadata"].(map[string]interface{})["name"] != "c" {
		t.Errorf("live event %s %v, want ADDED c", typ, obj["metadata"])
	}

	// A bookmark for each storage progress notification.
	env.store.(*memstore.Store).Progress()
	typ, obj = next()
	if typ != "BOOKMARK" || obj["metadata"].(map[string]interface{})["annotations"] != nil {
		t.Errorf("progress: %s %v, want a plain BOOKMARK", typ, obj)
	}

	// sendInitialEvents needs resourceVersionMatch=NotOlderThan.
	err := env.cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/configmaps").
		Param("watch", "1").Param("sendInitialEvents", "true").Do(ctx).Error()
	if !apierrors.IsInvalid(err) {
		t.Errorf("sendInitialEvents without resourceVersionMatch: %v, want 422", err)
	}
}

func TestWatchTimeoutAndLegacyPath(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	if _, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// timeoutSeconds ends the stream cleanly; RV "0" starts with ADDED.
	next := rawWatch(t, env, "/api/v1/watch/namespaces/default/configmaps/a?resourceVersion=0&timeoutSeconds=1")
	if typ, _ := next(); typ != "ADDED" {
		t.Errorf("first event %q, want ADDED", typ)
	}
	if typ, obj := next(); typ != "" {
		t.Errorf("after timeout: %q %v, want end of stream", typ, obj)
	}
}

// decodeRaw is used by table tests to decode a body into obj.
func decodeRaw(t *testing.T, env *testEnv, body []byte, obj runtime.Object) {
	t.Helper()
	if _, _, err := env.s.jsonInfo.Serializer.Decode(body, nil, obj); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}

func decodeJSON(t *testing.T, data []byte, v interface{}) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestWatchPeriodicBookmark(t *testing.T) {
	env := newTestEnv(t)
	env.s.bookmarkInterval = 20 * time.Millisecond
	ctx := context.Background()
	cm, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := rawWatch(t, env, "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&resourceVersion="+cm.ResourceVersion)
	typ, obj := next()
	md := obj["metadata"].(map[string]interface{})
	if typ != "BOOKMARK" || obj["kind"] != "ConfigMap" || md["resourceVersion"] != cm.ResourceVersion {
		t.Errorf("periodic event %s %v, want BOOKMARK at %s", typ, obj, cm.ResourceVersion)
	}
}

func TestMetadataClient(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	mc, err := metadata.NewForConfig(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cms := mc.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace("default")
	if _, err := env.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"k": "v"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Labels["k"] != "v" {
		t.Fatalf("metadata list: %v %+v", err, list)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := env.cs.CoreV1().ConfigMaps("default").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, w)
	if p, ok := ev.Object.(*metav1.PartialObjectMetadata); ev.Type != watch.Deleted || !ok || p.Name != "a" {
		t.Errorf("metadata watch event %v %#v", ev.Type, ev.Object)
	}
	got, err := cms.Get(ctx, "a", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("metadata get after delete: %v %v", got, err)
	}
}
