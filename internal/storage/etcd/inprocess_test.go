package etcd_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/svcnet/svcnet/internal/storage"
	"github.com/svcnet/svcnet/internal/storage/etcd"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// Dial picks the in-process client only for endpoints of a member running
// in this process, and only while it runs.
func TestDialPicksInProcessMember(t *testing.T) {
	ctx := context.Background()
	e, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{
		DataDir:       t.TempDir(),
		ClientURL:     fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)),
		PeerURL:       fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)),
		UnsafeNoFsync: true,
		LogLevel:      "fatal",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, tc := range []struct {
		name      string
		endpoints []string
		want      bool
	}{
		{"member", e.Endpoints(), true},
		{"other endpoint", []string{fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))}, false},
		{"member and another", append(e.Endpoints(), "http://127.0.0.1:1"), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := etcd.Dial(ctx, tc.endpoints, clientv3.Config{DialTimeout: time.Second})
			if err != nil {
				if tc.want {
					t.Fatal(err)
				}
				return // clientv3 refuses an empty endpoint list: not in-process either
			}
			defer s.Close()
			if s.InProcess() != tc.want {
				t.Fatalf("InProcess() = %v, want %v", s.InProcess(), tc.want)
			}
		})
	}

	// Both kinds of Store see each other's writes and report Status.
	local, err := etcd.Dial(ctx, e.Endpoints(), clientv3.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	remote, err := etcd.DialRemote(ctx, e.Endpoints(), clientv3.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	rev, err := local.Txn(ctx, storage.Put("/x", []byte("local"), 0))
	if err != nil {
		t.Fatal(err)
	}
	if kv, err := remote.Get(ctx, "/x"); err != nil || string(kv.Value) != "local" || kv.ModRevision != rev {
		t.Fatalf("remote get: %+v %v", kv, err)
	}
	for name, s := range map[string]*etcd.Store{"in-process": local, "grpc": remote} {
		st, err := s.Status(ctx)
		if err != nil || st.Header.Revision < rev {
			t.Fatalf("%s status: %v %v", name, st, err)
		}
	}

	e.Close()
	if s, err := etcd.Dial(ctx, e.Endpoints(), clientv3.Config{DialTimeout: time.Second}); err == nil {
		defer s.Close()
		if s.InProcess() {
			t.Fatal("Dial found a closed member")
		}
	}
}

// Ending watches of the in-process client releases their goroutines.
func TestInProcessWatchesEnd(t *testing.T) {
	s, _ := etcdtest.Start(t)
	ctx := context.Background()
	if _, err := s.Txn(ctx, storage.Put("/w/a", []byte("1"), 0)); err != nil {
		t.Fatal(err)
	}
	round := func() {
		wctx, cancel := context.WithCancel(ctx)
		ch := s.Watch(wctx, "/w/", 0)
		rev, err := s.Txn(ctx, storage.Put("/w/a", []byte("x"), storage.Any))
		if err != nil {
			t.Fatal(err)
		}
		for res := range ch {
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Event.Revision == rev {
				break
			}
		}
		cancel()
		for range ch {
		}
	}
	round() // start the client's shared watch machinery
	before := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		round()
	}
	// Goroutines of ended watches exit asynchronously: wait (bounded) for
	// the count to come back instead of asserting on timing.
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before+10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+10 {
		t.Fatalf("%d goroutines after 100 ended watches, %d before", n, before)
	}
}
