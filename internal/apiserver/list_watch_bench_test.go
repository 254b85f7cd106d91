package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// fillServices creates n real Services in ns through the API with 8
// clients (managedFields and allocations as the bench's Services have).
func fillServices(b *testing.B, env *testEnv, ns string, n int) {
	b.Helper()
	ctx := context.Background()
	if _, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := env.cs.CoreV1().Services(ns).Create(ctx, realService(fmt.Sprintf("svc-%05d", i)), metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkListPagedTable10k lists 10k Services as kubectl get does
// (Table, limit=500, following continue) on an embedded etcd.
func BenchmarkListPagedTable10k(b *testing.B) {
	if testing.Short() {
		b.Skip("starts an embedded etcd")
	}
	env := newRealEnv(b)
	fillServices(b, env, "bench", 10000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		pages, cont := 0, ""
		for {
			q := url.Values{"limit": {"500"}}
			if cont != "" {
				q.Set("continue", cont)
			}
			req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/api/v1/namespaces/bench/services?"+q.Encode(), nil)
			req.Header.Set("Accept", tableAccept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("page %d: %v %d", pages, err, resp.StatusCode)
			}
			pages++
			var meta struct {
				Metadata struct {
					Continue string `json:"continue"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(body, &meta); err != nil {
				b.Fatal(err)
			}
			if cont = meta.Metadata.Continue; cont == "" {
				break
			}
		}
		if pages != 20 {
			b.Fatalf("%d pages, want 20", pages)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkWatchFanout100 measures one Service create seen by 100
// all-namespace protobuf watchers (one connection each) on an embedded
// etcd; cpu-ns/op is the whole process's CPU (server, etcd, clients) per
// create.
func BenchmarkWatchFanout100(b *testing.B) {
	if testing.Short() {
		b.Skip("starts an embedded etcd")
	}
	env := newRealEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := env.cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	const watchers = 100
	got := make(chan struct{}, watchers*64)
	for range watchers {
		cs, err := kubernetes.NewForConfig(env.cfg) // own connection
		if err != nil {
			b.Fatal(err)
		}
		w, err := cs.CoreV1().Services("").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			defer w.Stop()
			for ev := range w.ResultChan() {
				if ev.Type == watch.Added {
					got <- struct{}{}
				}
			}
		}()
	}
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		if _, err := env.cs.CoreV1().Services("default").Create(ctx, realService(fmt.Sprint("w", i)), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		for range watchers {
			<-got
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkListTable10k lists 10k Services as one Table (no paging) on an
// embedded etcd.
func BenchmarkListTable10k(b *testing.B) {
	if testing.Short() {
		b.Skip("starts an embedded etcd")
	}
	env := newRealEnv(b)
	fillServices(b, env, "bench", 10000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/api/v1/namespaces/bench/services", nil)
		req.Header.Set("Accept", tableAccept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n < 10000*100 {
			b.Fatalf("list: %v %d, %d bytes", err, resp.StatusCode, n)
		}
	}
	reportCPU(b, cpu)
}
