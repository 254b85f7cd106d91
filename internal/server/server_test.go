package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/testutil/ports"
)

// freePort returns a loopback TCP port that is free now (ports.Free).
func freePort(t *testing.T) int { t.Helper(); return ports.Free(t) }

// testConfig is a loopback-only server in dir with fresh ports.
func testConfig(t *testing.T, dir string) Config {
	return Config{
		DataDir:               dir,
		BindAddress:           "127.0.0.1",
		SecurePort:            freePort(t),
		AdvertiseAddress:      "192.0.2.10", // only published, never dialled
		EmbeddedEtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		EmbeddedEtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		EtcdUnsafeNoFsync:     true,
		Logger:                testLogger(t),
	}
}

// runServer starts Run and returns its Info once ready, and a stop function
// returning Run's error.
func runServer(t *testing.T, cfg Config) (Info, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Info, 1)
	cfg.OnReady = func(i Info) { ready <- i }
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	select {
	case info := <-ready:
		stopped := false
		stop := func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
		t.Cleanup(func() { _ = stop() })
		return info, stop
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("server not ready within 2 minutes")
	}
	return Info{}, nil
}

func adminClient(t *testing.T, info Info) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", info.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// getPath GETs a non-resource path of the server at url with kubeconfig's
// credentials and returns the HTTP status. (The node kubeconfig names the
// advertise address, which tests never dial.)
func getPath(t *testing.T, url, kubeconfig, path string) int {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags(url, kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var code int
	c.Discovery().RESTClient().Get().AbsPath(path).Do(context.Background()).StatusCode(&code)
	return code
}

func TestRunServesBootstrapsAndRestarts(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Profiling = true
	info, stop := runServer(t, cfg)
	ctx := context.Background()

	for _, f := range []string{AdminKubeconfigFile, NodeKubeconfigFile, NodeTokenFile, TokenFile, "pki/ca.crt", "pki/ca.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if f != "pki/ca.crt" && st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if info.URL != fmt.Sprintf("https://127.0.0.1:%d", cfg.SecurePort) {
		t.Errorf("URL = %s", info.URL)
	}

	c := adminClient(t, info)
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if _, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
	}
	svc, err := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kubernetes service: %v", err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes ClusterIP = %s, want 10.96.0.1", svc.Spec.ClusterIP)
	}
	if cm, err := c.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err != nil || cm.Data["config.conf"] == "" {
		t.Errorf("kube-proxy ConfigMap: %v %v", cm, err)
	}
	dnsSvc, err := c.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kube-dns service: %v", err)
	}
	if dnsSvc.Spec.ClusterIP != "10.96.0.10" || len(dnsSvc.Spec.Ports) != 3 {
		t.Errorf("kube-dns = %s with %d ports, want 10.96.0.10 with dns, dns-tcp and metrics", dnsSvc.Spec.ClusterIP, len(dnsSvc.Spec.Ports))
	}

	// The node kubeconfig names the advertise address and the join token.
	nodeCfg, err := clientcmd.LoadFromFile(info.NodeKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(info.NodeTokenFile)
	cl := nodeCfg.Clusters[auth.ClusterName]
	if cl == nil || cl.Server != fmt.Sprintf("https://192.0.2.10:%d", cfg.SecurePort) {
		t.Errorf("node kubeconfig cluster = %+v", cl)
	}
	if ai := nodeCfg.AuthInfos["node"]; ai == nil || ai.Token != strings.TrimSpace(string(tok)) {
		t.Errorf("node kubeconfig user does not carry the node token")
	}

	// --profiling: the admin gets Go's profiles, a node credential does not.
	if code := getPath(t, info.URL, info.AdminKubeconfig, "/debug/pprof/cmdline"); code != 200 {
		t.Errorf("admin GET /debug/pprof/cmdline = %d, want 200", code)
	}
	if code := getPath(t, info.URL, info.NodeKubeconfig, "/debug/pprof/heap"); code != 403 {
		t.Errorf("node GET /debug/pprof/heap = %d, want 403", code)
	}

	caBefore, _ := os.ReadFile(filepath.Join(dir, "pki/ca.crt"))
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}

	// Same data dir again: the embedded etcd's lock and ports were released,
	// the CA is kept and the data is there.
	cfg.Logger = testLogger(t)
	cfg.Profiling = false
	info, _ = runServer(t, cfg)
	if code := getPath(t, info.URL, info.AdminKubeconfig, "/debug/pprof/cmdline"); code != 404 {
		t.Errorf("GET /debug/pprof/cmdline without --profiling = %d, want 404", code)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, "pki/ca.crt"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Error("CA changed across restarts")
	}
	svc2, err := adminClient(t, info).CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc2.UID != svc.UID {
		t.Errorf("kubernetes service recreated across restart: uid %s -> %s", svc.UID, svc2.UID)
	}
}

// TestRunFailedStartReleasesEverything: a start that fails after etcd is up
// (here: the HTTPS port is taken) must stop etcd, so the next start works.
func TestRunFailedStartReleasesEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.SecurePort))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg)
	busy.Close()
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run with a busy port = %v, want a listen error", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("error %v does not wrap the listen error", err)
	}
	// Same etcd ports and data dir: only possible if the first etcd stopped.
	runServer(t, cfg)
}

func TestRunStartErrors(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr string
	}{
		{"bad CIDR", func(c *Config) { c.ServiceClusterIPRange = "not-a-cidr" }, "--service-cluster-ip-range"},
		// Nothing listens there: the start must fail, not hang.
		{"unreachable external etcd", func(c *Config) {
			c.EtcdServers = []string{fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		}, "not reachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			tt.modify(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}
