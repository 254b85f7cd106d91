package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/agent/probe"
	"github.com/svcnet/svcnet/internal/agent/runtime"
)

// podRecord is what the agent remembers about a pod between syncs, beyond
// what the runtime keeps on disk: probe workers, crash-loop back-off and
// the reasons a container is waiting.
type podRecord struct {
	mu      sync.Mutex
	ip      netip.Addr
	probes  map[string]*containerProbes // by container name
	backoff map[string]*backoff         // by container name
	waiting map[string]v1.ContainerStateWaiting
	// last holds, per container, the status of the attempt before the
	// current one (the pod's lastState).
	last map[string]runtime.ContainerStatus
	// killed marks containers the agent stopped for a failed liveness
	// probe, so the restart is not counted as a crash.
	liveKilled map[string]bool
}

// containerProbes are the probe workers of one container attempt.
type containerProbes struct {
	attempt                      int
	readiness, liveness, startup *probe.Worker
}

func (cp *containerProbes) stop() {
	for _, w := range []*probe.Worker{cp.readiness, cp.liveness, cp.startup} {
		if w != nil {
			w.Stop()
		}
	}
}

// backoff is the crash-loop delay of one container: it doubles on each
// restart up to MaxBackoff and resets after the container ran for
// 2×MaxBackoff (the kubelet's rule).
type backoff struct {
	delay     time.Duration
	notBefore time.Time
	attempt   int // the attempt this back-off was computed for
}

func (a *Agent) record(uid types.UID) *podRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.pods[uid]
	if !ok {
		r = &podRecord{
			probes:     map[string]*containerProbes{},
			backoff:    map[string]*backoff{},
			waiting:    map[string]v1.ContainerStateWaiting{},
			last:       map[string]runtime.ContainerStatus{},
			liveKilled: map[string]bool{},
		}
		a.pods[uid] = r
	}
	return r
}

func (a *Agent) forget(uid types.UID) {
	a.mu.Lock()
	r := a.pods[uid]
	delete(a.pods, uid)
	delete(a.lastSeen, uid)
	a.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		for _, cp := range r.probes {
			cp.stop()
		}
		r.mu.Unlock()
	}
}

// syncPod closes the gap between the Pod object with this UID and the
// node: see the package documentation.
func (a *Agent) syncPod(ctx context.Context, key string) error {
	uid := types.UID(key)
	pod, ok := a.podByUID(uid)
	if !ok {
		// Gone from the API (our own final delete, a force delete, or
		// deleted while the agent was down): stop what is left.
		a.mu.Lock()
		last := a.lastSeen[uid]
		a.mu.Unlock()
		grace := 2 * time.Second
		if last != nil && last.Spec.TerminationGracePeriodSeconds != nil && last.DeletionTimestamp == nil {
			grace = time.Duration(*last.Spec.TerminationGracePeriodSeconds) * time.Second
		}
		return a.teardown(ctx, uid, last, grace)
	}
	if pod.DeletionTimestamp != nil {
		return a.terminate(ctx, pod)
	}
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		// Terminal: containers have all exited; release the sandbox and IP
		// but keep the Pod object (and its logs until it is deleted).
		a.stopProbes(uid)
		return nil
	}
	return a.runPod(ctx, pod)
}

// runPod makes pod's sandbox, network and containers exist and reports
// their status.
func (a *Agent) runPod(ctx context.Context, pod *v1.Pod) error {
	uid := string(pod.UID)
	rec := a.record(pod.UID)
	var ip netip.Addr
	if pod.Spec.HostNetwork {
		ip = a.cfg.NodeIP
	} else {
		var err error
		if ip, err = a.net.Allocate(uid); err != nil {
			return fmt.Errorf("allocate pod IP: %w", err)
		}
	}
	rec.mu.Lock()
	rec.ip = ip
	rec.mu.Unlock()
	sb, err := a.rt.EnsureSandbox(ctx, runtime.SandboxSpec{
		UID: uid, Namespace: pod.Namespace, Name: pod.Name,
		Hostname:    podHostname(pod),
		HostNetwork: pod.Spec.HostNetwork,
		ResolvConf:  a.resolvConf(pod, "/etc/resolv.conf"),
		Hosts:       a.hostsFile(pod, ip),
	})
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if !pod.Spec.HostNetwork {
		if err := a.net.Attach(ctx, uid, sb.NetNS, ip); err != nil {
			return fmt.Errorf("attach pod network: %w", err)
		}
	}

	var requeue time.Duration
	initDone := true
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		done, after, err := a.syncInitContainer(ctx, pod, rec, c, ip)
		if err != nil {
			return err
		}
		requeue = minPositive(requeue, after)
		if !done {
			initDone = false
			break
		}
	}
	if initDone {
		for i := range pod.Spec.Containers {
			after, err := a.syncContainer(ctx, pod, rec, &pod.Spec.Containers[i], ip)
			if err != nil {
				return err
			}
			requeue = minPositive(requeue, after)
		}
	}
	if err := a.writeStatus(ctx, pod, rec, ip, initDone); err != nil {
		return err
	}
	if requeue > 0 {
		a.queue.AddAfter(string(pod.UID), requeue)
	}
	return nil
}

func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

// syncContainer starts, restarts (with back-off) or kills one container.
// It returns a delay after which the pod wants another sync.
func (a *Agent) syncContainer(ctx context.Context, pod *v1.Pod, rec *podRecord, c *v1.Container, ip netip.Addr) (time.Duration, error) {
	uid := string(pod.UID)
	st, exists := a.rt.ContainerStatus(uid, c.Name)
	switch {
	case !exists:
		return 0, a.startContainer(ctx, pod, rec, c, ip)
	case st.State == runtime.StateRunning:
		rec.mu.Lock()
		cp := rec.probes[c.Name]
		rec.mu.Unlock()
		if kind := failedKillProbe(cp, st.Attempt); kind != "" {
			a.eventf(pod, v1.EventTypeNormal, "Killing", "Container %s failed %s probe, will be restarted", c.Name, kind)
			rec.mu.Lock()
			rec.liveKilled[c.Name] = true
			rec.mu.Unlock()
			if err := a.rt.StopContainer(ctx, uid, c.Name, podGrace(pod)); err != nil {
				return 0, err
			}
			return time.Millisecond, nil
		}
		a.ensureProbes(pod, rec, c, st, ip)
		return 0, nil
	}
	// Exited.
	a.stopContainerProbes(rec, c.Name)
	if !shouldRestart(pod.Spec.RestartPolicy, st) {
		return 0, nil
	}
	wait := a.backoffWait(rec, c.Name, st)
	if wait > 0 {
		rec.mu.Lock()
		rec.waiting[c.Name] = v1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", rec.backoff[c.Name].delay, c.Name, pod.Name, pod.Namespace, pod.UID)}
		rec.mu.Unlock()
		return wait, nil
	}
	return 0, a.startContainer(ctx, pod, rec, c, ip)
}

// syncInitContainer runs an init container to completion; done reports
// that it exited 0.
func (a *Agent) syncInitContainer(ctx context.Context, pod *v1.Pod, rec *podRecord, c *v1.Container, ip netip.Addr) (done bool, after time.Duration, err error) {
	st, exists := a.rt.ContainerStatus(string(pod.UID), c.Name)
	switch {
	case !exists:
		return false, 0, a.startContainer(ctx, pod, rec, c, ip)
	case st.State == runtime.StateRunning:
		return false, 0, nil
	case st.ExitCode == 0 && st.Signal == 0:
		return true, 0, nil
	case pod.Spec.RestartPolicy == v1.RestartPolicyNever:
		return false, 0, nil
	}
	if wait := a.backoffWait(rec, c.Name, st); wait > 0 {
		return false, wait, nil
	}
	return false, 0, a.startContainer(ctx, pod, rec, c, ip)
}

func shouldRestart(policy v1.RestartPolicy, st runtime.ContainerStatus) bool {
	switch policy {
	case v1.RestartPolicyNever:
		return false
	case v1.RestartPolicyOnFailure:
		return st.ExitCode != 0 || st.Signal != 0
	}
	return true
}

// backoffWait returns how long the exited container must still wait before
// its next start.
func (a *Agent) backoffWait(rec *podRecord, name string, st runtime.ContainerStatus) time.Duration {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.liveKilled[name] {
		// Killed by us for a liveness failure: restart right away, as the
		// kubelet does for the first kill, but still count back-off.
		delete(rec.liveKilled, name)
	}
	b := rec.backoff[name]
	if b == nil {
		b = &backoff{attempt: -1}
		rec.backoff[name] = b
	}
	if b.attempt != st.Attempt {
		ran := st.FinishedAt.Sub(st.StartedAt)
		switch {
		case b.delay == 0 || ran > 2*a.cfg.MaxBackoff:
			b.delay = a.cfg.RestartBackoff
		default:
			b.delay = min(2*b.delay, a.cfg.MaxBackoff)
		}
		b.attempt = st.Attempt
		b.notBefore = st.FinishedAt.Add(b.delay)
		if st.Attempt == 0 && ran > 0 {
			// The first restart of a container waits only the base delay.
			b.notBefore = st.FinishedAt.Add(a.cfg.RestartBackoff)
		}
	}
	return time.Until(b.notBefore)
}

// startContainer builds and starts one container, or records why it is
// waiting.
func (a *Agent) startContainer(ctx context.Context, pod *v1.Pod, rec *podRecord, c *v1.Container, ip netip.Addr) error {
	uid := string(pod.UID)
	spec, err := a.containerSpec(ctx, pod, c, ip)
	var ce *configError
	if errors.As(err, &ce) {
		rec.mu.Lock()
		rec.waiting[c.Name] = v1.ContainerStateWaiting{Reason: ce.reason, Message: ce.msg}
		rec.mu.Unlock()
		a.eventf(pod, v1.EventTypeWarning, "Failed", "Error: %s", ce.msg)
		return nil
	}
	if err != nil {
		return err
	}
	if prev, ok := a.rt.ContainerStatus(uid, c.Name); ok {
		rec.mu.Lock()
		rec.last[c.Name] = prev
		rec.mu.Unlock()
	}
	st, err := a.rt.StartContainer(ctx, uid, spec)
	rec.mu.Lock()
	delete(rec.waiting, c.Name)
	rec.mu.Unlock()
	if err != nil {
		rec.mu.Lock()
		rec.waiting[c.Name] = v1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}
		rec.mu.Unlock()
		a.eventf(pod, v1.EventTypeWarning, "Failed", "Error: %v", err)
		// Retried by the back-off of a fresh sync.
		a.queue.AddAfter(uid, a.cfg.RestartBackoff)
		return nil
	}
	if st.Attempt == 0 {
		a.eventf(pod, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
		a.eventf(pod, v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	}
	a.eventf(pod, v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	if st.State == runtime.StateRunning {
		// Probe from now on, not from the next sync.
		a.ensureProbes(pod, rec, c, st, ip)
	}
	return nil
}

func podGrace(pod *v1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// terminate runs graceful deletion: SIGTERM every container, SIGKILL after
// the grace period, report them terminated, release the pod's resources and
// finish the deletion in the API (the kubelet's final delete with grace 0).
// Until then the Pod keeps its deletionTimestamp and its endpoints are
// terminating.
func (a *Agent) terminate(ctx context.Context, pod *v1.Pod) error {
	uid := string(pod.UID)
	a.stopProbes(pod.UID)
	grace := podGrace(pod)
	var wg sync.WaitGroup
	errs := make([]error, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		st, ok := a.rt.ContainerStatus(uid, c.Name)
		if !ok || st.State != runtime.StateRunning {
			continue
		}
		a.eventf(pod, v1.EventTypeNormal, "Killing", "Stopping container %s", c.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.rt.StopContainer(ctx, uid, c.Name, grace)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := a.teardown(ctx, pod.UID, pod, 0); err != nil {
		return err
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("finish deletion of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// teardown stops whatever runs for uid and frees its network. pod may be
// nil (nothing known but the UID).
func (a *Agent) teardown(ctx context.Context, uid types.UID, pod *v1.Pod, grace time.Duration) error {
	a.stopProbes(uid)
	if pod != nil && grace > 0 {
		for _, c := range pod.Spec.Containers {
			if st, ok := a.rt.ContainerStatus(string(uid), c.Name); ok && st.State == runtime.StateRunning {
				if err := a.rt.StopContainer(ctx, string(uid), c.Name, grace); err != nil {
					a.log.Warn("stop container", "uid", uid, "container", c.Name, "err", err)
				}
			}
		}
	}
	if err := a.rt.RemovePod(ctx, string(uid)); err != nil {
		return fmt.Errorf("remove pod %s: %w", uid, err)
	}
	if err := a.net.Detach(ctx, string(uid)); err != nil {
		return fmt.Errorf("detach pod %s: %w", uid, err)
	}
	if err := a.net.Release(string(uid)); err != nil {
		return fmt.Errorf("release IP of pod %s: %w", uid, err)
	}
	a.forget(uid)
	return nil
}

func (a *Agent) stopProbes(uid types.UID) {
	a.mu.Lock()
	rec := a.pods[uid]
	a.mu.Unlock()
	if rec == nil {
		return
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for name, cp := range rec.probes {
		cp.stop()
		delete(rec.probes, name)
	}
}

func (a *Agent) stopContainerProbes(rec *podRecord, name string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if cp := rec.probes[name]; cp != nil {
		cp.stop()
		delete(rec.probes, name)
	}
}

// ensureProbes starts the probe workers of a running container attempt.
func (a *Agent) ensureProbes(pod *v1.Pod, rec *podRecord, c *v1.Container, st runtime.ContainerStatus, ip netip.Addr) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if cp := rec.probes[c.Name]; cp != nil {
		if cp.attempt == st.Attempt {
			return
		}
		cp.stop()
	}
	cp := &containerProbes{attempt: st.Attempt}
	uid := string(pod.UID)
	target := probe.Target{
		PodIP: ip,
		Ports: c.Ports,
		Exec: func(ctx context.Context, cmd []string) (int, []byte, error) {
			return a.execCapture(ctx, uid, c.Name, cmd)
		},
	}
	kick := func(kind probe.Kind) func(probe.Result, string) {
		return func(r probe.Result, out string) {
			if r == probe.Failure && out != "" {
				a.eventf(pod, v1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", capitalize(string(kind)), out)
			}
			a.queue.Add(uid)
		}
	}
	// The probe workers outlive this sync: they get a background context
	// and are stopped explicitly (container exit, pod deletion).
	bg := context.Background()
	if c.StartupProbe != nil {
		cp.startup = probe.StartAt(bg, probe.Startup, c.StartupProbe, target, st.StartedAt, kick("startup"))
	}
	if c.ReadinessProbe != nil {
		cp.readiness = probe.StartAt(bg, probe.Readiness, c.ReadinessProbe, target, st.StartedAt, kick("readiness"))
	}
	if c.LivenessProbe != nil {
		cp.liveness = probe.StartAt(bg, probe.Liveness, c.LivenessProbe, target, st.StartedAt, kick("liveness"))
	}
	rec.probes[c.Name] = cp
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func (a *Agent) eventf(pod *v1.Pod, typ, reason, format string, args ...any) {
	if a.rec != nil {
		a.rec.Eventf(pod, typ, reason, format, args...)
	}
}

// failedKillProbe names the probe ("liveness" or "startup") whose failure
// means the container attempt must be killed, or "".
func failedKillProbe(cp *containerProbes, attempt int) string {
	if cp == nil || cp.attempt != attempt {
		return ""
	}
	if cp.startup != nil && cp.startup.Result() == probe.Failure {
		return "startup"
	}
	if cp.started() && cp.liveness != nil && cp.liveness.Result() == probe.Failure {
		return "liveness"
	}
	return ""
}

// started reports whether the startup probe (if any) has succeeded.
func (cp *containerProbes) started() bool {
	return cp.startup == nil || cp.startup.Result() == probe.Success
}

// ready reports whether the readiness probe (if any) passes, once started.
func (cp *containerProbes) ready() bool {
	return cp.started() && (cp.readiness == nil || cp.readiness.Result() == probe.Success)
}
