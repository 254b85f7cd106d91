package gc_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/svcnet/svcnet/internal/controller/gc"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func startGC(t *testing.T) kubernetes.Interface {
	t.Helper()
	s := apitest.Start(t, apitest.Options{})
	md, err := metadata.NewForConfig(s.Rest)
	if err != nil {
		t.Fatal(err)
	}
	g := gc.New(slog.New(slog.NewTextHandler(io.Discard, nil)), md, s.Client.Discovery(), gc.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx, 2) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-g.Synced():
	case <-time.After(20 * time.Second):
		t.Fatal("garbage collector did not sync")
	}
	want := []schema.GroupVersionResource{
		{Version: "v1", Resource: "pods"}, {Version: "v1", Resource: "configmaps"},
		{Group: "apps", Version: "v1", Resource: "replicasets"}, {Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
	}
	got := g.Resources()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Fatalf("collector does not watch %v; watches %v", w, got)
		}
	}
	for _, r := range got {
		if r.Resource == "events" {
			t.Fatalf("collector watches events: %v", got)
		}
	}
	return s.Client
}

func ref(cm *corev1.ConfigMap) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}
}

func mkCM(t *testing.T, c kubernetes.Interface, ns, name string, finalizers []string, owners ...metav1.OwnerReference) *corev1.ConfigMap {
	t.Helper()
	cm, err := c.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Finalizers: finalizers, OwnerReferences: owners},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create configmap %s: %v", name, err)
	}
	return cm
}

func waitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func gone(c kubernetes.Interface, ns, name string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
}

// stays checks that the configmap is still there once the collector has
// had the chance to act on a later event in the same namespace: a marker
// whose owner is gone is created after the change, and only once the
// marker is collected is the configmap checked.
func stays(t *testing.T, c kubernetes.Interface, ns, name string) *corev1.ConfigMap {
	t.Helper()
	marker := mkCM(t, c, ns, "marker-"+name, nil, metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "nobody", UID: types.UID("no-such-uid-" + name)})
	waitFor(t, "marker collected", gone(c, ns, marker.Name))
	cm, err := c.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s should have stayed: %v", name, err)
	}
	return cm
}

func TestGarbageCollector(t *testing.T) {
	c := startGC(t)
	ctx := context.Background()
	bg := metav1.DeletePropagationBackground

	tests := []struct {
		name string
		run  func(t *testing.T, ns string)
	}{
		{"owner deleted, dependents follow, chains cascade", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", nil)
			child := mkCM(t, c, ns, "child", nil, ref(owner))
			mkCM(t, c, ns, "grandchild", nil, ref(child))
			mkCM(t, c, ns, "bystander", nil)
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "child collected", gone(c, ns, "child"))
			waitFor(t, "grandchild collected", gone(c, ns, "grandchild"))
			stays(t, c, ns, "bystander")
		}},
		{"dependent created after its owner was deleted", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", nil)
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			mkCM(t, c, ns, "late", nil, ref(owner))
			waitFor(t, "late dependent collected", gone(c, ns, "late"))
		}},
		{"owner recreated with the same name is not the owner", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", nil)
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			mkCM(t, c, ns, "owner", nil) // new uid
			mkCM(t, c, ns, "stale", nil, ref(owner))
			waitFor(t, "dependent of the old uid collected", gone(c, ns, "stale"))
			stays(t, c, ns, "owner")
		}},
		{"one of two owners deleted: reference removed, object kept", func(t *testing.T, ns string) {
			a := mkCM(t, c, ns, "a", nil)
			b := mkCM(t, c, ns, "b", nil)
			mkCM(t, c, ns, "shared", nil, ref(a), ref(b))
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "dangling reference removed", func(ctx context.Context) (bool, error) {
				cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "shared", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				return len(cm.OwnerReferences) == 1 && cm.OwnerReferences[0].UID == b.UID, nil
			})
		}},
		{"owner of an unknown kind: left alone", func(t *testing.T, ns string) {
			mkCM(t, c, ns, "mystery", nil, metav1.OwnerReference{APIVersion: "example.com/v1", Kind: "Widget", Name: "w", UID: "widget-uid"})
			stays(t, c, ns, "mystery")
		}},
		{"orphan finalizer keeps dependents", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", []string{metav1.FinalizerOrphanDependents})
			mkCM(t, c, ns, "child", nil, ref(owner))
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "owner removed", gone(c, ns, "owner"))
			cm := stays(t, c, ns, "child")
			if len(cm.OwnerReferences) != 0 {
				t.Fatalf("orphaned child still has owners %+v", cm.OwnerReferences)
			}
		}},
		{"foregroundDeletion finalizer deletes dependents first", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", []string{metav1.FinalizerDeleteDependents})
			mkCM(t, c, ns, "child", nil, ref(owner))
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "child collected", gone(c, ns, "child"))
			waitFor(t, "owner removed", gone(c, ns, "owner"))
		}},
		{"pods of a deleted ReplicaSet-like owner across kinds", func(t *testing.T, ns string) {
			owner := mkCM(t, c, ns, "owner", nil)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, OwnerReferences: []metav1.OwnerReference{ref(owner)}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			}
			if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := c.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "pod collected", func(ctx context.Context) (bool, error) {
				_, err := c.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := "gc-" + string(rune('a'+i))
			if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			tc.run(t, ns)
		})
	}
}
