package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/controller/endpoints"
	"github.com/svcnet/svcnet/internal/controller/endpointslice"
	"github.com/svcnet/svcnet/internal/controller/endpointslicemirroring"
	"github.com/svcnet/svcnet/internal/server"
)

// testServer is an in-process svcnet API server.
type testServer struct {
	info server.Info
	rest *rest.Config
	stop func()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs server.Run on loopback ports until stop is called.
func startServer(ctx context.Context, o options, logger *slog.Logger) (*testServer, error) {
	dir := o.dataDir
	cleanupDir := false
	if dir == "" {
		base := os.Getenv("BENCH_TMPDIR")
		if base == "" {
			base = os.TempDir()
		}
		d, err := os.MkdirTemp(base, "svcnet-bench-controllers.")
		if err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		dir, cleanupDir = d, true
	}
	if fs := fsType(dir); fs == "tmpfs" && !o.nofsync {
		fmt.Fprintf(os.Stderr, "warning: %s is on tmpfs; etcd's fsync costs nothing there\n", dir)
	}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	cfg := server.Config{
		DataDir:               dir,
		BindAddress:           "127.0.0.1",
		SecurePort:            ports[0],
		AdvertiseAddress:      "192.0.2.10", // only published in default/kubernetes, never dialled
		EmbeddedEtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		EmbeddedEtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		EtcdUnsafeNoFsync:     o.nofsync,
		// The bench runs the endpoint controllers itself (stopped while it
		// creates the cold-start objects); the server's other controllers
		// (node lifecycle would mark these agent-less Nodes' pods not
		// ready) stay off.
		Logger: logger.With("component", "server"),
	}
	ready := make(chan server.Info, 1)
	cfg.OnReady = func(i server.Info) { ready <- i }
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- server.Run(sctx, cfg) }()

	var once sync.Once
	s := &testServer{stop: func() {
		once.Do(func() {
			cancel()
			<-done
			if cleanupDir {
				os.RemoveAll(dir)
			}
		})
	}}
	select {
	case s.info = <-ready:
	case err := <-done:
		done <- err // for stop
		s.stop()
		return nil, fmt.Errorf("server exited before ready: %w", err)
	case <-time.After(2 * time.Minute):
		s.stop()
		return nil, fmt.Errorf("server not ready within 2 minutes")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	rc, err := clientcmd.BuildConfigFromFlags("", s.info.AdminKubeconfig)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	s.rest = rc
	return s, nil
}

// client returns a protobuf clientset with the given QPS (0: unlimited).
func (s *testServer) client(qps float64) kubernetes.Interface {
	rc := rest.CopyConfig(s.rest)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if qps <= 0 {
		rc.QPS, rc.Burst = -1, 0
	} else {
		rc.QPS, rc.Burst = float32(qps), int(2*qps)
	}
	return kubernetes.NewForConfigOrDie(rc)
}

// startControllers runs the three endpoint controllers on one informer
// factory, as the controller manager does, until the returned stop.
func startControllers(s *testServer, o options, logger *slog.Logger) (informers.SharedInformerFactory, func(), error) {
	client := s.client(o.controllerQPS)
	factory := informers.NewSharedInformerFactory(client, 0)
	es, err := endpointslice.New(client, factory, endpointslice.Config{Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	ep, err := endpoints.New(client, factory, endpoints.Config{Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	mi, err := endpointslicemirroring.New(client, factory, endpointslicemirroring.Config{Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	var wg sync.WaitGroup
	wg.Go(func() { es.Run(ctx, o.workers) })
	wg.Go(func() { ep.Run(ctx, o.workers) })
	wg.Go(func() { mi.Run(ctx, o.workers) })
	return factory, func() {
		cancel()
		wg.Wait()
		factory.Shutdown()
	}, nil
}

func fsType(dir string) string {
	out, err := exec.Command("df", "-P", "--output=fstype", dir).Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	return f[len(f)-1]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
