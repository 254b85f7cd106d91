package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/utils/exec"
)

func TestSandboxIdentity(t *testing.T) {
	r, _ := newTestRuntime(t)
	hostNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	hostName, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	resolv := "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	hosts := "127.0.0.1\tlocalhost\n10.244.1.5\tweb-0.web.default.svc.cluster.local\tweb-0\n"

	tests := []struct {
		name        string
		spec        SandboxSpec
		wantHost    string
		wantResolv  string // "" : the node's
		wantHosts   string
		wantHostNet bool
	}{
		{
			name:       "own namespaces",
			spec:       SandboxSpec{Name: "web-0", Hostname: "web-0", ResolvConf: []byte(resolv), Hosts: []byte(hosts)},
			wantHost:   "web-0",
			wantResolv: resolv,
			wantHosts:  hosts,
		},
		{
			name:     "hostname defaults to the pod name",
			spec:     SandboxSpec{Name: "plain"},
			wantHost: "plain",
		},
		{
			name:        "host network",
			spec:        SandboxSpec{Name: "hostnet", Hostname: "ignored", HostNetwork: true, ResolvConf: []byte(resolv)},
			wantHost:    hostName,
			wantResolv:  resolv,
			wantHostNet: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := newPod(t, r, tc.spec)
			if again, err := r.EnsureSandbox(testCtx(t), SandboxSpec{UID: sb.UID, Name: tc.spec.Name}); err != nil || again.PID != sb.PID {
				t.Fatalf("EnsureSandbox again = %+v, %v; want the same sandbox pid %d", again, err, sb.PID)
			}
			podNet, err := os.Readlink(sb.NetNS)
			if err != nil {
				t.Fatal(err)
			}
			if (podNet == hostNet) != tc.wantHostNet {
				t.Errorf("pod netns %s, node netns %s, hostNetwork %v", podNet, hostNet, tc.wantHostNet)
			}
			st, out := runToExit(t, r, sb.UID, shSpec("c", "hostname; echo ---; cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; ip -o link show lo"))
			if st.ExitCode != 0 || st.Reason != ReasonCompleted {
				t.Fatalf("status %+v, log:\n%s", st, out)
			}
			parts := strings.Split(out, "---\n")
			if len(parts) != 4 {
				t.Fatalf("log:\n%s", out)
			}
			if got := strings.TrimSpace(parts[0]); got != tc.wantHost {
				t.Errorf("hostname %q, want %q", got, tc.wantHost)
			}
			nodeResolv, _ := os.ReadFile("/etc/resolv.conf")
			nodeHosts, _ := os.ReadFile("/etc/hosts")
			wantResolv, wantHosts := tc.wantResolv, tc.wantHosts
			if wantResolv == "" {
				wantResolv = string(nodeResolv)
			}
			if wantHosts == "" {
				wantHosts = string(nodeHosts)
			}
			if parts[1] != wantResolv {
				t.Errorf("resolv.conf %q, want %q", parts[1], wantResolv)
			}
			if parts[2] != wantHosts {
				t.Errorf("hosts %q, want %q", parts[2], wantHosts)
			}
			if !strings.Contains(parts[3], "UP") {
				t.Errorf("lo is not up: %q", parts[3])
			}
		})
	}
	// The node's own files are untouched.
	if h, _ := os.Hostname(); h != hostName {
		t.Errorf("node hostname changed to %q", h)
	}
}

func TestPrivateTmp(t *testing.T) {
	r, _ := newTestRuntime(t)
	a := newPod(t, r, SandboxSpec{Name: "a"})
	b := newPod(t, r, SandboxSpec{Name: "b"})
	marker := "svcnet-runtime-private-" + strconv.Itoa(os.Getpid())

	if st, out := runToExit(t, r, a.UID, shSpec("w", "echo secret > /tmp/"+marker+"; cat /tmp/"+marker)); st.ExitCode != 0 || out != "secret\n" {
		t.Fatalf("writer: %+v %q", st, out)
	}
	if st, out := runToExit(t, r, b.UID, shSpec("r", "cat /tmp/"+marker)); st.ExitCode == 0 {
		t.Errorf("pod b read pod a's /tmp file: %q", out)
	}
	if _, err := os.Stat("/tmp/" + marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the node's /tmp got the pod's file: %v", err)
	}
	if got, err := os.ReadFile(podTmp(a, marker)); err != nil || string(got) != "secret\n" {
		t.Errorf("pod a's /tmp on the node: %q, %v", got, err)
	}
}

func TestContainerSpec(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "spec"})
	vol, err := r.VolumeDir(sb.UID, "data")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vol+"/f", []byte("from-volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		spec       ContainerSpec
		wantCode   int
		wantReason string
		wantLog    string // substring
	}{
		{
			name:     "env and working dir",
			spec:     ContainerSpec{Argv: []string{"sh", "-c", `echo "$FOO $BAR"; pwd`}, Env: []string{"FOO=foo", "BAR=with space", "PATH=/usr/bin:/bin"}, WorkingDir: "/tmp/wd"},
			wantLog:  "foo with space\n/tmp/wd\n",
			wantCode: 0, wantReason: ReasonCompleted,
		},
		{
			name:     "argv0 through the pod's PATH",
			spec:     ContainerSpec{Argv: []string{"echo", "hi"}, Env: []string{"PATH=/nonexistent:/bin:/usr/bin"}},
			wantLog:  "hi\n",
			wantCode: 0, wantReason: ReasonCompleted,
		},
		{
			name:     "only the given environment",
			spec:     ContainerSpec{Argv: []string{"/usr/bin/env"}, Env: []string{"ONLY=1"}},
			wantLog:  "ONLY=1\n",
			wantCode: 0, wantReason: ReasonCompleted,
		},
		{
			name:     "bind mount",
			spec:     ContainerSpec{Argv: []string{"sh", "-c", "cat /tmp/data/f; echo new > /tmp/data/g"}, Mounts: []Mount{{Source: vol, Target: "/tmp/data"}}},
			wantLog:  "from-volume\n",
			wantCode: 0, wantReason: ReasonCompleted,
		},
		{
			name:     "read-only bind mount",
			spec:     ContainerSpec{Argv: []string{"sh", "-c", "cat /tmp/ro/f; touch /tmp/ro/h"}, Mounts: []Mount{{Source: vol, Target: "/tmp/ro", ReadOnly: true}}},
			wantLog:  "Read-only file system",
			wantCode: 1, wantReason: ReasonError,
		},
		{
			name:     "command not found",
			spec:     ContainerSpec{Argv: []string{"no-such-command-svcnet"}, Env: []string{"PATH=/bin"}},
			wantLog:  `"no-such-command-svcnet": executable file not found in $PATH`,
			wantCode: 128, wantReason: ReasonStartError,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Name = "c" + strconv.Itoa(i)
			st, out := runToExit(t, r, sb.UID, tc.spec)
			if st.ExitCode != tc.wantCode || st.Reason != tc.wantReason || st.Attempt != 0 {
				t.Errorf("status %+v, want exit %d reason %s attempt 0", st, tc.wantCode, tc.wantReason)
			}
			if !strings.Contains(out, tc.wantLog) {
				t.Errorf("log %q, want it to contain %q", out, tc.wantLog)
			}
			if tc.wantReason == ReasonStartError && !strings.Contains(st.Message, tc.wantLog) {
				t.Errorf("message %q, want %q", st.Message, tc.wantLog)
			}
		})
	}
	if got, err := os.ReadFile(vol + "/g"); err != nil || string(got) != "new\n" {
		t.Errorf("write through the bind mount: %q, %v", got, err)
	}
	if _, err := os.Stat(vol + "/h"); err == nil {
		t.Error("wrote through a read-only mount")
	}
}

func TestLogs(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "logs"})
	uid := sb.UID
	if err := r.Logs(testCtx(t), uid, "c", &corev1.PodLogOptions{Previous: true}, &bytes.Buffer{}); err == nil {
		t.Error("Logs of an unknown container succeeded")
	}
	runToExit(t, r, uid, shSpec("c", "echo first"))
	wantErr := `previous terminated container "c" in pod "logs" not found`
	if err := r.Logs(testCtx(t), uid, "c", &corev1.PodLogOptions{Previous: true}, &bytes.Buffer{}); err == nil || err.Error() != wantErr {
		t.Errorf("Previous before a restart: %v, want %q", err, wantErr)
	}
	st, _ := runToExit(t, r, uid, shSpec("c", "for i in 1 2 3 4 5; do echo line$i; done; printf tail"))
	if st.Attempt != 1 {
		t.Errorf("attempt %d, want 1", st.Attempt)
	}
	two, zero, limit := int64(2), int64(0), int64(8)
	future := metav1.NewTime(time.Now().Add(time.Hour))
	past := metav1.NewTime(time.Now().Add(-time.Hour))
	tests := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"all", corev1.PodLogOptions{}, "line1\nline2\nline3\nline4\nline5\ntail"},
		{"previous", corev1.PodLogOptions{Previous: true}, "first\n"},
		{"tail", corev1.PodLogOptions{TailLines: &two}, "line5\ntail"},
		{"tail zero", corev1.PodLogOptions{TailLines: &zero}, ""},
		{"limit bytes", corev1.PodLogOptions{LimitBytes: &limit}, "line1\nli"},
		{"since the future", corev1.PodLogOptions{SinceTime: &future}, ""},
		{"since the past", corev1.PodLogOptions{SinceTime: &past, TailLines: &two}, "line5\ntail"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := logsOf(t, r, uid, "c", &tc.opts); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("timestamps", func(t *testing.T) {
		got := logsOf(t, r, uid, "c", &corev1.PodLogOptions{Timestamps: true, TailLines: &two})
		re := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line5\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tail$`)
		if !re.MatchString(got) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("follow", func(t *testing.T) {
		mustStart(t, r, uid, shSpec("f", "echo a; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo b; exit 3"))
		var out syncBuffer
		done := make(chan error, 1)
		go func() { done <- r.Logs(testCtx(t), uid, "f", &corev1.PodLogOptions{Follow: true}, &out) }()
		deadline := time.Now().Add(waitLimit)
		for out.String() != "a\n" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case err := <-done:
			t.Fatalf("Follow returned while the container runs: %v (%q)", err, out.String())
		default:
		}
		if err := os.WriteFile(podTmp(sb, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != "a\nb\n" {
			t.Errorf("followed %q, want %q", got, "a\nb\n")
		}
		if st, _ := r.ContainerStatus(uid, "f"); st.State != StateExited || st.ExitCode != 3 {
			t.Errorf("status after follow ended: %+v", st)
		}
	})
}

func TestExec(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "exec", Hostname: "exec-host"})
	mustStart(t, r, sb.UID, ContainerSpec{Name: "c", Argv: []string{"sleep", "1000"},
		Env: []string{"PATH=/usr/bin:/bin", "FOO=from-container"}, WorkingDir: "/tmp/work"})

	t.Run("stdin, env, workdir, exit code", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := r.Exec(testCtx(t), sb.UID, "c", []string{"sh", "-c", "cat; echo $FOO; pwd; hostname; echo oops >&2; exit 3"},
			strings.NewReader("hello\n"), &stdout, &stderr, false, nil)
		var ee utilexec.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
			t.Fatalf("err %v, want an ExitError with status 3", err)
		}
		if want := "hello\nfrom-container\n/tmp/work\nexec-host\n"; stdout.String() != want {
			t.Errorf("stdout %q, want %q", stdout.String(), want)
		}
		if stderr.String() != "oops\n" {
			t.Errorf("stderr %q", stderr.String())
		}
	})
	t.Run("sees the pod's /tmp", func(t *testing.T) {
		var stdout bytes.Buffer
		if err := r.Exec(testCtx(t), sb.UID, "c", []string{"sh", "-c", "echo x > /tmp/x; cat /tmp/x"}, nil, &stdout, nil, false, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(podTmp(sb, "x")); err != nil || string(got) != "x\n" {
			t.Errorf("pod /tmp/x on the node: %q, %v", got, err)
		}
	})
	t.Run("tty", func(t *testing.T) {
		var stdout bytes.Buffer
		resize := make(chan TerminalSize, 1)
		resize <- TerminalSize{Width: 100, Height: 40}
		err := r.Exec(testCtx(t), sb.UID, "c", []string{"sh", "-c", "tty; stty size"}, nil, &stdout, nil, true, resize)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout.String(), "/dev/pts/") || !strings.Contains(stdout.String(), "40 100") {
			t.Errorf("tty output %q", stdout.String())
		}
	})
	t.Run("context cancel kills", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		var stdout syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- r.Exec(ctx, sb.UID, "c", []string{"sh", "-c", "echo started; sleep 1000"}, nil, &stdout, nil, false, nil)
		}()
		for !strings.Contains(stdout.String(), "started") {
			select {
			case err := <-done:
				t.Fatalf("exec ended before the cancel: %v (%q)", err, stdout.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
	})
	t.Run("unknown container", func(t *testing.T) {
		if err := r.Exec(testCtx(t), sb.UID, "nope", []string{"true"}, nil, nil, nil, false, nil); err == nil {
			t.Error("exec in an unknown container succeeded")
		}
	})
}

func TestStopContainer(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "stop"})
	tests := []struct {
		name       string
		script     string
		grace      time.Duration
		wantSignal int
	}{
		// Exits on SIGTERM: the grace period is never used up.
		{"sigterm", "echo ready; exec sleep 1000", waitLimit, 15},
		// Ignores SIGTERM: SIGKILL after the grace period.
		{"sigkill after grace", `trap "" TERM; echo ready; sleep 1000`, 100 * time.Millisecond, 9},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "c" + strconv.Itoa(i)
			mustStart(t, r, sb.UID, shSpec(name, tc.script))
			waitLog(t, r, sb.UID, name, "ready")
			if err := r.StopContainer(testCtx(t), sb.UID, name, tc.grace); err != nil {
				t.Fatal(err)
			}
			st, _ := r.ContainerStatus(sb.UID, name)
			if st.State != StateExited || st.Signal != tc.wantSignal || st.ExitCode != 128+tc.wantSignal || st.Reason != ReasonError {
				t.Errorf("status %+v, want killed by signal %d", st, tc.wantSignal)
			}
			if st.FinishedAt.Before(st.StartedAt) || st.StartedAt.IsZero() {
				t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
			}
			// Stopping again is a no-op.
			if err := r.StopContainer(testCtx(t), sb.UID, name, 0); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestExitEvents(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "events"})
	tests := []struct {
		name       string
		script     string
		wantCode   int
		wantSignal int
		wantReason string
	}{
		{"ok", "exit 0", 0, 0, ReasonCompleted},
		{"code", "exit 7", 7, 0, ReasonError},
		{"signal", "kill -9 $$", 137, 9, ReasonError},
	}
	for _, tc := range tests {
		mustStart(t, r, sb.UID, shSpec(tc.name, tc.script))
	}
	seen := map[string]bool{}
	timeout := time.After(waitLimit)
	for len(seen) < len(tests) {
		select {
		case e := <-r.Events():
			if e.UID != sb.UID {
				t.Fatalf("event %+v for another pod", e)
			}
			seen[e.Container] = true
		case <-timeout:
			t.Fatalf("events seen: %v", seen)
		}
	}
	for _, tc := range tests {
		st, ok := r.ContainerStatus(sb.UID, tc.name)
		if !ok || st.State != StateExited || st.ExitCode != tc.wantCode || st.Signal != tc.wantSignal || st.Reason != tc.wantReason {
			t.Errorf("%s: status %+v, want code %d signal %d reason %s", tc.name, st, tc.wantCode, tc.wantSignal, tc.wantReason)
		}
	}
	// A restart is the next attempt; a running container cannot be started twice.
	st := mustStart(t, r, sb.UID, shSpec("ok", "sleep 1000"))
	if st.Attempt != 1 || st.State != StateRunning || st.PID == 0 {
		t.Errorf("restart status %+v", st)
	}
	if _, err := r.StartContainer(testCtx(t), sb.UID, shSpec("ok", "true")); err == nil {
		t.Error("a running container started twice")
	}
}
