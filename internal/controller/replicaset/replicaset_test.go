package replicaset_test

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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/controller/replicaset"
	"github.com/svcnet/svcnet/internal/controller/replicaset/kubelettest"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// podName is what generateName "<rs>-" yields: upstream's rand.String
// alphabet (no vowels, no 0/1/3 lookalikes), 5 characters.
func podName(rs string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(rs) + "-[bcdfghjklmnpqrstvwxz2456789]{5}$")
}

type env struct {
	client  kubernetes.Interface
	kubelet *kubelettest.Kubelet

	mu      sync.Mutex      // guards unready
	unready map[string]bool // pod names the kubelet keeps not ready
}

func start(t *testing.T) *env {
	t.Helper()
	s := apitest.Start(t, apitest.Options{})
	e := &env{client: s.Client, unready: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	f := informers.NewSharedInformerFactory(s.Client, 0)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := replicaset.New(log, s.Client, f.Apps().V1().ReplicaSets(), f.Core().V1().Pods())
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, 2) }()
	t.Cleanup(func() { cancel(); <-done; f.Shutdown() })
	e.kubelet = kubelettest.Start(t, s.Client, kubelettest.Options{Bind: true, Ready: func(p *corev1.Pod) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return !e.unready[p.Name]
	}})
	return e
}

func (e *env) setUnready(name string, v bool) {
	e.mu.Lock()
	e.unready[name] = v
	e.mu.Unlock()
	e.kubelet.Recheck()
}

func newRS(ns, name string, n int32) *appsv1.ReplicaSet {
	l := map[string]string{"app": name}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: l, Annotations: map[string]string{"note": "from-template"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
			},
		},
	}
}

func mkNamespace(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if _, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// ownedPods lists the live (not terminating) pods rs controls.
func ownedPods(ctx context.Context, c kubernetes.Interface, rs *appsv1.ReplicaSet) ([]corev1.Pod, error) {
	list, err := c.CoreV1().Pods(rs.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if metav1.IsControlledBy(&p, rs) && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// waitSettled waits until rs has want ready pods and a status describing
// its current generation.
func waitSettled(t *testing.T, c kubernetes.Interface, rs *appsv1.ReplicaSet, want int32) *appsv1.ReplicaSet {
	t.Helper()
	var got *appsv1.ReplicaSet
	waitFor(t, fmt.Sprintf("%s to settle at %d", rs.Name, want), func(ctx context.Context) (bool, error) {
		var err error
		got, err = c.AppsV1().ReplicaSets(rs.Namespace).Get(ctx, rs.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pods, err := ownedPods(ctx, c, got)
		if err != nil {
			return false, err
		}
		st := got.Status
		return st.ObservedGeneration == got.Generation && st.Replicas == want && st.ReadyReplicas == want &&
			st.AvailableReplicas == want && st.FullyLabeledReplicas == want && len(pods) == int(want), nil
	})
	return got
}

func scale(t *testing.T, c kubernetes.Interface, rs *appsv1.ReplicaSet, n int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := c.AppsV1().ReplicaSets(rs.Namespace).Patch(context.Background(), rs.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatal(err)
	}
}

func TestReplicaSetController(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	c := e.client

	t.Run("creates replicas once, named and owned", func(t *testing.T) {
		mkNamespace(t, c, "create")
		// Count every pod ever created in the namespace.
		w, err := c.CoreV1().Pods("create").Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		rs, err := c.AppsV1().ReplicaSets("create").Create(ctx, newRS("create", "web", 3), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs = waitSettled(t, c, rs, 3)
		// Poke the ReplicaSet a few times: each update is a sync, and none
		// may create more pods.
		for i := range 3 {
			patch := fmt.Sprintf(`{"metadata":{"labels":{"poke":"%d"}}}`, i)
			if _, err := c.AppsV1().ReplicaSets("create").Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		rs = waitSettled(t, c, rs, 3)
		pods, err := ownedPods(ctx, c, rs)
		if err != nil {
			t.Fatal(err)
		}
		re := podName("web")
		for _, p := range pods {
			if !re.MatchString(p.Name) {
				t.Errorf("pod name %q does not match %s", p.Name, re)
			}
			ref := metav1.GetControllerOf(&p)
			if ref == nil || ref.Kind != "ReplicaSet" || ref.APIVersion != "apps/v1" || ref.Name != "web" ||
				ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
				t.Errorf("pod %s controller ref = %+v", p.Name, ref)
			}
			if p.Annotations["note"] != "from-template" || p.Labels["app"] != "web" {
				t.Errorf("pod %s metadata not from template: labels %v annotations %v", p.Name, p.Labels, p.Annotations)
			}
		}
		// Read the watch until it has been quiet for a while: every pod
		// ever created has been delivered by then.
		added := map[types.UID]bool{}
	drain:
		for {
			select {
			case ev := <-w.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == "ADDED" {
					added[p.UID] = true
				}
			case <-time.After(500 * time.Millisecond):
				break drain
			}
		}
		if len(added) != 3 {
			t.Fatalf("%d pods were created, want exactly 3", len(added))
		}
		evs, err := c.CoreV1().Events("create").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var creates int
		for _, ev := range evs.Items {
			if ev.InvolvedObject.Name == "web" && ev.Reason == "SuccessfulCreate" {
				creates += int(ev.Count)
			}
		}
		if creates == 0 {
			t.Errorf("no SuccessfulCreate events for the ReplicaSet; events: %+v", evs.Items)
		}
	})

	t.Run("scale down deletes not ready pods first", func(t *testing.T) {
		mkNamespace(t, c, "down")
		rs, err := c.AppsV1().ReplicaSets("down").Create(ctx, newRS("down", "web", 3), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs = waitSettled(t, c, rs, 3)
		pods, _ := ownedPods(ctx, c, rs)
		victim := pods[1].Name
		e.setUnready(victim, true)
		// The kubelet does not take readiness back; do it by hand, as a
		// failing readiness probe would.
		p := pods[1].DeepCopy()
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodReady {
				p.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
		if _, err := c.CoreV1().Pods("down").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ready 2", func(ctx context.Context) (bool, error) {
			got, err := c.AppsV1().ReplicaSets("down").Get(ctx, "web", metav1.GetOptions{})
			return err == nil && got.Status.ReadyReplicas == 2, err
		})
		scale(t, c, rs, 2)
		rs = waitSettled(t, c, rs, 2)
		left, _ := ownedPods(ctx, c, rs)
		for _, p := range left {
			if p.Name == victim {
				t.Fatalf("scale-down kept the not-ready pod %s and deleted a ready one", victim)
			}
		}
		scale(t, c, rs, 0)
		waitSettled(t, c, rs, 0)
	})

	t.Run("adopts orphans, releases non-matching pods, replaces deleted ones", func(t *testing.T) {
		mkNamespace(t, c, "adopt")
		orphan := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "adopt", Labels: map[string]string{"app": "web"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		if _, err := c.CoreV1().Pods("adopt").Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rs, err := c.AppsV1().ReplicaSets("adopt").Create(ctx, newRS("adopt", "web", 2), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs = waitSettled(t, c, rs, 2)
		got, err := c.CoreV1().Pods("adopt").Get(ctx, "orphan", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !metav1.IsControlledBy(got, rs) {
			t.Fatalf("orphan not adopted: ownerReferences %+v", got.OwnerReferences)
		}

		// Relabel it: released, and a new pod takes its place.
		if _, err := c.CoreV1().Pods("adopt").Patch(ctx, "orphan", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"other"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "release", func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("adopt").Get(ctx, "orphan", metav1.GetOptions{})
			return err == nil && len(p.OwnerReferences) == 0, err
		})
		rs = waitSettled(t, c, rs, 2)

		// Delete one: replaced.
		pods, _ := ownedPods(ctx, c, rs)
		gone := pods[0].Name
		if err := c.CoreV1().Pods("adopt").Delete(ctx, gone, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "replacement", func(ctx context.Context) (bool, error) {
			pods, err := ownedPods(ctx, c, rs)
			if err != nil || len(pods) != 2 {
				return false, err
			}
			for _, p := range pods {
				if p.Name == gone {
					return false, nil
				}
			}
			return true, nil
		})
		waitSettled(t, c, rs, 2)
	})

	t.Run("minReadySeconds delays availability", func(t *testing.T) {
		mkNamespace(t, c, "minready")
		r := newRS("minready", "web", 2)
		r.Spec.MinReadySeconds = 1
		rs, err := c.AppsV1().ReplicaSets("minready").Create(ctx, r, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ready before available", func(ctx context.Context) (bool, error) {
			got, err := c.AppsV1().ReplicaSets("minready").Get(ctx, "web", metav1.GetOptions{})
			return err == nil && got.Status.ReadyReplicas >= 1 && got.Status.AvailableReplicas < got.Status.ReadyReplicas, err
		})
		// Available only through the controller's own timed requeue: no
		// event arrives after the pods become ready.
		waitSettled(t, c, rs, 2)
	})
}
