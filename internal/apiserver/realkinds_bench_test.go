package apiserver

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcnet/svcnet/internal/registry/kinds"
	"github.com/svcnet/svcnet/internal/registry/service"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// newRealEnv serves the real kinds (the Service kind with its allocator)
// on an embedded etcd, as `svcnet server` does.
func newRealEnv(b *testing.B) *testEnv {
	b.Helper()
	store, _ := etcdtest.Start(b)
	_, cidr, _ := net.ParseCIDR("10.96.0.0/12")
	svcKind, allocs, err := service.NewKind(service.Config{Store: store, ServiceCIDR: cidr})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go allocs.Run(ctx)
	return newTestEnv(b, withStore(store), withConfig(func(c *Config) { c.Kinds = kinds.All(svcKind) }))
}

func realService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "bench"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// BenchmarkCreateRealService measures Service creates of the real Service
// kind (ClusterIP allocation included) on an embedded etcd (no fsync).
func BenchmarkCreateRealService(b *testing.B) {
	if testing.Short() {
		b.Skip("starts an embedded etcd")
	}
	env := newRealEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		if _, err := env.cs.CoreV1().Services("default").Create(ctx, realService(fmt.Sprint("b", i)), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// processCPU returns the CPU time (user+system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds a cpu-ns/op metric: the process's CPU time (server, its
// store and the client together) per operation since start. Wall time per
// op moves with other load on a shared machine; CPU per op much less.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}
