package discovery

import (
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/kinds"
)

// TestRegistryKinds serves discovery for the kinds the server really serves
// (internal/registry/kinds) and resolves each by resource, short name and
// kind through client-go's REST mapper, and its scale kind where it has one.
func TestRegistryKinds(t *testing.T) {
	svc := &registry.Kind{
		Resource: corev1.SchemeGroupVersion.WithResource("services"), Kind: "Service", SingularName: "service",
		ShortNames: []string{"svc"}, Categories: []string{"all"}, Namespaced: true, Status: true,
		New: func() runtime.Object { return &corev1.Service{} },
	}
	all := kinds.All(svc)
	srv := httptest.NewServer(NewHandler(all))
	defer srv.Close()
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, func(string) {})
	resolver := scale.NewDiscoveryScaleKindResolver(cached)
	for _, k := range all {
		names := append([]string{k.Resource.Resource, k.SingularName}, k.ShortNames...)
		for _, n := range names {
			got, err := mapper.ResourceFor(schema.GroupVersionResource{Resource: n})
			if err != nil || got != k.Resource {
				t.Errorf("ResourceFor(%q) = %v, %v; want %v", n, got, err, k.Resource)
			}
		}
		m, err := mapper.RESTMapping(k.GroupVersionKind().GroupKind())
		if err != nil || m.Resource != k.Resource || (m.Scope.Name() == "namespace") != k.Namespaced {
			t.Errorf("RESTMapping(%s) = %+v, %v", k.Kind, m, err)
		}
		if k.Scale != nil {
			if gvk, err := resolver.ScaleForResource(k.Resource); err != nil || gvk.Kind != "Scale" {
				t.Errorf("ScaleForResource(%s) = %v, %v", k.Resource, gvk, err)
			}
		}
	}
}
