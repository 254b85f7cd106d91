package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	nodes = 10
	// waitEach bounds the wait for one measured transition; a transition
	// not seen by then counts as missing.
	waitEach = 10 * time.Second
)

type bench struct {
	o      options
	srv    *testServer
	logger *slog.Logger
	r      *report
}

// propagation is phase 1: pod Ready → slice on an idle server.
func (b *bench) propagation(ctx context.Context) error {
	o := b.o
	client := b.srv.client(0)
	const ns = "prop"
	if err := setup(ctx, client, ns); err != nil {
		return err
	}
	fmt.Printf("phase 1: creating %d Services × %d pods (running, not ready)...\n", o.services, o.podsPerService)
	pods := make([]*corev1.Pod, o.services*o.podsPerService)
	err := parallel(ctx, o.createWorkers, o.services, func(ctx context.Context, i int) error {
		for j := range o.podsPerService {
			p, err := createServicePod(ctx, client, ns, i, j, o.podsPerService, false)
			if err != nil {
				return err
			}
			pods[i*o.podsPerService+j] = p
		}
		return createService(ctx, client, ns, i)
	})
	if err != nil {
		return err
	}
	obs, err := newObserver(ctx, b.srv.client(0), ns, o.podsPerService)
	if err != nil {
		return err
	}
	defer obs.stop()
	cpu := startCPU()
	_, stop, err := startControllers(b.srv, o, b.logger)
	if err != nil {
		return err
	}
	defer stop()
	if err := waitFor(ctx, 5*time.Minute, func() bool { return obs.readyCount(false) == len(pods) }); err != nil {
		return fmt.Errorf("initial slices: %d of %d endpoints seen: %w", obs.readyCount(false), len(pods), err)
	}
	b.r.phaseCPU = append(b.r.phaseCPU, cpu.end("phase 1 initial sync"))

	scenario := fmt.Sprintf("%d svc / %d pods", o.services, len(pods))
	rand.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	fmt.Printf("phase 1: measuring %d Ready and %d not-Ready transitions, one at a time...\n", len(pods), len(pods))
	cpu = startCPU()
	ready, err := b.measure(ctx, client, obs, pods, true)
	if err != nil {
		return err
	}
	b.r.add("Ready → slice ready, "+scenario, ready, true)
	unready, err := b.measure(ctx, client, obs, pods, false)
	if err != nil {
		return err
	}
	b.r.add("not Ready → slice not ready, "+scenario, unready, false)
	b.r.phaseCPU = append(b.r.phaseCPU, cpu.end("phase 1 measurement"))
	return nil
}

// coldStart is phases 2 and 3.
func (b *bench) coldStart(ctx context.Context) error {
	o := b.o
	client := b.srv.client(0)
	const ns = "cold"
	if err := createNamespace(ctx, client, ns); err != nil {
		return err
	}
	fmt.Printf("phase 2: creating up to %d Services × %d pods (ready) with %d clients, budget %s...\n",
		o.coldServices, o.coldPods, o.createWorkers, o.coldCreateBudget)
	cpu := startCPU()
	start := time.Now()
	deadline := start.Add(o.coldCreateBudget)
	var created atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.createWorkers)
	for range o.createWorkers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= o.coldServices {
					return
				}
				for j := range o.coldPods {
					if _, err := createServicePod(ctx, client, ns, i, j, o.coldPods, true); err != nil {
						errc <- err
						return
					}
				}
				if err := createService(ctx, client, ns, i); err != nil {
					errc <- err
					return
				}
				if n := created.Add(1); n%1000 == 0 {
					fmt.Printf("  %d Services with their pods after %s\n", n, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("cold-start objects: %w", err)
	}
	// Workers stop at the deadline mid-Service; count only complete ones
	// (a Service is created after its pods, so a partial one has no
	// Service and is ignored by the controllers).
	n := int(created.Load())
	createTime := time.Since(start)
	b.r.phaseCPU = append(b.r.phaseCPU, cpu.end("phase 2 object creation"))
	cs := coldResult{services: n, podsPer: o.coldPods, createTime: createTime, wantServices: o.coldServices}
	fmt.Printf("phase 2: %d Services, %d pods created in %s; starting the controllers cold...\n", n, n*o.coldPods, createTime.Round(time.Second))

	obs, err := newObserver(ctx, b.srv.client(0), ns, o.coldPods)
	if err != nil {
		return err
	}
	defer obs.stop()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cpu = startCPU()
	t0 := time.Now()
	lastReport := t0
	factory, stop, err := startControllers(b.srv, o, b.logger)
	if err != nil {
		return err
	}
	defer stop()
	go func() {
		factory.WaitForCacheSync(ctx.Done())
		cs.mu.Lock()
		cs.cacheSync = time.Since(t0)
		cs.mu.Unlock()
	}()
	timeout := time.After(o.coldTimeout)
	for {
		s, e, first := obs.counts()
		if !first.IsZero() && cs.firstSlice == 0 {
			cs.firstSlice = first.Sub(t0)
		}
		if s >= n && cs.slices == 0 {
			cs.slices = time.Since(t0)
		}
		if e >= n && cs.endpoints == 0 {
			cs.endpoints = time.Since(t0)
		}
		if cs.slices != 0 && cs.endpoints != 0 {
			break
		}
		if time.Since(lastReport) > 15*time.Second {
			lastReport = time.Now()
			fmt.Printf("  after %s: %d/%d Services complete in slices, %d in Endpoints\n", time.Since(t0).Round(time.Second), s, n, e)
		}
		select {
		case <-obs.onChange:
		case <-time.After(time.Second):
		case <-timeout:
			cs.timedOut = true
			cs.slicesDone, cs.endpointsDone = s, e
		case <-ctx.Done():
			return ctx.Err()
		}
		if cs.timedOut {
			break
		}
	}
	b.r.phaseCPU = append(b.r.phaseCPU, cpu.end("phase 2 cold-start convergence"))
	b.r.cold = &cs
	if cs.timedOut || n == 0 || o.scalePods <= 0 {
		return nil
	}

	// Phase 3: propagation at this scale.
	k := min(o.scalePods, n*o.coldPods)
	fmt.Printf("phase 3: measuring %d not-Ready and Ready transitions with %d Services in place...\n", k, n+o.services)
	var pods []*corev1.Pod
	for _, idx := range rand.Perm(n * o.coldPods)[:k] {
		p, err := client.CoreV1().Pods(ns).Get(ctx, podName(idx/o.coldPods, idx%o.coldPods), metav1.GetOptions{})
		if err != nil {
			return err
		}
		pods = append(pods, p)
	}
	scenario := fmt.Sprintf("%d svc / %d pods", n+o.services, n*o.coldPods+o.services*o.podsPerService)
	cpu = startCPU()
	unready, err := b.measure(ctx, client, obs, pods, false)
	if err != nil {
		return err
	}
	ready, err := b.measure(ctx, client, obs, pods, true)
	if err != nil {
		return err
	}
	b.r.add("Ready → slice ready, "+scenario, ready, false)
	b.r.add("not Ready → slice not ready, "+scenario, unready, false)
	b.r.phaseCPU = append(b.r.phaseCPU, cpu.end("phase 3 measurement"))
	return nil
}

// measure flips each pod to ready, one at a time, and times the status
// write and the moment the observer sees the endpoint flip. The pods slice
// is updated with the written objects.
func (b *bench) measure(ctx context.Context, client kubernetes.Interface, obs *observer, pods []*corev1.Pod, ready bool) (latencies, error) {
	var l latencies
	for i, p := range pods {
		if ctx.Err() != nil {
			return l, ctx.Err()
		}
		next := p.DeepCopy()
		setStatus(next, next.Status.PodIP, ready)
		seen := obs.expect(p.Name, ready)
		sent := time.Now()
		out, err := client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
		written := time.Now()
		if err != nil {
			obs.cancel(p.Name)
			return l, fmt.Errorf("pod %s status: %w", p.Name, err)
		}
		pods[i] = out
		l.write = append(l.write, written.Sub(sent))
		select {
		case at := <-seen:
			l.fromWritten = append(l.fromWritten, max(0, at.Sub(written)))
			l.fromSent = append(l.fromSent, at.Sub(sent))
		case <-time.After(waitEach):
			obs.cancel(p.Name)
			l.missing++
		}
		time.Sleep(b.o.gap)
	}
	return l, nil
}

func setup(ctx context.Context, c kubernetes.Interface, ns string) error {
	if err := createNamespace(ctx, c, ns); err != nil {
		return err
	}
	for i := range nodes {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("node-%d", i),
			Labels: map[string]string{corev1.LabelTopologyZone: fmt.Sprintf("zone-%d", i%3)},
		}}
		created, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node: %w", err)
		}
		created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("127.0.1.%d", i+1)}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node status: %w", err)
		}
	}
	return nil
}

func createNamespace(ctx context.Context, c kubernetes.Interface, ns string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

func serviceName(i int) string { return fmt.Sprintf("svc-%d", i) }
func podName(i, j int) string  { return fmt.Sprintf("svc-%d-pod-%d", i, j) }

func createService(ctx context.Context, c kubernetes.Interface, ns string, i int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(i), Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": serviceName(i)},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s: %w", svc.Name, err)
	}
	return nil
}

// createServicePod creates pod j of Service i, bound to a node, and writes
// its running status with a unique IP.
func createServicePod(ctx context.Context, c kubernetes.Interface, ns string, i, j, per int, ready bool) (*corev1.Pod, error) {
	seq := i*per + j
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(i, j), Namespace: ns, Labels: map[string]string{"app": serviceName(i)}},
		Spec: corev1.PodSpec{
			NodeName: fmt.Sprintf("node-%d", seq%nodes),
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	created, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod: %w", err)
	}
	// Unique per namespace; 10.64.0.0/10 holds 4M addresses.
	ip := fmt.Sprintf("10.%d.%d.%d", 64+seq>>16, (seq>>8)&255, seq&255)
	setStatus(created, ip, ready)
	out, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod status: %w", err)
	}
	return out, nil
}

// setStatus plays the kubelet: Running, the IP, Ready/ContainersReady.
func setStatus(pod *corev1.Pod, ip string, ready bool) {
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
	}
}

// parallel runs fn(i) for i in [0,n) on workers goroutines; the first
// error stops it.
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
