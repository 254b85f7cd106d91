package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/svcnet/svcnet/internal/storage"
)

// Watch, modelled on kube-apiserver's etcd3 watcher and WatchServer.
//
// A watch starts at a revision R and streams the storage events after R,
// turned into watch events with the request's selectors (an object that
// starts matching is ADDED, one that stops matching is DELETED with its last
// matching state). Where it starts:
//
//   - sendInitialEvents=true (WatchList, also the default for a watch with
//     resourceVersion "" or "0"): list at the latest revision R, send ADDED for
//     each matching object, then - when bookmarks are allowed - one BOOKMARK of
//     the resource's kind with resourceVersion R and the annotation
//     k8s.io/initial-events-end: "true", then the events after R. Informers
//     wait for that bookmark, so it is always sent.
//   - otherwise resourceVersion=N: the events after N. A compacted N gives one
//     ERROR event (410 Expired, "too old resource version") and the end of the
//     stream; clients relist.
//
// With allowWatchBookmarks the stream also carries a BOOKMARK at the last
// revision sent every bookmarkInterval, and one for each storage progress
// notification. DELETED events carry the object's last state with the
// deletion's revision. JSON streams are one event per line; protobuf streams
// are length-prefixed WatchEvent frames (the apimachinery stream framers).

// handleWatch serves ?watch=true.
func (s *Server) handleWatch(rq *request) {
	opts, pred, err := s.listOptions(rq)
	if err != nil {
		rq.writeError(err)
		return
	}
	target, err := s.negotiate(rq.r, shapeWatch)
	if err != nil {
		rq.writeError(err)
		return
	}
	flusher, ok := rq.w.(http.Flusher)
	if !ok {
		rq.writeError(fmt.Errorf("apiserver: response writer %T cannot flush", rq.w))
		return
	}
	res := rq.res

	timeout := time.Duration(float64(30*time.Minute) * (1 + rand.Float64()))
	if opts.TimeoutSeconds != nil && *opts.TimeoutSeconds > 0 {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(rq.ctx, timeout)
	defer cancel()

	initial := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	var (
		startRev    int64
		initialObjs []runtime.Object
	)
	if initial {
		if opts.ResourceVersion != "" && opts.ResourceVersion != "0" {
			rv, err := parseRV(opts.ResourceVersion)
			if err != nil {
				rq.writeError(err)
				return
			}
			if err := s.checkNotFuture(rq, rv); err != nil {
				rq.writeError(err)
				return
			}
		}
		kvs, rev, err := s.store.List(ctx, res.listPrefix(rq.namespace), 0)
		if err != nil {
			rq.writeError(err)
			return
		}
		for i := range kvs {
			obj, err := s.decodeKV(res, &kvs[i])
			if err != nil {
				rq.writeError(err)
				return
			}
			if pred.matches(res, obj) {
				initialObjs = append(initialObjs, obj)
			}
		}
		startRev = rev
	} else if opts.ResourceVersion == "" || opts.ResourceVersion == "0" {
		if startRev, err = s.store.CurrentRevision(ctx); err != nil {
			rq.writeError(err)
			return
		}
	} else if startRev, err = parseRV(opts.ResourceVersion); err != nil {
		rq.writeError(err)
		return
	}

	// The shared watch of the resource when it can serve startRev (see
	// watch_hub.go), else a storage watch of our own.
	prefix := res.listPrefix(rq.namespace)
	var (
		events   <-chan storage.WatchResult
		subCh    <-chan *watchEntry
		startErr error
	)
	sub, err := s.subscribe(ctx, res, startRev)
	switch {
	case err != nil:
		startErr = err
	case sub != nil:
		defer sub.leave()
		subCh = sub.ch
	default:
		events = s.store.Watch(ctx, prefix, startRev)
	}

	ws := s.newWatchStream(rq, target, flusher)
	rq.w.Header().Set("Content-Type", ws.mediaType)
	rq.w.Header().Set("Transfer-Encoding", "chunked")
	rq.w.WriteHeader(http.StatusOK)
	flusher.Flush()
	if startErr != nil {
		_ = ws.send(watch.Error, watchErrorStatus(startErr, startRev))
		flusher.Flush()
		return
	}

	lastRev := startRev
	for _, obj := range initialObjs {
		if err := ws.send(watch.Added, obj); err != nil {
			return
		}
	}
	if initial && opts.AllowWatchBookmarks {
		if err := ws.send(watch.Bookmark, s.bookmarkObject(res, startRev, true)); err != nil {
			return
		}
	}
	flusher.Flush()

	var tick <-chan time.Time
	if opts.AllowWatchBookmarks {
		t := time.NewTicker(s.bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var (
			entry   *watchEntry
			failure error
		)
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if err := ws.send(watch.Bookmark, s.bookmarkObject(res, lastRev, false)); err != nil {
				return
			}
			flusher.Flush()
			continue
		case wr, ok := <-events:
			if !ok {
				return
			}
			if failure = wr.Err; failure == nil {
				entry = newWatchEntry(s, res, wr.Event)
			}
		case e, ok := <-subCh:
			if !ok {
				if errors.Is(sub.err, errSlowWatcher) {
					// The client watches again from the last
					// resourceVersion it saw.
					return
				}
				failure = sub.err
			}
			entry = e
		}
		if failure != nil {
			_ = ws.send(watch.Error, watchErrorStatus(failure, startRev))
			flusher.Flush()
			return
		}
		ev := &entry.ev
		switch {
		case ev.Type == storage.EventProgress:
			if ev.Revision > lastRev {
				lastRev = ev.Revision
			}
			if opts.AllowWatchBookmarks {
				if err := ws.send(watch.Bookmark, s.bookmarkObject(res, lastRev, false)); err != nil {
					return
				}
			}
		case ev.Revision <= startRev:
			// A shared watch's event from before this watch started.
		case !strings.HasPrefix(ev.KV.Key, prefix):
			// A shared watch's event of another namespace.
		default:
			if ev.Revision > lastRev {
				lastRev = ev.Revision
			}
			typ, obj, isPrev, err := watchEvent(res, pred, entry)
			if err != nil {
				_ = ws.send(watch.Error, &toStatus(err).ErrStatus)
				flusher.Flush()
				return
			}
			if obj != nil {
				if err := ws.sendEntry(typ, obj, entry, isPrev); err != nil {
					return
				}
			}
		}
		if len(events) == 0 && len(subCh) == 0 {
			flusher.Flush()
		}
	}
}

// watchErrorStatus is the ERROR event's object for a failed storage watch.
func watchErrorStatus(err error, startRev int64) *metav1.Status {
	if storage.IsExpired(err) {
		st := apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", startRev)).ErrStatus
		return &st
	}
	st := apierrors.NewInternalError(err).ErrStatus
	return &st
}

// bookmarkObject is an empty object of the resource's kind carrying only a
// resourceVersion (and, at the end of WatchList's initial events, the
// initial-events-end annotation).
func (s *Server) bookmarkObject(res *resource, rev int64, initialEnd bool) runtime.Object {
	obj := res.kind.New()
	m := objectMeta(obj)
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	if initialEnd {
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	return obj
}

// watchEvent turns a storage event into a watch event for the selectors;
// obj is nil when the event is not for this watcher, and isPrev says that
// obj is the state before the change. The entry decodes each state at most
// once, and only when needed.
func watchEvent(res *resource, pred predicate, e *watchEntry) (typ watch.EventType, obj runtime.Object, isPrev bool, err error) {
	ev := &e.ev
	var cur, prev runtime.Object
	if cur, err = e.current(); err != nil {
		return "", nil, false, err
	}
	needPrev := ev.Prev != nil && (ev.Type == storage.EventDelete || !pred.empty())
	if needPrev {
		// The old state, with the revision at which it changed.
		if prev, err = e.previous(); err != nil {
			return "", nil, false, err
		}
	}
	switch {
	case ev.Type == storage.EventDelete:
		if prev == nil || !pred.matches(res, prev) {
			return "", nil, false, nil
		}
		return watch.Deleted, prev, true, nil
	case ev.Prev == nil:
		if !pred.matches(res, cur) {
			return "", nil, false, nil
		}
		return watch.Added, cur, false, nil
	case pred.empty():
		return watch.Modified, cur, false, nil
	}
	curOK, prevOK := pred.matches(res, cur), pred.matches(res, prev)
	switch {
	case curOK && prevOK:
		return watch.Modified, cur, false, nil
	case curOK:
		return watch.Added, cur, false, nil
	case prevOK:
		return watch.Deleted, prev, true, nil
	}
	return "", nil, false, nil
}

// watchStream encodes watch events onto the response.
type watchStream struct {
	s         *Server
	rq        *request
	as        string
	mediaType string
	frames    io.Writer
	// outer encodes the WatchEvent envelope; the others encode the event's
	// object by type.
	outer, objEnc, metaEnc, statusEnc runtime.Encoder
	tableOpts                         metav1.TableOptions
	tableHeaderSent                   bool
	obj, event                        bytes.Buffer
}

func (s *Server) newWatchStream(rq *request, target outputTarget, flusher http.Flusher) *watchStream {
	info := target.info
	gv := rq.res.gvk.GroupVersion()
	mediaType := info.MediaType
	if mediaType != mediaJSON {
		mediaType += ";stream=watch"
	}
	ws := &watchStream{
		s:         s,
		rq:        rq,
		as:        target.as,
		mediaType: mediaType,
		frames:    info.StreamSerializer.Framer.NewFrameWriter(rq.w),
		outer:     s.codecs.EncoderForVersion(info.StreamSerializer.Serializer, gv),
		objEnc:    s.codecs.EncoderForVersion(info.Serializer, gv),
		metaEnc:   s.codecs.EncoderForVersion(info.Serializer, metav1.SchemeGroupVersion),
		statusEnc: s.codecs.EncoderForVersion(info.Serializer, metav1.Unversioned),
	}
	if ws.as == asTable {
		ws.tableOpts, _ = tableOptions(rq.r)
	}
	return ws
}

// send writes one event of an object of this watch alone as a single frame.
func (ws *watchStream) send(typ watch.EventType, obj runtime.Object) error {
	data, err := ws.encode(typ, obj)
	if err != nil {
		return err
	}
	_, err = ws.frames.Write(data)
	return err
}

// sendEntry writes an event whose object belongs to e, which other
// watchers may be encoding at the same time: the encoding happens under
// e.mu, and a whole-object event is encoded once per media type and kept in
// e for the other watchers.
func (ws *watchStream) sendEntry(typ watch.EventType, obj runtime.Object, e *watchEntry, isPrev bool) error {
	e.mu.Lock()
	data := []byte(nil)
	cache := ws.as == asObject
	if cache {
		data = e.cached(ws.mediaType, typ, isPrev)
	}
	if data == nil {
		encoded, err := ws.encode(typ, obj)
		if err != nil {
			e.mu.Unlock()
			return err
		}
		data = encoded
		if cache {
			data = bytes.Clone(encoded)
			e.enc = append(e.enc, encodedEvent{mediaType: ws.mediaType, typ: typ, prev: isPrev, data: data})
		}
	}
	e.mu.Unlock()
	_, err := ws.frames.Write(data)
	return err
}

// encode returns the event's frame payload, valid until the next encode.
func (ws *watchStream) encode(typ watch.EventType, obj runtime.Object) ([]byte, error) {
	enc := ws.objEnc
	switch {
	case typ == watch.Error:
		enc = ws.statusEnc
	case ws.as == asPartial:
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		p := meta.AsPartialObjectMetadata(m)
		p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
		obj, enc = p, ws.metaEnc
	case ws.as == asTable && typ != watch.Bookmark:
		t, err := ws.s.toTable(ws.rq.res, obj, false, ws.tableOpts, ws.tableHeaderSent)
		if err != nil {
			return nil, err
		}
		ws.tableHeaderSent = true
		obj, enc = t, ws.metaEnc
	}
	ws.obj.Reset()
	if err := enc.Encode(obj, &ws.obj); err != nil {
		ws.s.log.Error("encode watch object", "type", fmt.Sprintf("%T", obj), "err", err)
		return nil, err
	}
	ev := &metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: ws.obj.Bytes()}}
	ws.event.Reset()
	if err := ws.outer.Encode(ev, &ws.event); err != nil {
		ws.s.log.Error("encode watch event", "err", err)
		return nil, err
	}
	return ws.event.Bytes(), nil
}
