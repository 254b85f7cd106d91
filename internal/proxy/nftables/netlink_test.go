package nftables

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// TestKernelLargeElementSync moves every endpoint of a 3000-endpoint
// service: one element-only sync whose element list is far larger than
// one netlink attribute can hold (64 KiB), so it must be split into
// several messages of the same batch. The kernel must then hold what the
// Fake holds, without a fallback to a full sync.
func TestKernelLargeElementSync(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	real, err := NewInterface(v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := New(testConfig(v1.IPv4Protocol), real)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kb.Cleanup(ctx) })
	fb, fake, _ := newTestBackend(t, testConfig(v1.IPv4Protocol))

	state := func(base int) *proxy.State {
		var eps []proxy.Endpoint
		for i := range 3000 {
			eps = append(eps, ep(fmt.Sprintf("10.%d.%d.%d", 100+base, i/250, i%250+1), 8080, "node-b", "ready"))
		}
		return buildState(svcWithEps{svc{name: "big", cip: []string{"10.96.0.50"}, svcPort: 80}, eps})
	}
	first, moved := state(0), state(1)
	for _, b := range []*Backend{kb, fb} {
		if err := b.Sync(ctx, first); err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(ctx, withChanged(first, moved)); err != nil {
			t.Fatalf("moving 3000 endpoints: %v", err)
		}
		if partial, _ := b.LastSyncStats(); !partial {
			t.Errorf("moving 3000 endpoints was not a partial sync")
		}
	}
	if real.(*realInterface).batches == 0 {
		t.Errorf("the move did not go through the netlink element path")
	}
	if got, want := snapshotObjects(t, real), snapshotObjects(t, fake); got != want {
		t.Fatalf("kernel differs from fake after the move (%d vs %d bytes)", len(got), len(want))
	}
}
