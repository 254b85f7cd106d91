package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// readyFD is the descriptor on which the sandbox and shim processes report
// that they are set up: "ok\n", or an error message, then EOF.
const readyFD = 3

// EnsureSandbox returns the running sandbox of spec.UID, starting one if
// there is none (first call, or the old sandbox process died: the new one
// has new namespaces). It is idempotent.
func (r *Runtime) EnsureSandbox(ctx context.Context, spec SandboxSpec) (*Sandbox, error) {
	if !validName(spec.UID) {
		return nil, fmt.Errorf("runtime: invalid pod UID %q", spec.UID)
	}
	p := r.podFor(spec.UID)
	p.mu.Lock()
	defer p.mu.Unlock()
	r.mu.Lock()
	rec := p.rec
	r.mu.Unlock()
	if rec.UID != "" && rec.Sandbox.alive() {
		return p.sandbox(), nil
	}
	for _, d := range []string{"etc", "tmp", "containers", "volumes"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	// The pod's /tmp is world-writable and sticky, like a node's.
	if err := os.Chmod(filepath.Join(p.dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	for name, content := range map[string][]byte{"resolv.conf": spec.ResolvConf, "hosts": spec.Hosts} {
		path := filepath.Join(p.dir, "etc", name)
		if content == nil {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("runtime: %w", err)
			}
			continue
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.Name
	}
	cmd, id, err := r.startSandbox(ctx, p.dir, hostname, spec.HostNetwork)
	if err != nil {
		return nil, err
	}
	newRec := podRecord{UID: spec.UID, Namespace: spec.Namespace, Name: spec.Name, Hostname: hostname,
		HostNetwork: spec.HostNetwork, Sandbox: id}
	if err := writeJSON(filepath.Join(p.dir, "pod.json"), newRec); err != nil {
		_ = id.signal(unix.SIGKILL)
		_ = cmd.Wait()
		return nil, err
	}
	r.mu.Lock()
	p.rec = newRec
	p.sandboxAlive = true
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		if p.rec.Sandbox == id && p.sandboxAlive {
			p.sandboxAlive = false
			if r.pods[spec.UID] == p {
				r.emitLocked(Event{UID: spec.UID})
			}
		}
	}()
	r.log.Info("sandbox started", "pod", spec.Namespace+"/"+spec.Name, "uid", spec.UID, "pid", id.PID)
	return p.sandbox(), nil
}

// podFor returns the pod of uid, creating an empty one.
func (r *Runtime) podFor(uid string) *pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pods[uid]
	if !ok {
		p = &pod{dir: filepath.Join(r.root, uid), containers: map[string]*container{}, execs: map[*exec.Cmd]struct{}{}}
		r.pods[uid] = p
	}
	return p
}

// startSandbox starts `svcnet internal sandbox` in new namespaces and waits
// until it reports that the pod's identity is set up.
func (r *Runtime) startSandbox(ctx context.Context, dir, hostname string, hostNetwork bool) (*exec.Cmd, procIdentity, error) {
	logf, err := os.OpenFile(filepath.Join(dir, "sandbox.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, procIdentity{}, fmt.Errorf("runtime: %w", err)
	}
	defer logf.Close()
	args := []string{"internal", "sandbox", "--dir", dir, "--hostname", hostname}
	flags := uintptr(unix.CLONE_NEWNS)
	if hostNetwork {
		args = append(args, "--host-network")
	} else {
		flags |= unix.CLONE_NEWNET | unix.CLONE_NEWUTS
	}
	cmd := exec.Command(r.exe, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session (and process group): the sandbox outlives the agent
	// and gets none of the signals meant for the agent's group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: flags}
	id, err := startReporting(ctx, cmd)
	if err != nil {
		return nil, procIdentity{}, fmt.Errorf("runtime: start sandbox: %w%s", err, logTail(filepath.Join(dir, "sandbox.log")))
	}
	return cmd, id, nil
}

// startReporting starts cmd with a pipe as descriptor 3 and waits for its
// "ok" report. On failure the process is killed and reaped.
func startReporting(ctx context.Context, cmd *exec.Cmd) (procIdentity, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return procIdentity{}, err
	}
	defer pr.Close()
	cmd.ExtraFiles = []*os.File{pw}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return procIdentity{}, err
	}
	pw.Close()
	id, idErr := identify(cmd.Process.Pid)
	type result struct {
		msg string
		err error
	}
	res := make(chan result, 1)
	go func() {
		// One line: the report. (EOF without one: the process died.)
		line, err := bufio.NewReader(io.LimitReader(pr, 64<<10)).ReadString('\n')
		if errors.Is(err, io.EOF) {
			err = nil
		}
		res <- result{strings.TrimSpace(line), err}
	}()
	fail := func(err error) (procIdentity, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return procIdentity{}, err
	}
	select {
	case <-ctx.Done():
		pr.Close()
		return fail(ctx.Err())
	case rs := <-res:
		switch {
		case rs.err != nil:
			return fail(rs.err)
		case rs.msg != "ok":
			if rs.msg == "" {
				rs.msg = "exited before reporting"
			}
			return fail(errors.New(rs.msg))
		case idErr != nil:
			return fail(idErr)
		}
	}
	return id, nil
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return ": " + strings.TrimSpace(string(b))
}

// RemovePod kills every process of the pod (containers with SIGKILL,
// exec sessions, anything else left in the pod's mount namespace, then the
// sandbox), waits until they are gone, and deletes the pod's directory.
// The pod's namespaces, and the mounts in them, vanish with the last
// process. RemovePod of an unknown pod only deletes its directory; it is
// idempotent.
func (r *Runtime) RemovePod(ctx context.Context, uid string) error {
	if !validName(uid) {
		return fmt.Errorf("runtime: invalid pod UID %q", uid)
	}
	r.mu.Lock()
	p, ok := r.pods[uid]
	r.mu.Unlock()
	if ok {
		p.mu.Lock()
		defer p.mu.Unlock()
		if err := r.killPod(ctx, p); err != nil {
			return err
		}
		r.mu.Lock()
		if r.pods[uid] == p {
			delete(r.pods, uid)
		}
		r.mu.Unlock()
	}
	if err := os.RemoveAll(filepath.Join(r.root, uid)); err != nil {
		return fmt.Errorf("runtime: remove pod %s: %w", uid, err)
	}
	return nil
}

// killPod kills every process of p and waits for them to be gone.
func (r *Runtime) killPod(ctx context.Context, p *pod) error {
	r.mu.Lock()
	sandbox := p.rec.Sandbox
	var groups []procIdentity
	var shims []procIdentity
	for _, c := range p.containers {
		if c.exit == nil {
			groups = append(groups, c.start.Container)
			shims = append(shims, c.start.Shim)
		}
	}
	for x := range p.execs {
		if x.Process != nil {
			groups = append(groups, procIdentity{PID: x.Process.Pid})
		}
	}
	r.mu.Unlock()

	// The mount namespace identifies everything that runs in the pod:
	// containers, exec sessions and whatever they started in new sessions.
	var mntNS string
	for _, id := range append([]procIdentity{sandbox}, groups...) {
		if id.StartTime != 0 && id.alive() {
			if ns, err := os.Readlink("/proc/" + strconv.Itoa(id.PID) + "/ns/mnt"); err == nil {
				mntNS = ns
				break
			}
		}
	}
	for _, g := range groups {
		if g.StartTime == 0 {
			// An exec session: no recorded start time, the group is ours.
			_ = unix.Kill(-g.PID, unix.SIGKILL)
			continue
		}
		if err := g.signalGroup(unix.SIGKILL); err != nil {
			return err
		}
	}
	// Wait for every process of the pod, killing again what a dying
	// process may still have forked. Zombies do not count: they hold no
	// namespace, and their reaper may be a pid 1 that never reaps.
	podAlive := func() bool {
		if mntNS != "" {
			return killNamespace(mntNS, sandbox) > 0
		}
		for _, g := range groups {
			if g.StartTime != 0 && g.alive() {
				return true
			}
		}
		return false
	}
	if err := waitGone(ctx, podAlive); err != nil {
		return fmt.Errorf("runtime: waiting for the processes of pod %s: %w", p.rec.UID, err)
	}
	for _, s := range shims {
		if err := waitGone(ctx, s.alive); err != nil {
			return fmt.Errorf("runtime: waiting for the shims of pod %s: %w", p.rec.UID, err)
		}
	}
	if err := sandbox.signal(unix.SIGKILL); err != nil {
		return err
	}
	if err := waitGone(ctx, sandbox.alive); err != nil {
		return fmt.Errorf("runtime: waiting for the sandbox of pod %s: %w", p.rec.UID, err)
	}
	// Record the ends, so that a status read racing with the removal sees
	// exited containers. No events: the pod is being removed.
	r.mu.Lock()
	delete(r.pods, filepath.Base(p.dir))
	r.mu.Unlock()
	r.mu.Lock()
	var running []*container
	for _, c := range p.containers {
		if c.exit == nil {
			running = append(running, c)
		}
	}
	r.mu.Unlock()
	for _, c := range running {
		r.mu.Lock()
		attempt := c.attempt
		r.mu.Unlock()
		r.finish(p, c, attempt)
	}
	return nil
}

// killNamespace SIGKILLs every live process in the mount namespace mntNS
// (a readlink of /proc/<pid>/ns/mnt) except the sandbox, and returns how
// many it found.
func killNamespace(mntNS string, sandbox procIdentity) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == sandbox.PID {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err != nil || ns != mntNS {
			continue
		}
		if _, live := procStartTime(pid); !live {
			continue
		}
		n++
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	return n
}

// waitGone polls until alive reports false or ctx ends.
func waitGone(ctx context.Context, alive func() bool) error {
	for alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// VolumeDir returns the directory of the pod's emptyDir volume, creating
// it (mode 0777, like kubelet's emptyDirs).
func (r *Runtime) VolumeDir(uid, volume string) (string, error) {
	if !validName(uid) || !validName(volume) {
		return "", fmt.Errorf("runtime: invalid pod UID %q or volume name %q", uid, volume)
	}
	p := r.podFor(uid)
	dir := filepath.Join(p.dir, "volumes", volume)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", fmt.Errorf("runtime: %w", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return "", fmt.Errorf("runtime: %w", err)
	}
	return dir, nil
}

// SandboxOptions are the arguments of `svcnet internal sandbox`.
type SandboxOptions struct {
	Dir         string // the pod directory
	Hostname    string
	HostNetwork bool
}

// RunSandbox is the sandbox process (`svcnet internal sandbox`), started by
// the runtime in new mount (and, unless HostNetwork, network and UTS)
// namespaces. It sets the pod's identity up, reports "ok" on descriptor 3,
// and holds the namespaces until SIGTERM.
func RunSandbox(opts SandboxOptions) error {
	// Inherited descriptors are not close-on-exec: without this the
	// container would hold the report pipe open and the runtime would wait
	// for EOF forever.
	syscall.CloseOnExec(readyFD)
	ready := os.NewFile(readyFD, "ready")
	if err := setupSandbox(opts); err != nil {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
		}
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)
	if ready != nil {
		w := bufio.NewWriter(ready)
		_, _ = w.WriteString("ok\n")
		_ = w.Flush()
		_ = ready.Close()
	}
	<-sigs
	return nil
}

// setupSandbox makes the calling process's namespaces the pod's.
func setupSandbox(opts SandboxOptions) error {
	if opts.Dir == "" {
		return errors.New("sandbox: --dir is required")
	}
	if !opts.HostNetwork && opts.Hostname != "" {
		if err := unix.Sethostname([]byte(opts.Hostname)); err != nil {
			return fmt.Errorf("sandbox: sethostname: %w", err)
		}
	}
	// Nothing mounted in the pod may leak to the node, nor the other way.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: make / rprivate: %w", err)
	}
	for _, name := range []string{"resolv.conf", "hosts"} {
		src := filepath.Join(opts.Dir, "etc", name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := unix.Mount(src, "/etc/"+name, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("sandbox: bind %s over /etc/%s: %w", src, name, err)
		}
	}
	// /tmp last: the pod directory itself may live under the node's /tmp.
	if err := unix.Mount(filepath.Join(opts.Dir, "tmp"), "/tmp", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("sandbox: bind private /tmp: %w", err)
	}
	if !opts.HostNetwork {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("sandbox: set lo up: %w", err)
		}
	}
	return nil
}
