package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// The bench's pods: namespace and label.
const (
	podNamespace = "default"
	podLabel     = "app=bench-agent"
)

// podTimes are the moments one pod passed each step, as seen by the bench.
type podTimes struct {
	createSent, created time.Time // create call sent / returned
	scheduled           time.Time // first seen with spec.nodeName
	running             time.Time // first seen with phase Running
	ready               time.Time // first seen with Ready=True
	deleteSent, deleted time.Time // delete call sent / DELETED event seen

	// From the agent's log.
	sandboxStarted, containerStarted time.Time
	// The Ready condition's lastTransitionTime as the agent wrote it
	// (second precision): when the agent decided the pod was Ready.
	readyTransition time.Time

	// From the container's own log (CRI timestamps): netexec's "started"
	// line and the first /readyz request it served.
	uid                       string
	serving, firstProbeServed time.Time
}

// observer follows the bench's pods with one watch, opened before the first
// create, and records when each is first seen scheduled, Running, Ready and
// deleted.
type observer struct {
	want int

	mu        sync.Mutex // guards the fields below
	pods      map[string]*podTimes
	ready     int
	deleted   int
	allReady  chan struct{}
	allGone   chan struct{}
	watchErrs int
}

func startObserver(ctx context.Context, c kubernetes.Interface, want int) (*observer, error) {
	obs, existing, err := watchPods(ctx, c, want)
	if err == nil && existing > 0 {
		err = fmt.Errorf("%d bench pods exist before the run", existing)
	}
	return obs, err
}

// watchPods lists the bench pods and follows them from that list with a
// RetryWatcher; it returns the observer and how many pods the list held.
func watchPods(ctx context.Context, c kubernetes.Interface, want int) (*observer, int, error) {
	list, err := c.CoreV1().Pods(podNamespace).List(ctx, metav1.ListOptions{LabelSelector: podLabel})
	if err != nil {
		return nil, 0, fmt.Errorf("list pods: %w", err)
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		opts.LabelSelector = podLabel
		return c.CoreV1().Pods(podNamespace).Watch(ctx, opts)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
	if err != nil {
		return nil, 0, fmt.Errorf("watch pods: %w", err)
	}
	o := &observer{want: want, pods: map[string]*podTimes{}, allReady: make(chan struct{}), allGone: make(chan struct{})}
	if want == 0 {
		close(o.allReady)
		close(o.allGone)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				o.event(ev, time.Now())
			}
		}
	}()
	return o, len(list.Items), nil
}

// times returns the record of pod name, creating it.
func (o *observer) times(name string) *podTimes {
	t := o.pods[name]
	if t == nil {
		t = &podTimes{}
		o.pods[name] = t
	}
	return t
}

func (o *observer) event(ev watch.Event, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pod, ok := ev.Object.(*v1.Pod)
	if !ok {
		if ev.Type == watch.Error {
			o.watchErrs++
		}
		return
	}
	t := o.times(pod.Name)
	t.uid = string(pod.UID)
	if ev.Type == watch.Deleted {
		if t.deleted.IsZero() {
			t.deleted = now
			o.deleted++
			if o.deleted == o.want {
				close(o.allGone)
			}
		}
		return
	}
	if pod.DeletionTimestamp != nil {
		return
	}
	if t.scheduled.IsZero() && pod.Spec.NodeName != "" {
		t.scheduled = now
	}
	if t.running.IsZero() && pod.Status.Phase == v1.PodRunning {
		t.running = now
	}
	if t.ready.IsZero() && podReady(pod) {
		t.ready = now
		for _, c := range pod.Status.Conditions {
			if c.Type == v1.PodReady {
				t.readyTransition = c.LastTransitionTime.Time
			}
		}
		o.ready++
		if o.ready == o.want {
			close(o.allReady)
		}
	}
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// snapshot copies every pod's times.
func (o *observer) snapshot() map[string]podTimes {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]podTimes, len(o.pods))
	for k, v := range o.pods {
		out[k] = *v
	}
	return out
}

// podName is the name of pod i.
func podName(i int) string { return fmt.Sprintf("bench-agent-%03d", i) }

// benchPod is pod i: agnhost netexec with an httpGet readiness probe on
// /readyz every second, left to the scheduler.
func benchPod(i int) *v1.Pod {
	grace := int64(30)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(i), Namespace: podNamespace, Labels: map[string]string{"app": "bench-agent"}},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name:    "netexec",
				Image:   "registry.k8s.io/e2e-test-images/agnhost:2.53",
				Command: []string{"svcnet", "agnhost", "netexec", "--http-port=8080"},
				Ports:   []v1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: v1.ProtocolTCP}},
				ReadinessProbe: &v1.Probe{
					ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// runResult is the create phase's outcome.
type runResult struct {
	pods       map[string]podTimes
	firstSent  time.Time
	lastReady  time.Time
	createErrs int
	timedOut   bool
	watchErrs  int
}

// createPods creates o.pods pods with o.workers goroutines and waits until
// the observer has seen every one Ready (or o.timeout).
func createPods(ctx context.Context, c kubernetes.Interface, o options, obs *observer) (runResult, error) {
	var res runResult
	idx := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	res.firstSent = time.Now()
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				p := benchPod(i)
				sent := time.Now()
				_, err := c.CoreV1().Pods(podNamespace).Create(ctx, p, metav1.CreateOptions{})
				done := time.Now()
				obs.mu.Lock()
				t := obs.times(p.Name)
				t.createSent, t.created = sent, done
				obs.mu.Unlock()
				if err != nil {
					mu.Lock()
					res.createErrs++
					if firstErr == nil {
						firstErr = fmt.Errorf("create %s: %w", p.Name, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range o.pods {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if res.createErrs > 0 {
		return res, fmt.Errorf("%d of %d creates failed; first: %w", res.createErrs, o.pods, firstErr)
	}
	select {
	case <-obs.allReady:
	case <-time.After(o.timeout - time.Since(res.firstSent)):
		res.timedOut = true
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.pods = obs.snapshot()
	for _, t := range res.pods {
		if t.ready.After(res.lastReady) {
			res.lastReady = t.ready
		}
	}
	obs.mu.Lock()
	res.watchErrs = obs.watchErrs
	obs.mu.Unlock()
	if res.timedOut {
		n := 0
		for _, t := range res.pods {
			if !t.ready.IsZero() {
				n++
			}
		}
		fmt.Printf("WARNING: only %d of %d pods Ready after %v; the table covers those\n", n, o.pods, o.timeout)
	}
	return res, nil
}

// restartCount sums the bench pods' container restarts.
func restartCount(ctx context.Context, c kubernetes.Interface) int {
	list, err := c.CoreV1().Pods(podNamespace).List(ctx, metav1.ListOptions{LabelSelector: podLabel})
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range list.Items {
		for _, s := range p.Status.ContainerStatuses {
			n += int(s.RestartCount)
		}
	}
	return n
}

// delResult is the delete phase's outcome.
type delResult struct {
	pods      map[string]podTimes
	firstSent time.Time
	lastGone  time.Time
	timedOut  bool
}

// deletePods deletes every bench pod (default grace period) with o.workers
// goroutines and waits until the observer has seen each DELETED event.
func deletePods(ctx context.Context, c kubernetes.Interface, o options) (delResult, error) {
	// A fresh watch from the current list: every pod's DELETED event
	// counts once.
	obs, _, err := watchPods(ctx, c, o.pods)
	if err != nil {
		return delResult{}, err
	}
	var res delResult
	idx := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	res.firstSent = time.Now()
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				name := podName(i)
				sent := time.Now()
				err := c.CoreV1().Pods(podNamespace).Delete(ctx, name, metav1.DeleteOptions{})
				obs.mu.Lock()
				obs.times(name).deleteSent = sent
				obs.mu.Unlock()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("delete %s: %w", name, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range o.pods {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	select {
	case <-obs.allGone:
	case <-time.After(o.timeout):
		res.timedOut = true
		fmt.Printf("WARNING: not every pod gone %v after the deletes\n", o.timeout)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.pods = obs.snapshot()
	for _, t := range res.pods {
		if t.deleted.After(res.lastGone) {
			res.lastGone = t.deleted
		}
	}
	return res, nil
}

// eventReasons counts the Events in the pods' namespace by reason (the
// agent posts them with the same client, and rate limit, as pod status).
func eventReasons(ctx context.Context, c kubernetes.Interface) map[string]int {
	list, err := c.CoreV1().Events(podNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, e := range list.Items {
		out[e.Reason] += max(1, int(e.Count))
	}
	return out
}
