// Package ctrlqueue is the work loop every svcnet controller shares: take a
// key from a rate-limited workqueue, sync it, and either forget it or put it
// back with back-off. Controllers differ only in their sync, their retry
// budget and how they report a failure, which are the Worker's fields.
package ctrlqueue

import (
	"context"

	"k8s.io/client-go/util/workqueue"
)

// Worker drains Queue into Sync.
type Worker struct {
	Queue workqueue.TypedRateLimitingInterface[string]
	Sync  func(ctx context.Context, key string) error
	// MaxRetries > 0 drops a key after that many failed retries, as
	// upstream's maxRetries does; 0 retries until the sync succeeds.
	MaxRetries int
	// OnError, when set, is told about each failure: retries is the number
	// of times the key was already re-queued, dropped says it left the queue.
	OnError func(key string, err error, retries int, dropped bool)
}

// Run processes keys until the queue shuts down.
func (w Worker) Run(ctx context.Context) {
	for w.ProcessNext(ctx) {
	}
}

// ProcessNext processes one key; it returns false once the queue is shut down.
func (w Worker) ProcessNext(ctx context.Context) bool {
	key, quit := w.Queue.Get()
	if quit {
		return false
	}
	defer w.Queue.Done(key)
	err := w.Sync(ctx, key)
	if err == nil {
		w.Queue.Forget(key)
		return true
	}
	retries := w.Queue.NumRequeues(key)
	dropped := w.MaxRetries > 0 && retries >= w.MaxRetries
	if w.OnError != nil {
		w.OnError(key, err, retries, dropped)
	}
	if dropped {
		w.Queue.Forget(key)
	} else {
		w.Queue.AddRateLimited(key)
	}
	return true
}
