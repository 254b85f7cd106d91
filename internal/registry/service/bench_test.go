package service

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/storage"
)

// BenchmarkAllocate measures one Allocate (a NodePort Service: a ClusterIP and
// a NodePort) with 0 and 10k ClusterIPs (and 2k NodePorts) already stored.
// The cost must not grow with the number of Services.
func BenchmarkAllocate(b *testing.B) {
	for _, n := range []int{0, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ctx := context.Background()
			store := newMemStore()
			ops := make([]storage.Op, 0, n)
			ip := netip.MustParseAddr("10.96.1.1")
			for i := 0; i < n; i++ {
				ops = append(ops, storage.Put(ClusterIPKey(ip), []byte(`{}`), 0))
				ip = ip.Next()
				if i < 2000 {
					ops = append(ops, storage.Put(NodePortKey(30100+i), []byte(`{}`), 0))
				}
			}
			if _, err := store.Txn(ctx, ops...); err != nil {
				b.Fatal(err)
			}
			_, alloc := newTestKind(b, store, "10.96.0.0/12")
			// Every call happens a TTL after the previous one, so the
			// previous picks expire and the mirror stays at n.
			var now time.Time
			alloc.mu.Lock()
			alloc.now = func() time.Time { now = now.Add(2 * reservationTTL); return now }
			alloc.mu.Unlock()
			tmpl := &v1.Service{}
			tmpl.Name, tmpl.Namespace = "bench", "default"
			tmpl.Spec.Type = v1.ServiceTypeNodePort
			tmpl.Spec.Ports = []v1.ServicePort{{Port: 80}}
			Strategy{}.Default(tmpl)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				svc := tmpl.DeepCopy()
				if _, err := alloc.Allocate(ctx, svc, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
