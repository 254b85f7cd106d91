package kubeletserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/svcnet/svcnet/internal/agent/kubeletserver"
	"github.com/svcnet/svcnet/internal/agent/kubeletserver/kubeletfake"
	"github.com/svcnet/svcnet/internal/auth"
)

// testTimeout only keeps a broken test from hanging; nothing asserts on time.
const testTimeout = 30 * time.Second

type testEnv struct {
	prov *kubeletfake.Provider
	base string       // https://127.0.0.1:port
	rest *rest.Config // presents the apiserver-kubelet-client certificate
	http *http.Client // likewise
	pki  *auth.PKI
}

func startServer(t *testing.T) *testEnv {
	t.Helper()
	pki, err := auth.EnsurePKI(auth.PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	prov := &kubeletfake.Provider{
		Pods: map[string]string{"default/web": "uid-web", "default/multi": "uid-multi"},
		Lines: map[string][]string{
			"uid-web/app":     {"one", "two", "three"},
			"uid-multi/a":     {"a says hi"},
			"uid-multi/b":     {"b says hi"},
			"uid-multi/quiet": {},
		},
		Follow: make(chan string),
	}
	srv, err := kubeletserver.New(kubeletserver.Config{
		Addr:      "127.0.0.1:0",
		ClientCAs: pki.CAPool(),
		CertDir:   t.TempDir(),
		NodeName:  "node-a",
		NodeIPs:   []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Provider:  prov,
		Log:       slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	certPEM, err := os.ReadFile(pki.Path(auth.KubeletClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(pki.Path(auth.KubeletClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{
		prov: prov,
		base: "https://" + srv.Addr(),
		pki:  pki,
		rest: &rest.Config{
			Host:            "https://" + srv.Addr(),
			TLSClientConfig: rest.TLSClientConfig{Insecure: true, CertData: certPEM, KeyData: keyPEM},
		},
	}
	env.http = httpClient(&pki.KubeletClient)
	return env
}

// httpClient returns a client that skips server verification (as the API
// server does) and presents cert when not nil.
func httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func TestClientCertificateRequired(t *testing.T) {
	env := startServer(t)
	foreign, err := auth.EnsurePKI(auth.PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, err := tls.X509KeyPair(foreign.AdminCertPEM, foreign.AdminKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		client   *http.Client
		path     string
		wantCode int // 0: the TLS handshake must fail
	}{
		{"healthz without cert", httpClient(nil), "/healthz", http.StatusOK},
		{"logs without cert", httpClient(nil), "/containerLogs/default/web/app", http.StatusUnauthorized},
		{"exec without cert", httpClient(nil), "/exec/default/web/app?command=echo&output=1", http.StatusUnauthorized},
		{"logs with cert of another CA", httpClient(&foreignCert), "/containerLogs/default/web/app", 0},
		{"logs with cluster cert", env.http, "/containerLogs/default/web/app", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.Get(env.base + tt.path)
			if tt.wantCode == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request succeeded with status %d, want a TLS failure", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantCode)
			}
		})
	}
}

func TestLogs(t *testing.T) {
	env := startServer(t)
	tests := []struct {
		name     string
		path     string
		wantCode int
		wantBody string // exact for 200, substring otherwise
	}{
		{"all", "/containerLogs/default/web/app", 200, "one\ntwo\nthree\n"},
		{"tailLines", "/containerLogs/default/web/app?tailLines=1", 200, "three\n"},
		{"legacy tail", "/containerLogs/default/web/app?tail=2", 200, "two\nthree\n"},
		{"tail all", "/containerLogs/default/web/app?tail=all", 200, "one\ntwo\nthree\n"},
		{"other container", "/containerLogs/default/multi/b", 200, "b says hi\n"},
		{"empty log", "/containerLogs/default/multi/quiet", 200, ""},
		{"unknown pod", "/containerLogs/default/nope/app", 404, `pod "nope" does not exist`},
		{"unknown container", "/containerLogs/default/web/nope", 404, `container "nope"`},
		{"negative tailLines", "/containerLogs/default/web/app?tailLines=-1", 422, "tailLines"},
		{"zero limitBytes", "/containerLogs/default/web/app?limitBytes=0", 422, "limitBytes"},
		{"since twice", "/containerLogs/default/web/app?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z", 422, "at most one"},
		{"bad tailLines", "/containerLogs/default/web/app?tailLines=x", 400, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := env.http.Get(env.base + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status = %d (%q), want %d", resp.StatusCode, body, tt.wantCode)
			}
			if tt.wantCode == 200 {
				if string(body) != tt.wantBody {
					t.Errorf("body = %q, want %q", body, tt.wantBody)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
					t.Errorf("Content-Type = %q, want text/plain", ct)
				}
			} else if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body = %q, want it to contain %q", body, tt.wantBody)
			}
		})
	}
}

// TestLogsFollowStreams checks that a followed log reaches the client line
// by line while the request is still open: a line is only sent after the
// previous one was read, so an unflushed response would block the test.
func TestLogsFollowStreams(t *testing.T) {
	env := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.base+"/containerLogs/default/web/app?follow=true&tailLines=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readLine := func(want string) {
		t.Helper()
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading %q: %v", want, err)
		}
		if got != want+"\n" {
			t.Fatalf("line = %q, want %q", got, want)
		}
	}
	readLine("three")
	for _, l := range []string{"four", "five"} {
		select {
		case env.prov.Follow <- l:
		case <-ctx.Done():
			t.Fatal("log stream never asked for the next line")
		}
		readLine(l)
	}
	close(env.prov.Follow)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the follow ended: %q, %v; want a clean end", rest, err)
	}
}

type sizeQueue struct {
	sizes chan remotecommand.TerminalSize
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q.sizes
	if !ok {
		return nil
	}
	return &s
}

func TestExec(t *testing.T) {
	env := startServer(t)
	executors := []struct {
		name string
		new  func(u string) (remotecommand.Executor, error)
	}{
		{"websocket", func(u string) (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutor(env.rest, "GET", u)
		}},
		{"spdy", func(u string) (remotecommand.Executor, error) {
			pu, err := url.Parse(u)
			if err != nil {
				return nil, err
			}
			return remotecommand.NewSPDYExecutor(env.rest, "POST", pu)
		}},
	}
	tests := []struct {
		name       string
		path       string // after /exec/
		cmd        []string
		stdin      string
		tty        bool
		wantOut    string
		wantErr    string
		wantExit   int    // non-zero: an ExitError with this code
		wantFailed string // non-empty: an error containing this
	}{
		{name: "stdout", path: "default/web/app", cmd: []string{"echo", "hello", "world"}, wantOut: "hello world\n"},
		{name: "stderr", path: "default/web/app", cmd: []string{"stderr", "oops"}, wantErr: "oops\n"},
		{name: "stdin to stdout", path: "default/web/app", cmd: []string{"cat"}, stdin: "line 1\nline 2\n", wantOut: "line 1\nline 2\n"},
		{name: "exit code", path: "default/web/app", cmd: []string{"exit", "3"}, wantExit: 3},
		{name: "container and uid in path", path: "default/multi/uid-multi/b", cmd: []string{"whoami"}, wantOut: "uid-multi/b tty=false\n"},
		{name: "tty with resize", path: "default/web/app", cmd: []string{"size"}, tty: true, wantOut: "80x24\n"},
		{name: "unknown container", path: "default/web/nope", cmd: []string{"echo"}, wantFailed: "not found"},
		{name: "unknown pod", path: "default/nope/app", cmd: []string{"echo"}, wantFailed: "pod does not exist"},
	}
	for _, ex := range executors {
		for _, tt := range tests {
			t.Run(ex.name+"/"+tt.name, func(t *testing.T) {
				q := url.Values{"command": tt.cmd, "output": {"1"}}
				if !tt.tty {
					q.Set("error", "1")
				} else {
					q.Set("tty", "1")
				}
				if tt.stdin != "" {
					q.Set("input", "1")
				}
				exec, err := ex.new(env.base + "/exec/" + tt.path + "?" + q.Encode())
				if err != nil {
					t.Fatal(err)
				}
				var stdout, stderr bytes.Buffer
				opts := remotecommand.StreamOptions{Stdout: &stdout, Tty: tt.tty}
				if !tt.tty {
					opts.Stderr = &stderr
				} else {
					sizes := make(chan remotecommand.TerminalSize, 1)
					sizes <- remotecommand.TerminalSize{Width: 80, Height: 24}
					close(sizes)
					opts.TerminalSizeQueue = &sizeQueue{sizes}
				}
				if tt.stdin != "" {
					opts.Stdin = strings.NewReader(tt.stdin)
				}
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				err = exec.StreamWithContext(ctx, opts)
				switch {
				case tt.wantExit != 0:
					var exitErr utilexec.ExitError
					if !errors.As(err, &exitErr) {
						t.Fatalf("err = %v (%T), want an ExitError", err, err)
					}
					if exitErr.ExitStatus() != tt.wantExit {
						t.Errorf("exit status = %d, want %d", exitErr.ExitStatus(), tt.wantExit)
					}
				case tt.wantFailed != "":
					if err == nil || !strings.Contains(err.Error(), tt.wantFailed) {
						t.Fatalf("err = %v, want one containing %q", err, tt.wantFailed)
					}
				case err != nil:
					t.Fatalf("exec: %v", err)
				}
				if stdout.String() != tt.wantOut {
					t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantOut)
				}
				if stderr.String() != tt.wantErr {
					t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantErr)
				}
			})
		}
	}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestCloseWithoutRun checks that a Server that never ran gives its port back.
func TestCloseWithoutRun(t *testing.T) {
	pki, err := auth.EnsurePKI(auth.PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kubeletserver.New(kubeletserver.Config{
		Addr: "127.0.0.1:0", ClientCAs: pki.CAPool(), CertDir: t.TempDir(), Provider: &kubeletfake.Provider{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", srv.Addr())
	if err != nil {
		t.Fatalf("port still taken after Close: %v", err)
	}
	ln.Close()
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	pool := x509.NewCertPool()
	tests := []struct {
		name string
		cfg  kubeletserver.Config
		want string
	}{
		{"no provider", kubeletserver.Config{ClientCAs: pool, CertDir: t.TempDir()}, "Provider"},
		{"no client CAs", kubeletserver.Config{Provider: &kubeletfake.Provider{}, CertDir: t.TempDir()}, "ClientCAs"},
		{"no cert dir", kubeletserver.Config{Provider: &kubeletfake.Provider{}, ClientCAs: pool}, "CertDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := kubeletserver.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}
