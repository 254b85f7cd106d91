// Package apitest runs a real svcnet API server (internal/server, embedded
// etcd, loopback only) inside a test and hands back admin clients for it.
// Controllers and other API clients test against it rather than a fake, so
// the wire behaviour they rely on (watch, WatchList, patch, status) is real.
package apitest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/server"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

// Server is a running test API server.
type Server struct {
	Info   server.Info
	Config server.Config
	// Rest is an admin rest.Config; copy it before changing it.
	Rest   *rest.Config
	Client kubernetes.Interface

	stop func() error
}

// Options tweak the server; the zero value is fine.
type Options struct {
	// DataDir reuses a data dir (to test restarts); empty means a new temp dir.
	DataDir string
	// Configure, when set, edits the config before start.
	Configure func(*server.Config)
	// Verbose sends the server's logs to t.Log instead of discarding them.
	Verbose bool
}

// Start runs a server until the test ends.
// klog is process-global; set it before any test goroutine can log through
// it (server.Run would otherwise set it in the middle of a test binary's
// run, racing with clients of earlier tests). Only warnings and errors.
func init() {
	server.InitKlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.Verbose {
		logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := server.Config{
		DataDir:               dir,
		BindAddress:           "127.0.0.1",
		SecurePort:            etcdtest.FreePort(t),
		AdvertiseAddress:      "192.0.2.10", // only published in the kubernetes Endpoints, never dialled
		EmbeddedEtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)),
		EmbeddedEtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)),
		EtcdUnsafeNoFsync:     true,
		// No Controllers: tests start the controllers they exercise.
		Logger: logger,
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Info, 1)
	cfg.OnReady = func(i server.Info) { ready <- i }
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()

	s := &Server{Config: cfg}
	select {
	case s.Info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("apitest: server exited before ready: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("apitest: server not ready within 2 minutes")
	}
	stopped := false
	s.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = s.stop() })

	rc, err := clientcmd.BuildConfigFromFlags("", s.Info.AdminKubeconfig)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	rc.QPS, rc.Burst = 1000, 2000
	s.Rest = rc
	s.Client = kubernetes.NewForConfigOrDie(rc)
	return s
}

// Stop stops the server (also done at test end) and returns Run's error.
func (s *Server) Stop() error { return s.stop() }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
