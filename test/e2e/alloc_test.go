package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/registry/service"
)

const (
	allocNamespace = "alloc"
	allocCount     = 200
)

// TestConcurrentNodePortCreates is the process part of acceptance point 4 of
// issue 2: 200 concurrent creates of NodePort Services never share a
// ClusterIP or NodePort, deleting them frees every allocation, and a SIGKILL
// in the middle of the creates leaves allocations consistent with the
// stored Services after a restart.
func TestConcurrentNodePortCreates(t *testing.T) {
	s := startServer(t, serverOptions{})
	ctx := context.Background()
	s.mustKubectl("create", "namespace", allocNamespace)
	etcd := etcdClient(t, s.etcdURL)

	t.Run("all succeed and are unique", func(t *testing.T) {
		c := s.clientset()
		errs := createNodePorts(ctx, c, "np", nil)
		for i, err := range errs {
			if err != nil {
				t.Errorf("create np-%d: %v", i, err)
			}
		}
		checkAllocations(t, c, etcd)
		deleteAll(t, c)
		checkAllocations(t, c, etcd)
	})

	t.Run("SIGKILL mid-way", func(t *testing.T) {
		c := s.clientset()
		var created atomic.Int32
		killed := make(chan struct{})
		createsDone := make(chan struct{})
		go func() {
			defer close(killed)
			// Kill once a quarter of the creates are acknowledged; the
			// rest are in flight or not yet sent.
			for created.Load() < allocCount/4 {
				select {
				case <-createsDone:
					s.kill()
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
			s.kill()
		}()
		errs := createNodePorts(ctx, c, "kill", &created)
		close(createsDone)
		<-killed
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			}
		}
		t.Logf("%d of %d creates acknowledged before the kill", ok, allocCount)
		if ok == allocCount {
			t.Log("note: every create finished before the kill landed; this run checked a restart, not an interrupted write")
		}

		s.start()
		c = s.clientset()
		list, err := c.CoreV1().Services(allocNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]bool{}
		for _, svc := range list.Items {
			stored[svc.Name] = true
		}
		for i, err := range errs {
			if name := fmt.Sprintf("kill-%d", i); err == nil && !stored[name] {
				t.Errorf("acknowledged %s lost", name)
			}
		}
		checkAllocations(t, c, etcd)

		// The allocator keeps working after the repair: fill up the rest.
		for _, err := range createNodePorts(ctx, c, "after", nil)[:20] {
			if err != nil {
				t.Errorf("create after restart: %v", err)
			}
		}
		checkAllocations(t, c, etcd)
		deleteAll(t, c)
		checkAllocations(t, c, etcd)
	})
}

// createNodePorts creates allocCount NodePort Services named prefix-<i>
// concurrently and returns each create's error. created counts successes.
func createNodePorts(ctx context.Context, c kubernetes.Interface, prefix string, created *atomic.Int32) []error {
	errs := make([]error, allocCount)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range allocCount {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Namespace: allocNamespace},
				Spec: corev1.ServiceSpec{
					Type:     corev1.ServiceTypeNodePort,
					Selector: map[string]string{"app": prefix},
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
						{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
					},
				},
			}
			_, errs[i] = c.CoreV1().Services(allocNamespace).Create(ctx, svc, metav1.CreateOptions{})
			if errs[i] == nil && created != nil {
				created.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// deleteAll deletes every Service in allocNamespace concurrently.
func deleteAll(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	list, err := c.CoreV1().Services(allocNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, svc := range list.Items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.CoreV1().Services(allocNamespace).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete %s: %v", svc.Name, err)
			}
		}()
	}
	wg.Wait()
	left, err := c.CoreV1().Services(allocNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 0 {
		t.Errorf("%d services left after deleting all", len(left.Items))
	}
}

// owner is the value of an allocation key.
type owner struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// checkAllocations checks that no two Services share a ClusterIP or
// NodePort and that the allocation keys in etcd are exactly the values the
// stored Services hold, each owned by the Service holding it.
func checkAllocations(t *testing.T, c kubernetes.Interface, etcd *clientv3.Client) {
	t.Helper()
	ctx := context.Background()
	list, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantIPs := map[string]owner{}
	wantPorts := map[string]owner{}
	for _, svc := range list.Items {
		o := owner{svc.Namespace, svc.Name, string(svc.UID)}
		for _, ip := range svc.Spec.ClusterIPs {
			if ip == corev1.ClusterIPNone {
				continue
			}
			if prev, dup := wantIPs[ip]; dup {
				t.Errorf("ClusterIP %s held by %s/%s and %s/%s", ip, prev.Namespace, prev.Name, o.Namespace, o.Name)
			}
			wantIPs[ip] = o
		}
		ports := []int32{svc.Spec.HealthCheckNodePort}
		for _, p := range svc.Spec.Ports {
			ports = append(ports, p.NodePort)
		}
		for _, p := range ports {
			if p == 0 {
				continue
			}
			key := strconv.Itoa(int(p))
			if prev, dup := wantPorts[key]; dup {
				t.Errorf("NodePort %s held by %s/%s and %s/%s", key, prev.Namespace, prev.Name, o.Namespace, o.Name)
			}
			wantPorts[key] = o
		}
	}
	compareKeys(t, etcd, service.ClusterIPKeyPrefix, wantIPs)
	compareKeys(t, etcd, service.NodePortKeyPrefix, wantPorts)
}

func compareKeys(t *testing.T, etcd *clientv3.Client, prefix string, want map[string]owner) {
	t.Helper()
	resp, err := etcd.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]owner{}
	for _, kv := range resp.Kvs {
		var o owner
		if err := json.Unmarshal(kv.Value, &o); err != nil {
			t.Errorf("key %s: value %q: %v", kv.Key, kv.Value, err)
		}
		got[strings.TrimPrefix(string(kv.Key), prefix)] = o
	}
	var problems []string
	for v, o := range want {
		g, ok := got[v]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s held by %s/%s has no key", v, o.Namespace, o.Name))
		case g != o:
			problems = append(problems, fmt.Sprintf("%s held by %s/%s (%s) but its key names %+v", v, o.Namespace, o.Name, o.UID, g))
		}
	}
	for v, o := range got {
		if _, ok := want[v]; !ok {
			problems = append(problems, fmt.Sprintf("key %s%s (owner %s/%s) held by no Service", prefix, v, o.Namespace, o.Name))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%s: %d keys, %d values held", prefix, len(got), len(want))
}

func etcdClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	if url == "" {
		t.Fatal("no etcd URL")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
