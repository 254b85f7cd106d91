package endpointslicemirroring_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
)

// TestReplacedServiceForgetsUnseenSlices: as for the EndpointSlice
// controller, a mirrored slice whose create never reaches the informer
// (the API server deleted it with its Service during a re-list) must not
// keep the mirror of the replaced Service (new UID, seen as one update)
// waiting for it forever.
func TestReplacedServiceForgetsUnseenSlices(t *testing.T) {
	client := fake.NewClientset()
	lose := eptest.LoseSliceCreates(client)
	ctx := context.Background()
	ns := "mirror"
	eptest.CreateNamespace(t, client, ns)
	svc := selectorless(ns, "ext")
	svc.UID = "service-1"
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: ns},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "192.0.2.10"}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
		}},
	}
	if _, err := client.CoreV1().Endpoints(ns).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startController(t, client)
	eptest.WaitSliceCreate(t, client) // lost
	lose.Store(false)
	eptest.ReplaceService(t, client, ns, "ext", "service-2")
	waitMirror(t, client, ns, "ext", 1, "- 192.0.2.10 ready=true serving=nil terminating=nil ports=http:8080/TCP")
}
