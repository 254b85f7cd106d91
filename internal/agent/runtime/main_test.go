package runtime

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// The test binary doubles as the svcnet binary of the runtime: invoked as
// "<test> internal sandbox|shim ...", it runs RunSandbox or RunShim, the
// same functions cmd/svcnet/internal.go wires. So the tests do not depend
// on every other package of cmd/svcnet building.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "internal" {
		if err := runInternal(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "internal:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(proxytest.Main(m))
}

func runInternal(cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	switch cmd {
	case "sandbox":
		var o SandboxOptions
		fs.StringVar(&o.Dir, "dir", "", "")
		fs.StringVar(&o.Hostname, "hostname", "", "")
		fs.BoolVar(&o.HostNetwork, "host-network", false, "")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return RunSandbox(o)
	case "shim":
		spec := fs.String("spec", "", "")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return RunShim(*spec)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// waitLimit only stops a hung test; no test asserts on time.
const waitLimit = time.Minute

// testLogger logs through t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newTestRuntime returns a Runtime on a fresh RootDir; Close at cleanup.
func newTestRuntime(t *testing.T) (*Runtime, string) {
	t.Helper()
	proxytest.RequireSandbox(t, "nsenter", "sh")
	root := t.TempDir()
	return openRuntime(t, root), root
}

func openRuntime(t *testing.T, root string) *Runtime {
	t.Helper()
	// SVCNET_RUNTIME_EXE runs the sandboxes and shims with a real svcnet
	// binary (cmd/svcnet's `internal` wiring) instead of this test binary.
	exe := os.Getenv("SVCNET_RUNTIME_EXE")
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Config{RootDir: root, Exe: exe, Log: testLogger(t), PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// newPod starts a sandbox and removes the pod at cleanup.
func newPod(t *testing.T, r *Runtime, spec SandboxSpec) *Sandbox {
	t.Helper()
	if spec.UID == "" {
		spec.UID = "uid-" + spec.Name
	}
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	sb, err := r.EnsureSandbox(testCtx(t), spec)
	if err != nil {
		t.Fatalf("EnsureSandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := r.RemovePod(ctx, spec.UID); err != nil {
			t.Errorf("RemovePod: %v", err)
		}
	})
	return sb
}

func shSpec(name, script string) ContainerSpec {
	return ContainerSpec{Name: name, Argv: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}
}

func mustStart(t *testing.T, r *Runtime, uid string, spec ContainerSpec) ContainerStatus {
	t.Helper()
	st, err := r.StartContainer(testCtx(t), uid, spec)
	if err != nil {
		t.Fatalf("StartContainer %s: %v", spec.Name, err)
	}
	return st
}

// waitExited waits until the container's latest attempt has exited.
func waitExited(t *testing.T, r *Runtime, uid, name string) ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		st, ok := r.ContainerStatus(uid, name)
		if ok && st.State == StateExited {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("container %s of %s did not exit", name, uid)
	return ContainerStatus{}
}

// runToExit starts a container, waits for its exit and returns its status
// and log.
func runToExit(t *testing.T, r *Runtime, uid string, spec ContainerSpec) (ContainerStatus, string) {
	t.Helper()
	mustStart(t, r, uid, spec)
	st := waitExited(t, r, uid, spec.Name)
	return st, logsOf(t, r, uid, spec.Name, &corev1.PodLogOptions{})
}

func logsOf(t *testing.T, r *Runtime, uid, name string, opts *corev1.PodLogOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Logs(testCtx(t), uid, name, opts, &b); err != nil {
		t.Fatalf("Logs: %v", err)
	}
	return b.String()
}

// waitLog waits until the container's log contains want.
func waitLog(t *testing.T, r *Runtime, uid, name, want string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if strings.Contains(logsOf(t, r, uid, name, nil), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log of %s never contained %q", name, want)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// podTmp is the node-side path of a file in the pod's private /tmp.
func podTmp(sb *Sandbox, name string) string { return filepath.Join(sb.Dir, "tmp", name) }
