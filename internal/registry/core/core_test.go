package core

import (
	"context"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcnet/svcnet/internal/registry"
)

var ctx = context.Background()

// threeDaysAgo makes AGE cells deterministic ("3d") without a fake clock:
// HumanDuration prints whole days for 3d plus a few milliseconds.
var threeDaysAgo = metav1.NewTime(time.Now().Add(-72 * time.Hour))

// create runs obj through the create path the apiserver uses.
func create(k *registry.Kind, obj runtime.Object) runtime.Object {
	k.Strategy.Default(obj)
	k.Strategy.PrepareForCreate(ctx, obj)
	return obj
}

// update runs obj (a modified copy of old) through the update path.
func update(k *registry.Kind, obj, old runtime.Object) runtime.Object {
	k.Strategy.Default(obj)
	k.Strategy.PrepareForUpdate(ctx, obj, old)
	return obj
}

// statusUpdate runs obj through the /status path.
func statusUpdate(k *registry.Kind, obj, old runtime.Object) runtime.Object {
	k.Strategy.(registry.StatusStrategy).PrepareForStatusUpdate(ctx, obj, old)
	return obj
}

func expectCells(t *testing.T, k *registry.Kind, obj runtime.Object, want ...interface{}) {
	t.Helper()
	got := k.Table.Cells(obj)
	if len(got) != len(k.Table.Columns) {
		t.Fatalf("%d cells for %d columns", len(got), len(k.Table.Columns))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cells\n got: %#v\nwant: %#v", got, want)
	}
}

func expectColumns(t *testing.T, k *registry.Kind, names ...string) {
	t.Helper()
	var got []string
	for _, c := range k.Table.Columns {
		n := c.Name
		if c.Priority != 0 {
			n += "(wide)"
		}
		got = append(got, n)
	}
	if !reflect.DeepEqual(got, names) {
		t.Errorf("columns\n got: %v\nwant: %v", got, names)
	}
}

func expectFields(t *testing.T, k *registry.Kind, obj runtime.Object, want fields.Set) {
	t.Helper()
	if got := k.Fields(obj); !reflect.DeepEqual(got, want) {
		t.Errorf("fields\n got: %v\nwant: %v", got, want)
	}
}
