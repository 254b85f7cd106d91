package apiserver

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/storage"
)

func TestNSCacheAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(c *nsCache)
		want  bool
	}{
		{"not synced", func(c *nsCache) {}, false},
		{"synced, active", func(c *nsCache) { c.setSynced(map[string]bool{"a": true}) }, true},
		{"synced, unknown", func(c *nsCache) { c.setSynced(map[string]bool{"b": true}) }, false},
		{"deleted by event", func(c *nsCache) { c.setSynced(map[string]bool{"a": true}); c.set("a", false) }, false},
		{"marked terminating", func(c *nsCache) { c.setSynced(map[string]bool{"a": true}); c.markTerminating("a") }, false},
		{"stale active event after terminating", func(c *nsCache) {
			c.setSynced(map[string]bool{})
			c.markTerminating("a")
			c.set("a", true)
		}, false},
		{"unsynced again", func(c *nsCache) { c.setSynced(map[string]bool{"a": true}); c.setSynced(nil) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c nsCache
			tc.setup(&c)
			if got := c.isActive("a"); got != tc.want {
				t.Errorf("isActive(a) = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNamespaceCacheFollowsStorage checks that the cache learns about
// namespaces from its watch and that a miss falls back to storage.
func TestNamespaceCacheFollowsStorage(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	waitFor(t, "cache synced with default", func() bool { return env.s.nsCache.isActive("default") })

	// A namespace created and immediately used: live fallback or cache.
	if _, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cs.CoreV1().Services("fresh").Create(ctx, webService("s1"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create in fresh namespace: %v", err)
	}
	waitFor(t, "cache learns fresh", func() bool { return env.s.nsCache.isActive("fresh") })

	// Removed behind the server's back: the watch drops it, and the live
	// lookup then answers NotFound.
	nsRes := env.s.byGR[corev1.Resource("namespaces")]
	if _, err := env.store.Txn(ctx, storage.Delete(nsRes.key("", "fresh"), storage.Any)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cache forgets fresh", func() bool { return !env.s.nsCache.isActive("fresh") })
	_, err := env.cs.CoreV1().Services("fresh").Create(ctx, webService("s2"), metav1.CreateOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("create in removed namespace: %v, want NotFound", err)
	}
	// A namespace that never existed.
	_, err = env.cs.CoreV1().Services("nope").Create(ctx, webService("s3"), metav1.CreateOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("create in missing namespace: %v, want NotFound", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
