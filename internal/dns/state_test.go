package dns

import (
	"bytes"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestIncrementalMatchesFullBuild applies Services one by one in random
// order, deletes and re-adds some, and compares every answer with a fresh
// full build of the final state (the serial aside).
func TestIncrementalMatchesFullBuild(t *testing.T) {
	rc := RecordConfig{Zone: "cluster.local", TTL: 5}
	snap := withExternal(fixture())
	// A second Service selecting pod 10.244.1.5 shares its PTR name.
	extra := svc("default", "also-a", corev1.ServiceTypeClusterIP, []string{"None"})
	snap.Services = append(snap.Services, extra)
	snap.Slices["default/also-a"] = snap.Slices["default/service-headliness"][:1]
	want := buildIndex(rc, snap, 1)
	for seed := uint64(0); seed < 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		st := newIndexState(rc)
		order := r.Perm(len(snap.Services))
		var x *index
		for _, i := range order {
			s := snap.Services[i]
			k := s.Namespace + "/" + s.Name
			x = st.apply(map[string]serviceInput{k: inputOf(s, snap.Slices[k])}, nil, 1)
			if r.IntN(3) == 0 { // delete and re-add
				st.apply(map[string]serviceInput{k: {}}, nil, 1)
				x = st.apply(map[string]serviceInput{k: inputOf(s, snap.Slices[k])}, nil, 1)
			}
		}
		compareIndexes(t, x, want)
	}
	// Deleting everything leaves only the zone structure.
	st := newIndexState(rc)
	all := map[string]serviceInput{}
	for _, s := range snap.Services {
		k := s.Namespace + "/" + s.Name
		all[k] = inputOf(s, snap.Slices[k])
	}
	st.apply(all, nil, 1)
	for k := range all {
		all[k] = serviceInput{}
	}
	compareIndexes(t, st.apply(all, nil, 1), buildIndex(rc, Snapshot{}, 1))
}

func compareIndexes(t *testing.T, got, want *index) {
	t.Helper()
	if len(got.names) != len(want.names) {
		t.Fatalf("%d names, want %d", len(got.names), len(want.names))
	}
	for k, we := range want.names {
		ge := got.names[k]
		if ge == nil {
			t.Fatalf("name %q missing", k)
		}
		for _, qt := range []uint16{1, 28, 33, 12, 16, 6, 2} {
			ga, wa := got.forType(ge, qt), want.forType(we, qt)
			if (ga == got.nodata) != (wa == want.nodata) || (ga != got.nodata && !bytes.Equal(ga.wire, wa.wire)) {
				t.Fatalf("name %q type %d differs", k, qt)
			}
		}
		if ge.external() != we.external() {
			t.Fatalf("name %q external %q, want %q", k, ge.external(), we.external())
		}
	}
}
