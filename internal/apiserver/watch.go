package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
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

	events := s.store.Watch(ctx, res.listPrefix(rq.namespace), startRev)

	ws := s.newWatchStream(rq, target, flusher)
	rq.w.Header().Set("Content-Type", ws.mediaType)
	rq.w.Header().Set("Transfer-Encoding", "chunked")
	rq.w.WriteHeader(http.StatusOK)
	flusher.Flush()

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
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if err := ws.send(watch.Bookmark, s.bookmarkObject(res, lastRev, false)); err != nil {
				return
			}
			flusher.Flush()
		case wr, ok := <-events:
			if !ok {
				return
			}
			if wr.Err != nil {
				_ = ws.send(watch.Error, watchErrorStatus(wr.Err, startRev))
				flusher.Flush()
				return
			}
			ev := wr.Event
			if ev.Type == storage.EventProgress {
				if ev.Revision > lastRev {
					lastRev = ev.Revision
				}
				if opts.AllowWatchBookmarks {
					if err := ws.send(watch.Bookmark, s.bookmarkObject(res, lastRev, false)); err != nil {
						return
					}
				}
			} else {
				if ev.Revision > lastRev {
					lastRev = ev.Revision
				}
				typ, obj, err := s.watchEvent(res, pred, ev)
				if err != nil {
					_ = ws.send(watch.Error, &toStatus(err).ErrStatus)
					flusher.Flush()
					return
				}
				if obj != nil {
					if err := ws.send(typ, obj); err != nil {
						return
					}
				}
			}
			if len(events) == 0 {
				flusher.Flush()
			}
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
// obj is nil when the event is not for this watcher.
func (s *Server) watchEvent(res *resource, pred predicate, ev storage.Event) (watch.EventType, runtime.Object, error) {
	var cur, prev runtime.Object
	var err error
	if ev.Type == storage.EventPut {
		if cur, err = s.decode(res, ev.KV.Value, ev.Revision); err != nil {
			return "", nil, err
		}
	}
	needPrev := ev.Prev != nil && (ev.Type == storage.EventDelete || !pred.empty())
	if needPrev {
		// The old state, with the revision at which it changed.
		if prev, err = s.decode(res, ev.Prev.Value, ev.Revision); err != nil {
			return "", nil, err
		}
	}
	switch {
	case ev.Type == storage.EventDelete:
		if prev == nil || !pred.matches(res, prev) {
			return "", nil, nil
		}
		return watch.Deleted, prev, nil
	case ev.Prev == nil:
		if !pred.matches(res, cur) {
			return "", nil, nil
		}
		return watch.Added, cur, nil
	case pred.empty():
		return watch.Modified, cur, nil
	}
	curOK, prevOK := pred.matches(res, cur), pred.matches(res, prev)
	switch {
	case curOK && prevOK:
		return watch.Modified, cur, nil
	case curOK:
		return watch.Added, cur, nil
	case prevOK:
		return watch.Deleted, prev, nil
	}
	return "", nil, nil
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

// send writes one event as a single frame.
func (ws *watchStream) send(typ watch.EventType, obj runtime.Object) error {
	enc := ws.objEnc
	switch {
	case typ == watch.Error:
		enc = ws.statusEnc
	case ws.as == asPartial:
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		p := meta.AsPartialObjectMetadata(m)
		p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
		obj, enc = p, ws.metaEnc
	case ws.as == asTable && typ != watch.Bookmark:
		t, err := ws.s.toTable(ws.rq.res, obj, false, ws.tableOpts, ws.tableHeaderSent)
		if err != nil {
			return err
		}
		ws.tableHeaderSent = true
		obj, enc = t, ws.metaEnc
	}
	ws.obj.Reset()
	if err := enc.Encode(obj, &ws.obj); err != nil {
		ws.s.log.Error("encode watch object", "type", fmt.Sprintf("%T", obj), "err", err)
		return err
	}
	ev := &metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: ws.obj.Bytes()}}
	ws.event.Reset()
	if err := ws.outer.Encode(ev, &ws.event); err != nil {
		ws.s.log.Error("encode watch event", "err", err)
		return err
	}
	_, err := ws.frames.Write(ws.event.Bytes())
	return err
}
