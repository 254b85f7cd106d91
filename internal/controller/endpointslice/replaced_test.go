package endpointslice_test

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

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
	lose := eptest.LoseSliceCreates(client)
	ctx := context.Background()
	eptest.CreateNamespace(t, client, "ns")
	eptest.CreateNode(t, client, "node-a", "192.0.2.1", "zone-a")
	svc := newService("ns", "web", map[string]string{"app": "web"}, tcpPort("http", 80, intstr.FromInt32(8080)))
	svc.UID = "service-1"
	createService(t, client, svc)
	eptest.CreatePod(t, client, "ns", eptest.PodSpec{Name: "p1", Labels: map[string]string{"app": "web"}, Node: "node-a"})
	eptest.SetPodStatus(t, client, "ns", "p1", "10.244.0.5", true)

	startController(t, client)
	eptest.WaitSliceCreate(t, client) // lost
	lose.Store(false)
	eptest.ReplaceService(t, client, "ns", "web", "service-2")
	eptest.Eventually(t, "a slice owned by the new Service", func() (bool, string) {
		l, err := client.DiscoveryV1().EndpointSlices("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var names []string
		for _, s := range l.Items {
			if ref := metav1.GetControllerOf(&s); ref != nil && ref.UID == "service-2" && len(s.Endpoints) == 1 {
				return true, ""
			}
			names = append(names, s.Name)
		}
		return false, "slices: " + fmt.Sprint(names)
	})
}
