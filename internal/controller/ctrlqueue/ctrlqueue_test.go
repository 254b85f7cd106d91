package ctrlqueue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

func TestWorkerRetriesThenDrops(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](0, 0))
	defer q.ShutDown()
	calls := map[string]int{}
	var dropped []string
	w := Worker{
		Queue: q,
		Sync: func(_ context.Context, key string) error {
			calls[key]++
			if key == "bad" {
				return errors.New("boom")
			}
			return nil
		},
		MaxRetries: 2,
		OnError: func(key string, _ error, _ int, d bool) {
			if d {
				dropped = append(dropped, key)
			}
		},
	}
	q.Add("good")
	q.Add("bad")
	ctx := context.Background()
	// good once; bad: first try + 2 retries, then dropped.
	for i := 0; i < 4; i++ {
		if !w.ProcessNext(ctx) {
			t.Fatal("queue shut down early")
		}
	}
	if calls["good"] != 1 || calls["bad"] != 3 {
		t.Fatalf("calls %v, want good 1, bad 3", calls)
	}
	if len(dropped) != 1 || dropped[0] != "bad" || q.Len() != 0 || q.NumRequeues("bad") != 0 {
		t.Fatalf("dropped %v, queue len %d, requeues %d", dropped, q.Len(), q.NumRequeues("bad"))
	}
	q.ShutDown()
	if w.ProcessNext(ctx) {
		t.Fatal("ProcessNext after shutdown returned true")
	}
}

func TestWorkerWithoutBudgetRetries(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](0, 0))
	defer q.ShutDown()
	n := 0
	w := Worker{Queue: q, Sync: func(context.Context, string) error {
		n++
		if n < 5 {
			return errors.New("not yet")
		}
		return nil
	}}
	q.Add("k")
	for i := 0; i < 5; i++ {
		w.ProcessNext(context.Background())
	}
	if n != 5 || q.Len() != 0 || q.NumRequeues("k") != 0 {
		t.Fatalf("syncs %d, len %d, requeues %d", n, q.Len(), q.NumRequeues("k"))
	}
}

// TestWorkerCacheBehindIsNotAFailure: a key whose sync keeps finding the
// cache behind (while events keep re-queuing it) is retried after a short
// back-off, neither dropped nor pushed out by the failure back-off, and a
// later real failure starts from the first retry.
func TestWorkerCacheBehindIsNotAFailure(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer q.ShutDown()
	behind, fail := 40, false
	var errs []int
	w := Worker{
		Queue: q,
		Sync: func(context.Context, string) error {
			if behind > 0 {
				behind--
				return fmt.Errorf("endpoints of k: %w", ErrCacheBehind)
			}
			if fail {
				return errors.New("boom")
			}
			return nil
		},
		MaxRetries:  3,
		OnError:     func(_ string, _ error, retries int, _ bool) { errs = append(errs, retries) },
		CacheBehind: NewCacheBehindBackoff(),
	}
	ctx := context.Background()
	start := time.Now()
	for behind > 0 {
		q.Add("k") // an event for the key, as under churn
		if !w.ProcessNext(ctx) {
			t.Fatal("queue shut down")
		}
		if q.NumRequeues("k") != 0 || len(errs) != 0 {
			t.Fatalf("cache-behind retry counted as a failure: requeues %d, OnError calls %v", q.NumRequeues("k"), errs)
		}
	}
	// The key is still queued (after at most a second) and now syncs.
	w.ProcessNext(ctx)
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("cache-behind back-off took %s", waited)
	}
	if q.Len() != 0 || behind != 0 {
		t.Fatalf("queue len %d, behind %d", q.Len(), behind)
	}
	// A real failure now is the first one.
	fail = true
	q.Add("k")
	w.ProcessNext(ctx)
	if len(errs) != 1 || errs[0] != 0 {
		t.Fatalf("OnError retries %v, want [0]", errs)
	}
}

func TestIncarnations(t *testing.T) {
	var in Incarnations
	if in.Replaced("ns/a", "u1") {
		t.Fatal("first sync reported as a replacement")
	}
	if in.Replaced("ns/a", "u1") {
		t.Fatal("same UID reported as a replacement")
	}
	if !in.Replaced("ns/a", "u2") {
		t.Fatal("new UID not reported")
	}
	in.Forget("ns/a")
	if in.Replaced("ns/a", "u3") {
		t.Fatal("a key synced again after Forget reported as a replacement")
	}
}
