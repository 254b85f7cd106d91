package deployment_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"k8s.io/kubectl/pkg/polymorphichelpers"

	"github.com/svcnet/svcnet/internal/controller/deployment"
	"github.com/svcnet/svcnet/internal/controller/gc"
	"github.com/svcnet/svcnet/internal/controller/replicaset"
	"github.com/svcnet/svcnet/internal/controller/replicaset/kubelettest"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// serviceEnvYAML is the seed's Service-Env.yaml.
const serviceEnvYAML = `apiVersion: apps/v1
kind: Deployment      
metadata:
  name: service-env
  namespace: default
spec: 
  replicas: 3
  selector:
    matchLabels:
      app: service-env
  template:
    metadata:
      labels:
        app: service-env
    spec:
      containers:
      - name: nginx
        image: docker.io/library/nginx:1.23.1
        ports:
        - containerPort: 80
`

type env struct {
	client  kubernetes.Interface
	kubelet *kubelettest.Kubelet

	mu      sync.Mutex // guards unready
	unready func(*corev1.Pod) bool
}

// start runs a server, the ReplicaSet and Deployment controllers, the
// garbage collector and a fake kubelet that binds pods to two nodes and
// makes them ready after readyDelay.
func start(t *testing.T) *env {
	t.Helper()
	s := apitest.Start(t, apitest.Options{})
	e := &env{client: s.Client}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	f := informers.NewSharedInformerFactory(s.Client, 0)
	rsc, err := replicaset.New(log, s.Client, f.Apps().V1().ReplicaSets(), f.Core().V1().Pods())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := deployment.New(log, s.Client, f.Apps().V1().Deployments(), f.Apps().V1().ReplicaSets(), f.Core().V1().Pods())
	if err != nil {
		t.Fatal(err)
	}
	md, err := metadata.NewForConfig(s.Rest)
	if err != nil {
		t.Fatal(err)
	}
	g := gc.New(log, md, s.Client.Discovery(), gc.Options{})
	f.Start(ctx.Done())
	var wg sync.WaitGroup
	wg.Go(func() { rsc.Run(ctx, 2) })
	wg.Go(func() { dc.Run(ctx, 2) })
	wg.Go(func() { g.Run(ctx, 2) })
	t.Cleanup(func() { cancel(); wg.Wait(); f.Shutdown() })
	e.kubelet = kubelettest.Start(t, s.Client, kubelettest.Options{Bind: true, ReadyDelay: 30 * time.Millisecond, Ready: func(p *corev1.Pod) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.unready == nil || !e.unready(p)
	}})
	return e
}

func (e *env) holdUnready(f func(*corev1.Pod) bool) {
	e.mu.Lock()
	e.unready = f
	e.mu.Unlock()
	e.kubelet.Recheck()
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// rolloutStatus asks kubectl's own DeploymentStatusViewer, as
// `kubectl rollout status` does.
func rolloutStatus(ctx context.Context, c kubernetes.Interface, ns, name string) (string, bool, error) {
	d, err := c.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", false, err
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
	if err != nil {
		return "", false, err
	}
	return (&polymorphichelpers.DeploymentStatusViewer{}).Status(&unstructured.Unstructured{Object: u}, 0)
}

func waitRolledOut(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		msg, done, err := rolloutStatus(ctx, c, ns, name)
		last = msg
		return done, err
	})
	if err != nil {
		t.Fatalf("rollout status of %s/%s: %v (last: %q)", ns, name, err, last)
	}
}

func waitPods(t *testing.T, c kubernetes.Interface, ns, app string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitFor(t, fmt.Sprintf("%d pods of %s", n, app), 20*time.Second, func(ctx context.Context) (bool, error) {
		all, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		pods = all.Items
		return len(all.Items) == n, nil // terminating ones gone too
	})
	return pods
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// monitor watches a deployment's pods and ReplicaSets from now on and
// records the fewest ready (not terminating) pods and the largest sum of
// ReplicaSet spec.replicas seen at any moment.
type monitor struct {
	mu       sync.Mutex // guards the fields below
	ready    map[types.UID]bool
	sizes    map[types.UID]int32
	minReady int
	maxSize  int32
	stop     func()
	done     chan struct{}
}

func watchRollout(t *testing.T, c kubernetes.Interface, ns, app string) *monitor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{ready: map[types.UID]bool{}, sizes: map[types.UID]int32{}, minReady: 1 << 30, stop: cancel, done: make(chan struct{})}
	pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	rss, err := c.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		m.ready[p.UID] = isReady(&p) && p.DeletionTimestamp == nil
	}
	for _, rs := range rss.Items {
		m.sizes[rs.UID] = *rs.Spec.Replicas
	}
	m.recordLocked()
	pw, err := c.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=" + app, ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	rw, err := c.AppsV1().ReplicaSets(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=" + app, ResourceVersion: rss.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		for {
			select {
			case ev, ok := <-pw.ResultChan():
				if !ok {
					return
				}
				if p, ok := ev.Object.(*corev1.Pod); ok {
					m.mu.Lock()
					if ev.Type == watch.Deleted {
						delete(m.ready, p.UID)
					} else {
						m.ready[p.UID] = isReady(p) && p.DeletionTimestamp == nil
					}
					m.recordLocked()
					m.mu.Unlock()
				}
			case ev, ok := <-rw.ResultChan():
				if !ok {
					return
				}
				if rs, ok := ev.Object.(*appsv1.ReplicaSet); ok {
					m.mu.Lock()
					if ev.Type == watch.Deleted {
						delete(m.sizes, rs.UID)
					} else {
						m.sizes[rs.UID] = *rs.Spec.Replicas
					}
					m.recordLocked()
					m.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); pw.Stop(); rw.Stop(); <-m.done })
	return m
}

func (m *monitor) recordLocked() {
	n := 0
	for _, r := range m.ready {
		if r {
			n++
		}
	}
	m.minReady = min(m.minReady, n)
	var s int32
	for _, v := range m.sizes {
		s += v
	}
	m.maxSize = max(m.maxSize, s)
}

func (m *monitor) result() (minReady int, maxSize int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.minReady, m.maxSize
}

func scaleDeployment(t *testing.T, c kubernetes.Interface, ns, name string, n int) {
	t.Helper()
	// What `kubectl scale` sends: a merge patch to the scale subresource.
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := c.AppsV1().Deployments(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatalf("scale %s to %d: %v", name, n, err)
	}
}

func setImage(t *testing.T, c kubernetes.Interface, ns, name, container, image string) {
	t.Helper()
	// What `kubectl set image` sends: a strategic merge patch.
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, container, image)
	if _, err := c.AppsV1().Deployments(ns).Patch(context.Background(), name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set image: %v", err)
	}
}

func TestServiceEnvDeployment(t *testing.T) {
	e := start(t)
	c := e.client
	ctx := context.Background()

	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(serviceEnvYAML), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.AppsV1().Deployments("default").Create(ctx, obj.(*appsv1.Deployment), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, c, "default", "service-env")

	// Names: service-env-<pod-template-hash>-<5 chars>, the hash being
	// ComputeHash of the stored (defaulted) template.
	hash := deployment.ComputeHash(&d.Spec.Template, nil)
	pods := waitPods(t, c, "default", "service-env", 3)
	re := regexp.MustCompile(`^service-env-([bcdfghjklmnpqrstvwxz2456789]{10})-[bcdfghjklmnpqrstvwxz2456789]{5}$`)
	for _, p := range pods {
		m := re.FindStringSubmatch(p.Name)
		if m == nil {
			t.Fatalf("pod name %q does not look like service-env-<10-char hash>-<5 chars>", p.Name)
		}
		if m[1] != hash || p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
			t.Fatalf("pod %s: hash %s / label %s, want %s", p.Name, m[1], p.Labels[appsv1.DefaultDeploymentUniqueLabelKey], hash)
		}
		if p.Spec.NodeName == "" || p.Status.PodIP == "" || !isReady(&p) {
			t.Fatalf("pod %s not running: node %q ip %q", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
	}
	rs1, err := c.AppsV1().ReplicaSets("default").Get(ctx, "service-env-"+hash, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ReplicaSet service-env-%s: %v", hash, err)
	}
	if !metav1.IsControlledBy(rs1, d) || rs1.Annotations[deployment.RevisionAnnotation] != "1" {
		t.Fatalf("ReplicaSet %s: owners %+v annotations %v", rs1.Name, rs1.OwnerReferences, rs1.Annotations)
	}
	waitComplete(t, c, "default", "service-env", 3)

	// kubectl scale --replicas=5, then back to 2.
	for _, n := range []int{5, 2} {
		scaleDeployment(t, c, "default", "service-env", n)
		// kubectl calls a scale-down rolled out as soon as the new
		// generation is observed, before the extra pods are gone.
		waitRolledOut(t, c, "default", "service-env")
		waitPods(t, c, "default", "service-env", n)
		waitComplete(t, c, "default", "service-env", int32(n))
		if rs, _ := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{}); len(rs.Items) != 1 {
			t.Fatalf("scaling created ReplicaSets: %d", len(rs.Items))
		}
	}

	// Change the template: pods roll, never fewer than
	// replicas-maxUnavailable ready (2 - floor(25% of 2) = 2), never more
	// than replicas+maxSurge (2 + ceil(25% of 2) = 3) pods asked for.
	m := watchRollout(t, c, "default", "service-env")
	setImage(t, c, "default", "service-env", "nginx", "docker.io/library/nginx:1.25.3")
	waitRolledOut(t, c, "default", "service-env")
	minReady, maxSize := m.result()
	t.Logf("during the rollout: fewest ready pods %d, most pods asked for %d", minReady, maxSize)
	if minReady < 2 {
		t.Errorf("ready pods dropped to %d during the rollout, want >= 2", minReady)
	}
	if maxSize > 3 {
		t.Errorf("ReplicaSets asked for %d pods during the rollout, want <= 3", maxSize)
	}
	got := waitComplete(t, c, "default", "service-env", 2)
	if got.Annotations[deployment.RevisionAnnotation] != "2" {
		t.Errorf("deployment revision = %q, want 2", got.Annotations[deployment.RevisionAnnotation])
	}
	newHash := deployment.ComputeHash(&got.Spec.Template, nil)
	pods = waitPods(t, c, "default", "service-env", 2)
	for _, p := range pods {
		if p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != newHash || p.Spec.Containers[0].Image != "docker.io/library/nginx:1.25.3" {
			t.Errorf("pod %s not from the new template", p.Name)
		}
	}
	old, err := c.AppsV1().ReplicaSets("default").Get(ctx, rs1.Name, metav1.GetOptions{})
	if err != nil || *old.Spec.Replicas != 0 {
		t.Fatalf("old ReplicaSet should be kept at 0 replicas for rollback: %v %+v", err, old)
	}

	// kubectl delete deployment: the ReplicaSets and pods go too.
	bg := metav1.DeletePropagationBackground
	if err := c.AppsV1().Deployments("default").Delete(ctx, "service-env", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ReplicaSets and pods collected", 20*time.Second, func(ctx context.Context) (bool, error) {
		rs, err := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(rs.Items) == 0 && len(pods.Items) == 0, nil
	})
	evs, _ := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	var scaled bool
	for _, ev := range evs.Items {
		if ev.Reason == "ScalingReplicaSet" && ev.InvolvedObject.Kind == "Deployment" {
			scaled = true
		}
	}
	if !scaled {
		t.Error("no ScalingReplicaSet event recorded")
	}
}

// waitComplete waits until the status is that of a finished rollout with
// n replicas (see statusComplete).
func waitComplete(t *testing.T, c kubernetes.Interface, ns, name string, n int32) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	var why error
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		if d, err = c.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return false, err
		}
		why = statusComplete(d, n)
		return why == nil, nil
	})
	if err != nil {
		t.Fatalf("deployment %s/%s never complete: %v", ns, name, why)
	}
	return d
}

// statusComplete checks the fields `kubectl rollout status` and `kubectl get
// deploy` read, and the conditions of a finished rollout.
func statusComplete(d *appsv1.Deployment, n int32) error {
	st := d.Status
	if st.ObservedGeneration != d.Generation || st.Replicas != n || st.UpdatedReplicas != n || st.ReadyReplicas != n ||
		st.AvailableReplicas != n || st.UnavailableReplicas != 0 {
		return fmt.Errorf("status = %+v, want %d everywhere at generation %d", st, n, d.Generation)
	}
	conds := map[appsv1.DeploymentConditionType]appsv1.DeploymentCondition{}
	for _, c := range st.Conditions {
		conds[c.Type] = c
	}
	if a := conds[appsv1.DeploymentAvailable]; a.Status != corev1.ConditionTrue || a.Reason != deployment.MinimumReplicasAvailable {
		return fmt.Errorf("Available condition = %+v", a)
	}
	if p := conds[appsv1.DeploymentProgressing]; p.Status != corev1.ConditionTrue || p.Reason != deployment.NewRSAvailableReason {
		return fmt.Errorf("Progressing condition = %+v", p)
	}
	return nil
}

func TestRolloutStrategies(t *testing.T) {
	e := start(t)
	c := e.client
	ctx := context.Background()

	ru := func(surge, unavail intstr.IntOrString) appsv1.DeploymentStrategy {
		return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavail}}
	}
	tests := []struct {
		name     string
		replicas int32
		strategy appsv1.DeploymentStrategy
		minReady int   // fewest ready pods allowed during the rollout
		maxSize  int32 // most pods the ReplicaSets may ask for
	}{
		{"surge only", 4, ru(intstr.FromInt(2), intstr.FromInt(0)), 4, 6},
		{"unavailable only", 4, ru(intstr.FromInt(0), intstr.FromInt(1)), 3, 4},
		{"percentages", 5, ru(intstr.FromString("40%"), intstr.FromString("40%")), 3, 7},
		{"recreate", 3, appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}, 0, 3},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("app%d", i)
			l := map[string]string{"app": name}
			d := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
				Spec: appsv1.DeploymentSpec{
					Replicas: &tc.replicas, Selector: &metav1.LabelSelector{MatchLabels: l}, Strategy: tc.strategy,
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
						Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "img:1"}}}},
				},
			}
			if _, err := c.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitRolledOut(t, c, "default", name)
			oldPods := waitPods(t, c, "default", name, int(tc.replicas))

			m := watchRollout(t, c, "default", name)
			var firstNew chan []string
			if tc.strategy.Type == appsv1.RecreateDeploymentStrategyType {
				firstNew = watchFirstNewPod(t, c, name, oldPods)
			}
			setImage(t, c, "default", name, "c", "img:2")
			waitRolledOut(t, c, "default", name)
			waitPods(t, c, "default", name, int(tc.replicas))
			minReady, maxSize := m.result()
			t.Logf("during the rollout: fewest ready pods %d, most pods asked for %d", minReady, maxSize)
			t.Logf("during the rollout: fewest ready pods %d, most pods asked for %d", minReady, maxSize)
			if minReady < tc.minReady {
				t.Errorf("ready pods dropped to %d, want >= %d", minReady, tc.minReady)
			}
			if maxSize > tc.maxSize {
				t.Errorf("ReplicaSets asked for %d pods, want <= %d", maxSize, tc.maxSize)
			}
			if firstNew != nil {
				if left := <-firstNew; len(left) > 0 {
					t.Errorf("Recreate started a new pod while old pods %v still existed", left)
				}
			}
		})
	}
}

// watchFirstNewPod reports which of old still existed (even terminating)
// when the first pod not in old appeared.
func watchFirstNewPod(t *testing.T, c kubernetes.Interface, app string, old []corev1.Pod) chan []string {
	t.Helper()
	list, err := c.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	for _, p := range list.Items {
		alive[p.Name] = true
	}
	isOld := map[string]bool{}
	for _, p := range old {
		isOld[p.Name] = true
	}
	w, err := c.CoreV1().Pods("default").Watch(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []string, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(alive, p.Name)
				continue
			}
			if !isOld[p.Name] {
				var left []string
				for n := range alive {
					if isOld[n] {
						left = append(left, n)
					}
				}
				out <- left
				return
			}
		}
		out <- nil
	}()
	return out
}

func TestHistoryPauseAndDeadline(t *testing.T) {
	e := start(t)
	c := e.client
	ctx := context.Background()
	mk := func(name string, mutate func(*appsv1.Deployment)) {
		t.Helper()
		l := map[string]string{"app": name}
		n := int32(2)
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: l},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "img:0"}}}},
			},
		}
		if mutate != nil {
			mutate(d)
		}
		if _, err := c.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("revisionHistoryLimit", func(t *testing.T) {
		mk("hist", func(d *appsv1.Deployment) { one := int32(1); d.Spec.RevisionHistoryLimit = &one })
		waitRolledOut(t, c, "default", "hist")
		for i := 1; i <= 3; i++ {
			setImage(t, c, "default", "hist", "c", fmt.Sprintf("img:%d", i))
			waitRolledOut(t, c, "default", "hist")
		}
		waitFor(t, "old ReplicaSets cleaned up", 20*time.Second, func(ctx context.Context) (bool, error) {
			rs, err := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hist"})
			if err != nil {
				return false, err
			}
			revs := map[string]bool{}
			for _, r := range rs.Items {
				revs[r.Annotations[deployment.RevisionAnnotation]] = true
			}
			return len(rs.Items) == 2 && revs["3"] && revs["4"], nil
		})
	})

	t.Run("pause and resume", func(t *testing.T) {
		mk("paused", nil)
		waitRolledOut(t, c, "default", "paused")
		if _, err := c.AppsV1().Deployments("default").Patch(ctx, "paused", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		setImage(t, c, "default", "paused", "c", "img:9")
		waitFor(t, "paused condition", 10*time.Second, func(ctx context.Context) (bool, error) {
			d, err := c.AppsV1().Deployments("default").Get(ctx, "paused", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range d.Status.Conditions {
				if cond.Type == appsv1.DeploymentProgressing && cond.Reason == deployment.PausedDeployReason {
					return d.Status.ObservedGeneration == d.Generation, nil
				}
			}
			return false, nil
		})
		if rs, _ := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=paused"}); len(rs.Items) != 1 {
			t.Fatalf("a paused deployment rolled: %d ReplicaSets", len(rs.Items))
		}
		if _, err := c.AppsV1().Deployments("default").Patch(ctx, "paused", types.MergePatchType, []byte(`{"spec":{"paused":false}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRolledOut(t, c, "default", "paused")
		for _, p := range waitPods(t, c, "default", "paused", 2) {
			if p.Spec.Containers[0].Image != "img:9" {
				t.Fatalf("pod %s has image %s after resume", p.Name, p.Spec.Containers[0].Image)
			}
		}
	})

	t.Run("progress deadline exceeded", func(t *testing.T) {
		mk("stuck", nil)
		waitRolledOut(t, c, "default", "stuck")
		e.holdUnready(func(p *corev1.Pod) bool { return p.Labels["app"] == "stuck" && p.Spec.Containers[0].Image == "img:bad" })
		// A bad image and a 1 s deadline in one change (a 1 s deadline from
		// the start could expire during the first rollout on a slow machine).
		patch := `{"spec":{"progressDeadlineSeconds":1,"template":{"spec":{"containers":[{"name":"c","image":"img:bad"}]}}}}`
		if _, err := c.AppsV1().Deployments("default").Patch(ctx, "stuck", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		var lastErr error
		waitFor(t, "rollout status to fail", 15*time.Second, func(ctx context.Context) (bool, error) {
			_, done, err := rolloutStatus(ctx, c, "default", "stuck")
			if done {
				return false, fmt.Errorf("a rollout with unready pods reported done")
			}
			lastErr = err
			return err != nil, nil
		})
		if want := `deployment "stuck" exceeded its progress deadline`; lastErr.Error() != want {
			t.Fatalf("rollout status error %q, want %q", lastErr, want)
		}
		// maxUnavailable 0 (25% of 2): the old pods still serve.
		d, _ := c.AppsV1().Deployments("default").Get(ctx, "stuck", metav1.GetOptions{})
		if d.Status.AvailableReplicas < 2 {
			t.Fatalf("available %d while stuck, want 2 old pods kept", d.Status.AvailableReplicas)
		}
		e.holdUnready(nil)
	})

	t.Run("delete cascades through the garbage collector", func(t *testing.T) {
		mk("gone", nil)
		waitRolledOut(t, c, "default", "gone")
		if err := c.AppsV1().Deployments("default").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "dependents collected", 20*time.Second, func(ctx context.Context) (bool, error) {
			rs, err := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=gone"})
			if err != nil {
				return false, err
			}
			pods, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=gone"})
			if err != nil {
				return false, err
			}
			return len(rs.Items) == 0 && len(pods.Items) == 0, nil
		})
		_, err := c.AppsV1().Deployments("default").Get(ctx, "gone", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("deployment still there: %v", err)
		}
	})
}
