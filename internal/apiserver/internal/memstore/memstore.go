// Package memstore is an in-memory storage.Interface with etcd's semantics,
// for the apiserver's unit tests.
//
// It keeps every version of every key (MVCC) so that List can read at an old
// revision and Watch can replay history, until Compact discards it. One Txn is
// one revision, as in etcd; a watcher gets the Txn's events in op order. Like
// etcd, a watch from a compacted revision, or a watcher that falls behind a
// compaction, ends with an error satisfying storage.IsExpired.
//
// Progress notifications are sent only when a test asks for them (Progress).
package memstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/svcnet/svcnet/internal/storage"
)

type version struct {
	rev, create int64
	value       []byte
	deleted     bool
}

// Store is the in-memory store. The zero value is not usable; call New.
type Store struct {
	mu sync.Mutex // guards the fields below
	// rev is the latest revision; compacted is the compaction revision
	// (revisions below it are gone).
	rev, compacted int64
	keys           map[string][]version
	// log holds every event with Revision >= compacted, in order.
	log []storage.Event
	// changed is closed and replaced whenever log grows or progress is asked.
	changed chan struct{}
	// progress counts Progress calls.
	progress int64
}

var _ storage.Interface = (*Store)(nil)

// New returns an empty store at revision 1 (etcd starts there too).
func New() *Store {
	return &Store{rev: 1, keys: map[string][]version{}, changed: make(chan struct{})}
}

func (s *Store) latestLocked(key string) *version {
	vs := s.keys[key]
	if len(vs) == 0 || vs[len(vs)-1].deleted {
		return nil
	}
	return &vs[len(vs)-1]
}

// Get implements storage.Interface.
func (s *Store) Get(ctx context.Context, key string) (*storage.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.latestLocked(key)
	if v == nil {
		return nil, fmt.Errorf("memstore: get %q: %w", key, storage.ErrNotFound)
	}
	return &storage.KV{Key: key, Value: v.value, ModRevision: v.rev, CreateRevision: v.create}, nil
}

// List implements storage.Interface.
func (s *Store) List(ctx context.Context, prefix string, rev int64) ([]storage.KV, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev == 0 {
		rev = s.rev
	}
	if rev < s.compacted {
		return nil, 0, fmt.Errorf("memstore: list at %d (compacted at %d): %w", rev, s.compacted, storage.ErrExpired)
	}
	if rev > s.rev {
		return nil, 0, fmt.Errorf("memstore: list at future revision %d (current %d)", rev, s.rev)
	}
	var out []storage.KV
	for key, vs := range s.keys {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		// The last version at or before rev.
		i := sort.Search(len(vs), func(i int) bool { return vs[i].rev > rev }) - 1
		if i < 0 || vs[i].deleted {
			continue
		}
		out = append(out, storage.KV{Key: key, Value: vs[i].value, ModRevision: vs[i].rev, CreateRevision: vs[i].create})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, rev, nil
}

// Txn implements storage.Interface.
func (s *Store) Txn(ctx context.Context, ops ...storage.Op) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		if op.ExpectRevision == storage.Any {
			continue
		}
		var actual int64
		if v := s.latestLocked(op.Key); v != nil {
			actual = v.rev
		}
		if actual != op.ExpectRevision {
			return 0, &storage.PreconditionError{Key: op.Key, Expected: op.ExpectRevision, Actual: actual}
		}
	}
	next := s.rev + 1
	var events []storage.Event
	for _, op := range ops {
		cur := s.latestLocked(op.Key)
		var prev *storage.KV
		if cur != nil {
			prev = &storage.KV{Key: op.Key, Value: cur.value, ModRevision: cur.rev, CreateRevision: cur.create}
		}
		switch op.Type {
		case storage.OpPut:
			create := next
			if cur != nil {
				create = cur.create
			}
			value := append([]byte(nil), op.Value...)
			s.appendVersionLocked(op.Key, version{rev: next, create: create, value: value})
			events = append(events, storage.Event{Type: storage.EventPut, Revision: next, Prev: prev,
				KV: storage.KV{Key: op.Key, Value: value, ModRevision: next, CreateRevision: create}})
		case storage.OpDelete:
			if cur == nil {
				continue // etcd: deleting a missing key changes nothing
			}
			s.appendVersionLocked(op.Key, version{rev: next, deleted: true})
			events = append(events, storage.Event{Type: storage.EventDelete, Revision: next, Prev: prev,
				KV: storage.KV{Key: op.Key, ModRevision: next}})
		default:
			return 0, fmt.Errorf("memstore: unknown op type %d", op.Type)
		}
	}
	if len(events) == 0 {
		return s.rev, nil
	}
	s.rev = next
	s.log = append(s.log, events...)
	s.notifyLocked()
	return next, nil
}

// appendVersionLocked adds v to key's history; versions at one revision
// replace each other (two ops on one key in one Txn).
func (s *Store) appendVersionLocked(key string, v version) {
	vs := s.keys[key]
	if n := len(vs); n > 0 && vs[n-1].rev == v.rev {
		vs[n-1] = v
	} else {
		vs = append(vs, v)
	}
	s.keys[key] = vs
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Watch implements storage.Interface.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) <-chan storage.WatchResult {
	ch := make(chan storage.WatchResult, 100)
	go s.runWatch(ctx, prefix, afterRev, ch)
	return ch
}

func (s *Store) runWatch(ctx context.Context, prefix string, next int64, ch chan<- storage.WatchResult) {
	defer close(ch)
	s.mu.Lock()
	sentProgress := s.progress
	s.mu.Unlock()
	for {
		s.mu.Lock()
		if next+1 < s.compacted {
			compacted := s.compacted
			s.mu.Unlock()
			err := fmt.Errorf("memstore: watch from %d (compacted at %d): %w", next+1, compacted, storage.ErrExpired)
			select {
			case ch <- storage.WatchResult{Err: err}:
			case <-ctx.Done():
			}
			return
		}
		i := sort.Search(len(s.log), func(i int) bool { return s.log[i].Revision > next })
		var batch []storage.Event
		for ; i < len(s.log); i++ {
			if strings.HasPrefix(s.log[i].KV.Key, prefix) {
				batch = append(batch, s.log[i])
			}
		}
		cur, progress, changed := s.rev, s.progress, s.changed
		s.mu.Unlock()

		for _, ev := range batch {
			select {
			case ch <- storage.WatchResult{Event: ev}:
			case <-ctx.Done():
				return
			}
		}
		next = cur
		if progress != sentProgress {
			sentProgress = progress
			select {
			case ch <- storage.WatchResult{Event: storage.Event{Type: storage.EventProgress, Revision: cur}}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// CurrentRevision implements storage.Interface.
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, nil
}

// Compact implements storage.Interface.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.compacted {
		return fmt.Errorf("memstore: compact at %d (already compacted at %d): %w", rev, s.compacted, storage.ErrExpired)
	}
	if rev > s.rev {
		return fmt.Errorf("memstore: compact at future revision %d (current %d)", rev, s.rev)
	}
	s.compacted = rev
	for key, vs := range s.keys {
		// Keep the last version at or before rev (unless it is a tombstone)
		// and everything after it.
		i := sort.Search(len(vs), func(i int) bool { return vs[i].rev > rev }) - 1
		if i > 0 || (i == 0 && vs[0].deleted) {
			if vs[i].deleted {
				i++
			}
			vs = append([]version(nil), vs[i:]...)
		}
		if len(vs) == 0 {
			delete(s.keys, key)
			continue
		}
		s.keys[key] = vs
	}
	i := sort.Search(len(s.log), func(i int) bool { return s.log[i].Revision >= rev })
	s.log = append([]storage.Event(nil), s.log[i:]...)
	s.notifyLocked()
	return nil
}

// Progress makes every watcher send an EventProgress at the current
// revision once it has delivered the events before it.
func (s *Store) Progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress++
	s.notifyLocked()
}

// Close implements storage.Interface.
func (s *Store) Close() error { return nil }
