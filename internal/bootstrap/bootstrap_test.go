package bootstrap

//lint:file-ignore SA1019 core/v1 Endpoints are deprecated, not removed: svcnet serves them and the kubernetes Service needs them

import (
	"context"
	"log/slog"
	"net"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcnet/svcnet/internal/registry/core"
	"github.com/svcnet/svcnet/internal/registry/discovery"
)

// testLogger logs through t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

var (
	serviceIP = net.ParseIP("10.96.0.1")
	hostIP    = net.ParseIP("192.0.2.10")
)

// writes returns the create/update/delete actions the client saw.
func writes(c *fake.Clientset) []string {
	var out []string
	for _, a := range c.Actions() {
		switch a.GetVerb() {
		case "create", "update", "delete", "patch":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

func TestEnsureCreatesEverything(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	if err := Ensure(ctx, c, serviceIP, hostIP, 6443, testLogger(t)); err != nil {
		t.Fatal(err)
	}

	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if _, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
	}

	svc, err := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" || svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Selector != nil ||
		svc.Spec.SessionAffinity != corev1.ServiceAffinityNone ||
		svc.Spec.IPFamilyPolicy == nil || *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
		t.Errorf("service spec: %+v", svc.Spec)
	}
	if !reflect.DeepEqual(svc.Labels, map[string]string{"component": "apiserver", "provider": "kubernetes"}) {
		t.Errorf("service labels %v", svc.Labels)
	}
	wantPorts := []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(6443)}}
	if !reflect.DeepEqual(svc.Spec.Ports, wantPorts) {
		t.Errorf("service ports %+v", svc.Spec.Ports)
	}

	ep, err := c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSubsets := []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: "192.0.2.10"}},
		Ports:     []corev1.EndpointPort{{Name: "https", Port: 6443, Protocol: corev1.ProtocolTCP}},
	}}
	if !reflect.DeepEqual(ep.Subsets, wantSubsets) || ep.Labels[discoveryv1.LabelSkipMirror] != "true" {
		t.Errorf("endpoints %+v labels %v", ep.Subsets, ep.Labels)
	}

	slice, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slice.AddressType != discoveryv1.AddressTypeIPv4 ||
		!reflect.DeepEqual(slice.Labels, map[string]string{"kubernetes.io/service-name": "kubernetes"}) ||
		len(slice.Endpoints) != 1 || !reflect.DeepEqual(slice.Endpoints[0].Addresses, []string{"192.0.2.10"}) ||
		slice.Endpoints[0].Conditions.Ready == nil || !*slice.Endpoints[0].Conditions.Ready ||
		len(slice.Ports) != 1 || *slice.Ports[0].Name != "https" || *slice.Ports[0].Port != 6443 ||
		*slice.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("endpointslice %+v", slice)
	}

	// Idempotent: a second run writes nothing.
	c.ClearActions()
	if err := Ensure(ctx, c, serviceIP, hostIP, 6443, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if w := writes(c); len(w) != 0 {
		t.Errorf("second Ensure wrote: %v", w)
	}
}

func TestEnsureReconcilesAddressChange(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	if err := Ensure(ctx, c, serviceIP, hostIP, 6443, testLogger(t)); err != nil {
		t.Fatal(err)
	}

	// New address and port: Endpoints and slice updated, Service targetPort reset.
	c.ClearActions()
	if err := Ensure(ctx, c, serviceIP, net.ParseIP("192.0.2.20"), 7443, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"update services", "update endpoints", "update endpointslices"}
	if w := writes(c); !reflect.DeepEqual(w, want) {
		t.Errorf("writes %v, want %v", w, want)
	}
	ep, _ := c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if ep.Subsets[0].Addresses[0].IP != "192.0.2.20" || ep.Subsets[0].Ports[0].Port != 7443 {
		t.Errorf("endpoints not updated: %+v", ep.Subsets)
	}
	slice, _ := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if slice.Endpoints[0].Addresses[0] != "192.0.2.20" || *slice.Ports[0].Port != 7443 {
		t.Errorf("slice not updated: %+v", slice)
	}
	svc, _ := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if svc.Spec.Ports[0].TargetPort != intstr.FromInt32(7443) {
		t.Errorf("service targetPort %v", svc.Spec.Ports[0].TargetPort)
	}

	// IPv6 address: the slice's immutable addressType changes, so it is
	// replaced.
	c.ClearActions()
	if err := Ensure(ctx, c, serviceIP, net.ParseIP("2001:db8::10"), 7443, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	want = []string{"update endpoints", "delete endpointslices", "create endpointslices"}
	if w := writes(c); !reflect.DeepEqual(w, want) {
		t.Errorf("writes %v, want %v", w, want)
	}
	slice, _ = c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if slice.AddressType != discoveryv1.AddressTypeIPv6 || slice.Endpoints[0].Addresses[0] != "2001:db8::10" {
		t.Errorf("slice %+v", slice)
	}
}

func TestEnsureRepairsDriftAndKeepsForeignClusterIP(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.99", Type: corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(6443)}}},
		},
		// Endpoints without the skip-mirror label (written by someone else).
		&corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
			Subsets: []corev1.EndpointSubset{{
				Addresses: []corev1.EndpointAddress{{IP: "192.0.2.10"}},
				Ports:     []corev1.EndpointPort{{Name: "https", Port: 6443, Protocol: corev1.ProtocolTCP}},
			}},
		},
	)
	if err := Ensure(ctx, c, serviceIP, hostIP, 6443, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"create namespaces", "create namespaces", "create namespaces", "update endpoints", "create endpointslices"}
	if w := writes(c); !reflect.DeepEqual(w, want) {
		t.Errorf("writes %v, want %v", w, want)
	}
	svc, _ := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if svc.Spec.ClusterIP != "10.96.0.99" {
		t.Errorf("clusterIP changed to %s", svc.Spec.ClusterIP)
	}
	ep, _ := c.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if ep.Labels[discoveryv1.LabelSkipMirror] != "true" {
		t.Errorf("skip-mirror label not added: %v", ep.Labels)
	}
}

func TestEnsureRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		ip   net.IP
		port int32
	}{
		{"loopback", net.ParseIP("127.0.0.1"), 6443},
		{"unspecified", net.IPv4zero, 6443},
		{"nil", nil, 6443},
		{"port", hostIP, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientset()
			if err := Ensure(ctx, c, serviceIP, tt.ip, tt.port, testLogger(t)); err == nil {
				t.Fatal("Ensure accepted bad input")
			}
			if len(c.Actions()) != 0 {
				t.Errorf("wrote before validating input: %v", c.Actions())
			}
		})
	}
}

// The objects Ensure writes must pass svcnet's own validation, since a real
// server runs them through the registry strategies.
func TestBootstrapObjectsAreValid(t *testing.T) {
	ctx := context.Background()
	for _, ip := range []net.IP{hostIP, net.ParseIP("2001:db8::10")} {
		ep := desiredEndpoints(ip, 6443)
		k := core.Endpoints()
		k.Strategy.Default(ep)
		k.Strategy.PrepareForCreate(ctx, ep)
		if errs := k.Strategy.Validate(ctx, ep); len(errs) > 0 {
			t.Errorf("endpoints for %s: %v", ip, errs)
		}
		s := desiredEndpointSlice(ip, 6443)
		k = discovery.EndpointSlices()
		k.Strategy.Default(s)
		k.Strategy.PrepareForCreate(ctx, s)
		if errs := k.Strategy.Validate(ctx, s); len(errs) > 0 {
			t.Errorf("endpointslice for %s: %v", ip, errs)
		}
	}
	for _, name := range Namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		k := core.Namespaces()
		k.Strategy.Default(ns)
		k.Strategy.PrepareForCreate(ctx, ns)
		if errs := k.Strategy.Validate(ctx, ns); len(errs) > 0 {
			t.Errorf("namespace %s: %v", name, errs)
		}
	}
}
