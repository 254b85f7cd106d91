// Package etcd implements storage.Interface on an etcd v3 cluster (clientv3),
// and starts an embedded single-member etcd for the all-in-one server.
//
// Mapping to etcd:
//   - Txn: one etcd transaction. Each Op's precondition becomes a Compare
//     (ExpectRevision 0 → CreateRevision == 0; n → ModRevision == n). When the
//     compares fail, the Else branch reads the compared keys so we can name the
//     first one that failed without a second round trip.
//   - Watch: an etcd watch from afterRev+1 with PrevKV and progress notify;
//     the context is wrapped WithRequireLeader so a partitioned member ends the
//     watch instead of going silent.
//   - A compacted revision, on List or Watch, becomes storage.ErrExpired.
//
// The all-in-one server's own Store calls its embedded member in-process
// (Dial); other clients, and any Store from DialRemote, use gRPC.
package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/svcnet/svcnet/internal/storage"
)

// Store is a storage.Interface over a clientv3 client.
type Store struct {
	client *clientv3.Client
	// owned says whether Close closes client.
	owned bool
	// local says the client calls a member of this process directly;
	// kv is then that member's KV service, for Txn.
	local bool
	kv    etcdserverpb.KVClient
}

var _ storage.Interface = (*Store)(nil)

// New returns a Store using client. Close does not close client.
func New(client *clientv3.Client) *Store {
	return &Store{client: client}
}

// Dial returns a Store for the etcd at endpoints that owns its client.
//
// When endpoints are client URLs of a member embedded in this process
// (StartEmbedded), the client calls that member's server directly, as
// etcd's v3client does: no gRPC, no TLS, no loopback sockets, and cfg is not
// used. Every request then costs the API server a function call where it
// cost a gRPC round trip over TLS (encryption, HTTP/2 framing and the gRPC
// server on both ends, in the same process): about a third of the server's
// CPU per Service create. The member's listeners keep serving other
// clients. Otherwise Dial is DialRemote.
func Dial(ctx context.Context, endpoints []string, cfg clientv3.Config) (*Store, error) {
	if e := inProcess.find(endpoints); e != nil {
		return &Store{client: e.localClient(), owned: true, local: true, kv: e.localKV()}, nil
	}
	return DialRemote(ctx, endpoints, cfg)
}

// DialRemote connects to the etcd endpoints over the network, even when
// they belong to a member of this process.
func DialRemote(ctx context.Context, endpoints []string, cfg clientv3.Config) (*Store, error) {
	cfg.Endpoints = endpoints
	cfg.Context = ctx
	if cfg.Logger == nil {
		// clientv3 logs every retried call at warn level; callers see the errors.
		cfg.Logger = zap.NewNop()
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10e9
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: dial etcd %v: %w", endpoints, err)
	}
	return &Store{client: c, owned: true}, nil
}

// Client returns the underlying client (for health checks and tools).
func (s *Store) Client() *clientv3.Client { return s.client }

// InProcess reports whether the Store calls a member of this process
// directly (see Dial).
func (s *Store) InProcess() bool { return s.local }

// Close closes the client if the Store created it.
func (s *Store) Close() error {
	if s.owned {
		return s.client.Close()
	}
	return nil
}

func toKV(kv *mvccpb.KeyValue) storage.KV {
	return storage.KV{
		Key:            string(kv.Key),
		Value:          kv.Value,
		ModRevision:    kv.ModRevision,
		CreateRevision: kv.CreateRevision,
	}
}

func wrapErr(op string, err error) error {
	if errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("storage: %s: %w: %v", op, storage.ErrExpired, err)
	}
	return fmt.Errorf("storage: %s: %w", op, err)
}

// Get implements storage.Interface.
func (s *Store) Get(ctx context.Context, key string) (*storage.KV, error) {
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, wrapErr("get "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", storage.ErrNotFound, key)
	}
	kv := toKV(resp.Kvs[0])
	return &kv, nil
}

// List implements storage.Interface.
func (s *Store) List(ctx context.Context, prefix string, rev int64) ([]storage.KV, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.client.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, wrapErr("list "+prefix, err)
	}
	kvs := make([]storage.KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = toKV(kv)
	}
	listRev := resp.Header.Revision
	if rev > 0 {
		listRev = rev
	}
	return kvs, listRev, nil
}

// Txn implements storage.Interface.
func (s *Store) Txn(ctx context.Context, ops ...storage.Op) (int64, error) {
	var (
		resp    *etcdserverpb.TxnResponse
		checked []storage.Op
		err     error
	)
	if s.kv != nil {
		resp, checked, err = s.txnInProcess(ctx, ops)
	} else {
		resp, checked, err = s.txnClient(ctx, ops)
	}
	if err != nil {
		return 0, wrapErr("txn", err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	for i, op := range checked {
		var actual int64
		if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
			actual = r.Kvs[0].ModRevision
		}
		if actual != op.ExpectRevision {
			return 0, &storage.PreconditionError{Key: op.Key, Expected: op.ExpectRevision, Actual: actual}
		}
	}
	// The compares failed but every key now matches: a racing write came and
	// went. Report the first checked key; callers retry on precondition errors.
	return 0, &storage.PreconditionError{Key: checked[0].Key, Expected: checked[0].ExpectRevision, Actual: -1}
}

// txnClient sends ops through clientv3's transaction builder.
func (s *Store) txnClient(ctx context.Context, ops []storage.Op) (*etcdserverpb.TxnResponse, []storage.Op, error) {
	var cmps []clientv3.Cmp
	var checked []storage.Op
	thenOps := make([]clientv3.Op, 0, len(ops))
	for _, op := range ops {
		switch {
		case op.ExpectRevision == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.Key), "=", 0))
			checked = append(checked, op)
		case op.ExpectRevision > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.ExpectRevision))
			checked = append(checked, op)
		}
		switch op.Type {
		case storage.OpPut:
			thenOps = append(thenOps, clientv3.OpPut(op.Key, string(op.Value)))
		case storage.OpDelete:
			thenOps = append(thenOps, clientv3.OpDelete(op.Key))
		default:
			return nil, nil, fmt.Errorf("storage: unknown op type %d", op.Type)
		}
	}
	elseOps := make([]clientv3.Op, len(checked))
	for i, op := range checked {
		elseOps[i] = clientv3.OpGet(op.Key)
	}
	resp, err := s.client.Txn(ctx).If(cmps...).Then(thenOps...).Else(elseOps...).Commit()
	if err != nil {
		return nil, nil, err
	}
	return (*etcdserverpb.TxnResponse)(resp), checked, nil
}

// txnInProcess builds the same request as txnClient directly (clientv3's
// builder copies every value and clones every compare) and hands it to the
// in-process member. The member marshals the request into its raft log
// before the call returns, so it keeps no reference to op.Value.
func (s *Store) txnInProcess(ctx context.Context, ops []storage.Op) (*etcdserverpb.TxnResponse, []storage.Op, error) {
	req := &etcdserverpb.TxnRequest{Success: make([]*etcdserverpb.RequestOp, 0, len(ops))}
	var checked []storage.Op
	for _, op := range ops {
		key := []byte(op.Key)
		switch {
		case op.ExpectRevision == 0:
			req.Compare = append(req.Compare, &etcdserverpb.Compare{
				Key: key, Target: etcdserverpb.Compare_CREATE, Result: etcdserverpb.Compare_EQUAL,
				TargetUnion: &etcdserverpb.Compare_CreateRevision{CreateRevision: 0},
			})
			checked = append(checked, op)
		case op.ExpectRevision > 0:
			req.Compare = append(req.Compare, &etcdserverpb.Compare{
				Key: key, Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_EQUAL,
				TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: op.ExpectRevision},
			})
			checked = append(checked, op)
		}
		switch op.Type {
		case storage.OpPut:
			req.Success = append(req.Success, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestPut{
				RequestPut: &etcdserverpb.PutRequest{Key: key, Value: op.Value},
			}})
		case storage.OpDelete:
			req.Success = append(req.Success, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestDeleteRange{
				RequestDeleteRange: &etcdserverpb.DeleteRangeRequest{Key: key},
			}})
		default:
			return nil, nil, fmt.Errorf("storage: unknown op type %d", op.Type)
		}
	}
	req.Failure = make([]*etcdserverpb.RequestOp, len(checked))
	for i, op := range checked {
		req.Failure[i] = &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestRange{
			RequestRange: &etcdserverpb.RangeRequest{Key: []byte(op.Key)},
		}}
	}
	resp, err := s.kv.Txn(ctx, req)
	if err != nil {
		return nil, nil, rpctypes.Error(err)
	}
	return resp, checked, nil
}

// Watch implements storage.Interface.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) <-chan storage.WatchResult {
	out := make(chan storage.WatchResult, 100)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithProgressNotify()}
	if afterRev > 0 {
		opts = append(opts, clientv3.WithRev(afterRev+1))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(wctx, prefix, opts...)
	go func() {
		defer close(out)
		defer cancel()
		send := func(r storage.WatchResult) bool {
			select {
			case out <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for resp := range wch {
			if resp.CompactRevision != 0 {
				send(storage.WatchResult{Err: fmt.Errorf("storage: watch %s from %d: %w (compacted at %d)", prefix, afterRev, storage.ErrExpired, resp.CompactRevision)})
				return
			}
			if err := resp.Err(); err != nil {
				send(storage.WatchResult{Err: wrapErr("watch "+prefix, err)})
				return
			}
			if resp.IsProgressNotify() {
				if !send(storage.WatchResult{Event: storage.Event{Type: storage.EventProgress, Revision: resp.Header.Revision}}) {
					return
				}
				continue
			}
			for _, ev := range resp.Events {
				e := storage.Event{KV: toKV(ev.Kv), Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypeDelete {
					e.Type = storage.EventDelete
				}
				if ev.PrevKv != nil {
					p := toKV(ev.PrevKv)
					e.Prev = &p
				}
				if !send(storage.WatchResult{Event: e}) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(storage.WatchResult{Err: fmt.Errorf("storage: watch %s closed", prefix)})
		}
	}()
	return out
}

// CurrentRevision implements storage.Interface.
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return 0, wrapErr("current revision", err)
	}
	return resp.Header.Revision, nil
}

// Compact implements storage.Interface.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	_, err := s.client.Compact(ctx, rev, clientv3.WithCompactPhysical())
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return wrapErr("compact", err)
	}
	return nil
}

// Status reports the health of the first endpoint, for /readyz.
func (s *Store) Status(ctx context.Context) (*etcdserverpb.StatusResponse, error) {
	eps := s.client.Endpoints()
	if s.local {
		eps = []string{""} // the in-process client has one server and ignores the endpoint
	}
	if len(eps) == 0 {
		return nil, errors.New("storage: no etcd endpoints")
	}
	resp, err := s.client.Status(ctx, eps[0])
	if err != nil {
		return nil, wrapErr("status", err)
	}
	return (*etcdserverpb.StatusResponse)(resp), nil
}

// ListRange is List restricted to the keys in [prefix+start, end of prefix),
// at most limit of them (0 = no limit), read at rev (0 = the latest,
// consistent). more says whether keys remain after the returned ones, and
// count is the number of keys in the whole range (returned ones included).
// It is an optional addition to storage.Interface that lets the apiserver
// read LIST pages without reading the whole prefix.
func (s *Store) ListRange(ctx context.Context, prefix, start string, rev, limit int64) (kvs []storage.KV, listRev int64, more bool, count int64, err error) {
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix))}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(limit))
	}
	resp, err := s.client.Get(ctx, prefix+start, opts...)
	if err != nil {
		return nil, 0, false, 0, wrapErr("list "+prefix, err)
	}
	kvs = make([]storage.KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = toKV(kv)
	}
	listRev = resp.Header.Revision
	if rev > 0 {
		listRev = rev
	}
	return kvs, listRev, resp.More, resp.Count, nil
}
