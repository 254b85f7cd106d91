// Package etcdtest starts a throwaway embedded etcd for tests.
package etcdtest

import (
	"context"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/svcnet/svcnet/internal/storage/etcd"
	"github.com/svcnet/svcnet/internal/testutil/ports"
)

// FreePort returns a loopback TCP port that is free now (ports.Free).
func FreePort(t testing.TB) int {
	t.Helper()
	return ports.Free(t)
}

// Start starts an embedded etcd on loopback in a temp dir and returns a Store
// connected to it and the client endpoints. Both stop when the test ends.
// The Store calls the member in-process, as the all-in-one server's does
// (etcd.Dial); StartRemote gives one that goes through gRPC.
func Start(t testing.TB) (*etcd.Store, []string) {
	t.Helper()
	return start(t, etcd.Dial)
}

// StartRemote is Start with a Store that talks gRPC over loopback to the
// member (etcd.DialRemote), as a server using --etcd-servers does.
func StartRemote(t testing.TB) (*etcd.Store, []string) {
	t.Helper()
	return start(t, etcd.DialRemote)
}

func start(t testing.TB, dial func(context.Context, []string, clientv3.Config) (*etcd.Store, error)) (*etcd.Store, []string) {
	t.Helper()
	ctx := context.Background()
	var e *etcd.Embedded
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		e, err = etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{
			DataDir:       t.TempDir(),
			ClientURL:     fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:       fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			UnsafeNoFsync: true,
			LogLevel:      "fatal",
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(e.Close)
	s, err := dial(ctx, e.Endpoints(), clientv3.Config{})
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, e.Endpoints()
}
