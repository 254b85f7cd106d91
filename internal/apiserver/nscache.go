package apiserver

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/storage"
)

// nsCache is an informer-like cache of which namespaces exist and are
// active, fed by one storage watch while Run is active. It saves the
// NamespaceLifecycle check of every namespaced create an etcd round trip.
//
// It only ever answers "active": a namespace that is missing from the cache,
// terminating in it, or recently deleted through this server, or any
// namespace while the cache is not synced, is looked up in storage (the
// consistent fallback), as kube-apiserver's admission plugin does with its
// informer and its force-live-lookup set. Namespaces turn Terminating only
// through this server (markNamespaceTerminating), which marks the entry
// before writing, so the cache never says "active" for a namespace this
// server has started to delete.
type nsCache struct {
	mu     sync.Mutex
	synced bool
	// active maps a namespace name to true when it exists and has no
	// deletionTimestamp.
	active map[string]bool
	// forceLive holds namespaces this server started to delete, until when
	// they are always looked up live (a watch event written before the
	// deletion may still be on its way and would say "active").
	forceLive map[string]time.Time
}

// nsForceLiveTTL is how long a namespace this server marked Terminating is
// looked up live (kube-apiserver's NamespaceLifecycle uses 30s too).
const nsForceLiveTTL = 30 * time.Second

// isActive reports whether the cache knows ns as existing and active.
func (c *nsCache) isActive(ns string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced || !c.active[ns] {
		return false
	}
	if until, ok := c.forceLive[ns]; ok {
		if time.Now().Before(until) {
			return false
		}
		delete(c.forceLive, ns)
	}
	return true
}

// markTerminating forces live lookups for ns for nsForceLiveTTL.
func (c *nsCache) markTerminating(ns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forceLive == nil {
		c.forceLive = map[string]time.Time{}
	}
	for name, until := range c.forceLive {
		if time.Now().After(until) {
			delete(c.forceLive, name)
		}
	}
	c.forceLive[ns] = time.Now().Add(nsForceLiveTTL)
	delete(c.active, ns)
}

func (c *nsCache) setSynced(active map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active, c.synced = active, active != nil
}

func (c *nsCache) set(ns string, active bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == nil {
		return
	}
	if active {
		c.active[ns] = true
	} else {
		delete(c.active, ns)
	}
}

// nsCacheRetry is how long the cache waits before relisting after its
// watch failed.
const nsCacheRetry = time.Second

// runNamespaceCache keeps s.nsCache in sync until ctx ends.
func (s *Server) runNamespaceCache(ctx context.Context) {
	nsRes := s.byGR[corev1.Resource("namespaces")]
	if nsRes == nil {
		return
	}
	defer s.nsCache.setSynced(nil)
	for ctx.Err() == nil {
		if err := s.syncNamespaceCache(ctx, nsRes); err != nil && ctx.Err() == nil {
			s.log.Warn("namespace cache: resyncing", "err", err)
		}
		s.nsCache.setSynced(nil)
		select {
		case <-ctx.Done():
		case <-time.After(nsCacheRetry):
		}
	}
}

// syncNamespaceCache lists the namespaces, then follows their watch until it
// fails or ctx ends.
func (s *Server) syncNamespaceCache(ctx context.Context, nsRes *resource) error {
	kvs, rev, err := s.store.List(ctx, nsRes.listPrefix(""), 0)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Start the watch before publishing the list so no change is missed.
	ch := s.store.Watch(wctx, nsRes.listPrefix(""), rev)
	active := make(map[string]bool, len(kvs))
	for i := range kvs {
		obj, err := s.decodeKV(nsRes, &kvs[i])
		if err != nil {
			return err
		}
		if m := objectMeta(obj); m.GetDeletionTimestamp() == nil {
			active[m.GetName()] = true
		}
	}
	s.nsCache.setSynced(active)
	for r := range ch {
		if r.Err != nil {
			return r.Err
		}
		ev := r.Event
		switch ev.Type {
		case storage.EventPut:
			obj, err := s.decodeKV(nsRes, &ev.KV)
			if err != nil {
				return err
			}
			m := objectMeta(obj)
			s.nsCache.set(m.GetName(), m.GetDeletionTimestamp() == nil)
		case storage.EventDelete:
			s.nsCache.set(ev.KV.Key[len(nsRes.listPrefix("")):], false)
		}
	}
	return ctx.Err()
}
