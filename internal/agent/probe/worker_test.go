package probe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// unit makes one probe "second" 10ms in these tests.
const unit = 10 * time.Millisecond

// flipServer answers 200 or 500 and counts the answers of each kind since
// its last flip.
type flipServer struct {
	mu      sync.Mutex // guards the fields below
	healthy bool
	served  int // answers given in the current mode
}

func (s *flipServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	healthy := s.healthy
	s.served++
	s.mu.Unlock()
	if !healthy {
		http.Error(w, "unhealthy", http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (s *flipServer) set(healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.healthy, s.served = healthy, 0
}

func (s *flipServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

// change is one onChange call and how many answers the server had given
// in its current mode at that moment.
type change struct {
	result Result
	msg    string
	served int
}

func startFlip(t *testing.T, kind Kind, healthy bool, success, failure int32) (*flipServer, *Worker, chan change) {
	t.Helper()
	s := &flipServer{healthy: healthy}
	port := serverPort(t, s)
	p := &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(int32(port)), Path: "/healthz"}},
		PeriodSeconds:    1,
		SuccessThreshold: success,
		FailureThreshold: failure,
	}
	ch := make(chan change, 16)
	w := start(context.Background(), kind, p, Target{PodIP: loopback}, time.Now(), unit, func(r Result, msg string) {
		ch <- change{r, msg, s.count()}
	})
	t.Cleanup(w.Stop)
	return s, w, ch
}

func next(t *testing.T, ch chan change) change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no result change")
		return change{}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReadinessThresholds(t *testing.T) {
	s, w, ch := startFlip(t, Readiness, true, 2, 3)
	c := next(t, ch)
	if c.result != Success || c.served != 2 {
		t.Fatalf("first change %+v, want Success after exactly 2 successes", c)
	}
	if w.Result() != Success {
		t.Fatalf("Result() = %v", w.Result())
	}
	s.set(false)
	c = next(t, ch)
	if c.result != Failure || c.served != 3 || c.msg != "HTTP probe failed with statuscode: 500" {
		t.Fatalf("change %+v, want Failure after exactly 3 failures", c)
	}
	// Readiness keeps probing after a failure, and recovers.
	s.set(true)
	c = next(t, ch)
	if c.result != Success || c.served != 2 {
		t.Fatalf("change %+v, want Success after exactly 2 successes", c)
	}
	if r, msg := w.Last(); r != Success || msg != "ok\n" {
		t.Errorf("Last() = %v, %q", r, msg)
	}
}

func TestLivenessHoldsAfterFailure(t *testing.T) {
	s, w, ch := startFlip(t, Liveness, false, 1, 3)
	c := next(t, ch)
	if c.result != Failure || c.served != 3 {
		t.Fatalf("change %+v, want Failure after exactly 3 failures", c)
	}
	w.Stop()
	if n := s.count(); n != 3 {
		t.Errorf("%d probes, want 3: liveness goes on hold after reporting a failure", n)
	}
	if w.Result() != Failure {
		t.Errorf("Result() = %v", w.Result())
	}
	w.Stop() // twice is fine
}

func TestLivenessFailureNeedsConsecutive(t *testing.T) {
	// A failure run broken by a success does not count.
	var calls atomic.Int32
	codes := []int{1, 1, 0, 1, 1, 1} // then 0 forever
	exec := func(ctx context.Context, cmd []string) (int, []byte, error) {
		i := int(calls.Add(1)) - 1
		if i < len(codes) {
			return codes[i], nil, nil
		}
		return 0, nil, nil
	}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check"}}}, PeriodSeconds: 1, FailureThreshold: 3}
	ch := make(chan Result, 4)
	w := start(context.Background(), Liveness, p, Target{Exec: exec}, time.Now(), unit, func(r Result, _ string) { ch <- r })
	defer w.Stop()
	select {
	case r := <-ch:
		if r != Failure || calls.Load() != 6 {
			t.Fatalf("change to %v after %d probes, want Failure after 6", r, calls.Load())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no change")
	}
}

func TestStartupHoldsAfterSuccess(t *testing.T) {
	s, w, ch := startFlip(t, Startup, true, 1, 3)
	if c := next(t, ch); c.result != Success || c.served != 1 {
		t.Fatalf("change %+v, want Success after 1 probe", c)
	}
	w.Stop()
	if n := s.count(); n != 1 {
		t.Errorf("%d probes, want 1: startup stops once it reported", n)
	}
}

func TestInitialResultsAndDelay(t *testing.T) {
	fast := &flipServer{healthy: true}
	slow := &flipServer{healthy: true}
	probeOf := func(s *flipServer, delay int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(int32(serverPort(t, s)))}},
			PeriodSeconds:       1,
			InitialDelaySeconds: delay,
		}
	}
	ctx := context.Background()
	delayed := map[Kind]*Worker{}
	for _, k := range []Kind{Readiness, Liveness, Startup} {
		w := start(ctx, k, probeOf(slow, 3600), Target{PodIP: loopback}, time.Now(), unit, nil)
		t.Cleanup(w.Stop)
		delayed[k] = w
	}
	w := start(ctx, Readiness, probeOf(fast, 0), Target{PodIP: loopback}, time.Now(), unit, nil)
	t.Cleanup(w.Stop)
	eventually(t, "undelayed worker probes", func() bool { return fast.count() >= 5 })
	if n := slow.count(); n != 0 {
		t.Errorf("delayed workers probed %d times during initialDelaySeconds", n)
	}
	for k, w := range delayed {
		if r, msg := w.Last(); r != InitialResult(k) || msg != "" {
			t.Errorf("%s during initial delay: %v %q, want %v", k, r, msg, InitialResult(k))
		}
	}
	if w.Result() != Success {
		t.Errorf("undelayed readiness = %v", w.Result())
	}

	// An adopted container that started long ago is not delayed again.
	adopted := &flipServer{healthy: true}
	a := start(ctx, Readiness, probeOf(adopted, 3600), Target{PodIP: loopback}, time.Now().Add(-time.Hour), unit, nil)
	t.Cleanup(a.Stop)
	eventually(t, "adopted container is probed", func() bool { return a.Result() == Success })
}

func TestErroredProbesAreIgnored(t *testing.T) {
	var calls atomic.Int32
	exec := func(ctx context.Context, cmd []string) (int, []byte, error) {
		calls.Add(1)
		return -1, nil, errors.New("container not found")
	}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check"}}}, PeriodSeconds: 1, FailureThreshold: 1}
	changed := make(chan Result, 1)
	w := start(context.Background(), Readiness, p, Target{Exec: exec}, time.Now(), unit, func(r Result, _ string) { changed <- r })
	eventually(t, "several probes", func() bool { return calls.Load() >= 3*maxRetries })
	w.Stop()
	select {
	case r := <-changed:
		t.Errorf("errored probes changed the result to %v", r)
	default:
	}
	if w.Result() != Failure {
		t.Errorf("Result() = %v, want the initial Failure", w.Result())
	}
}

func TestExecWorkerAndCancel(t *testing.T) {
	var code atomic.Int32
	exec := func(ctx context.Context, cmd []string) (int, []byte, error) {
		c := int(code.Load())
		return c, []byte(fmt.Sprintf("%s exited %d", cmd[0], c)), nil
	}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check"}}}, PeriodSeconds: 1, FailureThreshold: 1}
	ch := make(chan change, 4)
	ctx, cancel := context.WithCancel(context.Background())
	w := start(ctx, Readiness, p, Target{Exec: exec}, time.Now(), unit, func(r Result, msg string) { ch <- change{result: r, msg: msg} })
	if c := next(t, ch); c.result != Success || c.msg != "check exited 0" {
		t.Fatalf("change %+v", c)
	}
	code.Store(2)
	if c := next(t, ch); c.result != Failure || c.msg != "check exited 2" {
		t.Fatalf("change %+v", c)
	}
	cancel()
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not end with its context")
	}
	w.Stop()
}
