package apiserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
