package dns

import (
	"context"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// waitAnswer polls name until its A answer (sorted RR text, "" for
// NXDOMAIN) is want.
func waitAnswer(t *testing.T, addr, name string, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r := ask(t, addr, "udp", name, mdns.TypeA, 0)
		got = rrTexts(r.Answer)
		if len(want) == 0 && r.Rcode == mdns.RcodeNameError {
			return
		}
		if len(want) > 0 && r.Rcode == mdns.RcodeSuccess && equalStrings(got, expTexts(t, want)) {
			return
		}
	}
	t.Fatalf("%s: answer %q, want %q", name, got, want)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWatchCompactObjects drives the informer path (compact objects in the
// stores, the slice index, pods verified) through creates, updates and
// deletes on the real API server.
func TestWatchCompactObjects(t *testing.T) {
	api := apitest.Start(t, apitest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := NewServer(Config{Records: RecordConfig{Zone: "cluster.local", TTL: 5, Pods: PodsVerified}, Listen: "127.0.0.1:0", Sockets: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	watchDone := make(chan error, 1)
	go func() { watchDone <- Watch(ctx, api.Client, s) }()
	defer func() { cancel(); <-watchDone }()
	addr := s.UDPAddr().String()
	c := api.Client

	// Pods verified: the name answers only while a Pod has that IP.
	pod, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podName := "10-244-7-7.default.pod.cluster.local."
	waitAnswer(t, addr, podName)
	pod.Status.PodIP, pod.Status.PodIPs = "10.244.7.7", []corev1.PodIP{{IP: "10.244.7.7"}}
	if _, err := c.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, podName, podName+" 5 IN A 10.244.7.7")
	if err := c.CoreV1().Pods("default").Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, podName)

	// A headless Service follows its EndpointSlices: create, readiness
	// change, a second slice, slice deletion, Service deletion.
	tcp := corev1.ProtocolTCP
	if _, err := c.CoreV1().Services("default").Create(ctx, svc("default", "h", corev1.ServiceTypeClusterIP, []string{"None"}, port("http", tcp, 80)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "h.default.svc.cluster.local."
	waitAnswer(t, addr, name) // headless without endpoints: NXDOMAIN
	sl1 := slice("default", "h", "h-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{epPort("http", tcp, 8080)},
		ep{ip: "10.244.1.1"}, ep{ip: "10.244.1.2", ready: ptr(false)})
	if sl1, err = c.DiscoveryV1().EndpointSlices("default").Create(ctx, sl1, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, name, name+" 5 IN A 10.244.1.1")
	sl1.Endpoints[1].Conditions.Ready = ptr(true)
	if _, err := c.DiscoveryV1().EndpointSlices("default").Update(ctx, sl1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, name, name+" 5 IN A 10.244.1.1", name+" 5 IN A 10.244.1.2")
	sl2 := slice("default", "h", "h-2", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.2.1"})
	if _, err := c.DiscoveryV1().EndpointSlices("default").Create(ctx, sl2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, name, name+" 5 IN A 10.244.1.1", name+" 5 IN A 10.244.1.2", name+" 5 IN A 10.244.2.1")
	if err := c.DiscoveryV1().EndpointSlices("default").Delete(ctx, "h-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, name, name+" 5 IN A 10.244.2.1")
	if err := c.CoreV1().Services("default").Delete(ctx, "h", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, addr, name)
	if r := ask(t, addr, "udp", "1.2.244.10.in-addr.arpa.", mdns.TypePTR, 0); len(r.Answer) != 0 {
		t.Fatalf("PTR of a deleted Service's endpoint still answered: %v", r.Answer)
	}
}
