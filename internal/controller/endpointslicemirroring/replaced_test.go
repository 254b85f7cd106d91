package endpointslicemirroring_test

import (
	"context"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
)

// TestReplacedServiceForgetsUnseenSlices: as for the EndpointSlice
// controller, a mirrored slice whose create never reaches the informer
// (the API server deleted it with its Service during a re-list) must not
// keep the mirror of the replaced Service (new UID, seen as one update)
// waiting for it forever.
func TestReplacedServiceForgetsUnseenSlices(t *testing.T) {
	client := fake.NewClientset()
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
	eptest.Eventually(t, "the controller's (lost) slice create", func() (bool, string) {
		for _, a := range client.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "endpointslices" {
				return true, ""
			}
		}
		return false, "no create yet"
	})

	lose.Store(false)
	cur, err := client.CoreV1().Services(ns).Get(ctx, "ext", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.UID = "service-2"
	if _, err := client.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMirror(t, client, ns, "ext", 1, "- 192.0.2.10 ready=true serving=nil terminating=nil ports=http:8080/TCP")
}
