package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a detached process started by `lab up`.
type proc struct {
	pid    int
	log    string
	exited chan struct{}
}

// startDetached runs exe args... inside netns ("" = the host namespace) in
// its own session, output appended to logFile, and writes its pid to
// pidFile. The process outlives `lab up`. marker is part of its command
// line (see alive).
func startDetached(netns, exe string, args []string, logFile, pidFile, marker string) (*proc, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: log: %w", err)
	}
	defer out.Close()
	var cmd *exec.Cmd
	if netns == "" {
		cmd = exec.Command(exe, args...)
	} else {
		// ip netns exec execs the command: the pid stays the same.
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, exe}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	p := &proc{pid: cmd.Process.Pid, log: logFile, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("lab: pid file: %w", err)
	}
	// Until the child has exec'd, its command line is this process's:
	// wait, so that alive and lab down's sweep recognise it from now on.
	for range 100 {
		if alive(p.pid, marker) {
			break
		}
		select {
		case <-p.exited:
			return p, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p, nil
}

// waitLog waits until logFile contains substr, p exits or timeout passes.
func (p *proc) waitLog(substr string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if b, err := os.ReadFile(p.log); err == nil && bytes.Contains(b, []byte(substr)) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited; last lines of %s:\n%s", p.log, tail(p.log, 30))
		case <-deadline:
			return fmt.Errorf("not ready after %v; last lines of %s:\n%s", timeout, p.log, tail(p.log, 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procInfo is what the lab needs to know of a live process.
type procInfo struct {
	pid, ppid int
	cmdline   string // arguments joined by spaces
	netns     uint64 // inode of its network namespace
	zombie    bool
}

// readProc reads /proc/<pid>; ok is false when the process is gone.
func readProc(pid int) (procInfo, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procInfo{}, false
	}
	pi := procInfo{pid: pid}
	// "pid (comm) S ppid ...": comm may contain spaces and parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i > 0 {
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 2 {
			pi.zombie = f[0] == "Z" || f[0] == "X"
			pi.ppid, _ = strconv.Atoi(f[1])
		}
	}
	cl, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	pi.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join(dir, "ns", "net"), &st) == nil {
		pi.netns = st.Ino
	}
	return pi, true
}

// allProcs lists the live processes.
func allProcs() []procInfo {
	entries, _ := os.ReadDir("/proc")
	var ps []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := readProc(pid); ok && !pi.zombie {
			ps = append(ps, pi)
		}
	}
	return ps
}

// alive reports whether pid runs and its command line contains marker
// (so a reused pid is not mistaken for the lab's process).
func alive(pid int, marker string) bool {
	if pid <= 0 {
		return false
	}
	pi, ok := readProc(pid)
	return ok && !pi.zombie && strings.Contains(pi.cmdline, marker)
}

// stopPID sends SIGTERM to pid (if it is still the process with marker)
// and waits up to timeout for it to go, then SIGKILLs it.
func stopPID(pid int, marker string, timeout time.Duration) error {
	if !alive(pid, marker) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("lab: kill %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid, marker) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 50 {
		if !alive(pid, marker) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("lab: process %d did not stop within %v of SIGTERM; killed", pid, timeout)
}

// dataMarker is what the command line of every process of the lab
// contains: a path below the data dir.
func dataMarker(dataDir string) string { return strings.TrimSuffix(dataDir, "/") + "/" }

// netnsInode returns the inode of the named namespace (0 if it is gone).
func netnsInode(name string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join("/run/netns", name), &st) != nil {
		return 0
	}
	return st.Ino
}

// leftovers are the processes that belong to the lab: those in a node
// namespace, those whose command line names the data dir (servers, agents,
// pod sandboxes and shims), and all their descendants (the pods'
// containers).
func leftovers(dataDir string, nsInodes map[uint64]bool) []procInfo {
	ps := allProcs()
	// Never this process or its ancestors (a shell or sudo whose command
	// line names the data dir).
	spare := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !spare[pid]; {
		spare[pid] = true
		pi, ok := readProc(pid)
		if !ok {
			break
		}
		pid = pi.ppid
	}
	marker := dataMarker(dataDir)
	mine := map[int]bool{}
	for _, p := range ps {
		if spare[p.pid] {
			continue
		}
		if nsInodes[p.netns] || strings.Contains(p.cmdline, marker) {
			mine[p.pid] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, p := range ps {
			if !mine[p.pid] && mine[p.ppid] && !spare[p.pid] {
				mine[p.pid] = true
				changed = true
			}
		}
	}
	var out []procInfo
	for _, p := range ps {
		if mine[p.pid] {
			out = append(out, p)
		}
	}
	return out
}
