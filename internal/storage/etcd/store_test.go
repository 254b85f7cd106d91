package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/svcnet/svcnet/internal/storage"
	"github.com/svcnet/svcnet/internal/storage/etcd"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// forEachMode runs test against a Store that calls its embedded member
// in-process (what the all-in-one server uses) and one that goes through
// gRPC (--etcd-servers): both must behave the same.
func forEachMode(t *testing.T, test func(*testing.T, *etcd.Store)) {
	for _, mode := range []struct {
		name      string
		start     func(testing.TB) (*etcd.Store, []string)
		inProcess bool
	}{
		{"in-process", etcdtest.Start, true},
		{"grpc", etcdtest.StartRemote, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			s, _ := mode.start(t)
			if s.InProcess() != mode.inProcess {
				t.Fatalf("InProcess() = %v, want %v", s.InProcess(), mode.inProcess)
			}
			test(t, s)
		})
	}
}

func TestTxnPreconditions(t *testing.T) { forEachMode(t, testTxnPreconditions) }

func testTxnPreconditions(t *testing.T, s *etcd.Store) {
	ctx := context.Background()

	rev, err := s.Txn(ctx, storage.Put("/a", []byte("1"), 0))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	// Creating again fails on /a.
	_, err = s.Txn(ctx, storage.Put("/a", []byte("2"), 0))
	pe, ok := storage.AsPrecondition(err)
	if !ok || pe.Key != "/a" || pe.Actual != rev {
		t.Fatalf("second create: got %v, want precondition on /a with actual %d", err, rev)
	}
	// A multi-op txn whose second precondition fails writes nothing.
	_, err = s.Txn(ctx, storage.Put("/b", []byte("x"), 0), storage.Put("/a", []byte("3"), rev+100))
	if pe, ok := storage.AsPrecondition(err); !ok || pe.Key != "/a" {
		t.Fatalf("multi-op: got %v, want precondition on /a", err)
	}
	if _, err := s.Get(ctx, "/b"); !storage.IsNotFound(err) {
		t.Fatalf("/b written by a failed txn: %v", err)
	}
	// Update with the right revision succeeds; delete with a stale one fails.
	rev2, err := s.Txn(ctx, storage.Put("/a", []byte("4"), rev))
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := s.Txn(ctx, storage.Delete("/a", rev)); err == nil {
		t.Fatal("delete with stale revision succeeded")
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil || string(kv.Value) != "4" || kv.ModRevision != rev2 {
		t.Fatalf("get: %+v %v", kv, err)
	}
	if _, err := s.Txn(ctx, storage.Delete("/a", rev2)); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.Get(ctx, "/a"); !storage.IsNotFound(err) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestListAtRevisionAndCompaction(t *testing.T) { forEachMode(t, testListAtRevisionAndCompaction) }

func testListAtRevisionAndCompaction(t *testing.T, s *etcd.Store) {
	ctx := context.Background()
	r1, _ := s.Txn(ctx, storage.Put("/p/1", []byte("a"), 0))
	if _, err := s.Txn(ctx, storage.Put("/p/2", []byte("b"), 0), storage.Put("/q/1", []byte("c"), storage.Any)); err != nil {
		t.Fatal(err)
	}
	kvs, rev, err := s.List(ctx, "/p/", r1)
	if err != nil || len(kvs) != 1 || rev != r1 {
		t.Fatalf("list at r1: %v %d %v", kvs, rev, err)
	}
	kvs, rev, err = s.List(ctx, "/p/", 0)
	if err != nil || len(kvs) != 2 || kvs[0].Key != "/p/1" || kvs[1].Key != "/p/2" {
		t.Fatalf("list latest: %v %v", kvs, err)
	}
	cur, _ := s.CurrentRevision(ctx)
	if rev != cur {
		t.Fatalf("list revision %d, current %d", rev, cur)
	}
	if err := s.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.List(ctx, "/p/", r1); !storage.IsExpired(err) {
		t.Fatalf("list at compacted revision: %v, want expired", err)
	}
	ch := s.Watch(ctx, "/p/", r1-1)
	select {
	case res := <-ch:
		if !storage.IsExpired(res.Err) {
			t.Fatalf("watch from compacted revision: %+v, want expired", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result from a watch on a compacted revision")
	}
}

func TestWatchFromRevision(t *testing.T) { forEachMode(t, testWatchFromRevision) }

func testWatchFromRevision(t *testing.T, s *etcd.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1, _ := s.Txn(ctx, storage.Put("/w/a", []byte("1"), 0))
	r2, _ := s.Txn(ctx, storage.Put("/w/a", []byte("2"), r1))
	ch := s.Watch(ctx, "/w/", r1)
	r3, _ := s.Txn(ctx, storage.Delete("/w/a", r2))
	_, _ = s.Txn(ctx, storage.Put("/other", []byte("x"), storage.Any))

	var got []storage.Event
	for len(got) < 2 {
		select {
		case res := <-ch:
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Event.Type != storage.EventProgress {
				got = append(got, res.Event)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out; got %+v", got)
		}
	}
	if got[0].Type != storage.EventPut || got[0].Revision != r2 || string(got[0].KV.Value) != "2" || got[0].Prev == nil || string(got[0].Prev.Value) != "1" {
		t.Errorf("first event %+v", got[0])
	}
	if got[1].Type != storage.EventDelete || got[1].Revision != r3 || got[1].Prev == nil || string(got[1].Prev.Value) != "2" {
		t.Errorf("second event %+v", got[1])
	}
	cancel()
	for range ch {
	}
}

func TestTxnErrors(t *testing.T) { forEachMode(t, testTxnErrors) }

func testTxnErrors(t *testing.T, s *etcd.Store) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ops  []storage.Op
	}{
		// etcd's request size limit (1.5 MiB by default) holds in-process too.
		{"too large", []storage.Op{storage.Put("/big", make([]byte, 2<<20), 0)}},
		{"unknown op type", []storage.Op{{Type: storage.OpType(7), Key: "/big", ExpectRevision: storage.Any}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Txn(ctx, tc.ops...)
			if err == nil {
				t.Fatal("Txn succeeded")
			}
			if _, ok := storage.AsPrecondition(err); ok {
				t.Fatalf("Txn error %v is a precondition error", err)
			}
			if _, err := s.Get(ctx, "/big"); !storage.IsNotFound(err) {
				t.Fatalf("/big after a failed txn: %v", err)
			}
		})
	}
}
