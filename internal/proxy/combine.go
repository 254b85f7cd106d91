package proxy

import (
	"context"
	"errors"
)

// Combine returns a Backend that syncs every backend in turn (e.g. the
// IPv4 and IPv6 tables of one mode) under one name. Sync fails if any
// backend fails; every backend is still attempted.
func Combine(name string, backends ...Backend) Backend {
	return &combined{name: name, backends: backends}
}

type combined struct {
	name     string
	backends []Backend
}

func (c *combined) Name() string { return c.name }

func (c *combined) Sync(ctx context.Context, st *State) error {
	var errs []error
	for _, b := range c.backends {
		errs = append(errs, b.Sync(ctx, st))
	}
	return errors.Join(errs...)
}

func (c *combined) Cleanup(ctx context.Context) error {
	var errs []error
	for _, b := range c.backends {
		errs = append(errs, b.Cleanup(ctx))
	}
	return errors.Join(errs...)
}

// LastSyncStats sums the rule counts; partial only if all were partial.
func (c *combined) LastSyncStats() (partial bool, rules int) {
	partial = true
	for _, b := range c.backends {
		s, ok := b.(SyncStats)
		if !ok {
			continue
		}
		p, r := s.LastSyncStats()
		partial = partial && p
		rules += r
	}
	return partial, rules
}
