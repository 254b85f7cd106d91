// Package storage is svcnet's narrow interface over etcd v3.
//
// Values are opaque bytes (the apiserver stores protobuf-encoded objects without
// metadata.resourceVersion). Every write is a transaction of one or more Ops,
// applied atomically: the apiserver uses that to commit a Service together with
// the keys that record its ClusterIP and NodePort allocations, so a crash can
// never leave an allocation without its Service or the other way round.
//
// Revisions are etcd revisions. An object's resourceVersion is the ModRevision
// of its key; a list's resourceVersion is the store revision it was read at.
package storage

import (
	"context"
	"errors"
	"fmt"
)

// KV is one stored key.
type KV struct {
	Key   string
	Value []byte
	// ModRevision is the revision of the last write to Key.
	ModRevision int64
	// CreateRevision is the revision at which Key was created.
	CreateRevision int64
}

// OpType says what an Op does.
type OpType int

const (
	// OpPut writes Value at Key.
	OpPut OpType = iota
	// OpDelete removes Key.
	OpDelete
)

// Any, as an Op's ExpectRevision, disables the precondition.
const Any int64 = -1

// Op is one write inside a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte
	// ExpectRevision is a precondition on the key's ModRevision:
	// 0 means the key must not exist (create), Any means no precondition,
	// any other value means the key must exist with exactly that ModRevision.
	ExpectRevision int64
}

// Put returns an Op writing value at key under the given precondition.
func Put(key string, value []byte, expect int64) Op {
	return Op{Type: OpPut, Key: key, Value: value, ExpectRevision: expect}
}

// Delete returns an Op deleting key under the given precondition.
func Delete(key string, expect int64) Op {
	return Op{Type: OpDelete, Key: key, ExpectRevision: expect}
}

// EventType is the kind of change a watch reports.
type EventType int

const (
	EventPut EventType = iota
	EventDelete
	// EventProgress carries only Revision: every key under the prefix is
	// known to be up to date at that revision (etcd progress notify).
	EventProgress
)

// Event is one change seen by Watch.
type Event struct {
	Type EventType
	// KV is the key after the change (Value empty for deletes; ModRevision is
	// the revision of the change).
	KV KV
	// Prev is the key before the change, nil when it did not exist.
	Prev *KV
	// Revision is the revision of the change (or of the progress notification).
	Revision int64
}

// Interface is the store the apiserver and allocators use.
type Interface interface {
	// Get returns the key, or an error satisfying IsNotFound.
	Get(ctx context.Context, key string) (*KV, error)
	// List returns every key with the prefix, in key order, read at revision rev
	// (0 = the latest, consistent). It returns the revision the list was read at.
	// A compacted rev gives an error satisfying IsExpired.
	List(ctx context.Context, prefix string, rev int64) (kvs []KV, listRev int64, err error)
	// Txn applies ops atomically and returns the new revision. When a
	// precondition fails nothing is written and the error is a *PreconditionError
	// naming the first failing key.
	Txn(ctx context.Context, ops ...Op) (rev int64, err error)
	// Watch streams changes under prefix strictly after revision afterRev
	// (events with Revision > afterRev). The channel is closed when ctx ends or
	// the watch fails; a failure is sent first as a WatchError. A compacted
	// afterRev gives a WatchError satisfying IsExpired.
	Watch(ctx context.Context, prefix string, afterRev int64) <-chan WatchResult
	// CurrentRevision returns the store's latest revision.
	CurrentRevision(ctx context.Context) (int64, error)
	// Compact discards history before rev.
	Compact(ctx context.Context, rev int64) error
	// Close releases the client (not the embedded server; see Server).
	Close() error
}

// WatchResult is either an event or a terminal error.
type WatchResult struct {
	Event Event
	Err   error
}

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("storage: key not found")

// ErrExpired is returned (wrapped) when a revision has been compacted.
var ErrExpired = errors.New("storage: revision compacted")

// PreconditionError reports the first Op whose ExpectRevision did not hold.
type PreconditionError struct {
	Key string
	// Expected is the Op's ExpectRevision; Actual is the key's ModRevision (0 if absent).
	Expected, Actual int64
}

func (e *PreconditionError) Error() string {
	return fmt.Sprintf("storage: precondition failed for %q: expected revision %d, have %d", e.Key, e.Expected, e.Actual)
}

// IsNotFound reports whether err means a missing key.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsExpired reports whether err means a compacted revision.
func IsExpired(err error) bool { return errors.Is(err, ErrExpired) }

// AsPrecondition returns the PreconditionError inside err, if any.
func AsPrecondition(err error) (*PreconditionError, bool) {
	var pe *PreconditionError
	ok := errors.As(err, &pe)
	return pe, ok
}
