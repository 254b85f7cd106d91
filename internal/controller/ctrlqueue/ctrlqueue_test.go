package ctrlqueue

import (
	"context"
	"errors"
	"testing"

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
