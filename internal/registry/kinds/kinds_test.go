package kinds_test

import (
	"context"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/kinds"
)

// fakeStrategy and fakeService stand in for the Kind built by
// internal/registry/service.
type fakeStrategy struct{}

func (fakeStrategy) PrepareForCreate(context.Context, runtime.Object)                 {}
func (fakeStrategy) Default(runtime.Object)                                           {}
func (fakeStrategy) Validate(context.Context, runtime.Object) field.ErrorList         { return nil }
func (fakeStrategy) PrepareForUpdate(context.Context, runtime.Object, runtime.Object) {}
func (fakeStrategy) ValidateUpdate(context.Context, runtime.Object, runtime.Object) field.ErrorList {
	return nil
}
func (fakeStrategy) AllowCreateOnUpdate() bool { return true }

func fakeService() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("services"),
		Kind:         "Service",
		SingularName: "service",
		ShortNames:   []string{"svc"},
		Categories:   []string{"all"},
		Namespaced:   true,
		New:          func() runtime.Object { return &corev1.Service{} },
		NewList:      func() runtime.Object { return &corev1.ServiceList{} },
		Strategy:     fakeStrategy{},
		Status:       true,
	}
}

func TestAll(t *testing.T) {
	all := kinds.All(fakeService())
	var order []string
	seen := map[schema.GroupVersionResource]bool{}
	shortNames := map[string]bool{}
	for _, k := range all {
		order = append(order, k.Resource.Resource)
		if seen[k.Resource] {
			t.Errorf("duplicate resource %v", k.Resource)
		}
		seen[k.Resource] = true
		for _, s := range k.ShortNames {
			if shortNames[s] {
				t.Errorf("duplicate short name %q", s)
			}
			shortNames[s] = true
		}
		if k.Strategy == nil || k.New == nil || k.NewList == nil {
			t.Fatalf("%s: incomplete Kind", k.Resource)
		}
		if k.SingularName == "" {
			t.Errorf("%s: no singular name", k.Resource)
		}

		// New and NewList must be the scheme's types for the Kind's GVK,
		// so codecs, SSA and discovery agree with the registry.
		for _, c := range []struct {
			obj  runtime.Object
			kind string
		}{{k.New(), k.Kind}, {k.NewList(), k.Kind + "List"}} {
			gvks, _, err := scheme.Scheme.ObjectKinds(c.obj)
			if err != nil {
				t.Errorf("%s: %T not in client-go scheme: %v", k.Resource, c.obj, err)
				continue
			}
			want := k.Resource.GroupVersion().WithKind(c.kind)
			found := false
			for _, g := range gvks {
				found = found || g == want
			}
			if !found {
				t.Errorf("%s: %T registered as %v, want %v", k.Resource, c.obj, gvks, want)
			}
		}
		if reflect.TypeOf(k.New()) == reflect.TypeOf(k.NewList()) {
			t.Errorf("%s: New and NewList return the same type", k.Resource)
		}
		if k.Scale != nil && !k.Status {
			t.Errorf("%s: scale without status", k.Resource)
		}
		if _, ok := k.Strategy.(registry.StatusStrategy); k.Status && !ok && k.Kind != "Service" {
			t.Errorf("%s: has /status but no StatusStrategy", k.Resource)
		}

		// Table rows must have one cell per column, even for an empty object
		// (kubectl get on half-written objects must not crash the server).
		if k.Table != nil {
			obj := k.New()
			k.Strategy.Default(obj)
			if cells := k.Table.Cells(obj); len(cells) != len(k.Table.Columns) {
				t.Errorf("%s: %d cells for %d columns", k.Resource, len(cells), len(k.Table.Columns))
			}
			if k.Table.Columns[0].Name != "Name" && k.Kind != "Event" {
				t.Errorf("%s: first column %q", k.Resource, k.Table.Columns[0].Name)
			}
		}
		if k.Fields != nil {
			k.Fields(k.New()) // must not panic on an empty object
		}
	}
	want := []string{"namespaces", "pods", "services", "endpoints", "nodes", "configmaps", "events",
		"endpointslices", "deployments", "replicasets", "leases", "servicecidrs"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if again := kinds.All(fakeService()); len(again) != len(all) {
		t.Errorf("All is not stable")
	}
	if without := kinds.All(nil); len(without) != len(all)-1 {
		t.Errorf("All(nil) has %d kinds", len(without))
	}
}
