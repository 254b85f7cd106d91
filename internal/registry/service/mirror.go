package service

import (
	"context"
	"fmt"
	"time"

	"github.com/svcnet/svcnet/internal/allocator"
	"github.com/svcnet/svcnet/internal/storage"
)

// Run keeps the in-memory mirror of the allocation keys current: it lists
// AllocationsPrefix, then watches it from the list's revision, and starts over
// with a fresh list when the watch fails (compaction, etcd restart). It
// returns when ctx ends. Allocate waits for the first list.
func (a *Allocations) Run(ctx context.Context) error {
	const maxBackoff = 5 * time.Second
	backoff := 100 * time.Millisecond
	for {
		rev, err := a.relist(ctx)
		if err == nil {
			a.syncOnce.Do(func() { close(a.synced) })
			backoff = 100 * time.Millisecond
			err = a.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("allocation mirror: list+watch failed; starting over", "err", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// relist rebuilds the mirror from storage and returns the list's revision.
func (a *Allocations) relist(ctx context.Context) (int64, error) {
	kvs, rev, err := a.store.List(ctx, AllocationsPrefix, 0)
	if err != nil {
		return 0, fmt.Errorf("service: list allocations: %w", err)
	}
	ips, err := allocator.NewIPRange(a.cidr)
	if err != nil {
		return 0, err
	}
	ports, err := allocator.NewPortRange(a.portRange.Base, a.portRange.Size)
	if err != nil {
		return 0, err
	}
	stored := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		ip, port, ok := parseKey(kv.Key)
		switch {
		case !ok:
			a.log.Warn("allocation mirror: ignoring malformed key", "key", kv.Key)
			continue
		case ip.IsValid():
			_ = ips.Allocate(ip) // out of range: not ours to hand out anyway
		default:
			_ = ports.Allocate(port)
		}
		stored[kv.Key] = true
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.ips, a.ports = ips, ports
	for key := range a.reserved {
		if stored[key] {
			delete(a.reserved, key) // its write committed
		} else {
			a.setLocked(key, true) // still in flight
		}
	}
	a.log.Debug("allocation mirror listed", "revision", rev, "keys", len(kvs))
	return rev, nil
}

// watch applies changes after rev until the watch fails or ctx ends. It also
// expires reservations of failed writes, so that Allocated and the free
// counts settle without further allocations.
func (a *Allocations) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := a.store.Watch(wctx, AllocationsPrefix, rev)
	tick := time.NewTicker(reservationTTL / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			a.mu.Lock()
			a.expireLocked()
			a.mu.Unlock()
		case r, ok := <-ch:
			if !ok {
				return errWatchClosed
			}
			if r.Err != nil {
				return r.Err
			}
			a.apply(r.Event)
		}
	}
}

// apply updates the mirror for one stored change.
func (a *Allocations) apply(ev storage.Event) {
	if ev.Type == storage.EventProgress {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := ev.KV.Key
	switch ev.Type {
	case storage.EventPut:
		a.setLocked(key, true)
		delete(a.reserved, key)
	case storage.EventDelete:
		// A reserved value belongs to a write of ours still in flight (our
		// mirror was behind); its reservation expires if that write fails.
		if _, ok := a.reserved[key]; !ok {
			a.setLocked(key, false)
		}
	}
}
