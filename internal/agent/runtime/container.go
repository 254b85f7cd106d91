package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StartContainer starts the next attempt of a container in the pod's
// sandbox (Attempt 0 the first time), through a shim that outlives the
// agent. The previous attempt's log stays available as "previous".
//
// A container that cannot start (command not found, bad mount or working
// directory) is not an error: the returned status is Exited with Reason
// StartError, ExitCode 128 and the message, and an Event is sent, so the
// caller applies its restart policy as for any exit. Errors are failures of
// the runtime itself (no sandbox, container already running, I/O).
func (r *Runtime) StartContainer(ctx context.Context, uid string, spec ContainerSpec) (ContainerStatus, error) {
	if !validName(spec.Name) {
		return ContainerStatus{}, fmt.Errorf("runtime: invalid container name %q", spec.Name)
	}
	r.mu.Lock()
	p, ok := r.pods[uid]
	r.mu.Unlock()
	if !ok {
		return ContainerStatus{}, fmt.Errorf("runtime: pod %s has no sandbox", uid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r.mu.Lock()
	if r.pods[uid] != p {
		r.mu.Unlock()
		return ContainerStatus{}, fmt.Errorf("runtime: pod %s was removed", uid)
	}
	rec := p.rec
	c, ok := p.containers[spec.Name]
	if !ok {
		c = &container{name: spec.Name, dir: filepath.Join(p.dir, "containers", spec.Name), attempt: -1}
	}
	r.mu.Unlock()
	if rec.UID == "" || !rec.Sandbox.alive() {
		return ContainerStatus{}, fmt.Errorf("runtime: the sandbox of pod %s is not running", uid)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	r.mu.Lock()
	if c.attempt >= 0 && c.exit == nil {
		r.mu.Unlock()
		return ContainerStatus{}, fmt.Errorf("runtime: container %q of pod %s is running", spec.Name, uid)
	}
	attempt := c.attempt + 1
	r.mu.Unlock()
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return ContainerStatus{}, fmt.Errorf("runtime: %w", err)
	}
	attempt = max(attempt, latestAttempt(c.dir)+1)
	pruneAttempts(c.dir, attempt-1)

	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	ss := shimSpec{
		Attempt:    attempt,
		NSEnter:    r.nsenter,
		Sandbox:    rec.Sandbox,
		HostNet:    rec.HostNetwork,
		Argv:       append([]string(nil), spec.Argv...),
		Env:        append([]string{}, spec.Env...),
		WorkingDir: wd,
		Mounts:     spec.Mounts,
		LogPath:    attemptFile(c.dir, attempt, ".log"),
		StatePath:  attemptFile(c.dir, attempt, ".state.json"),
		ExitPath:   attemptFile(c.dir, attempt, ".exit.json"),
	}
	specPath := attemptFile(c.dir, attempt, ".spec.json")
	argv0, err := prepare(rec.Sandbox.PID, spec)
	if err == nil {
		ss.Argv[0] = argv0
	}
	if werr := writeJSON(specPath, ss); werr != nil {
		return ContainerStatus{}, werr
	}
	var serr *startError
	if errors.As(err, &serr) {
		return r.startFailed(p, c, ss, serr.msg), nil
	}
	if err != nil {
		_ = os.Remove(specPath)
		return ContainerStatus{}, fmt.Errorf("runtime: container %q of pod %s: %w", spec.Name, uid, err)
	}

	cmd, start, err := r.startShim(ctx, c.dir, specPath)
	if err != nil {
		var exit exitRecord
		if readJSON(ss.ExitPath, &exit) == nil && exit.Reason == ReasonStartError {
			return r.startFailed(p, c, ss, exit.Message), nil
		}
		_ = os.Remove(specPath)
		return ContainerStatus{}, fmt.Errorf("runtime: container %q of pod %s: %w", spec.Name, uid, err)
	}
	r.mu.Lock()
	c.attempt, c.spec, c.start, c.exit, c.adopted = attempt, ss, start, nil, false
	c.done = make(chan struct{})
	p.containers[spec.Name] = c
	st := c.statusLocked()
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		r.finish(p, c, attempt)
	}()
	r.log.Info("container started", "pod", rec.Namespace+"/"+rec.Name, "container", spec.Name,
		"attempt", attempt, "pid", start.Container.PID)
	return st, nil
}

// startFailed records attempt ss of c as a StartError.
func (r *Runtime) startFailed(p *pod, c *container, ss shimSpec, msg string) ContainerStatus {
	now := time.Now().UTC()
	rec := exitRecord{ExitCode: 128, StartedAt: now, FinishedAt: now, Reason: ReasonStartError, Message: msg}
	if err := writeJSON(ss.ExitPath, rec); err != nil {
		r.log.Warn("cannot record a start error", "err", err)
	}
	// The message in the attempt's log too, so that `kubectl logs` says it.
	_ = appendCRILine(ss.LogPath, now, "stderr", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	c.attempt, c.spec, c.start, c.exit, c.adopted = ss.Attempt, ss, startRecord{StartedAt: now}, &rec, false
	c.done = make(chan struct{})
	close(c.done)
	p.containers[c.name] = c
	if uid := filepath.Base(p.dir); r.pods[uid] == p {
		r.emitLocked(Event{UID: uid, Container: c.name})
	}
	r.log.Info("container failed to start", "pod", p.rec.Namespace+"/"+p.rec.Name, "container", c.name,
		"attempt", ss.Attempt, "message", msg)
	return c.statusLocked()
}

// startShim starts `svcnet internal shim` for specPath and returns once the
// container process runs.
func (r *Runtime) startShim(ctx context.Context, dir, specPath string) (*exec.Cmd, startRecord, error) {
	logf, err := os.OpenFile(filepath.Join(dir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, startRecord{}, fmt.Errorf("runtime: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(r.exe, "internal", "shim", "--spec", specPath)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the shim outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if _, err := startReporting(ctx, cmd); err != nil {
		return nil, startRecord{}, fmt.Errorf("shim: %w%s", err, logTail(filepath.Join(dir, "shim.log")))
	}
	var start startRecord
	statePath := strings.TrimSuffix(specPath, ".spec.json") + ".state.json"
	if err := readJSON(statePath, &start); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, startRecord{}, err
	}
	return cmd, start, nil
}

// pruneAttempts deletes the files of attempts older than keep.
func pruneAttempts(dir string, keep int) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n, _, ok := strings.Cut(e.Name(), ".")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(n); err == nil && i < keep {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// StopContainer stops a running container: SIGTERM to its process, then,
// if it still runs after grace, SIGKILL to its whole process group. It
// returns once the container has exited (and its exit is recorded), or
// when ctx ends. Stopping a container that is not running is a no-op.
func (r *Runtime) StopContainer(ctx context.Context, uid, name string, grace time.Duration) error {
	r.mu.Lock()
	p, ok := r.pods[uid]
	var c *container
	if ok {
		c = p.containers[name]
	}
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	r.mu.Lock()
	if c.exit != nil {
		r.mu.Unlock()
		return nil
	}
	proc, done := c.start.Container, c.done
	r.mu.Unlock()
	if err := proc.signal(unix.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runtime: stop %q of pod %s: %w", name, uid, ctx.Err())
	case <-t.C:
	}
	if err := proc.signalGroup(unix.SIGKILL); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runtime: stop %q of pod %s: %w", name, uid, ctx.Err())
	}
}
