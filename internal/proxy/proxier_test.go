package proxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// freeNodePort returns a port in the NodePort range that is free on
// 127.0.0.1 right now.
func freeNodePort(t *testing.T) int32 {
	t.Helper()
	for p := 30000 + time.Now().Nanosecond()%2000; p < 32767; p++ {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return int32(p)
		}
	}
	t.Fatal("no free port in the NodePort range")
	return 0
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProxierAgainstAPIServer runs the Proxier against the real API server
// with a recording backend: informer filtering, state building, health,
// metrics and healthCheckNodePort servers.
func TestProxierAgainstAPIServer(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	mk := func(svc *v1.Service) {
		t.Helper()
		if _, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service %s: %v", svc.Name, err)
		}
	}
	mkSlice := func(s *discovery.EndpointSlice) {
		t.Helper()
		if _, err := c.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create slice %s: %v", s.Name, err)
		}
	}
	ports := []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}}
	mk(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: v1.ServiceSpec{Ports: ports}})
	mk(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other-proxy",
		Labels: map[string]string{LabelServiceProxyName: "someone-else"}}, Spec: v1.ServiceSpec{Ports: ports}})
	mk(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "headless"},
		Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, Ports: ports}})
	mk(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "example.com"}})
	hcPort := freeNodePort(t)
	mk(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "lb"}, Spec: v1.ServiceSpec{
		Type: v1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal,
		HealthCheckNodePort: hcPort, Ports: ports}})

	sl := testSlice("default", "web", "web-abc", "10.244.1.2", "10.244.1.3")
	mkSlice(sl)
	hl := testSlice("default", "headless", "headless-abc", "10.244.1.9")
	hl.Labels[LabelHeadless] = ""
	mkSlice(hl)
	remote := testSlice("default", "lb", "lb-abc", "10.244.1.4")
	mkSlice(remote)

	be := newFakeBackend()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := NewProxier(c, be, Options{NodeName: "node-a", HealthzAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		HealthCheckBindAddrs: []string{"127.0.0.1"}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	webName := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http", Protocol: v1.ProtocolTCP}
	st := be.waitFor(t, "web with 2 endpoints", func(st *State) bool { return len(st.Endpoints[webName]) == 2 })
	// Bootstrap Services (kubernetes, kube-dns …) may be there too; check
	// ours: web and lb in, the others skipped.
	seen := map[string]bool{}
	for n := range st.Services {
		if n.Namespace == "default" {
			seen[n.Name] = true
		}
	}
	for name, want := range map[string]bool{"web": true, "lb": true, "other-proxy": false, "headless": false, "ext": false} {
		if seen[name] != want {
			t.Errorf("service %s in state = %v, want %v (proxy-name label, headless and ExternalName are skipped)", name, seen[name], want)
		}
	}
	if !st.Full {
		t.Errorf("first sync was not full")
	}
	// The server serves ServiceCIDRs and bootstraps the default one: the
	// proxy drops unallocated addresses of exactly those ranges, and follows
	// a range added at run time with a full sync.
	if want := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}; !slices.Equal(st.ServiceCIDRs, want) {
		t.Errorf("first sync: ServiceCIDRs %v, want the default ServiceCIDR %v", st.ServiceCIDRs, want)
	}
	if _, err := c.NetworkingV1().ServiceCIDRs().Create(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.100.0.0/24"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = be.waitFor(t, "the added ServiceCIDR", func(st *State) bool { return len(st.ServiceCIDRs) == 2 })
	if !st.Full || st.ServiceCIDRs[1] != netip.MustParsePrefix("10.100.0.0/24") {
		t.Errorf("after adding a ServiceCIDR: full %v, ServiceCIDRs %v", st.Full, st.ServiceCIDRs)
	}

	hcURL := "http://127.0.0.1:" + itoa(hcPort) + "/"
	// The health servers are updated right after the backend sync returns.
	eventually(t, "healthCheckNodePort served", func() bool { return len(p.ServiceHealth.Ports()) == 1 })
	if code, body := httpGet(t, hcURL); code != http.StatusServiceUnavailable || !strings.Contains(body, `"localEndpoints":0`) {
		t.Errorf("healthCheckNodePort without local endpoints: %d %s, want 503 with 0 local endpoints", code, body)
	}

	// A local endpoint appears for lb: 200 with the count.
	lbName := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: "lb"}, Port: "http", Protocol: v1.ProtocolTCP}
	local := testSlice("default", "lb", "lb-local", "10.244.0.7")
	local.Endpoints[0].NodeName = ptr.To("node-a")
	mkSlice(local)
	st = be.waitFor(t, "lb local endpoint", func(st *State) bool { return len(st.Endpoints[lbName]) == 2 })
	if _, ok := st.Changed[lbName]; !ok || st.Full {
		t.Errorf("endpoint change: Changed=%v Full=%v, want partial with lb changed", st.Changed, st.Full)
	}
	if _, ok := st.Changed[webName]; ok {
		t.Errorf("web unchanged but in Changed")
	}
	eventually(t, "healthCheckNodePort 200", func() bool { c, _ := httpGet(t, hcURL); return c == 200 })
	code, body := httpGet(t, hcURL)
	var reply struct {
		Service        struct{ Namespace, Name string }
		LocalEndpoints int `json:"localEndpoints"`
	}
	_ = json.Unmarshal([]byte(body), &reply)
	if code != http.StatusOK || reply.LocalEndpoints != 1 || reply.Service.Name != "lb" {
		t.Errorf("healthCheckNodePort with a local endpoint: %d %s, want 200 with 1", code, body)
	}

	// Deleting the Service removes it from the state and closes its port.
	if err := c.CoreV1().Services("default").Delete(ctx, "lb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st = be.waitFor(t, "lb gone", func(st *State) bool { _, ok := st.Services[lbName]; return !ok })
	if _, ok := st.Changed[lbName]; !ok {
		t.Errorf("deleted service not in Changed")
	}
	eventually(t, "healthCheckNodePort closed after the service was deleted", func() bool { return len(p.ServiceHealth.Ports()) == 0 })

	hz, err := p.HealthzAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, "http://"+hz+"/healthz"); code != 200 || !strings.Contains(body, "lastUpdated") {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+hz+"/livez"); code != 200 {
		t.Errorf("/livez = %d", code)
	}
	ma, err := p.MetricsAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, "http://"+ma+"/proxyMode"); code != 200 || body != "fake" {
		t.Errorf("/proxyMode = %d %q", code, body)
	}
	_, metrics := httpGet(t, "http://"+ma+"/metrics")
	for _, m := range []string{"kubeproxy_sync_proxy_rules_duration_seconds_bucket", "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
		"kubeproxy_sync_partial_proxy_rules_duration_seconds_count", "kubeproxy_network_programming_duration_seconds_count",
		"kubeproxy_sync_proxy_rules_failures_total", "kubeproxy_proxy_healthz_total"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func TestHealthTimeout(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHealth(60 * time.Second)
	h.Now = func() time.Time { return now }
	steps := []struct {
		do   func()
		want bool
	}{
		{func() {}, true}, // nothing queued
		{h.Queued, true},  // just queued
		{func() { now = now.Add(59 * time.Second) }, true}, // within 2×syncPeriod
		{func() { now = now.Add(2 * time.Second) }, false}, // past it
		{h.Updated, true}, // progress
	}
	for i, s := range steps {
		s.do()
		if ok, _, _ := h.Healthy(); ok != s.want {
			t.Errorf("step %d: healthy=%v want %v", i, ok, s.want)
		}
	}
	h.SetNodeDeleting(true)
	rec := &recorder{header: http.Header{}}
	h.serve(rec, true, func(string) {})
	if rec.code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while node deleting = %d, want 503", rec.code)
	}
	rec = &recorder{header: http.Header{}}
	h.serve(rec, false, func(string) {})
	if rec.code != http.StatusOK {
		t.Errorf("/livez while node deleting = %d, want 200", rec.code)
	}
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }
