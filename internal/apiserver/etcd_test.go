package apiserver

import (
	"testing"

	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// TestEtcdBackend runs the protocol checks that depend most on storage
// semantics (revisions, compare-and-swap, watch from a revision, compaction)
// against a real embedded etcd instead of the in-memory store.
func TestEtcdBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	store, _ := etcdtest.Start(t)
	rec := &recorder{}
	env := newTestEnv(t, withStore(store), withWrap(rec.wrap))
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"CRUD", func(t *testing.T) { testCRUD(t, env) }},
		{"ListPaging", func(t *testing.T) { testListPaging(t, env) }},
		{"UpdateConflict", func(t *testing.T) { testUpdateConflict(t, env) }},
		{"ServerSideApply", func(t *testing.T) { testServerSideApply(t, env) }},
		{"Watch", func(t *testing.T) { testWatch(t, env) }},
		{"WatchFromCompactedRevision", func(t *testing.T) { testWatchFromCompactedRevision(t, env) }},
		{"DeleteNamespace", func(t *testing.T) { testDeleteNamespace(t, env) }},
		{"Informers/WatchListClient=true", func(t *testing.T) { testInformers(t, env, rec, true, "-wl") }},
		{"Informers/WatchListClient=false", func(t *testing.T) { testInformers(t, env, rec, false, "-nowl") }},
	} {
		if !t.Run(tc.name, tc.run) {
			return
		}
	}
}
