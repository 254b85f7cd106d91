package dns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/bootstrap"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// createDemo creates the seed's objects: service-clusterip, a selectorless
// headless service-headliness with a hand-made EndpointSlice of 3 pod IPs,
// and service-externalname → target.
func createDemo(t testing.TB, ctx context.Context, c kubernetes.Interface, target string) *corev1.Service {
	t.Helper()
	tcp := corev1.ProtocolTCP
	cip := svc("default", "service-clusterip", corev1.ServiceTypeClusterIP, nil, port("http", tcp, 80))
	cip, err := c.CoreV1().Services("default").Create(ctx, cip, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	head := svc("default", "service-headliness", corev1.ServiceTypeClusterIP, []string{"None"}, port("http", tcp, 8080))
	if _, err := c.CoreV1().Services("default").Create(ctx, head, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sl := slice("default", "service-headliness", "service-headliness-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{epPort("http", tcp, 8080)},
		ep{ip: "10.244.1.11", host: "web-0"}, ep{ip: "10.244.1.12"}, ep{ip: "10.244.2.13", ready: yes})
	if _, err := c.DiscoveryV1().EndpointSlices("default").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ext := svc("default", "service-externalname", corev1.ServiceTypeExternalName, nil)
	ext.Spec.ExternalName = target
	if _, err := c.CoreV1().Services("default").Create(ctx, ext, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cip
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEndToEndAPIServer runs the server against the real API server: SERVFAIL
// and /ready 503 before the informers sync, the records of the seed's
// objects over UDP and TCP after, creation-to-resolvable (acceptance point
// 3, logged), kube-dns bootstrap, and /metrics.
func TestEndToEndAPIServer(t *testing.T) {
	api := apitest.Start(t, apitest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := startFakeUpstream(t, upstreamZone...)

	s, err := NewServer(Config{Records: RecordConfig{Zone: "cluster.local", TTL: 5}, Listen: "127.0.0.1:0",
		Upstreams: []string{up.addr}, HealthListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", Sockets: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	addr := s.UDPAddr().String()
	health := "http://" + s.HealthAddr().String()

	// Before sync: cluster names SERVFAIL, never NXDOMAIN; other names work.
	for _, proto := range []string{"udp", "tcp"} {
		if r := ask(t, addr, proto, "kubernetes.default.svc.cluster.local.", mdns.TypeA, 0); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("before sync over %s: rcode %s, want SERVFAIL", proto, mdns.RcodeToString[r.Rcode])
		}
		if r := ask(t, addr, proto, "nope.nope.svc.cluster.local.", mdns.TypeA, 0); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("before sync over %s: rcode %s, want SERVFAIL", proto, mdns.RcodeToString[r.Rcode])
		}
	}
	if r := ask(t, addr, "udp", "www.example.com.", mdns.TypeA, 0); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("forwarding before sync: %v", r)
	}
	if code, _ := httpGet(t, health+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before sync: %d, want 503", code)
	}
	if code, body := httpGet(t, health+"/health"); code != http.StatusOK || body != "OK" {
		t.Errorf("/health: %d %q", code, body)
	}

	cip := createDemo(t, ctx, api.Client, "www.example.com")
	if err := bootstrap.EnsureKubeDNS(ctx, api.Client, net.ParseIP("10.96.0.10")); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	go func() { watchDone <- Watch(ctx, api.Client, s) }()
	defer func() { cancel(); <-watchDone }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code, _ := httpGet(t, health+"/ready"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/ready never turned 200")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The informers' initial LIST may be served from the API server's watch
	// cache (resourceVersion=0) before it has the newest writes; those come
	// in by watch right after.
	for _, n := range []string{"kube-dns.kube-system", "service-clusterip.default", "service-headliness.default", "service-externalname.default"} {
		waitResolves(t, addr, n+".svc.cluster.local.")
	}
	ip := cip.Spec.ClusterIP
	rev, _ := mdns.ReverseAddr(ip)
	A, SRV := mdns.TypeA, mdns.TypeSRV
	cases := []recordCase{
		{name: "kubernetes.default.svc.cluster.local.", qtype: A, answer: []string{"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"}},
		{name: "kube-dns.kube-system.svc.cluster.local.", qtype: A, answer: []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "_dns._udp.kube-dns.kube-system.svc.cluster.local.", qtype: SRV,
			answer: []string{"_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."},
			extra:  []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.", qtype: SRV,
			answer: []string{"_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."},
			extra:  []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "service-clusterip.default.svc.cluster.local.", qtype: A, answer: []string{"service-clusterip.default.svc.cluster.local. 5 IN A " + ip}},
		{name: "service-clusterip.default.svc.cluster.local.", qtype: mdns.TypeAAAA, ns: []string{soaLineAny}},
		{name: rev, qtype: mdns.TypePTR, answer: []string{rev + " 5 IN PTR service-clusterip.default.svc.cluster.local."}},
		{name: "service-headliness.default.svc.cluster.local.", qtype: A, answer: []string{
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.11",
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.12",
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.2.13"}},
		{name: "web-0.service-headliness.default.svc.cluster.local.", qtype: A, answer: []string{
			"web-0.service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.11"}},
		{name: "11.1.244.10.in-addr.arpa.", qtype: mdns.TypePTR, answer: []string{
			"11.1.244.10.in-addr.arpa. 5 IN PTR web-0.service-headliness.default.svc.cluster.local."}},
		{name: "service-externalname.default.svc.cluster.local.", qtype: A, answer: []string{
			"service-externalname.default.svc.cluster.local. 5 IN CNAME www.example.com.",
			"www.example.com. 300 IN A 192.0.2.53"}},
		{name: "missing.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: []string{soaLineAny}},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, c := range cases {
			t.Run(proto+"/"+c.name+"/"+mdns.TypeToString[c.qtype], func(t *testing.T) {
				r := ask(t, addr, proto, c.name, c.qtype, 1232)
				for _, rr := range r.Ns {
					if soa, ok := rr.(*mdns.SOA); ok {
						soa.Serial = 1 // the serial is the build time
					}
				}
				checkReply(t, r, c)
			})
		}
	}

	// Acceptance point 3: a new Service resolves right after its creation.
	tcp := corev1.ProtocolTCP
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("fresh-%d", i)
		qname := name + ".default.svc.cluster.local."
		start := time.Now()
		created, err := api.Client.CoreV1().Services("default").Create(ctx, svc("default", name, corev1.ServiceTypeClusterIP, nil, port("http", tcp, 80)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		createdAt := time.Since(start)
		var r *mdns.Msg
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if r = ask(t, addr, "udp", qname, A, 0); r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 {
				break
			}
		}
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != created.Spec.ClusterIP {
			t.Fatalf("%s never resolved to %s: %v", name, created.Spec.ClusterIP, r)
		}
		t.Logf("creation-to-resolvable: %s resolved %v after the create request was sent (create call took %v)",
			name, time.Since(start).Round(10*time.Microsecond), createdAt.Round(10*time.Microsecond))
	}

	// Metrics.
	_, body := httpGet(t, "http://"+s.MetricsAddr().String()+"/metrics")
	for _, want := range []string{`svcnet_dns_requests_total{proto="udp"}`, `svcnet_dns_requests_total{proto="tcp"}`,
		`svcnet_dns_responses_total{rcode="NOERROR"}`, `svcnet_dns_responses_total{rcode="NXDOMAIN"}`,
		`svcnet_dns_responses_total{rcode="SERVFAIL"}`, "svcnet_dns_cache_hits_total", "svcnet_dns_request_duration_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitResolves polls until name has an answer (bounded).
func waitResolves(t testing.TB, addr, name string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if r := ask(t, addr, "udp", name, mdns.TypeA, 0); r.Rcode == mdns.RcodeSuccess && len(r.Answer) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never resolved", name)
		}
	}
}

// soaLineAny is the zone SOA with serial 1 (tests overwrite the serial).
const soaLineAny = soaLine

// TestEnsureKubeDNS checks the bootstrap Service and that it is idempotent
// and repairs drift.
func TestEnsureKubeDNS(t *testing.T) {
	api := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	ip := net.ParseIP("10.96.0.10")
	for i := 0; i < 2; i++ {
		if err := bootstrap.EnsureKubeDNS(ctx, api.Client, ip); err != nil {
			t.Fatal(err)
		}
	}
	svcs := api.Client.CoreV1().Services("kube-system")
	got, err := svcs.Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(got *corev1.Service) {
		t.Helper()
		if got.Spec.ClusterIP != "10.96.0.10" || got.Labels["k8s-app"] != "kube-dns" || got.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("kube-dns: ip %s labels %v type %s", got.Spec.ClusterIP, got.Labels, got.Spec.Type)
		}
		var ports []string
		for _, p := range got.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
		}
		if want := "dns 53/UDP,dns-tcp 53/TCP,metrics 9153/TCP"; strings.Join(ports, ",") != want {
			t.Errorf("kube-dns ports %q, want %q", strings.Join(ports, ","), want)
		}
	}
	check(got)
	// Drift: a port removed and the label changed are put back.
	got.Spec.Ports = got.Spec.Ports[:1]
	got.Labels["k8s-app"] = "other"
	if _, err := svcs.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := bootstrap.EnsureKubeDNS(ctx, api.Client, ip); err != nil {
		t.Fatal(err)
	}
	got, err = svcs.Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(got)
	if err := bootstrap.EnsureKubeDNS(ctx, api.Client, net.ParseIP("10.96.0.11")); err == nil {
		t.Error("a different ClusterIP was accepted silently")
	}
}
