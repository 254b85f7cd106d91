package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// criTimeFormat is the timestamp of a CRI log line: RFC 3339 in UTC with
// fixed nanoseconds, so that lines sort as text.
const criTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// maxLogLine is the longest log line written in one piece; longer lines
// are split into partial (P) records, like containerd's.
const maxLogLine = 16 << 10

// drainTimeout bounds how long the shim waits for the container's output
// after the container exited and its process group was killed (a process
// that escaped the group may hold the pipes open).
const drainTimeout = 2 * time.Second

// criWriter writes CRI-format log records ("<time> <stream> <F|P> <text>")
// from several streams to one file.
type criWriter struct {
	mu sync.Mutex // guards f writes
	f  *os.File
}

func (w *criWriter) record(stream string, tag byte, text []byte) {
	line := make([]byte, 0, len(criTimeFormat)+len(stream)+len(text)+5)
	line = time.Now().UTC().AppendFormat(line, criTimeFormat)
	line = append(line, ' ')
	line = append(line, stream...)
	line = append(line, ' ', tag, ' ')
	line = append(line, text...)
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.f.Write(line)
}

// copyStream turns the output of one stream into log records until EOF.
func (w *criWriter) copyStream(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			w.record(stream, 'F', line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			w.record(stream, 'P', line)
		default:
			if len(line) > 0 {
				w.record(stream, 'P', line)
			}
			return
		}
	}
}

// appendCRILine appends one full record to the log at path.
func appendCRILine(path string, t time.Time, stream, text string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s F %s\n", t.UTC().Format(criTimeFormat), stream, text)
	return err
}

// nsenterArgs are the arguments of nsenter running argv in the namespaces
// of the sandbox pid, in working directory wd of the pod's mount namespace.
// nsenter opens --wd before it enters the namespaces: the path goes through
// /proc/<pid>/root, which resolves in the sandbox's mount namespace (wd may
// be under the pod's private /tmp or a volume).
func nsenterArgs(pid int, hostNet bool, wd string, argv []string) []string {
	if wd == "" {
		wd = "/"
	}
	p := strconv.Itoa(pid)
	args := []string{"--target", p, "--mount", "--wd=/proc/" + p + "/root" + filepath.Clean("/"+wd)}
	if !hostNet {
		args = append(args, "--net", "--uts")
	}
	return append(append(args, "--"), argv...)
}

// RunShim is the per-container shim (`svcnet internal shim --spec PATH`),
// started by the runtime in its own session so that it outlives the agent.
// It starts the container through nsenter in the sandbox's namespaces, in
// a new process group; records the container's identity (the .state.json
// file) and reports "ok" on descriptor 3; writes the container's stdout and
// stderr to the CRI log; forwards SIGTERM to the container; and when the
// container exits, kills what is left of its process group, finishes the
// log and writes the exit record (.exit.json), last.
func RunShim(specPath string) error {
	// Inherited descriptors are not close-on-exec: without this the
	// container would hold the report pipe open and the runtime would wait
	// for EOF forever.
	syscall.CloseOnExec(readyFD)
	ready := os.NewFile(readyFD, "ready")
	report := func(msg string) {
		if ready != nil {
			fmt.Fprintln(ready, msg)
			_ = ready.Close()
			ready = nil
		}
	}
	var spec shimSpec
	if err := readJSON(specPath, &spec); err != nil {
		report(err.Error())
		return err
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		report(err.Error())
		return err
	}
	defer logf.Close()
	lw := &criWriter{f: logf}

	cmd := exec.Command(spec.NSEnter, nsenterArgs(spec.Sandbox.PID, spec.HostNet, spec.WorkingDir, spec.Argv)...)
	cmd.Env = spec.Env
	outR, outW, err := os.Pipe()
	if err != nil {
		report(err.Error())
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		report(err.Error())
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	// Its own process group, led by the container process: the group is
	// what "the container" means when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)

	if !spec.Sandbox.alive() {
		err = errors.New("the pod's sandbox is not running")
	} else {
		err = cmd.Start()
	}
	if err != nil {
		now := time.Now().UTC()
		msg := fmt.Sprintf("start %s: %v", spec.Argv[0], err)
		_ = writeJSON(spec.ExitPath, exitRecord{ExitCode: 128, StartedAt: now, FinishedAt: now, Reason: ReasonStartError, Message: msg})
		report(msg)
		return err
	}
	outW.Close()
	errW.Close()
	pid := cmd.Process.Pid
	ctr, _ := identify(pid)
	if ctr.PID == 0 {
		// Already exited (and a zombie until Wait): its identity is only
		// used for signals, and a recycled pid cannot occur before Wait.
		ctr = procIdentity{PID: pid}
	}
	self, _ := identify(os.Getpid())
	startedAt := time.Now().UTC()
	if err := writeJSON(spec.StatePath, startRecord{Shim: self, Container: ctr, StartedAt: startedAt}); err != nil {
		_ = unix.Kill(-pid, unix.SIGKILL)
		_ = cmd.Wait()
		report(err.Error())
		return err
	}
	report("ok")

	var copying sync.WaitGroup
	copying.Add(2)
	go func() { defer copying.Done(); lw.copyStream("stdout", outR) }()
	go func() { defer copying.Done(); lw.copyStream("stderr", errR) }()
	waited := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				_ = unix.Kill(pid, unix.SIGTERM)
			case <-waited:
				return
			}
		}
	}()

	werr := cmd.Wait()
	close(waited)
	finishedAt := time.Now().UTC()
	rec := exitRecord{StartedAt: startedAt, FinishedAt: finishedAt, Reason: ReasonCompleted}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			rec.Signal = int(ws.Signal())
			rec.ExitCode = 128 + rec.Signal
		default:
			rec.ExitCode = ws.ExitStatus()
		}
	} else if werr != nil {
		rec.ExitCode = 128
		rec.Message = werr.Error()
	}
	if rec.ExitCode != 0 {
		rec.Reason = ReasonError
	}
	// The container is over: so is every process of its group.
	_ = unix.Kill(-pid, unix.SIGKILL)
	drained := make(chan struct{})
	go func() { copying.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		outR.Close()
		errR.Close()
		<-drained
	}
	_ = logf.Sync()
	return writeJSON(spec.ExitPath, rec)
}
