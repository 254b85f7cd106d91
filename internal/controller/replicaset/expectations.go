package replicaset

import (
	"sync"
	"time"
)

// ExpectationsTimeout is how long a controller waits for the informer to
// deliver its own writes before it syncs anyway (upstream's value).
const ExpectationsTimeout = 5 * time.Minute

// expectations records, per controller key, the pod creations and
// deletions a controller has issued but not yet seen in its informer. It
// is upstream's UIDTrackingControllerExpectations in one type: creations
// are counted, deletions are tracked by pod key so that the same delete
// event (a graceful delete's update, then the final delete) is counted
// once.
type expectations struct {
	now func() time.Time

	mu sync.Mutex // guards m
	m  map[string]*expectation
}

type expectation struct {
	adds    int
	dels    map[string]bool // pod keys still to be seen deleted
	created time.Time
}

func newExpectations() *expectations {
	return &expectations{now: time.Now, m: map[string]*expectation{}}
}

// satisfied reports whether key may act on its caches: nothing is
// pending, or the pending writes are older than ExpectationsTimeout.
func (e *expectations) satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok {
		return true
	}
	if x.adds <= 0 && len(x.dels) == 0 {
		return true
	}
	return e.now().Sub(x.created) > ExpectationsTimeout
}

// expectCreations replaces key's expectations with n creations.
func (e *expectations) expectCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expectation{adds: n, created: e.now()}
}

// expectDeletions replaces key's expectations with the deletion of the
// given pod keys.
func (e *expectations) expectDeletions(key string, podKeys []string) {
	dels := make(map[string]bool, len(podKeys))
	for _, k := range podKeys {
		dels[k] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expectation{dels: dels, created: e.now()}
}

// creationObserved lowers key's pending creations by one.
func (e *expectations) creationObserved(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		x.adds--
	}
}

// deletionObserved marks podKey's deletion as seen, if key waited for it.
func (e *expectations) deletionObserved(key, podKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		delete(x.dels, podKey)
	}
}

// forget drops key's expectations (the ReplicaSet is gone).
func (e *expectations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}

// pending returns key's outstanding creations and deletions (for logs and
// tests).
func (e *expectations) pending(key string) (adds, dels int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		return x.adds, len(x.dels)
	}
	return 0, 0
}
