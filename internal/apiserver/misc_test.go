package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/storage"
)

type denyServices struct {
	mu   sync.Mutex
	seen []auth.Attributes
}

func (d *denyServices) Authorize(ctx context.Context, a auth.Attributes) error {
	d.mu.Lock()
	d.seen = append(d.seen, a)
	d.mu.Unlock()
	if a.Resource == "services" && a.Verb == "create" {
		return errors.New("nodes may not create services")
	}
	return nil
}

func TestAuthorizer(t *testing.T) {
	az := &denyServices{}
	env := newTestEnv(t, withConfig(func(c *Config) { c.Authorizer = az }), withWrap(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), &auth.User{Name: "system:node:n1", Groups: []string{auth.GroupNodes}})))
		})
	}))
	ctx := context.Background()
	_, err := env.cs.CoreV1().Services("default").Create(ctx, webService("web"), metav1.CreateOptions{})
	const want = `services is forbidden: User "system:node:n1" cannot create resource "services" in API group "" in the namespace "default": nodes may not create services`
	if !apierrors.IsForbidden(err) || err.Error() != want {
		t.Fatalf("create: %v, want 403 %q", err, want)
	}
	if _, err := env.cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=x"}); err != nil {
		t.Fatalf("list: %v", err)
	}
	az.mu.Lock()
	defer az.mu.Unlock()
	last := az.seen[len(az.seen)-1]
	if last.Verb != "list" || last.Resource != "services" || last.Namespace != "default" || last.Name != "x" || last.User == nil || last.User.Name != "system:node:n1" {
		t.Errorf("attributes %+v", last)
	}
}

func TestVersionAndHealth(t *testing.T) {
	ready := errors.New("not yet")
	var mu sync.Mutex
	env := newTestEnv(t, withConfig(func(c *Config) {
		c.Version = "v1.37.2-svcnet"
		c.Ready = func() error {
			mu.Lock()
			defer mu.Unlock()
			return ready
		}
	}))
	v, err := env.cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2-svcnet" || v.Major != "1" || v.Minor != "37" || v.GoVersion == "" {
		t.Errorf("version %+v", v)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(env.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Errorf("/healthz %d %q", code, body)
	}
	if code, body := get("/livez?verbose"); code != 200 || !strings.Contains(body, "[+]ping ok") || !strings.HasSuffix(body, "livez check passed\n") {
		t.Errorf("/livez?verbose %d %q", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]ready failed") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	mu.Lock()
	ready = nil
	mu.Unlock()
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	if code, _ := get("/readyz/etcd"); code != 200 {
		t.Errorf("/readyz/etcd: %d", code)
	}
}

func TestDiscoveryAndOpenAPIMounts(t *testing.T) {
	mark := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name+" "+r.URL.Path) })
	}
	env := newTestEnv(t, withConfig(func(c *Config) {
		c.Discovery = mark("discovery")
		c.OpenAPI = mark("openapi")
	}))
	for path, want := range map[string]string{
		"/api":                     "discovery /api",
		"/api/v1":                  "discovery /api/v1",
		"/apis":                    "discovery /apis",
		"/apis/apps/v1":            "discovery /apis/apps/v1",
		"/openapi/v3":              "openapi /openapi/v3",
		"/openapi/v3/api/v1":       "openapi /openapi/v3/api/v1",
		"/apis/apps/v1/namespaces": "",
	} {
		resp, err := http.Get(env.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want != "" && string(b) != want {
			t.Errorf("%s: %q, want %q", path, b, want)
		}
		if want == "" && resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestListOptions(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	first, err := svcs.Create(ctx, webService("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	headless := webService("b")
	headless.Spec.ClusterIP = "None"
	if _, err := svcs.Create(ctx, headless, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	list, err := svcs.List(ctx, metav1.ListOptions{FieldSelector: "spec.clusterIP!=None"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "a" {
		t.Errorf("field selector list: %v %+v", err, list)
	}
	list, err = env.cs.CoreV1().Services("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.namespace=default,metadata.name=b"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "b" {
		t.Errorf("metadata field selectors: %v %+v", err, list)
	}

	_, err = svcs.List(ctx, metav1.ListOptions{FieldSelector: "spec.foo=bar"})
	if !apierrors.IsBadRequest(err) || err.Error() != "field label not supported: spec.foo" {
		t.Errorf("unsupported field: %v", err)
	}

	// Exact at an old revision sees the old state.
	exact, err := svcs.List(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if err != nil || len(exact.Items) != 1 || exact.ResourceVersion != first.ResourceVersion {
		t.Errorf("exact list: %v %+v", err, exact)
	}

	_, err = svcs.List(ctx, metav1.ListOptions{ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if !apierrors.IsInvalid(err) {
		t.Errorf("resourceVersionMatch without resourceVersion: %v, want 422", err)
	}

	cur, _ := env.store.CurrentRevision(ctx)
	_, err = svcs.List(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatInt(cur+100, 10)})
	if !apierrors.IsTimeout(err) || !apierrors.HasStatusCause(err, metav1.CauseTypeResourceVersionTooLarge) {
		t.Errorf("future RV: %v, want 504 ResourceVersionTooLarge", err)
	}
}

// TestAllocatorProtocol checks the loop documented in registry.Allocator: a
// taken pick is retried on a fresh copy, a taken fixed value is the
// allocator's error, and the allocation keys go with the object.
func TestAllocatorProtocol(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")

	// Someone else holds 10.0.0.1: the first pick conflicts and is retried.
	if _, err := env.store.Txn(ctx, storage.Put(ipPrefix+"10.0.0.1", []byte("elsewhere"), 0)); err != nil {
		t.Fatal(err)
	}
	out, err := svcs.Create(ctx, webService("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out.Spec.ClusterIP != "10.0.0.2" || env.alloc.picks != 2 {
		t.Errorf("clusterIP %s after %d picks, want 10.0.0.2 after 2", out.Spec.ClusterIP, env.alloc.picks)
	}
	kv, err := env.store.Get(ctx, ipPrefix+"10.0.0.2")
	if err != nil || string(kv.Value) != "default/a" {
		t.Errorf("allocation key: %v %v", kv, err)
	}

	// A fixed IP that is taken fails with the allocator's error and writes nothing.
	fixed := webService("b")
	fixed.Annotations = map[string]string{"test/fixed-ip": "true"}
	fixed.Spec.ClusterIP = "10.0.0.2"
	_, err = svcs.Create(ctx, fixed, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "10.0.0.2 is already allocated") {
		t.Errorf("taken fixed IP: %v", err)
	}
	if _, err := svcs.Get(ctx, "b", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("service with a taken IP was stored: %v", err)
	}
}

func TestBinding(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	pods := env.cs.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	if err := pods.Bind(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := pods.Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.NodeName != "n1" || len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Type != corev1.PodScheduled {
		t.Errorf("after bind: node %q conditions %+v", got.Spec.NodeName, got.Status.Conditions)
	}
	if err := pods.Bind(ctx, b, metav1.CreateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("second bind: %v, want Conflict", err)
	}
}

func TestStatusBodies(t *testing.T) {
	env := newTestEnv(t)
	resp, err := http.Get(env.srv.URL + "/api/v1/namespaces/default/services/missing")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 404 || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure ||
		st.Reason != metav1.StatusReasonNotFound || st.Message != `services "missing" not found` ||
		st.Details == nil || st.Details.Name != "missing" || st.Details.Kind != "services" || st.Code != 404 {
		t.Errorf("status %d %+v", resp.StatusCode, st)
	}
}
