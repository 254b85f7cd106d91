package servicelb

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startController runs a controller with its own informer factory until
// the returned stop function is called (or the test ends).
func startController(t *testing.T, client kubernetes.Interface, pool []string) (stop func()) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := New(client, factory, Config{Pool: pool, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx, 2) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			factory.Shutdown()
		})
	}
	t.Cleanup(stop)
	return stop
}

func lbService(name string, mutate ...func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.ServiceSpec{
			Type:     v1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func poll(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func ingressIPs(svc *v1.Service) string {
	var ips []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, ing.IP)
	}
	return strings.Join(ips, ",")
}

// waitIngress waits until the Service publishes exactly want ("" = none).
func waitIngress(t *testing.T, client kubernetes.Interface, name, want string) {
	t.Helper()
	var last string
	poll(t, fmt.Sprintf("%s ingress %q (last %q)", name, want, last), func(ctx context.Context) (bool, error) {
		svc, err := client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = ingressIPs(svc)
		return last == want, nil
	})
}

// waitEvent waits for an event on the Service with the reason whose message
// contains substr, and returns it.
func waitEvent(t *testing.T, client kubernetes.Interface, name, reason, substr string) v1.Event {
	t.Helper()
	var found v1.Event
	poll(t, fmt.Sprintf("event %s %q on %s", reason, substr, name), func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name + ",reason=" + reason,
		})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, substr) {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// tableExternalIP reads the EXTERNAL-IP column the way `kubectl get svc`
// does: the server-side Table.
func tableExternalIP(t *testing.T, client kubernetes.Interface, name string) string {
	t.Helper()
	raw, err := client.CoreV1().RESTClient().Get().Namespace("default").Resource("services").Name(name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(context.Background()).Raw()
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	col := slices.IndexFunc(table.ColumnDefinitions, func(c metav1.TableColumnDefinition) bool { return c.Name == "External-IP" })
	if col < 0 || len(table.Rows) != 1 {
		t.Fatalf("table has no External-IP column or not one row: %s", raw)
	}
	return fmt.Sprint(table.Rows[0].Cells[col])
}

func TestLoadBalancerIPs(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	client := srv.Client
	ctx := context.Background()
	// Three addresses: 192.0.2.1, 192.0.2.2 (the /30 without its ends) and 198.51.100.10.
	pool := []string{"192.0.2.0/30", "198.51.100.10-198.51.100.10"}
	stop := startController(t, client, pool)

	create := func(svc *v1.Service) {
		t.Helper()
		if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// A dynamic Service gets the first pool address; kubectl shows it.
	create(lbService("a"))
	waitIngress(t, client, "a", "192.0.2.1")
	if got := tableExternalIP(t, client, "a"); got != "192.0.2.1" {
		t.Fatalf("EXTERNAL-IP = %q, want 192.0.2.1", got)
	}
	waitEvent(t, client, "a", ReasonAllocated, "Assigned IP 192.0.2.1")

	// spec.loadBalancerIP in the pool and free: honoured.
	create(lbService("b", func(s *v1.Service) { s.Spec.LoadBalancerIP = "198.51.100.10" }))
	waitIngress(t, client, "b", "198.51.100.10")

	// The annotation asks for a held address: refused, pending, an event.
	create(lbService("c", func(s *v1.Service) {
		s.Annotations = map[string]string{AnnotationLoadBalancerIPs: "192.0.2.1"}
	}))
	waitEvent(t, client, "c", ReasonAllocationFailed, `IP 192.0.2.1 is already allocated to Service default/a`)
	if got := tableExternalIP(t, client, "c"); got != "<pending>" {
		t.Fatalf("EXTERNAL-IP of refused service = %q, want <pending>", got)
	}

	// An address outside the pool: refused with an event.
	create(lbService("d", func(s *v1.Service) { s.Spec.LoadBalancerIP = "203.0.113.5" }))
	ev := waitEvent(t, client, "d", ReasonAllocationFailed, "IP 203.0.113.5 is not in the load balancer IP pool")
	if ev.Type != v1.EventTypeWarning {
		t.Fatalf("event type %q, want Warning", ev.Type)
	}

	// Another class: left alone.
	create(lbService("other", func(s *v1.Service) { s.Spec.LoadBalancerClass = new("example.com/lb") }))

	// The last address, then exhaustion.
	create(lbService("e"))
	waitIngress(t, client, "e", "192.0.2.2")
	create(lbService("f"))
	waitEvent(t, client, "f", ReasonAllocationFailed, "no available IPs in pool 192.0.2.0/30,198.51.100.10-198.51.100.10 for IPv4")
	if got := tableExternalIP(t, client, "f"); got != "<pending>" {
		t.Fatalf("EXTERNAL-IP of exhausted service = %q, want <pending>", got)
	}

	// Release on delete: f (dynamic) takes e's address; c still wants a's.
	if err := client.CoreV1().Services("default").Delete(ctx, "e", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, client, "f", "192.0.2.2")

	// Release on type change: c gets the address it asked for.
	a, err := client.CoreV1().Services("default").Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.Spec.Type = v1.ServiceTypeClusterIP
	a.Spec.AllocateLoadBalancerNodePorts = nil
	for i := range a.Spec.Ports {
		a.Spec.Ports[i].NodePort = 0
	}
	a.Spec.ExternalTrafficPolicy = ""
	if _, err := client.CoreV1().Services("default").Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, client, "c", "192.0.2.1")
	waitIngress(t, client, "a", "")

	// Restart: the new controller rebuilds from status, keeps every
	// address and hands out nothing twice.
	stop()
	before := snapshot(t, client)
	startController(t, client, pool)
	create(lbService("g"))
	waitEvent(t, client, "g", ReasonAllocationFailed, "no available IPs")
	if after := snapshot(t, client, "g"); after != before {
		t.Fatalf("after restart:\n%s\nwant\n%s", after, before)
	}
	other, err := client.CoreV1().Services("default").Get(ctx, "other", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(other.Status.LoadBalancer.Ingress) != 0 {
		t.Fatalf("a Service of another class got %v", other.Status.LoadBalancer.Ingress)
	}
	evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=other"})
	if err != nil || len(evs.Items) != 0 {
		t.Fatalf("events for a Service of another class: %v %v", evs, err)
	}

	// Deleting b frees its address for g.
	if err := client.CoreV1().Services("default").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, client, "g", "198.51.100.10")
}

// snapshot lists "name=ingress" for every Service but skip, sorted.
func snapshot(t *testing.T, client kubernetes.Interface, skip ...string) string {
	t.Helper()
	list, err := client.CoreV1().Services("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list.Items {
		if s.Name == "kubernetes" || slices.Contains(skip, s.Name) {
			continue
		}
		out = append(out, s.Name+"="+ingressIPs(&s))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestRequestValidation checks request parsing, per-family allocation and
// the refusals that depend on the Service's families, without a server.
func TestRequestValidation(t *testing.T) {
	tests := []struct {
		name        string
		annotation  string
		lbIP        string
		families    []v1.IPFamily
		wantIPs     []string
		wantFailure string
	}{
		{name: "annotation wins over spec", annotation: "192.0.2.2", lbIP: "192.0.2.1", wantIPs: []string{"192.0.2.2"}},
		{name: "spec", lbIP: "192.0.2.1", wantIPs: []string{"192.0.2.1"}},
		{name: "garbage", annotation: "nope", wantFailure: `requested IP "nope" is not a valid IP address`},
		{name: "wrong family", annotation: "2001:db8::1", wantFailure: "is not of the Service's IP families (IPv4)"},
		{name: "two of one family", annotation: "192.0.2.1,192.0.2.2", wantFailure: "at most one IP per family"},
		{name: "dynamic", wantIPs: []string{"192.0.2.1"}},
		{name: "dual-stack dynamic, primary family first", families: []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol},
			wantIPs: []string{"2001:db8::1", "192.0.2.1"}},
		{name: "dual-stack request", families: []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}, annotation: "2001:db8::2, 192.0.2.3",
			wantIPs: []string{"2001:db8::2", "192.0.2.3"}},
		{name: "IPv6 only from a pool of both", families: []v1.IPFamily{v1.IPv6Protocol}, wantIPs: []string{"2001:db8::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := ParsePool([]string{"192.0.2.0/29", "2001:db8::/125"})
			if err != nil {
				t.Fatal(err)
			}
			c := &Controller{pool: pool, held: map[string]holding{}, pending: map[string]struct{}{}}
			svc := lbService("s", func(s *v1.Service) {
				s.Spec.LoadBalancerIP = tt.lbIP
				s.Spec.IPFamilies = tt.families
				if tt.annotation != "" {
					s.Annotations = map[string]string{AnnotationLoadBalancerIPs: tt.annotation}
				}
			})
			ips, failure := c.allocateLocked("default/s", svc)
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.wantIPs) || (tt.wantFailure == "") != (failure == "") || !strings.Contains(failure, tt.wantFailure) {
				t.Fatalf("got %v %q, want %v %q", got, failure, tt.wantIPs, tt.wantFailure)
			}
			if failure != "" && pool.Used() != 0 {
				t.Fatalf("a refused request holds %d addresses", pool.Used())
			}
		})
	}
}
