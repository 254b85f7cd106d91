package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a started svcnet process (server or agent) whose output is kept.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	err    error // cmd.Wait's result, valid after exited is closed
}

// startProc starts bin args with its output in a logBuffer.
func startProc(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, out: &logBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitLine waits until a line containing substr was written (also before
// the call), the process exits, or timeout passes.
func (p *proc) waitLine(substr string, timeout time.Duration) error {
	select {
	case <-p.out.waitFor(substr):
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited (%v) before %q:\n%s", p.name, p.err, substr, p.out.tail(40))
	case <-time.After(timeout):
		return fmt.Errorf("%s: no %q after %v:\n%s", p.name, substr, timeout, p.out.tail(40))
	}
}

// stop sends SIGTERM and waits up to timeout, then SIGKILLs. It reports
// whether the process stopped by itself and how long that took.
func (p *proc) stop(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	select {
	case <-p.exited:
		return 0, fmt.Errorf("%s had already exited: %v", p.name, p.err)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return time.Since(start), nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return time.Since(start), fmt.Errorf("%s did not stop within %v of SIGTERM (killed)", p.name, timeout)
	}
}

// logBuffer collects a process's output and reports when a line appears.
type logBuffer struct {
	mu      sync.Mutex // guards the fields below
	buf     bytes.Buffer
	partial []byte
	lines   []string
	waiters []waiter
}

type waiter struct {
	substr string
	ch     chan struct{}
}

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
		b.lines = append(b.lines, line)
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

// waitFor returns a channel closed once a line containing substr has been
// written, before or after the call.
func (b *logBuffer) waitFor(substr string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	for _, l := range b.lines {
		if strings.Contains(l, substr) {
			close(ch)
			return ch
		}
	}
	b.waiters = append(b.waiters, waiter{substr, ch})
	return ch
}

// count returns how many lines contain substr.
func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// tail returns the last n lines.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.lines[max(0, len(b.lines)-n):]
	return strings.Join(l, "\n")
}

// mem is a memory reading in KiB: resident set size, its anonymous part
// (heap and stacks: private to the process, as these processes do not
// share memory by fork) and proportional set size (each shared page divided
// among the processes mapping it; the pods all map the same svcnet binary).
type mem struct{ rss, anon, pss int64 }

func (m *mem) add(o mem) { m.rss += o.rss; m.anon += o.anon; m.pss += o.pss }

// readMem reads VmRSS and RssAnon from /proc/<pid>/status and Pss from
// /proc/<pid>/smaps_rollup (0 when the kernel has no smaps_rollup).
func readMem(pid int) (mem, error) {
	var m mem
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.rss = kbField(status, "VmRSS:")
	m.anon = kbField(status, "RssAnon:")
	if rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		m.pss = kbField(rollup, "Pss:")
	}
	return m, nil
}

// kbField returns the "<name> N kB" value of a /proc file.
func kbField(b []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == name {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// podProcKind names the kind of a pod process from its argv, or "" when the
// process is not a pod's. Pod processes run the bench's own svcnet binary:
// `svcnet internal sandbox`, `svcnet internal shim` and the container
// (`svcnet agnhost netexec`, exec'd by nsenter); the agent and server
// (excluded by pid) run it too.
func podProcKind(bin string, argv []string) string {
	if len(argv) < 2 || argv[0] != bin {
		return ""
	}
	switch {
	case argv[1] == "internal" && len(argv) > 2 && argv[2] == "sandbox":
		return "sandbox"
	case argv[1] == "internal" && len(argv) > 2 && argv[2] == "shim":
		return "shim"
	case argv[1] == "agent" || argv[1] == "server" || argv[1] == "kubectl":
		return ""
	default:
		return "container"
	}
}

// podProcs lists the live (non-zombie) pod processes by kind, with their
// memory, excluding the pids in skip.
func podProcs(bin string, skip ...int) (map[string][]mem, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[string][]mem{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || containsInt(skip, pid) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		kind := podProcKind(bin, argv)
		if kind == "" {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		m, err := readMem(pid)
		if err != nil {
			continue // gone meanwhile
		}
		out[kind] = append(out[kind], m)
	}
	return out, nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// setupNode prepares the private namespaces: a tmpfs on /run/netns,
// loopback up, and the node address on a veth to a peer namespace (the
// sandbox kernel may have no dummy interface), with forwarding on.
func setupNode(nodeIP, peerIP string) error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run/netns: %w", err)
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"netns", "add", "peer"},
		{"-n", "peer", "link", "set", "lo", "up"},
		{"link", "add", "node0", "type", "veth", "peer", "name", "eth0", "netns", "peer"},
		{"addr", "add", nodeIP + "/32", "dev", "node0"},
		{"link", "set", "node0", "up"},
		{"route", "add", peerIP + "/32", "dev", "node0", "scope", "link"},
		{"-n", "peer", "addr", "add", peerIP + "/32", "dev", "eth0"},
		{"-n", "peer", "link", "set", "eth0", "up"},
		{"-n", "peer", "route", "add", nodeIP + "/32", "dev", "eth0", "scope", "link"},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return err
		}
	}
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
}

// leftovers lists what a finished run must not leave: svc* veths, pod
// routes, pod directories and pod processes.
func leftovers(bin, rootDir string) []string {
	var left []string
	links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, ": svc") {
			left = append(left, "veth: "+strings.TrimSpace(l))
		}
	}
	routes, _ := exec.Command("ip", "route", "show").CombinedOutput()
	for _, r := range strings.Split(string(routes), "\n") {
		if strings.HasPrefix(r, "10.244.") && strings.Contains(r, "dev svc") {
			left = append(left, "route: "+r)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(rootDir, "pods")); len(entries) > 0 {
		left = append(left, fmt.Sprintf("pod dirs: %d under %s", len(entries), filepath.Join(rootDir, "pods")))
	}
	procs, _ := podProcs(bin)
	for kind, ms := range procs {
		left = append(left, fmt.Sprintf("%d %s processes", len(ms), kind))
	}
	return left
}

// straysOf lists the pids whose argv[0] is bin.
func straysOf(bin string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 == bin {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// logTime parses a slog text line's time= and pod= fields.
func logTime(line string) (t time.Time, pod string, ok bool) {
	var ts string
	for _, f := range strings.Fields(line) {
		if v, found := strings.CutPrefix(f, "time="); found {
			ts = v
		}
		if v, found := strings.CutPrefix(f, "pod="); found {
			pod = v
		}
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	return t, pod, err == nil && pod != ""
}

// agentSteps reads, from the agent's log, when it reported each pod's
// sandbox and container started (millisecond log timestamps).
func agentSteps(b *logBuffer, pods map[string]podTimes) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		sandbox := strings.Contains(l, `msg="sandbox started"`)
		container := strings.Contains(l, `msg="container started"`)
		if !sandbox && !container {
			continue
		}
		t, pod, ok := logTime(l)
		if !ok {
			continue
		}
		name := strings.TrimPrefix(pod, podNamespace+"/")
		pt, found := pods[name]
		if !found {
			continue
		}
		if sandbox && pt.sandboxStarted.IsZero() {
			pt.sandboxStarted = t
		}
		if container && pt.containerStarted.IsZero() {
			pt.containerStarted = t
		}
		pods[name] = pt
	}
}

// throttled counts client-go's "client-side throttling" lines in a log and
// returns the longest wait they report.
func throttled(b *logBuffer) (n int, longest time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		if !strings.Contains(l, "client-side throttling") {
			continue
		}
		n++
		if _, rest, ok := strings.Cut(l, `delay="`); ok {
			if v, _, ok := strings.Cut(rest, `"`); ok {
				if d, err := time.ParseDuration(v); err == nil && d > longest {
					longest = d
				}
			}
		}
	}
	return n, longest
}

// warnings counts the agent's WARN and ERROR lines by level and msg.
func warnings(b *logBuffer) map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for _, l := range b.lines {
		lvl := ""
		switch {
		case strings.Contains(l, "level=WARN"):
			lvl = "WARN"
		case strings.Contains(l, "level=ERROR"):
			lvl = "ERROR"
		default:
			continue
		}
		msg := l
		if _, rest, ok := strings.Cut(l, "msg="); ok {
			if strings.HasPrefix(rest, `"`) {
				if v, _, ok := strings.Cut(rest[1:], `"`); ok {
					msg = v
				}
			} else {
				msg, _, _ = strings.Cut(rest, " ")
			}
		}
		// The error's kind, without pod names and uids.
		if _, e, ok := strings.Cut(l, "err="); ok {
			e = strings.Trim(e, `"`)
			if i := strings.LastIndex(e, ": "); i >= 0 {
				e = e[i+2:]
			}
			msg += " (" + e + ")"
		}
		out[lvl+" "+msg]++
	}
	return out
}

// containerLogSteps reads each pod's container log (attempt 0, CRI format
// "<RFC3339Nano> stdout F <line>") for netexec's "started" line and the
// first /readyz request.
func containerLogSteps(rootDir string, pods map[string]podTimes) {
	for name, pt := range pods {
		if pt.uid == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(rootDir, "pods", pt.uid, "containers", "netexec", "0.log"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			ts, rest, ok := strings.Cut(l, " ")
			if !ok {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				continue
			}
			if pt.serving.IsZero() && strings.Contains(rest, `msg=started`) {
				pt.serving = t
			}
			if pt.firstProbeServed.IsZero() && strings.Contains(rest, "uri=/readyz") {
				pt.firstProbeServed = t
			}
		}
		pods[name] = pt
	}
}
