package proxy

import (
	"context"
	"time"
)

// Runner coalesces sync requests. The rules:
//
//   - Trigger never blocks: a one-slot channel holds at most one pending
//     request, so any number of triggers while a sync runs becomes one sync.
//   - A lone trigger (no sync started within BurstInterval) runs at once.
//   - A trigger that follows a sync within BurstInterval waits until
//     BurstInterval after that sync started, so a sustained stream of
//     changes costs at most one sync per BurstInterval (not one per change,
//     and no fixed 1 s floor either).
//   - Every Period a sync runs even without triggers; it is full when the
//     last full sync is older than FullPeriod (kube-proxy: syncPeriod 30 s,
//     full resync at most hourly, since a full nftables sync of 10k
//     services costs seconds).
//   - A failed sync is retried as a full sync after a backoff that doubles
//     from MinBackoff to MaxBackoff, and resets after a success.
type Runner struct {
	// Sync does one sync; full asks for a full resync.
	Sync func(ctx context.Context, full bool) error
	// Period is the periodic sync interval (kube-proxy syncPeriod).
	Period time.Duration
	// FullPeriod is the longest time between full syncs (0: every
	// periodic sync is full).
	FullPeriod time.Duration
	// BurstInterval is the minimum spacing of back-to-back syncs.
	BurstInterval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after a failure.
	MinBackoff, MaxBackoff time.Duration

	trigger chan struct{}
}

// NewRunner returns a Runner with kube-proxy-like defaults (period 30 s,
// burst interval 100 ms, backoff 100 ms … 10 s).
func NewRunner(sync func(ctx context.Context, full bool) error) *Runner {
	return &Runner{
		Sync:          sync,
		Period:        30 * time.Second,
		FullPeriod:    time.Hour,
		BurstInterval: 100 * time.Millisecond,
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    10 * time.Second,
		trigger:       make(chan struct{}, 1),
	}
}

// Trigger requests a sync; it never blocks.
func (r *Runner) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run runs syncs until ctx is cancelled. The first sync is full and runs at
// once.
func (r *Runner) Run(ctx context.Context) {
	var (
		lastStart time.Time
		lastFull  time.Time
		backoff   time.Duration
		full      = true
		pending   = true // the initial sync
	)
	periodic := time.NewTimer(r.Period)
	defer periodic.Stop()
	wait := time.NewTimer(0)
	defer wait.Stop()
	waiting := true // wait timer armed

	for {
		if pending && !waiting {
			// Decide when the pending sync may run.
			delay := time.Duration(0)
			if backoff > 0 {
				delay = backoff
			} else if !lastStart.IsZero() {
				delay = r.BurstInterval - time.Since(lastStart)
			}
			if delay < 0 {
				delay = 0
			}
			wait.Reset(delay)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
			pending = true
			continue
		case <-periodic.C:
			pending = true
			if time.Since(lastFull) >= r.FullPeriod {
				full = true
			}
			periodic.Reset(r.Period)
			continue
		case <-wait.C:
			waiting = false
			if !pending {
				continue
			}
		}
		// Drain a trigger that raced with the timer: this sync covers it.
		select {
		case <-r.trigger:
		default:
		}
		pending = false
		if r.FullPeriod > 0 && !lastFull.IsZero() && time.Since(lastFull) >= r.FullPeriod {
			full = true // even when changes keep every sync triggered
		}
		lastStart = time.Now()
		err := r.Sync(ctx, full)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			full, pending = true, true
			switch {
			case backoff == 0:
				backoff = r.MinBackoff
			case backoff < r.MaxBackoff:
				backoff = min(2*backoff, r.MaxBackoff)
			}
			continue
		}
		backoff = 0
		if full {
			full = false
			lastFull = lastStart
		}
		periodic.Reset(r.Period)
	}
}
