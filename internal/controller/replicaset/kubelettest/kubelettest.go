// Package kubelettest plays the node side for controller tests, as kwok
// does against a real API server: it registers Ready Nodes, binds pods that
// have no node (round robin, when asked to), reports them Running with a
// PodIP and then Ready, and finishes graceful deletions with a delete of
// grace period 0. It touches nothing but the API.
package kubelettest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Options configure a Kubelet.
type Options struct {
	// Nodes are created (Ready, with an InternalIP from 192.0.2.0/24)
	// unless they exist. Default: node-1, node-2.
	Nodes []string
	// Bind makes the kubelet bind pods without spec.nodeName to Nodes in
	// turn (standing in for the scheduler).
	Bind bool
	// ReadyDelay is the time between Running and Ready.
	ReadyDelay time.Duration
	// Ready, when set, decides whether a running pod may become ready;
	// pods it refuses stay Running and not ready (a failing probe). It is
	// asked again on every pod event and by Recheck.
	Ready func(*corev1.Pod) bool
}

// Kubelet is a running fake node agent.
type Kubelet struct {
	t      testing.TB
	client kubernetes.Interface
	opts   Options
	pods   corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex     // guards the fields below
	next    int            // round-robin binding cursor
	nodeIdx map[string]int // node → index for pod IPs
	ipNext  map[string]int // node → next pod IP
}

// Start runs a Kubelet until the test ends.
func Start(t testing.TB, client kubernetes.Interface, opts Options) *Kubelet {
	t.Helper()
	if len(opts.Nodes) == 0 {
		opts.Nodes = []string{"node-1", "node-2"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i, n := range opts.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/hostname": n}},
			Status: corev1.NodeStatus{
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
					LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
				Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", i+1)}, {Type: corev1.NodeHostName, Address: n}},
			},
		}
		created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			t.Fatalf("kubelettest: create node %s: %v", n, err)
		}
		created.Status = node.Status
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("kubelettest: node %s status: %v", n, err)
		}
	}
	k := &Kubelet{
		t: t, client: client, opts: opts, ipNext: map[string]int{}, nodeIdx: map[string]int{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Pods()
	k.pods = inf.Lister()
	enqueue := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n interface{}) { enqueue(n) },
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for k.processNext(ctx) {
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		k.queue.ShutDown()
		wg.Wait()
		f.Shutdown()
	})
	return k
}

// Recheck re-evaluates every pod (after the Ready func changed its mind).
func (k *Kubelet) Recheck() {
	pods, _ := k.pods.List(labels.Everything())
	for _, p := range pods {
		k.queue.Add(p.Namespace + "/" + p.Name)
	}
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	after, err := k.sync(ctx, key)
	switch {
	case err != nil && ctx.Err() == nil:
		k.queue.AddRateLimited(key)
	case after > 0:
		k.queue.Forget(key)
		k.queue.AddAfter(key, after)
	default:
		k.queue.Forget(key)
	}
	return true
}

func (k *Kubelet) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pods := k.client.CoreV1().Pods(ns)
	switch {
	case pod.DeletionTimestamp != nil:
		if pod.Spec.NodeName == "" {
			return 0, nil // the server removes unbound pods itself
		}
		zero := int64(0)
		err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return 0, nil
		}
		return 0, err

	case pod.Spec.NodeName == "":
		if !k.opts.Bind {
			return 0, nil
		}
		k.mu.Lock()
		node := k.opts.Nodes[k.next%len(k.opts.Nodes)]
		k.next++
		k.mu.Unlock()
		err := pods.Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return 0, nil
		}
		return 0, err

	case pod.Status.Phase != corev1.PodRunning:
		p := pod.DeepCopy()
		now := metav1.Now()
		ip := k.podIP(pod.Spec.NodeName)
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		p.Status.HostIP = k.nodeIP(pod.Spec.NodeName)
		p.Status.StartTime = &now
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now},
		}
		p.Status.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptrTrue(),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return 0, nil // a newer event follows
		}
		return 0, err

	case !isReady(pod):
		if k.opts.Ready != nil && !k.opts.Ready(pod) {
			return 0, nil
		}
		if wait := time.Until(pod.Status.StartTime.Add(k.opts.ReadyDelay)); wait > 0 {
			return wait, nil
		}
		p := pod.DeepCopy()
		now := metav1.Now()
		for i := range p.Status.Conditions {
			if t := p.Status.Conditions[i].Type; t == corev1.PodReady || t == corev1.ContainersReady {
				p.Status.Conditions[i].Status = corev1.ConditionTrue
				p.Status.Conditions[i].LastTransitionTime = now
			}
		}
		for i := range p.Status.ContainerStatuses {
			p.Status.ContainerStatuses[i].Ready = true
		}
		_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return 0, nil
		}
		return 0, err
	}
	return 0, nil
}

// podIP hands out 10.244.<node>.<n>: each node gets its own /24 (then
// the next free one), as node IPAM would give it.
func (k *Kubelet) podIP(node string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	idx, ok := k.nodeIdx[node]
	if !ok {
		idx = len(k.nodeIdx)
		k.nodeIdx[node] = idx
	}
	n := k.ipNext[node]
	k.ipNext[node]++
	return fmt.Sprintf("10.244.%d.%d", (idx+(n/250)*64)%256, n%250+2)
}

func (k *Kubelet) nodeIP(node string) string {
	for i, n := range k.opts.Nodes {
		if n == node {
			return fmt.Sprintf("192.0.2.%d", i+1)
		}
	}
	return ""
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptrTrue() *bool { b := true; return &b }
