package discovery

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"

	"github.com/svcnet/svcnet/internal/registry"
)

// testKinds stands in for the real registry kinds: the same names, scopes,
// short names and subresources kube-apiserver has for them.
func testKinds() []*registry.Kind {
	scale := &registry.ScaleAccess{}
	core := func(res, kind string, short []string, namespaced, status bool, newObj func() runtime.Object) *registry.Kind {
		return &registry.Kind{
			Resource: schema.GroupVersionResource{Version: "v1", Resource: res}, Kind: kind,
			SingularName: strings.ToLower(kind), ShortNames: short, Namespaced: namespaced, Status: status, New: newObj,
		}
	}
	svc := core("services", "Service", []string{"svc"}, true, true, func() runtime.Object { return &corev1.Service{} })
	svc.Categories = []string{"all"}
	pod := core("pods", "Pod", []string{"po"}, true, true, func() runtime.Object { return &corev1.Pod{} })
	pod.Categories = []string{"all"}
	return []*registry.Kind{
		svc, pod,
		core("namespaces", "Namespace", []string{"ns"}, false, true, func() runtime.Object { return &corev1.Namespace{} }),
		core("configmaps", "ConfigMap", []string{"cm"}, true, false, func() runtime.Object { return &corev1.ConfigMap{} }),
		//lint:ignore SA1019 svcnet serves the deprecated Endpoints API, as kube-apiserver does
		core("endpoints", "Endpoints", []string{"ep"}, true, false, func() runtime.Object { return &corev1.Endpoints{} }),
		core("nodes", "Node", []string{"no"}, false, true, func() runtime.Object { return &corev1.Node{} }),
		{
			Resource: appsv1.SchemeGroupVersion.WithResource("deployments"), Kind: "Deployment", SingularName: "deployment",
			ShortNames: []string{"deploy"}, Categories: []string{"all"}, Namespaced: true, Status: true, Scale: scale,
			New: func() runtime.Object { return &appsv1.Deployment{} },
		},
		{
			Resource: appsv1.SchemeGroupVersion.WithResource("replicasets"), Kind: "ReplicaSet", SingularName: "replicaset",
			ShortNames: []string{"rs"}, Categories: []string{"all"}, Namespaced: true, Status: true, Scale: scale,
			New: func() runtime.Object { return &appsv1.ReplicaSet{} },
		},
		{
			Resource: discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), Kind: "EndpointSlice",
			SingularName: "endpointslice", Namespaced: true,
			New: func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		},
	}
}

func get(t *testing.T, h http.Handler, method, path, accept string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
	return v
}

func findResource(t *testing.T, list metav1.APIResourceList, name string) metav1.APIResource {
	t.Helper()
	for _, r := range list.APIResources {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("%s: no resource %q", list.GroupVersion, name)
	return metav1.APIResource{}
}

func TestDocuments(t *testing.T) {
	h := NewHandler(testKinds())

	rec := get(t, h, "GET", "/api", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("/api: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	versions := decode[metav1.APIVersions](t, rec)
	if versions.Kind != "APIVersions" || !slices.Equal(versions.Versions, []string{"v1"}) ||
		len(versions.ServerAddressByClientCIDRs) != 1 || versions.ServerAddressByClientCIDRs[0].ClientCIDR != "0.0.0.0/0" {
		t.Errorf("/api = %+v", versions)
	}

	core := decode[metav1.APIResourceList](t, get(t, h, "GET", "/api/v1/", ""))
	if core.Kind != "APIResourceList" || core.GroupVersion != "v1" {
		t.Errorf("/api/v1 header = %+v", core.TypeMeta)
	}
	apps := decode[metav1.APIResourceList](t, get(t, h, "GET", "/apis/apps/v1", ""))

	tests := []struct {
		list metav1.APIResourceList
		want metav1.APIResource
	}{
		// storageVersionHash values are kube-apiserver 1.37's.
		{core, metav1.APIResource{Name: "services", SingularName: "service", Namespaced: true, Kind: "Service", Verbs: allVerbs,
			ShortNames: []string{"svc"}, Categories: []string{"all"}, StorageVersionHash: "0/CO1lhkEBI="}},
		{core, metav1.APIResource{Name: "services/status", Namespaced: true, Kind: "Service", Verbs: subVerbs}},
		{core, metav1.APIResource{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", Verbs: allVerbs,
			ShortNames: []string{"po"}, Categories: []string{"all"}, StorageVersionHash: "xPOwRZ+Yhw8="}},
		{core, metav1.APIResource{Name: "pods/log", Namespaced: true, Kind: "Pod", Verbs: metav1.Verbs{"get"}}},
		{core, metav1.APIResource{Name: "namespaces", SingularName: "namespace", Kind: "Namespace",
			Verbs: metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}, ShortNames: []string{"ns"},
			StorageVersionHash: "Q3oi5N2YM8M="}},
		{core, metav1.APIResource{Name: "endpoints", SingularName: "endpoints", Namespaced: true, Kind: "Endpoints",
			Verbs: allVerbs, ShortNames: []string{"ep"}, StorageVersionHash: "fWeeMqaN/OA="}},
		{apps, metav1.APIResource{Name: "deployments", SingularName: "deployment", Namespaced: true, Kind: "Deployment",
			Verbs: allVerbs, ShortNames: []string{"deploy"}, Categories: []string{"all"}, StorageVersionHash: "8aSe+NMegvE="}},
		{apps, metav1.APIResource{Name: "deployments/scale", Namespaced: true, Group: "autoscaling", Version: "v1",
			Kind: "Scale", Verbs: subVerbs}},
		{apps, metav1.APIResource{Name: "replicasets/scale", Namespaced: true, Group: "autoscaling", Version: "v1",
			Kind: "Scale", Verbs: subVerbs}},
	}
	for _, tt := range tests {
		t.Run(tt.want.Name, func(t *testing.T) {
			got := findResource(t, tt.list, tt.want.Name)
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(tt.want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("got  %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
	if !slices.IsSortedFunc(core.APIResources, func(a, b metav1.APIResource) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("/api/v1 resources not sorted by name")
	}

	groups := decode[metav1.APIGroupList](t, get(t, h, "GET", "/apis", ""))
	var names []string
	for _, g := range groups.Groups {
		names = append(names, g.Name)
		if g.PreferredVersion.GroupVersion != g.Name+"/v1" || len(g.Versions) != 1 {
			t.Errorf("group %s: preferred %+v versions %+v", g.Name, g.PreferredVersion, g.Versions)
		}
	}
	if want := []string{"apps", "discovery.k8s.io"}; !slices.Equal(names, want) {
		t.Errorf("/apis groups = %v, want %v", names, want)
	}
	group := decode[metav1.APIGroup](t, get(t, h, "GET", "/apis/apps", ""))
	if group.Kind != "APIGroup" || group.Name != "apps" || group.PreferredVersion.Version != "v1" {
		t.Errorf("/apis/apps = %+v", group)
	}
}

func TestPreferredVersion(t *testing.T) {
	kind := func(v string) *registry.Kind {
		return &registry.Kind{Resource: schema.GroupVersionResource{Group: "example.io", Version: v, Resource: "things"}, Kind: "Thing"}
	}
	h := NewHandler([]*registry.Kind{kind("v1beta1"), kind("v1"), kind("v2alpha1")})
	groups := decode[metav1.APIGroupList](t, get(t, h, "GET", "/apis", ""))
	g := groups.Groups[0]
	var got []string
	for _, v := range g.Versions {
		got = append(got, v.Version)
	}
	if want := []string{"v1", "v1beta1", "v2alpha1"}; !slices.Equal(got, want) || g.PreferredVersion.Version != "v1" {
		t.Errorf("versions %v preferred %s, want %v preferred v1", got, g.PreferredVersion.Version, want)
	}
	// No core kinds: /api still answers, with no versions.
	versions := decode[metav1.APIVersions](t, get(t, h, "GET", "/api", ""))
	if versions.Versions == nil || len(versions.Versions) != 0 {
		t.Errorf("/api versions = %#v, want empty", versions.Versions)
	}
}

func TestErrors(t *testing.T) {
	h := NewHandler(testKinds())
	tests := []struct {
		method, path string
		code         int
		reason       metav1.StatusReason
	}{
		{"GET", "/apis/nope.example.io/v1", 404, metav1.StatusReasonNotFound},
		{"GET", "/apis/apps/v2", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v2", 404, metav1.StatusReasonNotFound},
		{"GET", "/apis/nope.example.io", 404, metav1.StatusReasonNotFound},
		{"POST", "/api/v1", 405, metav1.StatusReasonMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			rec := get(t, h, tt.method, tt.path, "")
			st := decode[metav1.Status](t, rec)
			if rec.Code != tt.code || st.Kind != "Status" || st.Code != int32(tt.code) || st.Reason != tt.reason ||
				st.Status != metav1.StatusFailure || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("got %d %+v", rec.Code, st)
			}
		})
	}
}

func TestHandles(t *testing.T) {
	for path, want := range map[string]bool{
		"/api": true, "/api/": true, "/api/v1": true, "/api/v1/": true,
		"/apis": true, "/apis/apps": true, "/apis/apps/v1": true, "/apis/apps/v1/": true,
		"/api/v1/services": false, "/apis/apps/v1/deployments": false, "/openapi/v3": false, "/version": false,
	} {
		if got := Handles(path); got != want {
			t.Errorf("Handles(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct{ accept, want string }{
		{"", mediaJSON},
		{"application/json", mediaJSON},
		{"*/*", mediaJSON},
		{"application/vnd.kubernetes.protobuf,application/json", mediaProtobuf},
		{"application/json,application/vnd.kubernetes.protobuf", mediaJSON},
		{"application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json", mediaJSON},
		{"application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json", mediaJSON},
		{"text/html", mediaJSON},
	}
	for _, tt := range tests {
		if got := negotiate(tt.accept); got != tt.want {
			t.Errorf("negotiate(%q) = %s, want %s", tt.accept, got, tt.want)
		}
	}
}

// TestClientGo runs client-go's discovery client, REST mapper, short-name
// expansion and scale-kind resolution against the handler, with JSON and with
// protobuf preferred (as kube-proxy's clients are configured).
func TestClientGo(t *testing.T) {
	h := NewHandler(testKinds())
	var (
		mu     sync.Mutex // guards served
		served []string   // response media types
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		mu.Lock()
		served = append(served, w.Header().Get("Content-Type"))
		mu.Unlock()
	}))
	defer srv.Close()

	for _, accept := range []string{"", "application/vnd.kubernetes.protobuf,application/json"} {
		t.Run("accept="+accept, func(t *testing.T) {
			mu.Lock()
			served = nil
			mu.Unlock()
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				wantProto := accept != ""
				if got := slices.Contains(served, mediaProtobuf); got != wantProto {
					t.Errorf("served %v; protobuf expected: %v", served, wantProto)
				}
			}()
			dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{AcceptContentTypes: accept}})
			if err != nil {
				t.Fatal(err)
			}
			groups, resources, err := dc.ServerGroupsAndResources()
			if err != nil {
				t.Fatalf("ServerGroupsAndResources: %v", err)
			}
			var gvs []string
			for _, g := range groups {
				gvs = append(gvs, g.PreferredVersion.GroupVersion)
			}
			if want := []string{"v1", "apps/v1", "discovery.k8s.io/v1"}; !slices.Equal(gvs, want) {
				t.Errorf("groups = %v, want %v", gvs, want)
			}
			if len(resources) != 3 {
				t.Errorf("got %d resource lists, want 3", len(resources))
			}

			cached := memory.NewMemCacheClient(dc)
			mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, func(w string) { t.Log(w) })
			for in, want := range map[string]schema.GroupVersionResource{
				"svc":            {Version: "v1", Resource: "services"},
				"po":             {Version: "v1", Resource: "pods"},
				"deploy":         {Group: "apps", Version: "v1", Resource: "deployments"},
				"rs":             {Group: "apps", Version: "v1", Resource: "replicasets"},
				"endpointslices": {Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
				"ns":             {Version: "v1", Resource: "namespaces"},
			} {
				got, err := mapper.ResourceFor(schema.GroupVersionResource{Resource: in})
				if err != nil || got != want {
					t.Errorf("ResourceFor(%q) = %v, %v; want %v", in, got, err, want)
				}
			}
			m, err := mapper.RESTMapping(schema.GroupKind{Group: "apps", Kind: "Deployment"})
			if err != nil || m.Resource.Resource != "deployments" || m.Scope.Name() != "namespace" {
				t.Errorf("RESTMapping(Deployment) = %+v, %v", m, err)
			}
			m, err = mapper.RESTMapping(schema.GroupKind{Kind: "Namespace"})
			if err != nil || m.Scope.Name() != "root" {
				t.Errorf("RESTMapping(Namespace) = %+v, %v", m, err)
			}

			resolver := scale.NewDiscoveryScaleKindResolver(cached)
			gvk, err := resolver.ScaleForResource(appsv1.SchemeGroupVersion.WithResource("deployments"))
			if want := (schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"}); err != nil || gvk != want {
				t.Errorf("ScaleForResource(deployments) = %v, %v; want %v", gvk, err, want)
			}
			if _, err := resolver.ScaleForResource(schema.GroupVersionResource{Version: "v1", Resource: "services"}); err == nil {
				t.Errorf("ScaleForResource(services) succeeded; services have no scale subresource")
			}
		})
	}
}

// TestProtobufBody checks the protobuf answer is the Kubernetes envelope.
func TestProtobufBody(t *testing.T) {
	rec := get(t, NewHandler(testKinds()), "GET", "/api/v1", "application/vnd.kubernetes.protobuf")
	body, _ := io.ReadAll(rec.Body)
	if rec.Header().Get("Content-Type") != mediaProtobuf || !strings.HasPrefix(string(body), "k8s\x00") {
		t.Errorf("got %q, body %q", rec.Header().Get("Content-Type"), body[:min(len(body), 8)])
	}
}
