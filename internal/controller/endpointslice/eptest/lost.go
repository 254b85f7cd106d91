package eptest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apitypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// LoseSliceCreates makes EndpointSlice creates through client "succeed"
// without storing anything while the returned flag is set (it starts set):
// the controller records the write, no informer ever sees the slice — as
// when the API server deletes it with its Service while the informer
// re-lists. Otherwise creates are stored, with generateName filled in as
// the API server does (the fake clientset does not).
func LoseSliceCreates(client *fake.Clientset) *atomic.Bool {
	var lose atomic.Bool
	var n atomic.Int64
	lose.Store(true)
	client.PrependReactor("create", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice)
		if !lose.Load() {
			if obj.Name == "" && obj.GenerateName != "" {
				obj.Name = fmt.Sprintf("%s%d", obj.GenerateName, n.Add(1))
			}
			return false, nil, nil // stored by the default reactor
		}
		s := obj.DeepCopy()
		s.Name = s.GenerateName + "lost"
		s.UID = "lost-slice"
		s.Generation = 1
		s.ResourceVersion = "1"
		return true, s, nil
	})
	return &lose
}

// WaitSliceCreate waits until client has seen an EndpointSlice create.
func WaitSliceCreate(t testing.TB, client *fake.Clientset) {
	t.Helper()
	Eventually(t, "an EndpointSlice create", func() (bool, string) {
		for _, a := range client.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "endpointslices" {
				return true, ""
			}
		}
		return false, "no create yet"
	})
}

// ReplaceService gives the Service a new UID in one update: what an
// informer that re-listed sees of a Service deleted and created again.
func ReplaceService(t testing.TB, client *fake.Clientset, ns, name, uid string) {
	t.Helper()
	ctx := context.Background()
	cur, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.UID = apitypes.UID(uid)
	if _, err := client.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
