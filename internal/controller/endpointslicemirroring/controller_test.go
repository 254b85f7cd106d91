package endpointslicemirroring_test

import (
	"context"
	"fmt"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
	"github.com/svcnet/svcnet/internal/controller/endpointslicemirroring"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func startController(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := endpointslicemirroring.New(client, factory, endpointslicemirroring.Config{Logger: eptest.Logger(t, testing.Verbose())})
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
	t.Cleanup(func() {
		cancel()
		<-done
		factory.Shutdown()
	})
}

func mirrored(t *testing.T, c kubernetes.Interface, ns, name string) []discoveryv1.EndpointSlice {
	t.Helper()
	var out []discoveryv1.EndpointSlice
	for _, s := range eptest.ListSlices(t, c, ns, name) {
		if s.Labels[discoveryv1.LabelManagedBy] == endpointslicemirroring.ControllerName {
			out = append(out, s)
		}
	}
	return out
}

// waitMirror waits until the mirrored slices hold exactly want (the
// eptest.EndpointLines format), in exactly nSlices slices.
func waitMirror(t *testing.T, c kubernetes.Interface, ns, name string, nSlices int, want ...string) []discoveryv1.EndpointSlice {
	t.Helper()
	sort.Strings(want)
	var slices []discoveryv1.EndpointSlice
	eptest.Eventually(t, "mirrored slices of "+ns+"/"+name, func() (bool, string) {
		slices = mirrored(t, c, ns, name)
		d := eptest.Diff(eptest.EndpointLines(slices), want)
		if d == "" && len(slices) != nSlices {
			d = fmt.Sprintf("%d slices, want %d", len(slices), nSlices)
		}
		return d == "", d
	})
	return slices
}

func selectorless(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

func TestMirroring(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	c := s.Client
	ctx := context.Background()
	startController(t, c)
	ns := "mirror"
	eptest.CreateNamespace(t, c, ns)
	if _, err := c.CoreV1().Services(ns).Create(ctx, selectorless(ns, "ext"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Name: "ext", Namespace: ns,
			Labels:      map[string]string{"owner": "me"},
			Annotations: map[string]string{"note": "hand-written", corev1.EndpointsLastChangeTriggerTime: "2020-01-01T00:00:00Z"},
		},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{
				{IP: "192.0.2.10", Hostname: "db-0", NodeName: ptr.To("node-x")},
				{IP: "192.0.2.11"},
			},
			NotReadyAddresses: []corev1.EndpointAddress{{IP: "192.0.2.12"}},
			Ports:             []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
		}},
	}

	t.Run("create", func(t *testing.T) {
		created, err := c.CoreV1().Endpoints(ns).Create(ctx, ep, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		slices := waitMirror(t, c, ns, "ext", 1,
			"- 192.0.2.10 ready=true serving=nil terminating=nil node=node-x host=db-0 ports=http:8080/TCP",
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:8080/TCP",
			"- 192.0.2.12 ready=false serving=nil terminating=nil ports=http:8080/TCP")
		sl := slices[0]
		if sl.Labels["owner"] != "me" || sl.Labels[discoveryv1.LabelServiceName] != "ext" {
			t.Errorf("labels %v", sl.Labels)
		}
		if sl.Annotations["note"] != "hand-written" {
			t.Errorf("annotations not copied: %v", sl.Annotations)
		}
		if _, ok := sl.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
			t.Errorf("trigger-time annotation copied: %v", sl.Annotations)
		}
		ref := metav1.GetControllerOf(&sl)
		if ref == nil || ref.Kind != "Endpoints" || ref.UID != created.UID {
			t.Errorf("controller ref %+v, want Endpoints %s", ref, created.UID)
		}
	})

	t.Run("update", func(t *testing.T) {
		cur, err := c.CoreV1().Endpoints(ns).Get(ctx, "ext", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		name := mirrored(t, c, ns, "ext")[0].Name
		cur.Subsets[0].Ports[0].Port = 9090
		cur.Subsets[0].Addresses = cur.Subsets[0].Addresses[1:]
		cur.Subsets[0].NotReadyAddresses = nil
		cur.Subsets = append(cur.Subsets, corev1.EndpointSubset{
			Addresses: []corev1.EndpointAddress{{IP: "2001:db8::7"}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 9090, Protocol: corev1.ProtocolTCP}},
		})
		if _, err := c.CoreV1().Endpoints(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		slices := waitMirror(t, c, ns, "ext", 2,
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:9090/TCP",
			"- 2001:db8::7 ready=true serving=nil terminating=nil ports=http:9090/TCP")
		kept := false
		for _, s := range slices {
			if s.Name == name && s.AddressType == discoveryv1.AddressTypeIPv4 {
				kept = true
			}
		}
		if !kept {
			t.Errorf("port change did not reuse the IPv4 slice %s", name)
		}
	})

	t.Run("deleted slice is recreated", func(t *testing.T) {
		for _, s := range mirrored(t, c, ns, "ext") {
			if err := c.DiscoveryV1().EndpointSlices(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitMirror(t, c, ns, "ext", 2,
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:9090/TCP",
			"- 2001:db8::7 ready=true serving=nil terminating=nil ports=http:9090/TCP")
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.CoreV1().Endpoints(ns).Delete(ctx, "ext", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "ext", 0)
	})

	t.Run("not mirrored: skip-mirror, selector, no Service", func(t *testing.T) {
		// Recreate ext (selectorless) and mirror it again, then label it
		// skip-mirror: the slices go.
		fresh := ep.DeepCopy()
		if _, err := c.CoreV1().Endpoints(ns).Create(ctx, fresh, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "ext", 1,
			"- 192.0.2.10 ready=true serving=nil terminating=nil node=node-x host=db-0 ports=http:8080/TCP",
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:8080/TCP",
			"- 192.0.2.12 ready=false serving=nil terminating=nil ports=http:8080/TCP")
		cur, err := c.CoreV1().Endpoints(ns).Get(ctx, "ext", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Labels[discoveryv1.LabelSkipMirror] = "true"
		if _, err := c.CoreV1().Endpoints(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "ext", 0)

		// A Service that gains a selector loses its mirrored slices.
		if _, err := c.CoreV1().Services(ns).Create(ctx, selectorless(ns, "sel"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		other := ep.DeepCopy()
		other.Name = "sel"
		if _, err := c.CoreV1().Endpoints(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "sel", 1,
			"- 192.0.2.10 ready=true serving=nil terminating=nil node=node-x host=db-0 ports=http:8080/TCP",
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:8080/TCP",
			"- 192.0.2.12 ready=false serving=nil terminating=nil ports=http:8080/TCP")
		svc, err := c.CoreV1().Services(ns).Get(ctx, "sel", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Selector = map[string]string{"app": "x"}
		if _, err := c.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "sel", 0)

		// Endpoints without a Service: nothing, while a later object
		// (created after it) is mirrored, which shows the first was seen.
		lone := ep.DeepCopy()
		lone.Name = "lone"
		if _, err := c.CoreV1().Endpoints(ns).Create(ctx, lone, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Services(ns).Create(ctx, selectorless(ns, "later"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		later := ep.DeepCopy()
		later.Name = "later"
		if _, err := c.CoreV1().Endpoints(ns).Create(ctx, later, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMirror(t, c, ns, "later", 1,
			"- 192.0.2.10 ready=true serving=nil terminating=nil node=node-x host=db-0 ports=http:8080/TCP",
			"- 192.0.2.11 ready=true serving=nil terminating=nil ports=http:8080/TCP",
			"- 192.0.2.12 ready=false serving=nil terminating=nil ports=http:8080/TCP")
		if n := len(mirrored(t, c, ns, "lone")); n != 0 {
			t.Errorf("Endpoints without a Service mirrored into %d slices", n)
		}
		// The API server's own default/kubernetes Endpoints is skip-mirror.
		if n := len(mirrored(t, c, "default", "kubernetes")); n != 0 {
			t.Errorf("default/kubernetes mirrored into %d slices", n)
		}
	})
}
