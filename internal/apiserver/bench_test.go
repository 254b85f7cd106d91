package apiserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/svcnet/svcnet/internal/storage"
)

// seedServices writes n Services straight into storage.
func seedServices(b *testing.B, env *testEnv, n int) {
	b.Helper()
	res := env.s.byGR[corev1.Resource("services")]
	ctx := context.Background()
	for i := 0; i < n; i++ {
		svc := webService(fmt.Sprintf("svc-%05d", i))
		svc.Namespace = "default"
		svc.UID = uuid.NewUUID()
		svc.CreationTimestamp = now()
		svc.Spec.ClusterIP = fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		data, err := res.encodeForStorage(svc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := env.store.Txn(ctx, storage.Put(res.key("default", svc.Name), data, 0)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList10k measures a LIST of 10k Services through the handler
// (client-go decoding included), per Accept form.
func BenchmarkList10k(b *testing.B) {
	env := newTestEnv(b)
	seedServices(b, env, 10000)
	for _, tc := range []struct{ name, accept string }{
		{"protobuf", "application/vnd.kubernetes.protobuf"},
		{"json", "application/json"},
		{"table", tableAccept},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := processCPU()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/api/v1/namespaces/default/services", nil)
				req.Header.Set("Accept", tc.accept)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkCreate measures Service creates through a protobuf clientset on
// the in-memory store (the API path's own cost, without fsync).
func BenchmarkCreate(b *testing.B) {
	env := newTestEnv(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := env.cs.CoreV1().Services("default").Create(ctx, webService(fmt.Sprint("b", i)), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeleteServiceAmongSlices measures a Service delete (with its
// Endpoints and its one EndpointSlice, in the same transaction) in a
// namespace that holds 5,000 other Services' slices: the cascade must find
// the Service's slices without reading the others.
func BenchmarkDeleteServiceAmongSlices(b *testing.B) {
	env := newTestEnv(b)
	ctx := context.Background()
	slices := env.cs.DiscoveryV1().EndpointSlices("default")
	newSlice := func(svc string, owner *corev1.Service) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: svc + "-",
				Labels:       map[string]string{discoveryv1.LabelServiceName: svc},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.1"}}},
		}
		if owner != nil {
			s.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, corev1.SchemeGroupVersion.WithKind("Service"))}
		}
		return s
	}
	for i := range 5000 {
		if _, err := slices.Create(ctx, newSlice(fmt.Sprintf("other-%05d", i), nil), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		svc, err := env.cs.CoreV1().Services("default").Create(ctx, webService(fmt.Sprint("d", i)), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := slices.Create(ctx, newSlice(svc.Name, svc), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := env.cs.CoreV1().Services("default").Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
