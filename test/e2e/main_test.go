// Package e2e runs whole svcnet processes and drives them the way users do:
// `svcnet kubectl`, client-go, raw HTTPS and, for consistency checks, etcd
// itself. The svcnet binary is built once per run (TestMain); every test
// starts its own servers on free loopback ports with their own data dirs.
//
// Most tests use loopback only. The node agent tests (agent_test.go) create
// network namespaces, veths and routes; as root every test runs inside a
// private network namespace (proxytest.Main), so nothing leaves the machine.
// They run as part of `make test`.
package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
	"github.com/svcnet/svcnet/internal/testutil/ports"
)

// svcnetBin is the binary under test.
var svcnetBin string

// repoRoot is the repository root (examples/ lives there).
var repoRoot string

// Bounds on waiting. They only stop a hung test; no test asserts on time.
const (
	startTimeout   = 2 * time.Minute
	stopTimeout    = time.Minute
	commandTimeout = 2 * time.Minute
)

// TestMain builds the binary and runs the tests. As root they run in a
// private network and mount namespace (proxytest.Main): the node agent
// tests create network namespaces, veths and routes, and every packet stays
// inside; the other tests only use loopback and run the same there.
func TestMain(m *testing.M) {
	if proxytest.WillReexec() {
		os.Exit(proxytest.Main(m))
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Not under /tmp: every pod gets a private /tmp, which would hide the
	// binary (and test dirs) from the pods' processes. t.TempDir follows.
	tmp, err := os.MkdirTemp("/var/tmp", "svcnet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("TMPDIR", tmp)
	dir, err := os.MkdirTemp("", "svcnet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	svcnetBin = filepath.Join(dir, "svcnet")
	// The same version stamps as `make build`, so `svcnet kubectl version`
	// reports a real client version.
	ldflags := strings.Join([]string{
		"-X k8s.io/component-base/version.gitVersion=v1.37.2",
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=37",
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.37.2",
		"-X k8s.io/client-go/pkg/version.gitMajor=1",
		"-X k8s.io/client-go/pkg/version.gitMinor=37",
	}, " ")
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", svcnetBin, "./cmd/svcnet")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build svcnet:", err)
		return 1
	}
	return proxytest.Main(m)
}

// freePort returns a loopback TCP port that is free now (ports.Free).
func freePort(t *testing.T) int { t.Helper(); return ports.Free(t) }

// example returns the path of a manifest in examples/.
func example(name string) string { return filepath.Join(repoRoot, "examples", name) }

// serverOptions configure one svcnet server process.
type serverOptions struct {
	// dataDir defaults to a new temp dir.
	dataDir string
	// etcdServers, when set, points at an external etcd instead of
	// starting the embedded one.
	etcdServers string
	// bindAddress is where the API server listens (default 127.0.0.1).
	bindAddress string
	// advertiseAddress is the kubernetes Service's endpoint (default
	// 192.0.2.10, a documentation address).
	advertiseAddress string
	// fsync keeps the embedded etcd's fsync (durability across machine
	// crashes); without it tests run faster, and a process kill still
	// loses nothing the kernel has.
	fsync bool
}

// server is a running `svcnet server` process.
type server struct {
	t    *testing.T
	opts serverOptions
	port int
	// etcdURL is the embedded etcd's client URL ("" with etcdServers).
	etcdURL string
	args    []string
	home    string // HOME for kubectl (discovery cache)

	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	// exitErr is cmd.Wait's result, valid after exited is closed.
	exitErr error
}

// startServer starts a server and waits until it is ready.
func startServer(t *testing.T, opts serverOptions) *server {
	t.Helper()
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	s := &server{t: t, opts: opts, port: freePort(t), home: t.TempDir()}
	s.args = []string{"server",
		"--data-dir", opts.dataDir,
		"--bind-address", cmp.Or(opts.bindAddress, "127.0.0.1"),
		// The sandbox may have no interface but loopback, which the API
		// rejects as the kubernetes Service's endpoint; a documentation
		// address (never routed anywhere) stands in.
		"--advertise-address", cmp.Or(opts.advertiseAddress, "192.0.2.10"),
		"--secure-port", fmt.Sprint(s.port),
	}
	if opts.etcdServers != "" {
		s.args = append(s.args, "--etcd-servers", opts.etcdServers)
	} else {
		s.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		s.args = append(s.args,
			"--embedded-etcd-client-url", s.etcdURL,
			"--embedded-etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
		if !opts.fsync {
			s.args = append(s.args, "--embedded-etcd-unsafe-no-fsync")
		}
	}
	t.Cleanup(func() {
		if s.running() {
			s.kill()
		}
		if t.Failed() {
			t.Logf("server output (%s):\n%s", strings.Join(s.args, " "), s.out.tail(150))
		}
	})
	s.start()
	return s
}

func (s *server) running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// start (re)starts the process and waits for its ready message.
func (s *server) start() {
	s.t.Helper()
	if s.out == nil {
		s.out = newLogBuffer()
	}
	s.out.mark("--- start ---")
	ready := s.out.waitFor("svcnet API server is ready at")
	s.cmd = exec.Command(svcnetBin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start server: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		s.exitErr = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	select {
	case <-ready:
	case <-s.exited:
		s.t.Fatalf("server exited before becoming ready: %v\n%s", s.exitErr, s.out.tail(80))
	case <-time.After(startTimeout):
		s.t.Fatalf("server not ready after %v:\n%s", startTimeout, s.out.tail(80))
	}
}

// kill sends SIGKILL and waits for the process to go.
func (s *server) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// stop sends SIGTERM and requires a clean exit.
func (s *server) stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.kill()
		s.t.Fatalf("server did not stop within %v of SIGTERM", stopTimeout)
	}
	if s.exitErr != nil {
		s.t.Errorf("server exited with %v after SIGTERM, want a clean exit", s.exitErr)
	}
}

func (s *server) url() string { return fmt.Sprintf("https://127.0.0.1:%d", s.port) }

func (s *server) adminKubeconfig() string { return filepath.Join(s.opts.dataDir, "admin.kubeconfig") }

// kubectl runs `svcnet kubectl args...` with the admin kubeconfig.
func (s *server) kubectl(args ...string) (stdout, stderr string, err error) {
	return s.kubectlEnv(nil, args...)
}

// kubectlEnv is kubectl with extra environment variables.
func (s *server) kubectlEnv(env []string, args ...string) (stdout, stderr string, err error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, svcnetBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(s.kubectlBaseEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (s *server) kubectlBaseEnv() []string {
	return append(os.Environ(), "KUBECONFIG="+s.adminKubeconfig(), "HOME="+s.home)
}

// mustKubectl runs kubectl and fails the test if it fails.
func (s *server) mustKubectl(args ...string) string {
	s.t.Helper()
	out, errOut, err := s.kubectl(args...)
	if err != nil {
		s.t.Fatalf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// clientset returns a client-go clientset with the admin credentials.
func (s *server) clientset() *kubernetes.Clientset {
	s.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.adminKubeconfig())
	if err != nil {
		s.t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	// A Dial of its own keeps client-go from sharing one cached transport
	// (and its pooled HTTP/2 connection) between clientsets: after a
	// restart the new clientset must not inherit a connection to the
	// killed server.
	cfg.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// logBuffer collects a process's output and reports when a line appears.
type logBuffer struct {
	mu      sync.Mutex // guards the fields below
	buf     bytes.Buffer
	partial []byte
	waiters []waiter
}

type waiter struct {
	substr string
	ch     chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		line := string(b.partial[:i])
		b.partial = b.partial[i+1:]
		kept := b.waiters[:0]
		for _, w := range b.waiters {
			if strings.Contains(line, w.substr) {
				close(w.ch)
			} else {
				kept = append(kept, w)
			}
		}
		b.waiters = kept
	}
	return len(p), nil
}

// waitFor returns a channel closed when a later line contains substr.
func (b *logBuffer) waitFor(substr string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	b.waiters = append(b.waiters, waiter{substr, ch})
	return ch
}

func (b *logBuffer) mark(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s + "\n")
}

// tail returns the last n lines.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(b.buf.String(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lineReader delivers the lines of r on a channel, closed at EOF.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
