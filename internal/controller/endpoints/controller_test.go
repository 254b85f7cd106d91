package endpoints_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/controller/endpoints"
	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func startController(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := endpoints.New(client, factory, endpoints.Config{Logger: eptest.Logger(t, testing.Verbose())})
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

// lines renders an Endpoints as sorted lines
// "<ready|notready> <ip> <pod> [host=<h>] node=<n> ports=<name:port/proto,...>".
func lines(ep *corev1.Endpoints) []string {
	var out []string
	for _, ss := range ep.Subsets {
		var ps []string
		for _, p := range ss.Ports {
			ps = append(ps, fmt.Sprintf("%s:%d/%s", p.Name, p.Port, p.Protocol))
		}
		ports := strings.Join(ps, ",")
		render := func(state string, a corev1.EndpointAddress) string {
			s := state + " " + a.IP
			if a.TargetRef != nil {
				s += " " + a.TargetRef.Name
			}
			if a.Hostname != "" {
				s += " host=" + a.Hostname
			}
			if a.NodeName != nil {
				s += " node=" + *a.NodeName
			}
			return s + " ports=" + ports
		}
		for _, a := range ss.Addresses {
			out = append(out, render("ready", a))
		}
		for _, a := range ss.NotReadyAddresses {
			out = append(out, render("notready", a))
		}
	}
	sort.Strings(out)
	return out
}

func waitEndpoints(t *testing.T, c kubernetes.Interface, ns, name string, want ...string) *corev1.Endpoints {
	t.Helper()
	sort.Strings(want)
	var ep *corev1.Endpoints
	eptest.Eventually(t, "endpoints "+ns+"/"+name, func() (bool, string) {
		var err error
		ep, err = c.CoreV1().Endpoints(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		d := eptest.Diff(lines(ep), want)
		return d == "", d
	})
	return ep
}

func waitGone(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	eptest.Eventually(t, "endpoints "+ns+"/"+name+" deleted", func() (bool, string) {
		_, err := c.CoreV1().Endpoints(ns).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

func service(ns, name string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"team": "net"}},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: ports},
	}
}

func tcp(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

func TestEndpoints(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	c := s.Client
	ctx := context.Background()
	eptest.CreateNode(t, c, "node-a", "192.0.2.1", "")

	// An Endpoints without a Service (left by a Service deleted while the
	// controller was down) is removed at start; hand-written Endpoints of
	// a selectorless Service are left alone.
	eptest.CreateNamespace(t, c, "leftover")
	for _, name := range []string{"orphan", "manual"} {
		_, err := c.CoreV1().Endpoints("leftover").Create(ctx, &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Subsets: []corev1.EndpointSubset{{
				Addresses: []corev1.EndpointAddress{{IP: "192.0.2.50"}},
				Ports:     []corev1.EndpointPort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CoreV1().Services("leftover").Create(ctx, service("leftover", "manual", nil, tcp("http", 80, intstr.FromInt32(80))), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startController(t, c)

	t.Run("leftover removed, selectorless kept", func(t *testing.T) {
		waitGone(t, c, "leftover", "orphan")
		waitEndpoints(t, c, "leftover", "manual", "ready 192.0.2.50 ports=http:80/TCP")
	})

	t.Run("pod lifecycle", func(t *testing.T) {
		ns := "lifecycle"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "web"}
		if _, err := c.CoreV1().Services(ns).Create(ctx, service(ns, "web", sel, tcp("http", 80, intstr.FromInt32(8080))), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ep := waitEndpoints(t, c, ns, "web")
		if ep.Labels[endpoints.LabelManagedBy] != endpoints.ControllerName || ep.Labels["team"] != "net" {
			t.Errorf("labels %v", ep.Labels)
		}
		if _, ok := ep.Labels[corev1.IsHeadlessService]; ok {
			t.Errorf("ClusterIP Service's Endpoints labelled headless")
		}
		if ep.Annotations[corev1.EndpointsLastChangeTriggerTime] == "" {
			t.Errorf("no %s annotation: %v", corev1.EndpointsLastChangeTriggerTime, ep.Annotations)
		}

		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "p1", Labels: sel, Node: "node-a"})
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", false)
		waitEndpoints(t, c, ns, "web", "notready 10.244.0.5 p1 node=node-a ports=http:8080/TCP")
		eptest.SetPodStatus(t, c, ns, "p1", "10.244.0.5", true)
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "p2", Labels: sel, Node: "node-a"})
		eptest.SetPodStatus(t, c, ns, "p2", "10.244.0.6", true)
		ep = waitEndpoints(t, c, ns, "web",
			"ready 10.244.0.5 p1 node=node-a ports=http:8080/TCP",
			"ready 10.244.0.6 p2 node=node-a ports=http:8080/TCP")
		if len(ep.Subsets) != 1 {
			t.Errorf("want the two addresses packed in one subset, got %d subsets", len(ep.Subsets))
		}
		eptest.SetPodStatus(t, c, ns, "p2", "10.244.0.6", false)
		waitEndpoints(t, c, ns, "web",
			"ready 10.244.0.5 p1 node=node-a ports=http:8080/TCP",
			"notready 10.244.0.6 p2 node=node-a ports=http:8080/TCP")
		// Terminating pods leave the Endpoints.
		if err := c.CoreV1().Pods(ns).Delete(ctx, "p1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(t, c, ns, "web", "notready 10.244.0.6 p2 node=node-a ports=http:8080/TCP")
		if err := c.CoreV1().Pods(ns).Delete(ctx, "p2", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(t, c, ns, "web")
		// Deleted by hand: written again.
		if err := c.CoreV1().Endpoints(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(t, c, ns, "web")
		if err := c.CoreV1().Services(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitGone(t, c, ns, "web")
	})

	t.Run("multiport and publishNotReadyAddresses", func(t *testing.T) {
		ns := "multiport"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "multi"}
		svc := service(ns, "multi-endpoint-test", sel,
			tcp("portname1", 80, intstr.FromString("svc1")), tcp("portname2", 81, intstr.FromString("svc2")))
		if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "pod1", Labels: sel, Node: "node-a",
			Ports: []corev1.ContainerPort{{Name: "svc1", ContainerPort: 100}}})
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "pod2", Labels: sel, Node: "node-a", Hostname: "h2", Subdomain: "multi-endpoint-test",
			Ports: []corev1.ContainerPort{{Name: "svc2", ContainerPort: 101}, {Name: "svc1", ContainerPort: 102}}})
		eptest.SetPodStatus(t, c, ns, "pod1", "10.244.0.11", true)
		eptest.SetPodStatus(t, c, ns, "pod2", "10.244.0.12", false)
		waitEndpoints(t, c, ns, "multi-endpoint-test",
			"ready 10.244.0.11 pod1 node=node-a ports=portname1:100/TCP",
			"notready 10.244.0.12 pod2 host=h2 node=node-a ports=portname1:102/TCP,portname2:101/TCP")

		cur, err := c.CoreV1().Services(ns).Get(ctx, "multi-endpoint-test", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.PublishNotReadyAddresses = true
		if _, err := c.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(t, c, ns, "multi-endpoint-test",
			"ready 10.244.0.11 pod1 node=node-a ports=portname1:100/TCP",
			"ready 10.244.0.12 pod2 host=h2 node=node-a ports=portname1:102/TCP,portname2:101/TCP")
	})

	t.Run("headless", func(t *testing.T) {
		ns := "headless"
		eptest.CreateNamespace(t, c, ns)
		sel := map[string]string{"app": "hl"}
		svc := service(ns, "hl", sel)
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eptest.CreatePod(t, c, ns, eptest.PodSpec{Name: "h", Labels: sel, Node: "node-a"})
		eptest.SetPodStatus(t, c, ns, "h", "10.244.0.21", true)
		ep := waitEndpoints(t, c, ns, "hl", "ready 10.244.0.21 h node=node-a ports=")
		if _, ok := ep.Labels[corev1.IsHeadlessService]; !ok {
			t.Errorf("headless Endpoints lacks %s: %v", corev1.IsHeadlessService, ep.Labels)
		}
	})
}
