package endpointslice_test

import (
	"context"
	"sync/atomic"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
)

// TestReplacedServiceForgetsUnseenSlices: a slice the controller created
// that its informer never sees (written just before the API server deleted
// it with its Service, while the informer re-listed), followed by the
// Service's replacement seen as a single update (new UID), must not leave
// the controller waiting for that slice forever: the new Service gets its
// slice. (Seen once in TestRestartAndCompaction: one Service without a
// slice for the rest of the test, "informer cache behind our writes"
// every second.)
func TestReplacedServiceForgetsUnseenSlices(t *testing.T) {
	client := fake.NewClientset()
	// While lose is set, creates of slices "succeed" without being stored:
	// the controller records the write, no informer ever sees it.
	var lose atomic.Bool
	lose.Store(true)
	client.PrependReactor("create", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !lose.Load() {
			return false, nil, nil
		}
		s := a.(k8stesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice).DeepCopy()
		s.Name = s.GenerateName + "lost"
		s.UID = "lost-slice"
		s.Generation = 1
		s.ResourceVersion = "1"
		return true, s, nil
	})
	ctx := context.Background()
	eptest.CreateNamespace(t, client, "ns")
	eptest.CreateNode(t, client, "node-a", "192.0.2.1", "zone-a")
	svc := newService("ns", "web", map[string]string{"app": "web"}, tcpPort("http", 80, intstr.FromInt32(8080)))
	svc.UID = "service-1"
	createService(t, client, svc)
	eptest.CreatePod(t, client, "ns", eptest.PodSpec{Name: "p1", Labels: map[string]string{"app": "web"}, Node: "node-a"})
	eptest.SetPodStatus(t, client, "ns", "p1", "10.244.0.5", true)

	startController(t, client)
	eptest.Eventually(t, "the controller's (lost) slice create", func() (bool, string) {
		for _, a := range client.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "endpointslices" {
				return true, ""
			}
		}
		return false, "no create yet"
	})

	// The Service is replaced (deleted and created again); the controller's
	// informer sees one update with a new UID.
	lose.Store(false)
	cur, err := client.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.UID = "service-2"
	if _, err := client.CoreV1().Services("ns").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eptest.Eventually(t, "a slice owned by the new Service", func() (bool, string) {
		l, err := client.DiscoveryV1().EndpointSlices("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range l.Items {
			if ref := metav1.GetControllerOf(&s); ref != nil && ref.UID == "service-2" && len(s.Endpoints) == 1 {
				return true, ""
			}
		}
		return false, "slices: " + sliceNames(l.Items)
	})
}

func sliceNames(items []discoveryv1.EndpointSlice) string {
	out := ""
	for _, s := range items {
		out += s.Name + " "
	}
	return "[" + out + "]"
}
