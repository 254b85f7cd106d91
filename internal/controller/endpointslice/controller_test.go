package endpointslice_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/controller/endpointslice"
	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// startController runs an EndpointSlice controller against client until the
// returned stop is called (also at test end).
func startController(t *testing.T, client kubernetes.Interface) (stop func()) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := endpointslice.New(client, factory, endpointslice.Config{Logger: eptest.Logger(t, testing.Verbose())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx, 2)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		factory.Shutdown()
	}
	t.Cleanup(stop)
	return stop
}

func newService(ns, name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"svc-label": name}},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}
}

func createService(t *testing.T, c kubernetes.Interface, svc *corev1.Service) *corev1.Service {
	t.Helper()
	out, err := c.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", svc.Name, err)
	}
	return out
}

func tcpPort(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

// managed lists the slices this controller manages for a Service.
func managed(t *testing.T, c kubernetes.Interface, ns, svc string) []discoveryv1.EndpointSlice {
	t.Helper()
	var out []discoveryv1.EndpointSlice
	for _, s := range eptest.ListSlices(t, c, ns, svc) {
		if s.Labels[discoveryv1.LabelManagedBy] == endpointslice.ControllerName {
			out = append(out, s)
		}
	}
	return out
}

// waitEndpoints waits until the managed slices of a Service hold exactly the
// wanted endpoint lines (eptest.EndpointLines format) in at least one slice.
func waitEndpoints(t *testing.T, c kubernetes.Interface, ns, svc string, want ...string) []discoveryv1.EndpointSlice {
	t.Helper()
	sort.Strings(want)
	var slices []discoveryv1.EndpointSlice
	eptest.Eventually(t, fmt.Sprintf("endpoints of %s/%s", ns, svc), func() (bool, string) {
		slices = managed(t, c, ns, svc)
		if len(slices) == 0 {
			return false, "no managed slice"
		}
		d := eptest.Diff(eptest.EndpointLines(slices), want)
		return d == "", d
	})
	return slices
}

func deletePod(t *testing.T, c kubernetes.Interface, ns, name string, grace *int64) {
	t.Helper()
	err := c.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: grace})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s: %v", name, err)
	}
}

// TestEndpointSlice runs the upstream behaviours against a real server,
// one namespace per subtest, one server and controller for all of them.
func TestEndpointSlice(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	c := s.Client
	eptest.CreateNode(t, c, "node-a", "192.0.2.1", "zone-a")
	eptest.CreateNode(t, c, "node-b", "192.0.2.2", "")
	startController(t, c)
	ctx := context.Background()

	t.Run("pod lifecycle", func(t *testing.T) {
		ns := "lifecycle"
		eptest.CreateNamespace(t, c, ns)
		svc := createService(t, c, newService(ns, "web", map[string]string{"app": "web"}, tcpPort("http", 80, intstr.FromInt32(8080))))

		// No pods: one empty slice, labelled and owned by the Service.
		slices := waitEndpoints(t, c, ns, "web")
		if len(slices) != 1 {
			t.Fatalf("want 1 placeholder slice, got %d", len(slices))
		}
		checkSliceMeta(t, &slices[0], svc)

		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "p1", Labels: map[string]string{"app": "web"}, Node: "node-a"})
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "other", Labels: map[string]string{"app": "other"}, Node: "node-a"})
		eptest.SetPodStatus(t, c, ns, "other", "10.244.0.99", true)
		// Added but not ready: an endpoint, not ready, not serving.
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", false)
		waitEndpoints(t, c, ns, "web",
			"p1 10.244.0.5 ready=false serving=false terminating=false node=node-a zone=zone-a ports=http:8080/TCP")
		// Becomes ready.
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", true)
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "p2", Labels: map[string]string{"app": "web"}, Node: "node-b"})
		eptest.SetPodStatus(t, c, ns, "p2", "10.244.1.7", true)
		slices = waitEndpoints(t, c, ns, "web",
			"p1 10.244.0.5 ready=true serving=true terminating=false node=node-a zone=zone-a ports=http:8080/TCP",
			"p2 10.244.1.7 ready=true serving=true terminating=false node=node-b ports=http:8080/TCP")
		for _, sl := range slices {
			checkSliceMeta(t, &sl, svc)
			for _, ep := range sl.Endpoints {
				if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || ep.TargetRef.Namespace != ns || ep.TargetRef.UID == "" {
					t.Errorf("endpoint targetRef %+v", ep.TargetRef)
				}
			}
			if sl.Annotations[corev1.EndpointsLastChangeTriggerTime] == "" {
				t.Errorf("slice %s has no %s annotation", sl.Name, corev1.EndpointsLastChangeTriggerTime)
			}
		}
		// Becomes unready.
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", false)
		waitEndpoints(t, c, ns, "web",
			"p1 10.244.0.5 ready=false serving=false terminating=false node=node-a zone=zone-a ports=http:8080/TCP",
			"p2 10.244.1.7 ready=true serving=true terminating=false node=node-b ports=http:8080/TCP")
		// Ready again, then terminating: the server keeps a bound pod with
		// a grace period until the kubelet deletes it with grace 0.
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", true)
		waitEndpoints(t, c, ns, "web",
			"p1 10.244.0.5 ready=true serving=true terminating=false node=node-a zone=zone-a ports=http:8080/TCP",
			"p2 10.244.1.7 ready=true serving=true terminating=false node=node-b ports=http:8080/TCP")
		deletePod(t, c, ns, "p1", nil)
		waitEndpoints(t, c, ns, "web",
			"p1 10.244.0.5 ready=false serving=true terminating=true node=node-a zone=zone-a ports=http:8080/TCP",
			"p2 10.244.1.7 ready=true serving=true terminating=false node=node-b ports=http:8080/TCP")
		// Deleted.
		deletePod(t, c, ns, "p1", ptr.To[int64](0))
		waitEndpoints(t, c, ns, "web",
			"p2 10.244.1.7 ready=true serving=true terminating=false node=node-b ports=http:8080/TCP")
		deletePod(t, c, ns, "p2", ptr.To[int64](0))
		eptest.Eventually(t, "back to one empty slice", func() (bool, string) {
			sl := managed(t, c, ns, "web")
			return len(sl) == 1 && len(sl[0].Endpoints) == 0, fmt.Sprintf("%d slices: %v", len(sl), eptest.EndpointLines(sl))
		})
	})

	t.Run("multiport endpoints from pods", func(t *testing.T) {
		// test/e2e/network/service.go "should serve multiport endpoints
		// from pods": named targetPorts svc1/svc2 on two pods.
		ns := "multiport"
		eptest.CreateNamespace(t, c, ns)
		name := "multi-endpoint-test"
		sel := map[string]string{"testid": "multi-endpoint-test"}
		createService(t, c, newService(ns, name, sel,
			tcpPort("portname1", 80, intstr.FromString("svc1")),
			tcpPort("portname2", 81, intstr.FromString("svc2"))))
		waitPortMappings(t, c, ns, name)

		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "pod1", Labels: sel, Node: "node-a",
			Ports: []corev1.ContainerPort{{Name: "svc1", ContainerPort: 100}}})
		eptest.SetPodStatus(t, c, ns, "pod1", "10.244.0.11", true)
		waitPortMappings(t, c, ns, name, "portname1 TCP pod1 100")

		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "pod2", Labels: sel, Node: "node-b",
			Ports: []corev1.ContainerPort{{Name: "svc2", ContainerPort: 101}}})
		eptest.SetPodStatus(t, c, ns, "pod2", "10.244.1.12", true)
		waitPortMappings(t, c, ns, name, "portname1 TCP pod1 100", "portname2 TCP pod2 101")

		deletePod(t, c, ns, "pod1", ptr.To[int64](0))
		waitPortMappings(t, c, ns, name, "portname2 TCP pod2 101")
		deletePod(t, c, ns, "pod2", ptr.To[int64](0))
		waitPortMappings(t, c, ns, name)
		eptest.Eventually(t, "no endpoints", func() (bool, string) {
			sl := managed(t, c, ns, name)
			return len(eptest.EndpointLines(sl)) == 0, fmt.Sprint(eptest.EndpointLines(sl))
		})
	})

	t.Run("named targetPort resolving differently per pod", func(t *testing.T) {
		ns := "namedport"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "np"}
		createService(t, c, newService(ns, "np", sel,
			tcpPort("http", 80, intstr.FromString("http")),
			corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(5353), Protocol: corev1.ProtocolUDP}))
		for i, p := range []struct {
			name string
			port int32
		}{{"a", 8080}, {"b", 9090}, {"c", 8080}} {
			eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: p.name, Labels: sel, Node: "node-b",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: p.port}}})
			eptest.SetPodStatus(t, c, ns, p.name, fmt.Sprintf("10.244.1.%d", 20+i), true)
		}
		slices := waitEndpoints(t, c, ns, "np",
			"a 10.244.1.20 ready=true serving=true terminating=false node=node-b ports=dns:5353/UDP,http:8080/TCP",
			"b 10.244.1.21 ready=true serving=true terminating=false node=node-b ports=dns:5353/UDP,http:9090/TCP",
			"c 10.244.1.22 ready=true serving=true terminating=false node=node-b ports=dns:5353/UDP,http:8080/TCP")
		var portSets []string
		for _, sl := range slices {
			portSets = append(portSets, eptest.PortsString(sl.Ports))
		}
		sort.Strings(portSets)
		if want := "dns:5353/UDP,http:8080/TCP|dns:5353/UDP,http:9090/TCP"; strings.Join(portSets, "|") != want {
			t.Errorf("slices by port set: %q, want one slice per distinct port set %q", strings.Join(portSets, "|"), want)
		}
	})

	t.Run("hostname and subdomain", func(t *testing.T) {
		ns := "hostname"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "sub"}
		createService(t, c, newService(ns, "sub", sel, tcpPort("http", 80, intstr.FromInt32(80))))
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "h1", Labels: sel, Node: "node-b", Hostname: "host-1", Subdomain: "sub"})
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "h2", Labels: sel, Node: "node-b", Hostname: "host-2", Subdomain: "elsewhere"})
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "h3", Labels: sel, Node: "node-b", Subdomain: "sub"})
		eptest.SetPodStatus(t, c, ns, "h1", "10.244.1.31", true)
		eptest.SetPodStatus(t, c, ns, "h2", "10.244.1.32", true)
		eptest.SetPodStatus(t, c, ns, "h3", "10.244.1.33", true)
		waitEndpoints(t, c, ns, "sub",
			"h1 10.244.1.31 ready=true serving=true terminating=false node=node-b host=host-1 ports=http:80/TCP",
			"h2 10.244.1.32 ready=true serving=true terminating=false node=node-b ports=http:80/TCP",
			"h3 10.244.1.33 ready=true serving=true terminating=false node=node-b ports=http:80/TCP")
	})

	t.Run("publishNotReadyAddresses", func(t *testing.T) {
		ns := "notready"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "pnr"}
		svc := newService(ns, "pnr", sel, tcpPort("http", 80, intstr.FromInt32(80)))
		svc.Spec.PublishNotReadyAddresses = true
		createService(t, c, svc)
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "u", Labels: sel, Node: "node-a"})
		eptest.SetPodStatus(t, c, ns, "u", "10.244.0.41", false)
		waitEndpoints(t, c, ns, "pnr",
			"u 10.244.0.41 ready=true serving=false terminating=false node=node-a zone=zone-a ports=http:80/TCP")
		deletePod(t, c, ns, "u", nil)
		waitEndpoints(t, c, ns, "pnr",
			"u 10.244.0.41 ready=true serving=false terminating=true node=node-a zone=zone-a ports=http:80/TCP")
	})

	t.Run("selector matching nothing", func(t *testing.T) {
		ns := "nomatch"
		eptest.CreateNamespace(t, c, ns)
		svc := createService(t, c, newService(ns, "lonely", map[string]string{"app": "nobody"}, tcpPort("http", 80, intstr.FromInt32(80))))
		slices := waitEndpoints(t, c, ns, "lonely")
		if len(slices) != 1 || len(slices[0].Endpoints) != 0 || len(slices[0].Ports) != 0 {
			t.Fatalf("want one empty slice, got %+v", slices)
		}
		checkSliceMeta(t, &slices[0], svc)
		if err := c.CoreV1().Services(ns).Delete(ctx, "lonely", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eptest.Eventually(t, "slices removed with the Service", func() (bool, string) {
			sl := eptest.ListSlices(t, c, ns, "lonely")
			return len(sl) == 0, fmt.Sprintf("%d slices left", len(sl))
		})
	})

	t.Run("at most 100 endpoints per slice", func(t *testing.T) {
		ns := "big"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "big"}
		createService(t, c, newService(ns, "big", sel, tcpPort("http", 80, intstr.FromInt32(80))))
		var want []string
		for i := range 250 {
			name := fmt.Sprintf("p%03d", i)
			ip := fmt.Sprintf("10.244.%d.%d", 10+i/200, 1+i%200)
			eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: name, Labels: sel, Node: "node-b"})
			eptest.SetPodStatus(t, c, ns, name, ip, true)
			want = append(want, name+" "+ip+" ready=true serving=true terminating=false node=node-b ports=http:80/TCP")
		}
		slices := waitEndpoints(t, c, ns, "big", want...)
		if len(slices) != 3 {
			t.Errorf("250 endpoints in %d slices, want 3", len(slices))
		}
		for _, sl := range slices {
			if len(sl.Endpoints) > endpointslice.DefaultMaxEndpointsPerSlice {
				t.Errorf("slice %s has %d endpoints", sl.Name, len(sl.Endpoints))
			}
		}
		// Minimal churn: one pod going unready touches one slice only.
		before := map[string]string{}
		for _, sl := range slices {
			before[sl.Name] = sl.ResourceVersion
		}
		eptest.SetPodStatus(t, c, ns, "p007", "10.244.10.8", false)
		want[7] = strings.Replace(want[7], "ready=true serving=true", "ready=false serving=false", 1)
		slices = waitEndpoints(t, c, ns, "big", want...)
		changed := 0
		for _, sl := range slices {
			if before[sl.Name] != sl.ResourceVersion {
				changed++
			}
		}
		if changed != 1 || len(slices) != 3 {
			t.Errorf("one endpoint change rewrote %d of %d slices, want 1 of 3", changed, len(slices))
		}
	})

	t.Run("deleted slice is recreated", func(t *testing.T) {
		ns := "recreate"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "rc"}
		createService(t, c, newService(ns, "rc", sel, tcpPort("http", 80, intstr.FromInt32(80))))
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "r", Labels: sel, Node: "node-b"})
		eptest.SetPodStatus(t, c, ns, "r", "10.244.1.51", true)
		line := "r 10.244.1.51 ready=true serving=true terminating=false node=node-b ports=http:80/TCP"
		slices := waitEndpoints(t, c, ns, "rc", line)
		if err := c.DiscoveryV1().EndpointSlices(ns).Delete(ctx, slices[0].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eptest.Eventually(t, "slice recreated", func() (bool, string) {
			sl := managed(t, c, ns, "rc")
			ok := len(sl) == 1 && sl[0].UID != slices[0].UID && eptest.Diff(eptest.EndpointLines(sl), []string{line}) == ""
			return ok, fmt.Sprint(eptest.EndpointLines(sl))
		})
		// A slice edited by hand is put back.
		sl := managed(t, c, ns, "rc")[0]
		sl.Endpoints = nil
		if _, err := c.DiscoveryV1().EndpointSlices(ns).Update(ctx, &sl, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(t, c, ns, "rc", line)
	})

	t.Run("empty slice of an earlier Service of the same name is replaced", func(t *testing.T) {
		// What a Service deleted and recreated while the controller's
		// cache lagged leaves: an empty managed slice owned by a UID that
		// no longer exists. Upstream's reconciler keeps it as the new
		// Service's placeholder; we replace it.
		ns := "foreign"
		eptest.CreateNamespace(t, c, ns)
		old := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "again-old", Namespace: ns, Labels: map[string]string{
				discoveryv1.LabelServiceName: "again", discoveryv1.LabelManagedBy: endpointslice.ControllerName, "svc-label": "again",
			}, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "again",
				UID: "00000000-0000-0000-0000-000000000001", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{},
			Ports:       []discoveryv1.EndpointPort{},
		}
		if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, old, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc := createService(t, c, newService(ns, "again", map[string]string{"app": "nobody"}, tcpPort("http", 80, intstr.FromInt32(80))))
		eptest.Eventually(t, "one empty slice owned by the new Service", func() (bool, string) {
			sl := managed(t, c, ns, "again")
			if len(sl) != 1 {
				return false, fmt.Sprintf("%d slices", len(sl))
			}
			ref := metav1.GetControllerOf(&sl[0])
			return ref != nil && ref.UID == svc.UID && len(sl[0].Endpoints) == 0, fmt.Sprintf("slice %s owned by %+v", sl[0].Name, ref)
		})
	})

	t.Run("selector removed or Service deleted", func(t *testing.T) {
		ns := "removal"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "rm"}
		svc := createService(t, c, newService(ns, "rm", sel, tcpPort("http", 80, intstr.FromInt32(80))))
		createService(t, c, newService(ns, "gone", sel, tcpPort("http", 80, intstr.FromInt32(80))))
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "x", Labels: sel, Node: "node-b"})
		eptest.SetPodStatus(t, c, ns, "x", "10.244.1.61", true)
		line := "x 10.244.1.61 ready=true serving=true terminating=false node=node-b ports=http:80/TCP"
		waitEndpoints(t, c, ns, "rm", line)
		waitEndpoints(t, c, ns, "gone", line)

		svc.Spec.Selector = nil
		if _, err := c.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.CoreV1().Services(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eptest.Eventually(t, "managed slices removed", func() (bool, string) {
			a, b := managed(t, c, ns, "rm"), managed(t, c, ns, "gone")
			return len(a)+len(b) == 0, fmt.Sprintf("rm: %d slices, gone: %d slices", len(a), len(b))
		})
	})
}

// checkSliceMeta checks the labels, owner and address type of a managed
// slice.
func checkSliceMeta(t *testing.T, s *discoveryv1.EndpointSlice, svc *corev1.Service) {
	t.Helper()
	if s.Labels[discoveryv1.LabelServiceName] != svc.Name || s.Labels[discoveryv1.LabelManagedBy] != endpointslice.ControllerName {
		t.Errorf("slice %s labels %v", s.Name, s.Labels)
	}
	if s.Labels["svc-label"] != svc.Name {
		t.Errorf("slice %s does not carry the Service's labels: %v", s.Name, s.Labels)
	}
	if !strings.HasPrefix(s.Name, svc.Name+"-") {
		t.Errorf("slice name %q not generated from %q", s.Name, svc.Name+"-")
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 {
		t.Errorf("slice %s addressType %s", s.Name, s.AddressType)
	}
	ref := metav1.GetControllerOf(s)
	if ref == nil || ref.UID != svc.UID || ref.Kind != "Service" || ref.APIVersion != "v1" || ref.Name != svc.Name {
		t.Errorf("slice %s controller ref %+v, want Service %s/%s", s.Name, ref, svc.Name, svc.UID)
	}
}

// waitPortMappings waits for the e2e framework's WaitForEndpointPorts
// condition: at least one slice, and the set of (port name, protocol, pod,
// port) over all endpoints equal to want ("name proto pod port").
func waitPortMappings(t *testing.T, c kubernetes.Interface, ns, svc string, want ...string) {
	t.Helper()
	sort.Strings(want)
	eptest.Eventually(t, "port mappings", func() (bool, string) {
		slices := managed(t, c, ns, svc)
		if len(slices) == 0 {
			return false, "no slices"
		}
		set := map[string]bool{}
		for _, sl := range slices {
			for _, ep := range sl.Endpoints {
				for _, p := range sl.Ports {
					set[fmt.Sprintf("%s %s %s %d", *p.Name, *p.Protocol, ep.TargetRef.Name, *p.Port)] = true
				}
			}
		}
		var got []string
		for k := range set {
			got = append(got, k)
		}
		sort.Strings(got)
		d := eptest.Diff(got, want)
		return d == "", d
	})
}
