// Package ctrlqueue is the work loop every svcnet controller shares: take a
// key from a rate-limited workqueue, sync it, and either forget it or put it
// back with back-off. Controllers differ only in their sync, their retry
// budget and how they report a failure, which are the Worker's fields.
package ctrlqueue

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

// ErrCacheBehind is wrapped by a Sync error that only means the informer
// cache has not yet caught up with this controller's own last write (it
// would act on state it already replaced). That is not a failure: the
// watch event is on its way. Counted as failures, such retries grow the
// key's back-off exponentially whenever events keep re-queuing the key
// meanwhile (each sync fails at once), and under churn that reached 15
// failures in under a second — the next retry 80 s away, or the key
// dropped for good — while the cache caught up a moment later.
var ErrCacheBehind = errors.New("informer cache is behind the controller's last write")

// Back-off of ErrCacheBehind retries: 5 ms doubling, at most a second.
const (
	cacheBehindBaseDelay = 5 * time.Millisecond
	cacheBehindMaxDelay  = time.Second
)

// NewCacheBehindBackoff returns the back-off for Worker.CacheBehind.
func NewCacheBehindBackoff() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[string](cacheBehindBaseDelay, cacheBehindMaxDelay)
}

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
	// CacheBehind, when set, is the back-off (shared by the controller's
	// workers; NewCacheBehindBackoff) of keys whose Sync returned an
	// ErrCacheBehind error: they are retried after it without counting as
	// failures (no MaxRetries, no OnError, no growth of Queue's back-off).
	CacheBehind workqueue.TypedRateLimiter[string]
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
		if w.CacheBehind != nil {
			w.CacheBehind.Forget(key)
		}
		return true
	}
	if w.CacheBehind != nil && errors.Is(err, ErrCacheBehind) {
		w.Queue.AddAfter(key, w.CacheBehind.When(key))
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

// Incarnations remembers, per key, the UID of the object a controller last
// synced, to tell when the object under a name was replaced: deleted and
// created again, which an informer that re-lists in between delivers as a
// single update. State a controller keeps by name (the EndpointSlice
// tracker's expected writes) belongs to the old object and must go. The
// zero value is ready to use.
type Incarnations struct {
	mu  sync.Mutex
	uid map[string]types.UID
}

// Replaced records uid as key's and reports whether key was last synced
// for a different UID.
func (in *Incarnations) Replaced(key string, uid types.UID) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.uid == nil {
		in.uid = map[string]types.UID{}
	}
	prev, ok := in.uid[key]
	in.uid[key] = uid
	return ok && prev != uid
}

// Forget drops key (its object is gone).
func (in *Incarnations) Forget(key string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.uid, key)
}
