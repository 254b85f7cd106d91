package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Runtime.
type Config struct {
	RootDir string // per-pod state, logs, emptyDirs: <RootDir>/pods/<uid>/...
	Exe     string // svcnet binary for sandbox/shim (default os.Executable())
	Log     *slog.Logger

	// PollInterval is how often the runtime checks the processes it
	// adopted (not its children) for an exit. Default one second.
	PollInterval time.Duration
}

// Sandbox is a running pod sandbox process.
type Sandbox struct {
	UID   string
	PID   int
	NetNS string // /proc/<pid>/ns/net
	Dir   string // the pod's state directory
}

// SandboxSpec describes the sandbox of one pod.
type SandboxSpec struct {
	UID, Namespace, Name string
	Hostname             string // UTS hostname
	HostNetwork          bool
	ResolvConf           []byte // nil: keep the node's /etc/resolv.conf
	Hosts                []byte // nil: keep the node's /etc/hosts
}

// Mount is a bind mount inside the pod's mount namespace (Target is created
// if missing).
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// ContainerSpec is one container process.
type ContainerSpec struct {
	Name       string
	Argv       []string // resolved; Argv[0] resolved via PATH in the pod env
	Env        []string // complete environment, "K=V"
	WorkingDir string
	Mounts     []Mount
}

// ContainerState is "Running" or "Exited".
type ContainerState string

// Container states.
const (
	StateRunning ContainerState = "Running"
	StateExited  ContainerState = "Exited"
)

// Reasons of an exited container.
const (
	ReasonCompleted  = "Completed"
	ReasonError      = "Error"
	ReasonStartError = "StartError"
)

// ContainerStatus is the state of a container's latest attempt.
type ContainerStatus struct {
	Name       string
	Attempt    int // restart count: 0 for first start
	State      ContainerState
	PID        int
	StartedAt  time.Time
	FinishedAt time.Time
	ExitCode   int
	Signal     int
	Reason     string // "Completed" (exit 0), "Error", "StartError"
	Message    string
}

// Event says that a container of pod UID exited (Container is empty when
// the sandbox process itself died).
type Event struct{ UID, Container string }

// PodState is everything the runtime knows about one pod.
type PodState struct {
	UID, Namespace, Name string
	Sandbox              *Sandbox // nil when the sandbox process is not running
	Containers           []ContainerStatus
}

// TerminalSize is a terminal size for Exec with a tty.
type TerminalSize struct{ Width, Height uint16 }

// Runtime runs process pods. Its methods are safe for concurrent use.
type Runtime struct {
	root    string // <RootDir>/pods
	exe     string
	nsenter string
	log     *slog.Logger
	poll    time.Duration

	events chan Event
	kick   chan struct{} // one slot: pending has events
	stop   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once

	mu      sync.Mutex // guards the fields below
	pods    map[string]*pod
	pending []Event
}

// pod is the runtime's view of one pod.
type pod struct {
	dir string
	rec podRecord // rec.UID is empty for a directory without pod.json

	// mu serialises EnsureSandbox, StartContainer and RemovePod of this
	// pod (not r.mu: they wait for processes).
	mu sync.Mutex

	// Guarded by Runtime.mu:
	containers   map[string]*container
	sandboxAlive bool // last observation, to report a sandbox death once
	execs        map[*exec.Cmd]struct{}
}

// container is one container of a pod. Its fields are guarded by
// Runtime.mu, except opMu.
type container struct {
	name string
	dir  string

	opMu sync.Mutex // serialises StartContainer/StopContainer of this container

	attempt int
	spec    shimSpec
	start   startRecord
	exit    *exitRecord   // nil while running
	adopted bool          // not our child: the poller watches it
	done    chan struct{} // closed once exit is set
}

// New returns a Runtime keeping its state in cfg.RootDir, after adopting
// the pods and containers that directory describes: running processes are
// taken over (never started twice), exited ones are reported with the exit
// code their shim recorded. Close stops its background work.
func New(cfg Config) (*Runtime, error) {
	if cfg.RootDir == "" {
		return nil, errors.New("runtime: RootDir is required")
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		cfg.Exe = exe
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("runtime: util-linux nsenter is required: %w", err)
	}
	r := &Runtime{
		root:    filepath.Join(cfg.RootDir, "pods"),
		exe:     cfg.Exe,
		nsenter: nsenter,
		log:     cfg.Log.With("component", "runtime"),
		poll:    cfg.PollInterval,
		events:  make(chan Event, 64),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		pods:    make(map[string]*pod),
	}
	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if err := r.adopt(); err != nil {
		return nil, err
	}
	r.wg.Add(2)
	go r.pump()
	go r.poller()
	return r, nil
}

// Close stops the runtime's background goroutines. Pods keep running: a
// later New on the same RootDir adopts them.
func (r *Runtime) Close() error {
	r.closed.Do(func() { close(r.stop) })
	r.wg.Wait()
	return nil
}

// Events returns the channel of exit events. Events are coalesced and
// queued without bound, so the runtime never blocks on a slow reader.
func (r *Runtime) Events() <-chan Event { return r.events }

// emitLocked queues e unless it is already queued.
func (r *Runtime) emitLocked(e Event) {
	for _, q := range r.pending {
		if q == e {
			return
		}
	}
	r.pending = append(r.pending, e)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// pump delivers queued events to r.events.
func (r *Runtime) pump() {
	defer r.wg.Done()
	for {
		select {
		case <-r.kick:
		case <-r.stop:
			return
		}
		for {
			r.mu.Lock()
			if len(r.pending) == 0 {
				r.mu.Unlock()
				break
			}
			e := r.pending[0]
			r.pending = r.pending[1:]
			r.mu.Unlock()
			select {
			case r.events <- e:
			case <-r.stop:
				return
			}
		}
	}
}

// poller watches what the runtime cannot wait for: adopted shims and
// sandboxes (not children of this process).
func (r *Runtime) poller() {
	defer r.wg.Done()
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-r.stop:
			return
		}
		r.pollOnce()
	}
}

// pollOnce checks every adopted running container and every sandbox once.
func (r *Runtime) pollOnce() {
	type check struct {
		p *pod
		c *container
	}
	var checks []check
	r.mu.Lock()
	for uid, p := range r.pods {
		if p.rec.UID != "" && p.sandboxAlive && !p.rec.Sandbox.alive() {
			p.sandboxAlive = false
			r.emitLocked(Event{UID: uid})
		}
		for _, c := range p.containers {
			if c.exit == nil && c.adopted {
				checks = append(checks, check{p, c})
			}
		}
	}
	r.mu.Unlock()
	for _, ch := range checks {
		r.mu.Lock()
		attempt, start := ch.c.attempt, ch.c.start
		r.mu.Unlock()
		exitPath := attemptFile(ch.c.dir, attempt, ".exit.json")
		if _, err := os.Stat(exitPath); err == nil || !start.Shim.alive() {
			r.finish(ch.p, ch.c, attempt)
		}
	}
}

// finish records the end of attempt of c: the shim's exit record, or, when
// the shim died without one, a synthesised record (after killing what is
// left of the container, which nobody would watch any more).
func (r *Runtime) finish(p *pod, c *container, attempt int) {
	r.mu.Lock()
	if c.attempt != attempt || c.exit != nil {
		r.mu.Unlock()
		return
	}
	start := c.start
	r.mu.Unlock()

	var rec exitRecord
	if err := readJSON(attemptFile(c.dir, attempt, ".exit.json"), &rec); err != nil {
		_ = start.Container.signalGroup(9)
		rec = exitRecord{
			ExitCode:   137,
			Signal:     9,
			StartedAt:  start.StartedAt,
			FinishedAt: time.Now().UTC(),
			Reason:     ReasonError,
			Message:    "the container's shim exited without recording the container's exit",
		}
		if errors.Is(err, os.ErrNotExist) {
			_ = writeJSON(attemptFile(c.dir, attempt, ".exit.json"), rec)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.attempt != attempt || c.exit != nil {
		return
	}
	c.exit = &rec
	close(c.done)
	r.log.Debug("container exited", "pod", p.rec.Namespace+"/"+p.rec.Name, "container", c.name,
		"attempt", attempt, "exitCode", rec.ExitCode, "signal", rec.Signal)
	if uid := filepath.Base(p.dir); r.pods[uid] == p {
		r.emitLocked(Event{UID: uid, Container: c.name})
	}
}

// statusLocked returns c's status.
func (c *container) statusLocked() ContainerStatus {
	s := ContainerStatus{
		Name:      c.name,
		Attempt:   c.attempt,
		State:     StateRunning,
		PID:       c.start.Container.PID,
		StartedAt: c.start.StartedAt,
	}
	if e := c.exit; e != nil {
		s.State = StateExited
		s.ExitCode, s.Signal, s.Reason, s.Message = e.ExitCode, e.Signal, e.Reason, e.Message
		s.FinishedAt = e.FinishedAt
		if s.StartedAt.IsZero() {
			s.StartedAt = e.StartedAt
		}
	}
	return s
}

// ContainerStatus returns the status of the latest attempt of a container.
func (r *Runtime) ContainerStatus(uid, name string) (ContainerStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pods[uid]
	if !ok {
		return ContainerStatus{}, false
	}
	c, ok := p.containers[name]
	if !ok {
		return ContainerStatus{}, false
	}
	return c.statusLocked(), true
}

// Sandbox returns the running sandbox of pod uid.
func (r *Runtime) Sandbox(uid string) (*Sandbox, bool) {
	r.mu.Lock()
	p, ok := r.pods[uid]
	r.mu.Unlock()
	if !ok || p.rec.UID == "" || !p.rec.Sandbox.alive() {
		return nil, false
	}
	return p.sandbox(), true
}

func (p *pod) sandbox() *Sandbox {
	return &Sandbox{
		UID:   p.rec.UID,
		PID:   p.rec.Sandbox.PID,
		NetNS: "/proc/" + strconv.Itoa(p.rec.Sandbox.PID) + "/ns/net",
		Dir:   p.dir,
	}
}

// Pods returns every pod the runtime knows, by UID. After a restart these
// are the adopted pods, including directories of pods whose sandbox is gone
// (Sandbox nil) so that the caller can remove them.
func (r *Runtime) Pods() []PodState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]PodState, 0, len(r.pods))
	for uid, p := range r.pods {
		ps := PodState{UID: uid, Namespace: p.rec.Namespace, Name: p.rec.Name}
		if p.rec.UID != "" && p.rec.Sandbox.alive() {
			ps.Sandbox = p.sandbox()
		}
		for _, c := range p.containers {
			ps.Containers = append(ps.Containers, c.statusLocked())
		}
		sort.Slice(ps.Containers, func(i, j int) bool { return ps.Containers[i].Name < ps.Containers[j].Name })
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// adopt loads every pod directory under r.root.
func (r *Runtime) adopt() error {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		uid := e.Name()
		p := &pod{dir: filepath.Join(r.root, uid), containers: map[string]*container{}, execs: map[*exec.Cmd]struct{}{}}
		if err := readJSON(filepath.Join(p.dir, "pod.json"), &p.rec); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				r.log.Warn("unreadable pod record; the pod is reported without a sandbox", "uid", uid, "err", err)
			}
			p.rec = podRecord{}
		}
		if p.rec.UID != uid {
			p.rec = podRecord{}
		}
		p.sandboxAlive = p.rec.UID != "" && p.rec.Sandbox.alive()
		cdirs, _ := os.ReadDir(filepath.Join(p.dir, "containers"))
		for _, cd := range cdirs {
			if !cd.IsDir() || !validName(cd.Name()) {
				continue
			}
			if c := r.adoptContainer(filepath.Join(p.dir, "containers", cd.Name()), cd.Name()); c != nil {
				p.containers[c.name] = c
			}
		}
		r.pods[uid] = p
		r.log.Info("adopted pod", "uid", uid, "pod", p.rec.Namespace+"/"+p.rec.Name,
			"sandboxRunning", p.sandboxAlive, "containers", len(p.containers))
	}
	return nil
}

// adoptContainer loads the latest attempt of the container in dir, or nil
// if it has none.
func (r *Runtime) adoptContainer(dir, name string) *container {
	attempt := latestAttempt(dir)
	if attempt < 0 {
		return nil
	}
	c := &container{name: name, dir: dir, attempt: attempt, adopted: true, done: make(chan struct{})}
	if err := readJSON(attemptFile(dir, attempt, ".spec.json"), &c.spec); err != nil {
		r.log.Warn("unreadable container spec", "dir", dir, "err", err)
	}
	var rec exitRecord
	if err := readJSON(attemptFile(dir, attempt, ".exit.json"), &rec); err == nil {
		_ = readJSON(attemptFile(dir, attempt, ".state.json"), &c.start)
		c.exit = &rec
		close(c.done)
		return c
	}
	if err := readJSON(attemptFile(dir, attempt, ".state.json"), &c.start); err != nil {
		// The previous agent died between writing the spec and the shim
		// reporting the start. The shim may be gone or may be about to
		// report; without its identity nothing can be watched.
		c.exit = &exitRecord{ExitCode: 128, FinishedAt: time.Now().UTC(), Reason: ReasonStartError,
			Message: "the agent restarted while this container was starting"}
		close(c.done)
		return c
	}
	// Running, or exited after the poller's next look: pollOnce decides.
	return c
}

// latestAttempt returns the highest n of the <n>.spec.json files in dir, or
// -1.
func latestAttempt(dir string) int {
	entries, _ := os.ReadDir(dir)
	latest := -1
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".spec.json")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(n); err == nil && i > latest {
			latest = i
		}
	}
	return latest
}
