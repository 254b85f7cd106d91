package proxy

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func releaseTestObjects(name, ip, ep string) (*v1.Service, *discovery.EndpointSlice) {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "p", Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	sl := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name + "-x", Labels: map[string]string{discovery.LabelServiceName: name}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("p"), Port: ptr.To[int32](8080)}},
		Endpoints:   []discovery.Endpoint{{Addresses: []string{ep}}},
	}
	return svc, sl
}

// TestSnapshotRelease: a State that was not released keeps its content
// when later changes arrive; a released one may be reused, and every
// snapshot is complete and correct either way.
func TestSnapshotRelease(t *testing.T) {
	tr := NewTracker("n")
	tr.SetSynced(true, true)
	a, aSlice := releaseTestObjects("a", "10.96.0.1", "10.244.0.1")
	b, bSlice := releaseTestObjects("b", "10.96.0.2", "10.244.0.2")
	tr.UpdateService(a)
	tr.UpdateSlice(CompactSlice(aSlice))
	st1, _ := tr.Snapshot(true)
	if len(st1.Services) != 1 || len(st1.Endpoints) != 1 {
		t.Fatalf("first snapshot: %d services, %d endpoint lists", len(st1.Services), len(st1.Endpoints))
	}

	// Not released: the next snapshot must not change st1.
	tr.UpdateService(b)
	tr.UpdateSlice(CompactSlice(bSlice))
	st2, _ := tr.Snapshot(false)
	if len(st1.Services) != 1 || len(st2.Services) != 2 || len(st2.Endpoints) != 2 {
		t.Fatalf("after adding b: st1 has %d services (want 1), st2 %d (want 2)", len(st1.Services), len(st2.Services))
	}

	// Released: the next snapshot may reuse st2's maps; its content is
	// still complete.
	tr.Release(st2)
	_, moved := releaseTestObjects("a", "10.96.0.1", "10.244.0.9")
	tr.UpdateSlice(CompactSlice(moved))
	tr.DeleteService(typesNN("ns", "b"))
	st3, _ := tr.Snapshot(false)
	if len(st3.Services) != 1 || len(st3.Endpoints) != 1 {
		t.Fatalf("after moving a and deleting b: %d services, %d endpoint lists, want 1 and 1", len(st3.Services), len(st3.Endpoints))
	}
	for n, eps := range st3.Endpoints {
		if n.Name != "a" || len(eps) != 1 || eps[0].IP.String() != "10.244.0.9" {
			t.Errorf("endpoints %v = %v, want a's moved endpoint", n, eps)
		}
	}
	if _, ok := st3.Changed[ServicePortName{NamespacedName: typesNN("ns", "b"), Port: "p", Protocol: v1.ProtocolTCP}]; !ok {
		t.Errorf("deleted b not in Changed: %v", st3.Changed)
	}
	// Releasing an older State has no effect; a snapshot without changes
	// is still complete.
	tr.Release(st1)
	st4, _ := tr.Snapshot(false)
	if len(st4.Services) != 1 || len(st3.Services) != 1 {
		t.Errorf("snapshot without changes: %d services", len(st4.Services))
	}
}

func typesNN(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
