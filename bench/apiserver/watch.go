package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// watchResult holds the fan-out latencies of one watch run.
type watchResult struct {
	watchers, creates int
	fromStart         []time.Duration // event received − create sent
	fromReturn        []time.Duration // event received − create returned (can be < 0)
	missing           int             // (watcher, create) pairs never delivered
	createFailed      int
	firstErr          error
}

const watchPrefix = "w-"

// watcher receives ADDED events for ns and records when each arrived.
type watcher struct {
	mu   sync.Mutex // guards got
	got  map[int]time.Time
	warm chan struct{} // closed when the warm-up object arrived
	done chan struct{} // closed when the event loop ends
	err  error         // set before done is closed
}

func (w *watcher) run(ctx context.Context, wi watch.Interface, ns string) {
	defer close(w.done)
	defer wi.Stop()
	warmed := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-wi.ResultChan():
			if !ok {
				w.err = fmt.Errorf("watch closed by server")
				return
			}
			now := time.Now()
			if ev.Type == watch.Error {
				w.err = fmt.Errorf("watch error event: %v", ev.Object)
				return
			}
			s, isSvc := ev.Object.(*corev1.Service)
			if ev.Type != watch.Added || !isSvc || s.Namespace != ns {
				continue
			}
			if s.Name == "warm" && !warmed {
				warmed = true
				close(w.warm)
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(s.Name, watchPrefix))
			if err != nil {
				continue
			}
			w.mu.Lock()
			if _, dup := w.got[i]; !dup {
				w.got[i] = now
			}
			w.mu.Unlock()
		}
	}
}

// measureWatch opens nWatchers watches of all Services (every namespace, as
// kube-proxy watches), each on its own connection, then creates nCreates
// Services in ns one after another, starting one every interval, and
// measures when each watcher receives each ADDED event.
func measureWatch(ctx context.Context, creator kubernetes.Interface, watchClients []kubernetes.Interface, ns string, nCreates int, interval time.Duration) (watchResult, error) {
	res := watchResult{watchers: len(watchClients), creates: nCreates}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// Start from the current revision so no watcher replays history.
	l, err := creator.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return res, fmt.Errorf("bench: list for watch rv: %w", err)
	}
	rv := l.ResourceVersion
	if rv == "" {
		return res, fmt.Errorf("bench: list of %s returned no resourceVersion", ns)
	}

	ws := make([]*watcher, len(watchClients))
	for i, cs := range watchClients {
		wi, err := cs.CoreV1().Services(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
		if err != nil {
			return res, fmt.Errorf("bench: watcher %d: %w", i, err)
		}
		ws[i] = &watcher{got: make(map[int]time.Time, nCreates), warm: make(chan struct{}), done: make(chan struct{})}
		go ws[i].run(ctx, wi, ns)
	}
	defer func() {
		cancel()
		for _, w := range ws {
			if w != nil {
				<-w.done
			}
		}
	}()

	// Warm-up: every watcher must see one object before timing starts, so
	// connection set-up is not measured.
	if _, err := createOne(ctx, creator, ns, "warm"); err != nil {
		return res, fmt.Errorf("bench: warm-up create: %w", err)
	}
	warmBy := time.After(60 * time.Second)
	for i, w := range ws {
		select {
		case <-w.warm:
		case <-w.done:
			return res, fmt.Errorf("bench: watcher %d ended before warm-up: %v", i, w.err)
		case <-warmBy:
			return res, fmt.Errorf("bench: watcher %d did not see the warm-up object within 60s", i)
		}
	}

	starts := make([]time.Time, nCreates)
	returns := make([]time.Time, nCreates)
	okCreate := make([]bool, nCreates)
	next := time.Now()
	for i := range nCreates {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		starts[i] = time.Now()
		_, err := createOne(ctx, creator, ns, fmt.Sprintf("%s%05d", watchPrefix, i))
		returns[i] = time.Now()
		if err != nil {
			res.createFailed++
			if res.firstErr == nil {
				res.firstErr = err
			}
			if res.createFailed > 10 {
				break
			}
			continue
		}
		okCreate[i] = true
	}

	// Wait (bounded) for the stragglers.
	want := nCreates - res.createFailed
	waitUntil := time.Now().Add(30 * time.Second)
	for time.Now().Before(waitUntil) {
		all := true
		for _, w := range ws {
			w.mu.Lock()
			n := len(w.got)
			w.mu.Unlock()
			if n < want {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, w := range ws {
		w.mu.Lock()
		for i := range nCreates {
			if !okCreate[i] {
				continue
			}
			t, ok := w.got[i]
			if !ok {
				res.missing++
				continue
			}
			res.fromStart = append(res.fromStart, t.Sub(starts[i]))
			res.fromReturn = append(res.fromReturn, t.Sub(returns[i]))
		}
		w.mu.Unlock()
		select {
		case <-w.done: // w.err is only safe to read once the loop has ended
			if w.err != nil && res.firstErr == nil {
				res.firstErr = w.err
			}
		default:
		}
	}
	return res, nil
}
