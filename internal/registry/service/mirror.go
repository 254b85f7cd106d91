package service

import (
	"context"
	"errors"
	"fmt"
	"time"
	"weak"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/allocator"
	"github.com/svcnet/svcnet/internal/storage"
)

var errWatchClosed = errors.New("service: allocation watch closed")

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

// setLocked marks key's value taken or free in the mirror; values outside the
// configured ranges are ignored. It reports whether the bit changed.
func (a *Allocations) setLocked(key string, taken bool) bool {
	ip, port, ok := parseKey(key)
	switch {
	case !ok:
		return false
	case ip.IsValid() && taken:
		return a.ips.Allocate(ip) == nil
	case ip.IsValid():
		return a.ips.Release(ip)
	case taken:
		return a.ports.Allocate(port) == nil
	default:
		return a.ports.Release(port)
	}
}

// takeLocked marks key taken and reserves it if it was free in the mirror.
func (a *Allocations) takeLocked(key string) bool {
	if !a.setLocked(key, true) {
		return false
	}
	a.reserveLocked(key)
	return true
}

// reserveLocked records that key was taken for an in-flight write.
func (a *Allocations) reserveLocked(key string) {
	a.seq++
	d := a.now().Add(reservationTTL)
	a.reserved[key] = a.seq
	a.expiry = append(a.expiry, expiryEntry{deadline: d, seq: a.seq, key: key})
}

func (a *Allocations) recordAttemptLocked(svc *v1.Service, tx *allocTx) {
	a.seq++
	wp := weak.Make(svc)
	at := attempt{seq: a.seq, taken: make(map[string]uint64, len(tx.taken)), dynamic: tx.dynamic}
	for _, k := range tx.taken {
		at.taken[k] = a.reserved[k]
	}
	a.attempts[wp] = at
	a.expiry = append(a.expiry, expiryEntry{deadline: a.now().Add(reservationTTL), seq: a.seq, attempt: wp})
}

// expireLocked drops reservations and attempts past their deadline. A
// reservation still present at its deadline was never seen in storage: its
// write failed, so the value is free again.
func (a *Allocations) expireLocked() {
	now := a.now()
	for ; a.expiryHead < len(a.expiry); a.expiryHead++ {
		e := a.expiry[a.expiryHead]
		if e.deadline.After(now) {
			break
		}
		a.expiry[a.expiryHead] = expiryEntry{}
		if e.key == "" {
			if at, ok := a.attempts[e.attempt]; ok && at.seq == e.seq {
				delete(a.attempts, e.attempt)
			}
			continue
		}
		if seq, ok := a.reserved[e.key]; ok && seq == e.seq {
			delete(a.reserved, e.key)
			a.setLocked(e.key, false)
		}
	}
	// Compact once the consumed head is at least half the queue, so each
	// entry is copied O(1) times.
	if a.expiryHead > 0 && a.expiryHead*2 >= len(a.expiry) {
		n := copy(a.expiry, a.expiry[a.expiryHead:])
		a.expiry = a.expiry[:n]
		a.expiryHead = 0
	}
}
