package service

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/svcnet/svcnet/internal/storage"
)

// memStore is a small in-memory storage.Interface with etcd's semantics for
// what these tests use: revisions, transactions with preconditions (duplicate
// keys refused), lists at a revision, and watches from a revision.
type memStore struct {
	mu      sync.Mutex
	rev     int64
	kvs     map[string]storage.KV
	history []storage.Event
	changed chan struct{} // closed and replaced on every write
	// epoch counts breakWatches calls; a watch started in an older epoch
	// fails after delivering its backlog.
	epoch int
}

var _ storage.Interface = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{kvs: map[string]storage.KV{}, changed: make(chan struct{})}
}

func (m *memStore) Get(_ context.Context, key string) (*storage.KV, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kv, ok := m.kvs[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	return &kv, nil
}

func (m *memStore) List(_ context.Context, prefix string, rev int64) ([]storage.KV, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev != 0 && rev != m.rev {
		// Rebuild the state at rev from the history.
		state := map[string]storage.KV{}
		for _, ev := range m.history {
			if ev.Revision > rev {
				break
			}
			if ev.Type == storage.EventPut {
				state[ev.KV.Key] = ev.KV
			} else {
				delete(state, ev.KV.Key)
			}
		}
		return collect(state, prefix), rev, nil
	}
	return collect(m.kvs, prefix), m.rev, nil
}

func collect(state map[string]storage.KV, prefix string) []storage.KV {
	var out []storage.KV
	for k, kv := range state {
		if strings.HasPrefix(k, prefix) {
			out = append(out, kv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (m *memStore) Txn(_ context.Context, ops ...storage.Op) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for _, op := range ops {
		if seen[op.Key] {
			return 0, fmt.Errorf("memstore: duplicate key %q in txn", op.Key)
		}
		seen[op.Key] = true
		kv, exists := m.kvs[op.Key]
		var actual int64
		if exists {
			actual = kv.ModRevision
		}
		if op.ExpectRevision != storage.Any && op.ExpectRevision != actual {
			return 0, &storage.PreconditionError{Key: op.Key, Expected: op.ExpectRevision, Actual: actual}
		}
	}
	m.rev++
	for _, op := range ops {
		old, exists := m.kvs[op.Key]
		var prev *storage.KV
		if exists {
			p := old
			prev = &p
		}
		switch op.Type {
		case storage.OpPut:
			kv := storage.KV{Key: op.Key, Value: append([]byte(nil), op.Value...), ModRevision: m.rev, CreateRevision: m.rev}
			if exists {
				kv.CreateRevision = old.CreateRevision
			}
			m.kvs[op.Key] = kv
			m.history = append(m.history, storage.Event{Type: storage.EventPut, KV: kv, Prev: prev, Revision: m.rev})
		case storage.OpDelete:
			if !exists {
				continue
			}
			delete(m.kvs, op.Key)
			m.history = append(m.history, storage.Event{Type: storage.EventDelete, KV: storage.KV{Key: op.Key, ModRevision: m.rev}, Prev: prev, Revision: m.rev})
		}
	}
	close(m.changed)
	m.changed = make(chan struct{})
	return m.rev, nil
}

func (m *memStore) Watch(ctx context.Context, prefix string, afterRev int64) <-chan storage.WatchResult {
	out := make(chan storage.WatchResult)
	go func() {
		defer close(out)
		next := 0
		m.mu.Lock()
		epoch := m.epoch
		m.mu.Unlock()
		for {
			m.mu.Lock()
			var batch []storage.Event
			for ; next < len(m.history); next++ {
				ev := m.history[next]
				if ev.Revision > afterRev && strings.HasPrefix(ev.KV.Key, prefix) {
					batch = append(batch, ev)
				}
			}
			changed, fail := m.changed, m.epoch != epoch
			m.mu.Unlock()
			for _, ev := range batch {
				select {
				case out <- storage.WatchResult{Event: ev}:
				case <-ctx.Done():
					return
				}
			}
			if fail {
				select {
				case out <- storage.WatchResult{Err: fmt.Errorf("memstore: watch failed on purpose")}:
				case <-ctx.Done():
				}
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// breakWatches makes every open watch fail, as a compaction or an etcd
// restart would.
func (m *memStore) breakWatches() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *memStore) CurrentRevision(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev, nil
}

func (m *memStore) Compact(context.Context, int64) error { return nil }
func (m *memStore) Close() error                         { return nil }

// keys returns the stored keys under prefix.
func (m *memStore) keys(prefix string) []string {
	kvs, _, _ := m.List(context.Background(), prefix, 0)
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}
