package apiserver

import (
	"context"
	"errors"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/svcnet/svcnet/internal/storage"
)

// Watch fan-out. Every watch of a resource used to open its own storage
// watch, and decode and encode every event itself: with 100 watchers of
// Services (kube-proxy on 100 nodes) one create was 100 etcd watch
// responses, 100 protobuf decodes and 100 encodes, which in profiles was
// most of the server's CPU per event and what made the event latency p99
// grow with the number of watchers.
//
// A watchHub is one storage watch per resource (all namespaces), shared by
// every watch of that resource that can be served from it. Each storage
// event becomes one watchEntry, decoded at most once (lazily: only when a
// watcher it is for needs the object) and encoded at most once per
// (media type, event type, object); the entry is handed to every watcher's
// channel and each watcher applies its own namespace and selectors and
// writes the shared bytes.
//
// Resource versions keep the semantics of a watch on storage:
//
//   - the hub starts at the revision its first watcher asked for and keeps
//     the last hubBuffer entries (at most hubBufferBytes of stored values);
//     a watcher starting at revision S joins when the hub has every event
//     after S (S >= the start of that window) and gets the buffered entries
//     after S replayed, then the live ones;
//   - before replaying, the store is asked whether S is still readable: a
//     revision etcd has compacted gives the same 410 "too old resource
//     version" a storage watch gives, even while the hub still holds it;
//   - a watcher older than the window reads storage directly, as before.
//
// A watcher whose channel is full (it reads slower than events arrive, by
// more than subBuffer entries) is ended, like kube-apiserver's cacher ends
// slow watchers; its client watches again from the last resourceVersion it
// saw. A storage watch failure ends the hub and every watcher with that
// error. The hub stops when its last watcher leaves.

const (
	// hubBuffer is how many recent entries a hub keeps for replay, and
	// hubBufferBytes how many bytes of stored values at most.
	hubBuffer      = 2048
	hubBufferBytes = 4 << 20
	// subBuffer is a watcher's channel capacity beyond its replay.
	subBuffer = 4096
)

// watchEntry is one storage event shared by the watchers of a hub.
type watchEntry struct {
	res *resource
	s   *Server
	ev  storage.Event

	curOnce, prevOnce sync.Once
	cur, prev         runtime.Object
	curErr, prevErr   error

	// mu serializes encoding of cur and prev: the codecs set and restore an
	// object's TypeMeta while encoding it, so two watchers must not encode
	// the same object at once.
	mu  sync.Mutex
	enc []encodedEvent // guarded by mu
}

// encodedEvent is a whole WatchEvent frame payload, ready to write.
type encodedEvent struct {
	mediaType string
	typ       watch.EventType
	prev      bool
	data      []byte
}

func newWatchEntry(s *Server, res *resource, ev storage.Event) *watchEntry {
	return &watchEntry{s: s, res: res, ev: ev}
}

// size is the stored bytes the entry holds (its decoded and encoded forms
// are a small multiple of it).
func (e *watchEntry) size() int {
	n := len(e.ev.KV.Key) + len(e.ev.KV.Value) + 256
	if e.ev.Prev != nil {
		n += len(e.ev.Prev.Value)
	}
	return n
}

// current returns the decoded object after a put (nil for deletes).
func (e *watchEntry) current() (runtime.Object, error) {
	if e.ev.Type != storage.EventPut {
		return nil, nil
	}
	e.curOnce.Do(func() { e.cur, e.curErr = e.decodeValue(e.ev.KV.Value) })
	return e.cur, e.curErr
}

// previous returns the decoded state before the change, with the revision
// at which it changed (nil when there was none).
func (e *watchEntry) previous() (runtime.Object, error) {
	if e.ev.Prev == nil {
		return nil, nil
	}
	e.prevOnce.Do(func() { e.prev, e.prevErr = e.decodeValue(e.ev.Prev.Value) })
	return e.prev, e.prevErr
}

func (e *watchEntry) decodeValue(value []byte) (runtime.Object, error) {
	obj := e.res.kind.New()
	if err := e.s.decodeInto(e.res, value, e.ev.Revision, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// cached returns the encoded event for (mediaType, typ, prev); e.mu held.
func (e *watchEntry) cached(mediaType string, typ watch.EventType, prev bool) []byte {
	for _, c := range e.enc {
		if c.mediaType == mediaType && c.typ == typ && c.prev == prev {
			return c.data
		}
	}
	return nil
}

// hubKey names a hub: one per server and resource.
type hubKey struct {
	s   *Server
	res *resource
}

// hubs holds the running hubs. It lives outside Server so that the hub
// needs no field there; entries are removed when a hub stops.
var hubs = struct {
	sync.Mutex
	m map[hubKey]*watchHub
}{m: map[hubKey]*watchHub{}}

// watchHub is the shared storage watch of one resource.
type watchHub struct {
	key    hubKey
	cancel context.CancelFunc

	mu sync.Mutex // guards the fields below
	// buf holds the last entries in revision order; the hub has seen every
	// event with a revision > bufStart.
	buf      []*watchEntry
	bufBytes int
	bufStart int64
	// lastRev is the highest revision seen (event or progress).
	lastRev int64
	subs    map[*watchSub]struct{}
	stopped bool
}

// watchSub is one watcher's membership in a hub.
type watchSub struct {
	hub *watchHub
	ch  chan *watchEntry
	// err is set before ch is closed by the hub: the storage watch's error,
	// or errSlowWatcher.
	err error
}

var errSlowWatcher = errors.New("apiserver: watcher too slow for the event rate")

// subscribe joins (or starts) the hub of res for a watch of the events
// after afterRev. It returns nil when the hub cannot serve that revision
// (the caller watches storage directly) and an IsExpired error when the
// store has compacted it.
func (s *Server) subscribe(ctx context.Context, res *resource, afterRev int64) (*watchSub, error) {
	if afterRev <= 0 {
		return nil, nil
	}
	key := hubKey{s: s, res: res}
	prefix := res.listPrefix("")
	// A hub can stop between the look-up and the join (its last watcher
	// left); then look again.
	for attempt := 0; attempt < 3; attempt++ {
		hubs.Lock()
		h := hubs.m[key]
		hubs.Unlock()
		if h == nil {
			return s.startHub(ctx, key, prefix, afterRev)
		}
		h.mu.Lock()
		ok, replay := afterRev >= h.bufStart, afterRev < h.lastRev
		h.mu.Unlock()
		if !ok {
			return nil, nil
		}
		if replay {
			if err := s.checkHistory(ctx, prefix, afterRev); err != nil {
				return nil, err
			}
		}
		if sub := h.join(afterRev); sub != nil {
			return sub, nil
		}
	}
	return nil, nil
}

// startHub starts the hub of key at afterRev, once the store is known to
// still have the events after it, and joins it.
func (s *Server) startHub(ctx context.Context, key hubKey, prefix string, afterRev int64) (*watchSub, error) {
	cur, err := s.store.CurrentRevision(ctx)
	if err != nil {
		return nil, nil
	}
	if afterRev < cur {
		if err := s.checkHistory(ctx, prefix, afterRev); err != nil {
			return nil, err
		}
	}
	hubs.Lock()
	defer hubs.Unlock()
	if h := hubs.m[key]; h != nil {
		// Another watcher started one meanwhile.
		return h.join(afterRev), nil
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &watchHub{key: key, cancel: cancel, bufStart: afterRev, lastRev: afterRev, subs: map[*watchSub]struct{}{}}
	hubs.m[key] = h
	sub := h.join(afterRev)
	go h.run(s.store.Watch(hctx, prefix, afterRev))
	return sub, nil
}

// checkHistory returns an IsExpired error when the store has compacted the
// events after afterRev (the check a storage watch from afterRev makes).
// Other errors are not reported: the watch itself will meet them.
func (s *Server) checkHistory(ctx context.Context, prefix string, afterRev int64) error {
	// A read of an empty key range at the first revision the watch needs.
	_, _, err := s.store.List(ctx, prefix+"\xff\xff", afterRev+1)
	if storage.IsExpired(err) {
		return err
	}
	return nil
}

// join adds a watcher of the events after afterRev, with the buffered ones
// already in its channel; nil when the hub has stopped or no longer holds
// every event after afterRev.
func (h *watchHub) join(afterRev int64) *watchSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || afterRev < h.bufStart {
		return nil
	}
	i := sort.Search(len(h.buf), func(i int) bool { return h.buf[i].ev.Revision > afterRev })
	sub := &watchSub{hub: h, ch: make(chan *watchEntry, subBuffer+len(h.buf)-i)}
	for _, e := range h.buf[i:] {
		sub.ch <- e
	}
	h.subs[sub] = struct{}{}
	return sub
}

// leave removes the watcher; the last one stops the hub.
func (sub *watchSub) leave() {
	h := sub.hub
	hubs.Lock()
	defer hubs.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; !ok {
		return
	}
	delete(h.subs, sub)
	if len(h.subs) == 0 && !h.stopped {
		h.stopLocked()
	}
}

// stopLocked ends the hub; hubs and h.mu are held.
func (h *watchHub) stopLocked() {
	h.stopped = true
	h.cancel()
	if hubs.m[h.key] == h {
		delete(hubs.m, h.key)
	}
	h.buf, h.bufBytes = nil, 0
}

// run distributes the storage events until the watch ends.
func (h *watchHub) run(events <-chan storage.WatchResult) {
	for wr := range events {
		if wr.Err != nil {
			h.fail(wr.Err)
			return
		}
		h.publish(newWatchEntry(h.key.s, h.key.res, wr.Event))
	}
	h.fail(errors.New("apiserver: storage watch ended"))
}

// publish buffers e and hands it to every watcher, ending those whose
// channel is full.
func (h *watchHub) publish(e *watchEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	if e.ev.Revision > h.lastRev {
		h.lastRev = e.ev.Revision
	}
	h.buf = append(h.buf, e)
	h.bufBytes += e.size()
	if len(h.buf) > hubBuffer+hubBuffer/4 || h.bufBytes > hubBufferBytes {
		// Drop the oldest, down to the bounds (amortised: a quarter more
		// entries than hubBuffer before trimming).
		drop := max(len(h.buf)-hubBuffer, 0)
		bytes := h.bufBytes
		for _, old := range h.buf[:drop] {
			bytes -= old.size()
		}
		for drop < len(h.buf)-1 && bytes > hubBufferBytes {
			bytes -= h.buf[drop].size()
			drop++
		}
		if drop > 0 {
			h.bufStart = h.buf[drop-1].ev.Revision
			h.buf = append(h.buf[:0:0], h.buf[drop:]...)
			h.bufBytes = bytes
		}
	}
	for sub := range h.subs {
		select {
		case sub.ch <- e:
		default:
			delete(h.subs, sub)
			sub.err = errSlowWatcher
			close(sub.ch)
		}
	}
}

// fail ends the hub and every watcher with err.
func (h *watchHub) fail(err error) {
	hubs.Lock()
	defer hubs.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		delete(h.subs, sub)
		sub.err = err
		close(sub.ch)
	}
	if !h.stopped {
		h.stopLocked()
	}
}
