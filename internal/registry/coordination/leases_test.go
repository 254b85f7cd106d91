package coordination

import (
	"context"
	"reflect"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

func ptr[T any](v T) *T { return &v }

func TestLeases(t *testing.T) {
	ctx := context.Background()
	k := Leases()
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Namespace: "kube-node-lease", CreationTimestamp: metav1.NewTime(time.Now().Add(-72 * time.Hour))},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr("node-1"),
			LeaseDurationSeconds: ptr[int32](40),
			Strategy:             ptr(coordinationv1.OldestEmulationVersion),
		},
	}
	k.Strategy.Default(l)
	k.Strategy.PrepareForCreate(ctx, l)
	if l.Spec.Strategy != nil {
		t.Errorf("coordinated leader election fields must be dropped")
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, l))
	if got, want := k.Table.Cells(l), []interface{}{"node-1", "node-1", "3d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("cells %#v", got)
	}
	l.Spec.HolderIdentity = nil
	if got := k.Table.Cells(l)[1]; got != "" {
		t.Errorf("no holder: %q", got)
	}

	bad := l.DeepCopy()
	bad.ResourceVersion = "3"
	bad.Spec.LeaseDurationSeconds = ptr[int32](0)
	bad.Spec.LeaseTransitions = ptr[int32](-1)
	k.Strategy.PrepareForUpdate(ctx, bad, l)
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, bad, l),
		"spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
		"spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
	)
	if !k.Strategy.AllowCreateOnUpdate() || len(k.ShortNames) != 0 || k.Status {
		t.Errorf("kind flags: %+v", k)
	}
}
