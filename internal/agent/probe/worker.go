package probe

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Kind is a probe's role in the container's life.
type Kind string

// Probe kinds.
const (
	Readiness Kind = "readiness"
	Liveness  Kind = "liveness"
	Startup   Kind = "startup"
)

// InitialResult is a worker's result before its first reported probe:
// readiness starts as Failure, liveness as Success, startup as Unknown.
func InitialResult(k Kind) Result {
	switch k {
	case Readiness:
		return Failure
	case Liveness:
		return Success
	default:
		return Unknown
	}
}

// maxRetries is how often a probe that errored (could not run) is tried
// again at once before its result is thrown away (upstream's
// maxProbeRetries).
const maxRetries = 3

// Worker probes one container periodically; see the package doc.
type Worker struct {
	kind     Kind
	probe    *corev1.Probe // with defaults
	target   Target
	onChange func(Result, string)
	unit     time.Duration // one "second" of the probe's timing fields
	cancel   context.CancelFunc
	done     chan struct{}

	mu      sync.Mutex // guards the fields below
	result  Result
	message string

	// Owned by the worker goroutine.
	lastResult Result
	resultRun  int
}

// Start starts a worker for a container that starts now; see StartAt.
func Start(ctx context.Context, kind Kind, p *corev1.Probe, t Target, onChange func(Result, string)) *Worker {
	return StartAt(ctx, kind, p, t, time.Now(), onChange)
}

// StartAt starts a worker for a container that started at startedAt (an
// adopted container's real start, so initialDelaySeconds is not waited
// again). onChange, if not nil, is called from the worker's goroutine each
// time the reported result changes (not for the initial result); it must
// not call Stop and should return quickly (the next probe waits for it).
// The worker ends with ctx or Stop.
func StartAt(ctx context.Context, kind Kind, p *corev1.Probe, t Target, startedAt time.Time, onChange func(Result, string)) *Worker {
	return start(ctx, kind, p, t, startedAt, time.Second, onChange)
}

func start(ctx context.Context, kind Kind, p *corev1.Probe, t Target, startedAt time.Time, unit time.Duration, onChange func(Result, string)) *Worker {
	ctx, cancel := context.WithCancel(ctx)
	w := &Worker{
		kind:     kind,
		target:   t,
		onChange: onChange,
		unit:     unit,
		cancel:   cancel,
		done:     make(chan struct{}),
		result:   InitialResult(kind),
	}
	if p == nil {
		p = &corev1.Probe{}
	}
	w.probe = withDefaults(p)
	w.lastResult = w.result
	go w.run(ctx, startedAt)
	return w
}

// Result returns the current reported result.
func (w *Worker) Result() Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.result
}

// Last returns the current reported result and the message of the probe
// that produced it ("" for the initial result).
func (w *Worker) Last() (Result, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.result, w.message
}

// Stop ends the worker and waits for its goroutine. It may be called more
// than once.
func (w *Worker) Stop() {
	w.cancel()
	<-w.done
}

func (w *Worker) run(ctx context.Context, startedAt time.Time) {
	defer close(w.done)
	delay := time.Until(startedAt.Add(time.Duration(w.probe.InitialDelaySeconds) * w.unit))
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	ticker := time.NewTicker(time.Duration(w.probe.PeriodSeconds) * w.unit)
	defer ticker.Stop()
	for w.probeOnce(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// probeOnce runs one probe and applies the thresholds; it returns false
// when the worker goes on hold.
func (w *Worker) probeOnce(ctx context.Context) bool {
	var (
		result Result
		msg    string
		err    error
	)
	for range maxRetries {
		result, msg, err = Do(ctx, w.probe, w.target)
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return ctx.Err() == nil // the kubelet throws an errored probe's result away
	}
	if result == w.lastResult {
		w.resultRun++
	} else {
		w.lastResult, w.resultRun = result, 1
	}
	if (result == Failure && w.resultRun < int(w.probe.FailureThreshold)) ||
		(result == Success && w.resultRun < int(w.probe.SuccessThreshold)) {
		return true
	}
	w.mu.Lock()
	changed := w.result != result
	w.result, w.message = result, msg
	w.mu.Unlock()
	if changed && w.onChange != nil && ctx.Err() == nil {
		w.onChange(result, msg)
	}
	if (w.kind == Liveness && result == Failure) || w.kind == Startup {
		return false // on hold until the container is restarted
	}
	return true
}
