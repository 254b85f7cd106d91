package apiserver

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/svcnet/svcnet/internal/storage"
)

// Continuation pages from a snapshot.
//
// Every page of a paged LIST is read at the revision of the first page.
// Read from etcd with a limit, each page costs a range request whose count
// (for remainingItemCount; etcd computes it on every ranged read) visits
// every key from the page's start to the end of the prefix: kubectl paging
// 10k Services by 500 made etcd visit ~105k index entries in 20 requests,
// the largest cost of a paged Table LIST after encoding.
//
// What a revision holds never changes, so the first continuation reads the
// rest of the list at that revision once (up to snapshotMaxKeys keys) and
// keeps it; the following pages of the same list are cut from it, with the
// same keys, values, more flag and count etcd would have returned. Before
// serving a page the store is asked (an empty read at that revision)
// whether the revision has been compacted, so a compacted continue token is
// still a 410. Snapshots are dropped snapshotTTL after their last use, and
// the oldest go first when there are more than snapshotMax or they hold
// more than snapshotMaxBytes.

const (
	snapshotMaxKeys  = 20000
	snapshotMax      = 8
	snapshotMaxBytes = 64 << 20
	snapshotTTL      = time.Minute
)

// pageSnapshot holds the keys of prefix in [from, …) at rev: all of them
// when !more, else the first len(kvs) (count is then the total).
type pageSnapshot struct {
	s        *Server
	prefix   string
	rev      int64
	from     string
	kvs      []storage.KV
	more     bool
	count    int64
	bytes    int
	lastUsed time.Time
}

var snapshots struct {
	sync.Mutex
	list  []*pageSnapshot
	bytes int
	// sweep, while set, drops expired snapshots when it fires, so that
	// the last list's snapshot does not outlive snapshotTTL for want of
	// another paged request.
	sweep *time.Timer
}

// listRangeAt is listRange for a page of a list; continuation pages
// (continued, rev > 0) are served from a snapshot when they can be.
func (s *Server) listRangeAt(ctx context.Context, prefix, start string, rev, limit int64, continued bool) ([]storage.KV, int64, bool, int64, error) {
	if !continued || rev <= 0 || limit <= 0 {
		return s.listRange(ctx, prefix, start, rev, limit)
	}
	if _, ok := s.store.(rangeLister); !ok {
		return s.listRange(ctx, prefix, start, rev, limit)
	}
	from := prefix + start
	snap := s.findSnapshot(prefix, rev, from)
	if snap == nil {
		// The rest of the list, once.
		kvs, listRev, more, count, err := s.listRange(ctx, prefix, start, rev, snapshotMaxKeys)
		if err != nil {
			return nil, 0, false, 0, err
		}
		if int64(len(kvs)) <= limit {
			// One page is all there is: nothing to keep.
			return kvs, listRev, more, count, nil
		}
		snap = &pageSnapshot{s: s, prefix: prefix, rev: listRev, from: from, kvs: kvs, more: more, count: count}
		for i := range kvs {
			snap.bytes += len(kvs[i].Key) + len(kvs[i].Value) + 64
		}
		s.keepSnapshot(snap)
		return snap.page(from, limit)
	}
	// The revision may have been compacted since the snapshot was read.
	if _, _, err := s.store.List(ctx, prefix+"\xff\xff", rev); storage.IsExpired(err) {
		return nil, 0, false, 0, err
	}
	if kvs, listRev, more, count, ok := snap.pageOK(from, limit); ok {
		return kvs, listRev, more, count, nil
	}
	return s.listRange(ctx, prefix, start, rev, limit)
}

// page cuts the page starting at from (which the snapshot covers).
func (p *pageSnapshot) page(from string, limit int64) ([]storage.KV, int64, bool, int64, error) {
	kvs, rev, more, count, _ := p.pageOK(from, limit)
	return kvs, rev, more, count, nil
}

// pageOK cuts the page starting at from; false when the page runs past the
// keys the snapshot holds.
func (p *pageSnapshot) pageOK(from string, limit int64) ([]storage.KV, int64, bool, int64, bool) {
	i := sort.Search(len(p.kvs), func(i int) bool { return p.kvs[i].Key >= from })
	rest := p.kvs[i:]
	count := p.count - int64(i)
	switch {
	case int64(len(rest)) > limit:
		return rest[:limit:limit], p.rev, true, count, true
	case !p.more:
		return rest[:len(rest):len(rest)], p.rev, false, count, true
	}
	return nil, 0, false, 0, false
}

// findSnapshot returns the live snapshot of prefix at rev covering from.
func (s *Server) findSnapshot(prefix string, rev int64, from string) *pageSnapshot {
	now := time.Now()
	snapshots.Lock()
	defer snapshots.Unlock()
	evictSnapshotsLocked(now)
	for _, p := range snapshots.list {
		if p.s == s && p.prefix == prefix && p.rev == rev && p.from <= from {
			p.lastUsed = now
			return p
		}
	}
	return nil
}

// keepSnapshot adds p, dropping the least recently used beyond the bounds.
func (s *Server) keepSnapshot(p *pageSnapshot) {
	if p.bytes > snapshotMaxBytes {
		return
	}
	now := time.Now()
	p.lastUsed = now
	snapshots.Lock()
	defer snapshots.Unlock()
	snapshots.list = append(snapshots.list, p)
	snapshots.bytes += p.bytes
	evictSnapshotsLocked(now)
}

// evictSnapshotsLocked drops expired snapshots, then the least recently
// used ones while over the bounds.
func evictSnapshotsLocked(now time.Time) {
	keep := snapshots.list[:0]
	for _, p := range snapshots.list {
		if now.Sub(p.lastUsed) > snapshotTTL {
			snapshots.bytes -= p.bytes
			continue
		}
		keep = append(keep, p)
	}
	clear(snapshots.list[len(keep):])
	snapshots.list = keep
	if len(snapshots.list) > 0 && snapshots.sweep == nil {
		snapshots.sweep = time.AfterFunc(snapshotTTL, func() {
			snapshots.Lock()
			defer snapshots.Unlock()
			snapshots.sweep = nil
			evictSnapshotsLocked(time.Now())
		})
	}
	for len(snapshots.list) > snapshotMax || snapshots.bytes > snapshotMaxBytes {
		oldest := 0
		for i, p := range snapshots.list {
			if p.lastUsed.Before(snapshots.list[oldest].lastUsed) {
				oldest = i
			}
		}
		snapshots.bytes -= snapshots.list[oldest].bytes
		snapshots.list = append(snapshots.list[:oldest], snapshots.list[oldest+1:]...)
		snapshots.list[len(snapshots.list):cap(snapshots.list)][0] = nil
	}
}
