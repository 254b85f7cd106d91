package apiserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	utilexec "k8s.io/utils/exec"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/agent/kubeletserver"
	"github.com/svcnet/svcnet/internal/agent/kubeletserver/kubeletfake"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// testTimeout only keeps a broken test from hanging; nothing asserts on time.
const testTimeout = time.Minute

// podProxyEnv is a real API server, a node agent's streaming server on
// 127.0.0.1 with a fake runtime, and Nodes and Pods pointing at it.
type podProxyEnv struct {
	api  *apitest.Server
	prov *kubeletfake.Provider
}

func startPodProxyEnv(t *testing.T) *podProxyEnv {
	t.Helper()
	api := apitest.Start(t, apitest.Options{})
	caPEM, err := os.ReadFile(filepath.Join(api.Config.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	prov := &kubeletfake.Provider{Pods: map[string]string{}, Lines: map[string][]string{}, Follow: make(chan string)}
	ks, err := kubeletserver.New(kubeletserver.Config{
		Addr:      "127.0.0.1:0",
		ClientCAs: pool,
		CertDir:   t.TempDir(),
		NodeName:  "node-a",
		NodeIPs:   []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Provider:  prov,
		Log:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ks.Run(kctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kubeletserver: %v", err)
		}
	})
	_, portStr, _ := net.SplitHostPort(ks.Addr())
	port, _ := strconv.Atoi(portStr)

	ctx := context.Background()
	c := api.Client
	// node-a runs the agent; node-down publishes a port nothing listens on.
	mkNode(t, c, "node-a", "127.0.0.1", int32(port))
	mkNode(t, c, "node-down", "127.0.0.1", int32(closedPort(t)))

	pods := []struct {
		name, node string
		containers []string
	}{
		{"web", "node-a", []string{"app"}},
		{"multi", "node-a", []string{"a", "b"}},
		{"pending", "", []string{"app"}},
		{"lost", "node-gone", []string{"app"}},
		{"unreachable", "node-down", []string{"app"}},
	}
	for _, p := range pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name}, Spec: corev1.PodSpec{NodeName: p.node}}
		for _, cn := range p.containers {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: cn, Image: "busybox"})
		}
		created, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.node == "node-a" {
			prov.Pods["default/"+p.name] = string(created.UID)
			for _, cn := range p.containers {
				prov.Lines[string(created.UID)+"/"+cn] = []string{p.name + "/" + cn + " line 1", p.name + "/" + cn + " line 2"}
			}
		}
	}
	return &podProxyEnv{api: api, prov: prov}
}

func mkNode(t *testing.T, c kubernetes.Interface, name, ip string, port int32) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = port
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// closedPort returns a loopback port that was just free.
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestPodLogsThroughAPIServer(t *testing.T) {
	env := startPodProxyEnv(t)
	pods := env.api.Client.CoreV1().Pods("default")
	tests := []struct {
		name     string
		pod      string
		opts     corev1.PodLogOptions
		wantBody string
		wantCode int32 // non-zero: the Status code
		wantMsg  string
	}{
		{name: "single container", pod: "web", wantBody: "web/app line 1\nweb/app line 2\n"},
		{name: "tailLines", pod: "web", opts: corev1.PodLogOptions{TailLines: ptr.To[int64](1)}, wantBody: "web/app line 2\n"},
		{name: "named container", pod: "multi", opts: corev1.PodLogOptions{Container: "b"}, wantBody: "multi/b line 1\nmulti/b line 2\n"},
		{name: "container required", pod: "multi", wantCode: 400,
			wantMsg: "a container name must be specified for pod multi, choose one of: [a b]"},
		{name: "unknown container", pod: "web", opts: corev1.PodLogOptions{Container: "nope"}, wantCode: 400,
			wantMsg: "container nope is not valid for pod web"},
		{name: "unknown pod", pod: "nope", wantCode: 404, wantMsg: `pods "nope" not found`},
		{name: "invalid options", pod: "web", opts: corev1.PodLogOptions{TailLines: ptr.To[int64](-1)}, wantCode: 422,
			wantMsg: "tailLines: Invalid value: -1: must be greater than or equal to 0"},
		{name: "not scheduled: no content", pod: "pending", wantBody: ""},
		{name: "node object missing", pod: "lost", wantCode: 404, wantMsg: `nodes "node-gone" not found`},
		{name: "agent unreachable", pod: "unreachable", wantCode: 500, wantMsg: `error talking to the agent of node "node-down"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			// Result.Error decodes the Status (DoRaw would not).
			res := pods.GetLogs(tt.pod, &tt.opts).Do(ctx)
			body, _ := res.Raw()
			err := res.Error()
			if tt.wantCode != 0 {
				var se *apierrors.StatusError
				if !errors.As(err, &se) {
					t.Fatalf("err = %v (%T), want a Status error", err, err)
				}
				if se.ErrStatus.Code != tt.wantCode || !strings.Contains(se.ErrStatus.Message, tt.wantMsg) {
					t.Errorf("status = %d %q, want %d containing %q", se.ErrStatus.Code, se.ErrStatus.Message, tt.wantCode, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}
}

// TestPodLogsFollowThroughAPIServer checks that a followed log streams
// through the API server: the next line is only produced after the previous
// one arrived at the client.
func TestPodLogsFollowThroughAPIServer(t *testing.T) {
	env := startPodProxyEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rc, err := env.api.Client.CoreV1().Pods("default").GetLogs("web", &corev1.PodLogOptions{Follow: true, TailLines: ptr.To[int64](1)}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r := bufio.NewReader(rc)
	expect := func(want string) {
		t.Helper()
		got, err := r.ReadString('\n')
		if err != nil || got != want+"\n" {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	expect("web/app line 2")
	for _, l := range []string{"line 3", "line 4"} {
		select {
		case env.prov.Follow <- l:
		case <-ctx.Done():
			t.Fatal("the agent never asked for the next line")
		}
		expect(l)
	}
	close(env.prov.Follow)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the follow ended: %q, %v; want a clean end", rest, err)
	}
}

func execURL(c kubernetes.Interface, pod string, opts *corev1.PodExecOptions) string {
	return c.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).
		SubResource("exec").VersionedParams(opts, scheme.ParameterCodec).URL().String()
}

func TestPodExecThroughAPIServer(t *testing.T) {
	env := startPodProxyEnv(t)
	executors := []struct {
		name string
		new  func(cfg *rest.Config, u string) (remotecommand.Executor, error)
	}{
		{"websocket", func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutor(cfg, "GET", u)
		}},
		{"spdy", func(cfg *rest.Config, u string) (remotecommand.Executor, error) {
			pu, err := url.Parse(u)
			if err != nil {
				return nil, err
			}
			return remotecommand.NewSPDYExecutor(cfg, "POST", pu)
		}},
	}
	tests := []struct {
		name       string
		pod        string
		opts       corev1.PodExecOptions
		stdin      string
		wantOut    string
		wantErrOut string
		wantExit   int
		wantFailed string
	}{
		{name: "stdout", pod: "web", opts: corev1.PodExecOptions{Command: []string{"echo", "hi", "there"}}, wantOut: "hi there\n"},
		{name: "stderr", pod: "web", opts: corev1.PodExecOptions{Command: []string{"stderr", "bad"}}, wantErrOut: "bad\n"},
		{name: "stdin", pod: "web", opts: corev1.PodExecOptions{Command: []string{"cat"}, Stdin: true}, stdin: "a\nb\n", wantOut: "a\nb\n"},
		{name: "exit code", pod: "web", opts: corev1.PodExecOptions{Command: []string{"exit", "7"}}, wantExit: 7},
		{name: "named container", pod: "multi", opts: corev1.PodExecOptions{Command: []string{"whoami"}, Container: "b"}, wantOut: "/b tty=false\n"},
		{name: "container required", pod: "multi", opts: corev1.PodExecOptions{Command: []string{"whoami"}},
			wantFailed: "a container name must be specified for pod multi, choose one of: [a b]"},
		{name: "not scheduled", pod: "pending", opts: corev1.PodExecOptions{Command: []string{"echo"}},
			wantFailed: "pod pending does not have a host assigned"},
		{name: "agent unreachable", pod: "unreachable", opts: corev1.PodExecOptions{Command: []string{"echo"}},
			wantFailed: `error talking to the agent of node "node-down"`},
	}
	for _, ex := range executors {
		for _, tt := range tests {
			t.Run(ex.name+"/"+tt.name, func(t *testing.T) {
				opts := tt.opts
				opts.Stdout, opts.Stderr = true, true
				exec, err := ex.new(env.api.Rest, execURL(env.api.Client, tt.pod, &opts))
				if err != nil {
					t.Fatal(err)
				}
				var stdout, stderr bytes.Buffer
				so := remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}
				if opts.Stdin {
					so.Stdin = strings.NewReader(tt.stdin)
				}
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				err = exec.StreamWithContext(ctx, so)
				switch {
				case tt.wantExit != 0:
					var exitErr utilexec.ExitError
					if !errors.As(err, &exitErr) || exitErr.ExitStatus() != tt.wantExit {
						t.Fatalf("err = %v, want exit code %d", err, tt.wantExit)
					}
				case tt.wantFailed != "":
					if err == nil || !strings.Contains(err.Error(), tt.wantFailed) {
						t.Fatalf("err = %v, want one containing %q", err, tt.wantFailed)
					}
				case err != nil:
					t.Fatalf("exec: %v", err)
				}
				if !strings.HasSuffix(stdout.String(), tt.wantOut) || (tt.wantOut == "" && stdout.Len() > 0) {
					t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantOut)
				}
				if stderr.String() != tt.wantErrOut {
					t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantErrOut)
				}
			})
		}
	}
}

// TestPodStreamingAuthorization checks that node credentials can neither
// read logs nor exec (not even with a GET WebSocket exec, which needs
// "create" too), and that attach is refused plainly.
func TestPodStreamingAuthorization(t *testing.T) {
	env := startPodProxyEnv(t)
	nodeCfg, err := clientcmd.BuildConfigFromFlags("", env.api.Info.NodeKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	nodeCfg.Host = env.api.Info.URL // node.kubeconfig names the advertise address
	node := kubernetes.NewForConfigOrDie(nodeCfg)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	_, err = node.CoreV1().Pods("default").GetLogs("web", &corev1.PodLogOptions{}).DoRaw(ctx)
	if !apierrors.IsForbidden(err) {
		t.Errorf("node reading logs: err = %v, want Forbidden", err)
	}
	opts := &corev1.PodExecOptions{Command: []string{"echo", "x"}, Stdout: true}
	for _, method := range []string{"GET", "POST"} {
		var exec remotecommand.Executor
		if method == "GET" {
			exec, err = remotecommand.NewWebSocketExecutor(nodeCfg, "GET", execURL(node, "web", opts))
		} else {
			u, _ := url.Parse(execURL(node, "web", opts))
			exec, err = remotecommand.NewSPDYExecutor(nodeCfg, "POST", u)
		}
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out})
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("node exec with %s: err = %v, want forbidden", method, err)
		}
		if out.Len() != 0 {
			t.Errorf("node exec with %s ran: %q", method, out.String())
		}
	}
	if n := len(env.prov.Execs()); n != 0 {
		t.Errorf("the agent ran %d commands for a node user", n)
	}

	err = env.api.Client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("web").
		SubResource("attach").Param("stdout", "true").Do(ctx).Error()
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Code != 400 || !strings.Contains(se.ErrStatus.Message, "pods/attach is not supported") {
		t.Errorf("attach: %v, want 400 not supported", err)
	}
}

// kubectl runs the real kubectl command tree (k8s.io/kubectl, what
// `svcnet kubectl` runs) in-process and returns its output and exit code.
func kubectl(t *testing.T, kubeconfig, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	argv := append([]string{"--kubeconfig", kubeconfig}, args...)
	cmd := kubectlcmd.NewKubectlCommand(kubectlcmd.KubectlOptions{
		Arguments:   append([]string{"kubectl"}, argv...),
		ConfigFlags: genericclioptions.NewConfigFlags(true),
		IOStreams:   streams,
	})
	cmd.SetArgs(argv)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	type fatal struct {
		msg  string
		code int
	}
	cmdutil.BehaviorOnFatal(func(msg string, code int) { panic(fatal{msg, code}) })
	defer cmdutil.DefaultBehaviorOnFatal()
	func() {
		defer func() {
			if p := recover(); p != nil {
				f, ok := p.(fatal)
				if !ok {
					panic(p)
				}
				errOut.WriteString(f.msg)
				code = f.code
			}
		}()
		if err := cmd.Execute(); err != nil {
			fmt.Fprintln(&errOut, err)
			code = 1
		}
	}()
	return out.String(), errOut.String(), code
}

func TestKubectlLogsAndExec(t *testing.T) {
	env := startPodProxyEnv(t)
	kc := env.api.Info.AdminKubeconfig
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{name: "logs", args: []string{"logs", "web"}, wantOut: "web/app line 1\nweb/app line 2\n"},
		{name: "logs tail", args: []string{"logs", "--tail=1", "web"}, wantOut: "web/app line 2\n"},
		{name: "logs container", args: []string{"logs", "multi", "-c", "a"}, wantOut: "multi/a line 1\nmulti/a line 2\n"},
		{name: "exec", args: []string{"exec", "web", "--", "echo", "hello"}, wantOut: "hello\n"},
		{name: "exec stdin", stdin: "from stdin\n", args: []string{"exec", "-i", "web", "--", "cat"}, wantOut: "from stdin\n"},
		{name: "exec exit code", args: []string{"exec", "web", "--", "exit", "4"}, wantCode: 4, wantErr: "command terminated with exit code 4"},
		{name: "exec container", args: []string{"exec", "multi", "-c", "b", "--", "stderr", "to stderr"}, wantErr: "to stderr\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := kubectl(t, kc, tt.stdin, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d (stderr %q), want %d", code, errOut, tt.wantCode)
			}
			if out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tt.wantErr)
			}
		})
	}
}

type fixedSizeQueue struct {
	sizes chan remotecommand.TerminalSize
}

func (q fixedSizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q.sizes
	if !ok {
		return nil
	}
	return &s
}

// TestPodExecTTYThroughAPIServer checks a terminal session (kubectl exec
// -it): the terminal size reaches the agent over both protocols.
func TestPodExecTTYThroughAPIServer(t *testing.T) {
	env := startPodProxyEnv(t)
	opts := &corev1.PodExecOptions{Command: []string{"size"}, Stdout: true, TTY: true}
	u := execURL(env.api.Client, "web", opts)
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			var (
				exec remotecommand.Executor
				err  error
			)
			if method == "GET" {
				exec, err = remotecommand.NewWebSocketExecutor(env.api.Rest, "GET", u)
			} else {
				pu, perr := url.Parse(u)
				if perr != nil {
					t.Fatal(perr)
				}
				exec, err = remotecommand.NewSPDYExecutor(env.api.Rest, "POST", pu)
			}
			if err != nil {
				t.Fatal(err)
			}
			sizes := make(chan remotecommand.TerminalSize, 1)
			sizes <- remotecommand.TerminalSize{Width: 132, Height: 43}
			close(sizes)
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Tty: true, TerminalSizeQueue: fixedSizeQueue{sizes}})
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != "132x43\n" {
				t.Errorf("stdout = %q, want the terminal size 132x43", out.String())
			}
		})
	}
}
