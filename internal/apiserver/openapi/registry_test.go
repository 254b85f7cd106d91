package openapi

import (
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/kinds"
)

// TestRegistryKinds generates the documents for the kinds the server really
// serves (internal/registry/kinds) and runs kubectl's field-validation check
// on each of them.
func TestRegistryKinds(t *testing.T) {
	svc := &registry.Kind{
		Resource: corev1.SchemeGroupVersion.WithResource("services"), Kind: "Service", SingularName: "service",
		ShortNames: []string{"svc"}, Categories: []string{"all"}, Namespaced: true, Status: true,
		New:     func() runtime.Object { return &corev1.Service{} },
		NewList: func() runtime.Object { return &corev1.ServiceList{} },
	}
	all := kinds.All(svc)
	h, err := NewHandler(all)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := resource.NewQueryParamVerifierV3(dyn, openAPIClient(t, cfg), resource.QueryParamFieldValidation)
	for _, k := range all {
		if err := v.HasSupport(k.GroupVersionKind()); err != nil {
			t.Errorf("HasSupport(%s) = %v", k.GroupVersionKind(), err)
		}
	}
}
