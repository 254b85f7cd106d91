package runtime

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestAdoption restarts the runtime (a second Runtime on the same RootDir,
// as a restarted agent would): it sees the running sandbox and container
// with their pids, starts nothing twice, and learns the exit code of the
// adopted container from its shim's exit record.
func TestAdoption(t *testing.T) {
	r1, root := newTestRuntime(t)
	spec := SandboxSpec{Name: "adopt", Namespace: "ns1"}
	sb := newPod(t, r1, spec)
	c1 := mustStart(t, r1, sb.UID, shSpec("c", "echo started; while [ ! -e /tmp/stop ]; do sleep 0.02; done; echo stopping; exit 5"))
	if st, _ := runToExit(t, r1, sb.UID, shSpec("done", "exit 4")); st.ExitCode != 4 {
		t.Fatalf("status %+v", st)
	}
	waitLog(t, r1, sb.UID, "c", "started")
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := openRuntime(t, root)
	pods := r2.Pods()
	if len(pods) != 1 {
		t.Fatalf("adopted %d pods: %+v", len(pods), pods)
	}
	p := pods[0]
	if p.UID != "uid-adopt" || p.Namespace != "ns1" || p.Name != "adopt" || p.Sandbox == nil || p.Sandbox.PID != sb.PID {
		t.Errorf("adopted pod %+v (sandbox %+v), want sandbox pid %d", p, p.Sandbox, sb.PID)
	}
	if len(p.Containers) != 2 {
		t.Fatalf("adopted containers %+v", p.Containers)
	}
	c, done := p.Containers[0], p.Containers[1]
	if c.Name != "c" || c.State != StateRunning || c.PID != c1.PID || c.Attempt != 0 {
		t.Errorf("adopted running container %+v, want pid %d", c, c1.PID)
	}
	if done.Name != "done" || done.State != StateExited || done.ExitCode != 4 || done.Reason != ReasonError {
		t.Errorf("adopted exited container %+v", done)
	}
	if again, err := r2.EnsureSandbox(testCtx(t), spec.withUID()); err != nil || again.PID != sb.PID {
		t.Errorf("EnsureSandbox after adoption: %+v, %v; want pid %d", again, err, sb.PID)
	}
	if _, err := r2.StartContainer(testCtx(t), sb.UID, shSpec("c", "true")); err == nil {
		t.Error("an adopted running container was started again")
	}
	if got := logsOf(t, r2, sb.UID, "c", nil); got != "started\n" {
		t.Errorf("log through the new runtime %q", got)
	}

	if err := os.WriteFile(podTmp(sb, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(waitLimit)
	for e := (Event{}); e.Container != "c"; {
		select {
		case e = <-r2.Events():
		case <-timeout:
			t.Fatal("no exit event for the adopted container")
		}
	}
	st, _ := r2.ContainerStatus(sb.UID, "c")
	if st.State != StateExited || st.ExitCode != 5 || st.Reason != ReasonError || st.PID != c1.PID {
		t.Errorf("adopted container's exit %+v, want code 5 from the shim's record", st)
	}
	if got := logsOf(t, r2, sb.UID, "c", nil); got != "started\nstopping\n" {
		t.Errorf("log after exit %q", got)
	}
	// The new runtime restarts it as the next attempt.
	if st := mustStart(t, r2, sb.UID, shSpec("c", "echo again")); st.Attempt != 1 {
		t.Errorf("restart attempt %d", st.Attempt)
	}
	waitExited(t, r2, sb.UID, "c")
	if got := logsOf(t, r2, sb.UID, "c", &corev1.PodLogOptions{Previous: true}); got != "started\nstopping\n" {
		t.Errorf("previous log %q", got)
	}
	if err := r2.RemovePod(testCtx(t), sb.UID); err != nil {
		t.Fatal(err)
	}
	if alive(sb.PID) {
		t.Error("the adopted sandbox survived RemovePod")
	}
}

func (s SandboxSpec) withUID() SandboxSpec {
	if s.UID == "" {
		s.UID = "uid-" + s.Name
	}
	return s
}

func alive(pid int) bool {
	_, ok := procStartTime(pid)
	return ok
}

// TestShimDies: a shim killed without writing an exit record is an exit
// (code 137), and the runtime kills its orphaned container.
func TestShimDies(t *testing.T) {
	r, _ := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "shim"})
	st := mustStart(t, r, sb.UID, ContainerSpec{Name: "c", Argv: []string{"sleep", "1000"}})
	r.mu.Lock()
	shim := r.pods[sb.UID].containers["c"].start.Shim
	r.mu.Unlock()
	if shim.PID == 0 || !shim.alive() {
		t.Fatalf("shim %+v", shim)
	}
	if err := shim.signal(9); err != nil {
		t.Fatal(err)
	}
	got := waitExited(t, r, sb.UID, "c")
	if got.ExitCode != 137 || got.Reason != ReasonError || !strings.Contains(got.Message, "shim") {
		t.Errorf("status %+v", got)
	}
	if err := waitGone(testCtx(t), func() bool { return alive(st.PID) }); err != nil {
		t.Errorf("the orphaned container %d still runs", st.PID)
	}
}

// TestRemovePod: RemovePod leaves no process (containers, their children,
// a process that left the container's group, an exec session), no mount
// and no directory, and is idempotent.
func TestRemovePod(t *testing.T) {
	r, root := newTestRuntime(t)
	sb := newPod(t, r, SandboxSpec{Name: "rm"})
	vol, err := r.VolumeDir(sb.UID, "v")
	if err != nil {
		t.Fatal(err)
	}
	mntNS, err := os.Readlink("/proc/" + strconv.Itoa(sb.PID) + "/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	mustStart(t, r, sb.UID, ContainerSpec{Name: "a", Argv: []string{"sh", "-c", "sleep 1000 & wait"},
		Mounts: []Mount{{Source: vol, Target: "/tmp/v"}}})
	mustStart(t, r, sb.UID, shSpec("b", "setsid sleep 1001 & sleep 1000"))
	execDone := make(chan error, 1)
	go func() {
		execDone <- r.Exec(context.Background(), sb.UID, "a", []string{"sleep", "1002"}, nil, nil, nil, false, nil)
	}()
	r.mu.Lock()
	var shims []procIdentity
	for _, c := range r.pods[sb.UID].containers {
		shims = append(shims, c.start.Shim)
	}
	r.mu.Unlock()
	// sleep 1000 (a), sleep 1000 and the escaped sleep 1001 (b), sleep 1002 (exec).
	deadline := time.Now().Add(waitLimit)
	for len(procsIn(mntNS, "sleep")) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("pod processes: %v", procsIn(mntNS, ""))
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := r.RemovePod(testCtx(t), sb.UID); err != nil {
		t.Fatal(err)
	}
	if left := procsIn(mntNS, ""); len(left) > 0 {
		t.Errorf("processes left in the pod: %v", left)
	}
	if alive(sb.PID) {
		t.Error("sandbox survived")
	}
	// No thread of this process stayed in the pod (the mounts were made
	// from threads that joined its mount namespace).
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if ns, _ := os.Readlink("/proc/self/task/" + task.Name() + "/ns/mnt"); ns == mntNS {
			t.Errorf("thread %s is in the pod's mount namespace", task.Name())
		}
	}
	for _, s := range shims {
		if s.alive() {
			t.Errorf("shim %d survived", s.PID)
		}
	}
	select {
	case err := <-execDone:
		if err == nil {
			t.Error("the killed exec session reported success")
		}
	case <-time.After(waitLimit):
		t.Error("the exec session did not end")
	}
	if _, err := os.Stat(sb.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod dir: %v", err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), root) {
		t.Errorf("a mount of the runtime's dir leaked into the node:\n%s", mounts)
	}
	if _, ok := r.Sandbox(sb.UID); ok {
		t.Error("Sandbox after RemovePod")
	}
	if len(r.Pods()) != 0 {
		t.Errorf("Pods after RemovePod: %+v", r.Pods())
	}
	if err := r.RemovePod(testCtx(t), sb.UID); err != nil {
		t.Errorf("second RemovePod: %v", err)
	}
	if _, err := r.StartContainer(testCtx(t), sb.UID, shSpec("a", "true")); err == nil {
		t.Error("StartContainer in a removed pod succeeded")
	}
}

// procsIn lists "pid:comm" of the processes in mount namespace ns whose
// command starts with comm.
func procsIn(ns, comm string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		link, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if err != nil || link != ns {
			continue
		}
		if _, ok := procStartTime(mustAtoi(e.Name())); !ok {
			continue // a zombie waiting for its parent
		}
		c, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		name := strings.TrimSpace(string(c))
		if strings.HasPrefix(name, comm) {
			out = append(out, e.Name()+":"+name)
		}
	}
	return out
}

func mustAtoi(s string) int {
	i, _ := strconv.Atoi(s)
	return i
}

// TestSandboxDies: the death of a sandbox is an event; EnsureSandbox then
// starts a new one (new namespaces), and RemovePod still cleans up.
func TestSandboxDies(t *testing.T) {
	r, _ := newTestRuntime(t)
	spec := SandboxSpec{Name: "dies"}
	sb := newPod(t, r, spec)
	if err := (procIdentity{PID: sb.PID, StartTime: mustStartTime(t, sb.PID)}).signal(9); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(waitLimit)
	for e := (Event{Container: "-"}); e != (Event{UID: sb.UID}); {
		select {
		case e = <-r.Events():
		case <-timeout:
			t.Fatal("no event for the sandbox's death")
		}
	}
	if _, ok := r.Sandbox(sb.UID); ok {
		t.Error("Sandbox reports a dead sandbox")
	}
	if ps := r.Pods(); len(ps) != 1 || ps[0].Sandbox != nil {
		t.Errorf("Pods: %+v", ps)
	}
	if _, err := r.StartContainer(testCtx(t), sb.UID, shSpec("c", "true")); err == nil {
		t.Error("StartContainer without a sandbox succeeded")
	}
	sb2, err := r.EnsureSandbox(testCtx(t), spec.withUID())
	if err != nil {
		t.Fatal(err)
	}
	if sb2.PID == sb.PID {
		t.Error("EnsureSandbox returned the dead sandbox")
	}
	if st, out := runToExit(t, r, sb.UID, shSpec("c", "hostname")); st.ExitCode != 0 || out != "dies\n" {
		t.Errorf("container in the new sandbox: %+v %q", st, out)
	}
}

func mustStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	st, ok := procStartTime(pid)
	if !ok {
		t.Fatalf("process %d is gone", pid)
	}
	return st
}
