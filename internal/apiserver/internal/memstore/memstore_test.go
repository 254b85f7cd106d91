package memstore

import (
	"context"
	"testing"
	"time"

	"github.com/svcnet/svcnet/internal/storage"
)

func recv(t *testing.T, ch <-chan storage.WatchResult) storage.WatchResult {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no watch result")
	}
	return storage.WatchResult{}
}

func TestTxnPreconditions(t *testing.T) {
	ctx := context.Background()
	s := New()
	rev, err := s.Txn(ctx, storage.Put("/a", []byte("1"), 0), storage.Put("/b", []byte("1"), 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ops     []storage.Op
		failKey string
	}{
		{"create existing", []storage.Op{storage.Put("/a", nil, 0)}, "/a"},
		{"stale revision", []storage.Op{storage.Put("/c", nil, 0), storage.Put("/b", nil, rev-1)}, "/b"},
		{"delete missing at revision", []storage.Op{storage.Delete("/zz", 5)}, "/zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Txn(ctx, tc.ops...)
			pe, ok := storage.AsPrecondition(err)
			if !ok || pe.Key != tc.failKey {
				t.Fatalf("err = %v, want precondition failure on %s", err, tc.failKey)
			}
			if _, err := s.Get(ctx, "/c"); !storage.IsNotFound(err) {
				t.Errorf("failed txn wrote /c")
			}
		})
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil || kv.ModRevision != rev || kv.CreateRevision != rev {
		t.Fatalf("get /a = %+v, %v", kv, err)
	}
	rev2, err := s.Txn(ctx, storage.Put("/a", []byte("2"), rev))
	if err != nil || rev2 != rev+1 {
		t.Fatalf("update: %d %v", rev2, err)
	}
	if kv, _ := s.Get(ctx, "/a"); kv.CreateRevision != rev || kv.ModRevision != rev2 {
		t.Errorf("after update %+v", kv)
	}
}

func TestListAtRevisionAndCompaction(t *testing.T) {
	ctx := context.Background()
	s := New()
	r1, _ := s.Txn(ctx, storage.Put("/p/a", []byte("1"), 0))
	r2, _ := s.Txn(ctx, storage.Put("/p/a", []byte("2"), r1), storage.Put("/p/b", []byte("1"), 0))
	r3, _ := s.Txn(ctx, storage.Delete("/p/b", r2), storage.Put("/q", nil, 0))

	for _, tc := range []struct {
		rev  int64
		want []string
	}{{r1, []string{"/p/a=1"}}, {r2, []string{"/p/a=2", "/p/b=1"}}, {r3, []string{"/p/a=2"}}, {0, []string{"/p/a=2"}}} {
		kvs, at, err := s.List(ctx, "/p/", tc.rev)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, kv.Key+"="+string(kv.Value))
		}
		if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) || (tc.rev != 0 && at != tc.rev) {
			t.Errorf("list at %d = %v @%d, want %v", tc.rev, got, at, tc.want)
		}
	}

	if err := s.Compact(ctx, r2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.List(ctx, "/p/", r1); !storage.IsExpired(err) {
		t.Errorf("list below compaction: %v", err)
	}
	if kvs, _, err := s.List(ctx, "/p/", r2); err != nil || len(kvs) != 2 {
		t.Errorf("list at compaction revision: %v %v", kvs, err)
	}
	r := recv(t, s.Watch(ctx, "/p/", r1-1))
	if !storage.IsExpired(r.Err) {
		t.Errorf("watch from compacted revision: %+v", r)
	}
	ch := s.Watch(ctx, "/p/", r2-1)
	for _, want := range []struct {
		typ storage.EventType
		key string
	}{{storage.EventPut, "/p/a"}, {storage.EventPut, "/p/b"}, {storage.EventDelete, "/p/b"}} {
		r := recv(t, ch)
		if r.Err != nil || r.Event.Type != want.typ || r.Event.KV.Key != want.key {
			t.Errorf("replayed %+v, want %v %s", r, want.typ, want.key)
		}
	}
}

func TestWatchLiveAndProgress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New()
	r1, _ := s.Txn(ctx, storage.Put("/a", []byte("1"), 0))
	ch := s.Watch(ctx, "/", r1)
	r2, _ := s.Txn(ctx, storage.Put("/a", []byte("2"), r1))
	r := recv(t, ch)
	if r.Event.Type != storage.EventPut || r.Event.Revision != r2 || r.Event.Prev == nil || string(r.Event.Prev.Value) != "1" {
		t.Errorf("live event %+v", r)
	}
	s.Progress()
	r = recv(t, ch)
	if r.Event.Type != storage.EventProgress || r.Event.Revision != r2 {
		t.Errorf("progress %+v", r)
	}
	if _, err := s.Txn(ctx, storage.Delete("/a", storage.Any)); err != nil {
		t.Fatal(err)
	}
	r = recv(t, ch)
	if r.Event.Type != storage.EventDelete || r.Event.Prev == nil || string(r.Event.Prev.Value) != "2" {
		t.Errorf("delete event %+v", r)
	}
	cancel()
	for range ch {
	}
}
