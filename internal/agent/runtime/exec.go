package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"
)

// execOutputDelay bounds how long Exec waits for output after the command
// exited (a background process it started may hold the output open).
const execOutputDelay = 2 * time.Second

// Exec runs cmd in the namespaces of the pod (nsenter into its sandbox)
// with the container's environment and working directory. With tty, the
// command gets a pseudo-terminal (stdout carries its output, stderr is
// unused) sized by the resize messages. A command that exits non-zero
// returns an error implementing k8s.io/utils/exec.ExitError with its code
// (128+n for a signal n). When ctx ends, the command's process group is
// killed.
func (r *Runtime) Exec(ctx context.Context, uid, ctrName string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan TerminalSize) error {
	if len(cmd) == 0 {
		return errors.New("runtime: exec: no command")
	}
	r.mu.Lock()
	p, ok := r.pods[uid]
	var c *container
	if ok {
		c = p.containers[ctrName]
	}
	var spec shimSpec
	var rec podRecord
	running := false
	if c != nil {
		spec, rec, running = c.spec, p.rec, c.exit == nil
	}
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("runtime: exec: container %q not found in pod %s", ctrName, uid)
	}
	if !running {
		return fmt.Errorf("runtime: exec: container %q of pod %s is not running", ctrName, uid)
	}
	if !rec.Sandbox.alive() {
		return fmt.Errorf("runtime: exec: the sandbox of pod %s is not running", uid)
	}
	x := exec.Command(r.nsenter, nsenterArgs(rec.Sandbox.PID, rec.HostNetwork, spec.WorkingDir, cmd)...)
	x.Env = spec.Env
	if x.Env == nil {
		x.Env = []string{}
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}

	var outputDone chan struct{}
	var ptmx *os.File
	var stdinW *os.File
	if tty {
		// A size the client sent already is the initial one.
		var size *pty.Winsize
		select {
		case sz, ok := <-resize:
			if ok {
				size = &pty.Winsize{Rows: sz.Height, Cols: sz.Width}
			}
		default:
		}
		// A new session with the pty as controlling terminal.
		f, err := pty.StartWithSize(x, size)
		if err != nil {
			return fmt.Errorf("runtime: exec: %w", err)
		}
		ptmx = f
		defer ptmx.Close()
		outputDone = make(chan struct{})
		go func() { _, _ = io.Copy(stdout, ptmx); close(outputDone) }()
		if stdin != nil {
			go func() { _, _ = io.Copy(ptmx, stdin) }()
		}
		if resize != nil {
			// Setsize uses the raw descriptor: the goroutine must be gone
			// before ptmx is closed (deferred above, so run after this).
			stopResize, resizeDone := make(chan struct{}), make(chan struct{})
			defer func() { close(stopResize); <-resizeDone }()
			go func() {
				defer close(resizeDone)
				for {
					select {
					case sz, ok := <-resize:
						if !ok {
							return
						}
						_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz.Height, Cols: sz.Width})
					case <-stopResize:
						return
					}
				}
			}()
		}
	} else {
		x.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		x.Stdout, x.Stderr = stdout, stderr
		x.WaitDelay = execOutputDelay
		if stdin != nil {
			// Our own pipe, not x.Stdin = stdin: Wait must not wait for a
			// client that never closes its input.
			pr, pw, err := os.Pipe()
			if err != nil {
				return fmt.Errorf("runtime: exec: %w", err)
			}
			x.Stdin = pr
			stdinW = pw
			defer pr.Close()
		}
		if err := x.Start(); err != nil {
			if stdinW != nil {
				stdinW.Close()
			}
			return fmt.Errorf("runtime: exec: %w", err)
		}
		if stdinW != nil {
			go func() { _, _ = io.Copy(stdinW, stdin); stdinW.Close() }()
		}
	}

	r.mu.Lock()
	p.execs[x] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(p.execs, x)
		r.mu.Unlock()
	}()
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		select {
		case <-ctx.Done():
			_ = unix.Kill(-x.Process.Pid, unix.SIGKILL)
		case <-exited:
		}
	}()

	err := x.Wait()
	if outputDone != nil {
		select {
		case <-outputDone:
		case <-time.After(execOutputDelay):
		}
	}
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("runtime: exec: %w", err)
	}
	code := ee.ExitCode()
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("runtime: exec: %w", ctx.Err())
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with non-zero exit code: %w", err), Code: code}
}
