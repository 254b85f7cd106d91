package etcd

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EmbeddedConfig configures a single-member etcd running inside this process.
type EmbeddedConfig struct {
	// DataDir holds the member's WAL and snapshots.
	DataDir string
	// ClientURL and PeerURL are where the member listens, e.g.
	// http://127.0.0.1:2379 and http://127.0.0.1:2380. Keep them on loopback:
	// the embedded member has no authentication.
	ClientURL string
	PeerURL   string
	// UnsafeNoFsync skips fsync; only for tests, where durability across a
	// machine crash does not matter.
	UnsafeNoFsync bool
	// LogLevel is etcd's zap level ("error" unless set).
	LogLevel string
	// TLS, required when ClientURL or PeerURL is https, makes the member serve
	// TLS and accept only clients (and peers) with a certificate from CAFile.
	TLS *EmbeddedTLS
}

// EmbeddedTLS names the PEM files for an embedded member's mutual TLS.
type EmbeddedTLS struct {
	CertFile, KeyFile, CAFile string
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd      *embed.Etcd
	closeOnce sync.Once
}

// StartEmbedded starts an embedded etcd member and waits until it serves.
func StartEmbedded(ctx context.Context, c EmbeddedConfig) (*Embedded, error) {
	cfg := embed.NewConfig()
	cfg.Name = "svcnet"
	cfg.Dir = c.DataDir
	cu, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("storage: etcd client url: %w", err)
	}
	pu, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("storage: etcd peer url: %w", err)
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	if cu.Scheme == "https" || pu.Scheme == "https" {
		if c.TLS == nil {
			return nil, fmt.Errorf("storage: embedded etcd on https needs certificates")
		}
		info := transport.TLSInfo{
			CertFile:       c.TLS.CertFile,
			KeyFile:        c.TLS.KeyFile,
			TrustedCAFile:  c.TLS.CAFile,
			ClientCertAuth: true,
		}
		if cu.Scheme == "https" {
			cfg.ClientTLSInfo = info
		}
		if pu.Scheme == "https" {
			cfg.PeerTLSInfo = info
		}
	}
	cfg.UnsafeNoFsync = c.UnsafeNoFsync
	level := c.LogLevel
	if level == "" {
		level = "error"
	}
	zl, err := quietCloseLogger(level)
	if err != nil {
		return nil, fmt.Errorf("storage: etcd logger: %w", err)
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	// Keep history for five minutes, as kube-apiserver's compactor does, so
	// watchers that reconnect quickly can resume; older revisions give 410.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	cfg.QuotaBackendBytes = 8 << 30

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: start embedded etcd in %s: %w", c.DataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("storage: embedded etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("storage: embedded etcd in %s did not become ready within 60s", c.DataDir)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	emb := &Embedded{etcd: e}
	inProcess.add(emb)
	return emb, nil
}

// Endpoints returns the member's client URLs.
func (e *Embedded) Endpoints() []string {
	var eps []string
	for _, u := range e.etcd.Config().AdvertiseClientUrls {
		eps = append(eps, u.String())
	}
	return eps
}

// Err reports a fatal error of the running member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member. Calling it again does nothing.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		inProcess.remove(e)
		e.etcd.Close()
	})
}

// inProcess holds the members running in this process, so that Dial to one
// of them can call into it directly (see Dial).
var inProcess members

type members struct {
	mu   sync.Mutex
	list []*Embedded
}

func (m *members) add(e *Embedded) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list = append(m.list, e)
}

func (m *members) remove(e *Embedded) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.list = slices.DeleteFunc(m.list, func(x *Embedded) bool { return x == e })
}

// find returns the running member whose client URLs include every one of
// endpoints, or nil.
func (m *members) find(endpoints []string) *Embedded {
	if len(endpoints) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.list {
		eps := e.Endpoints()
		if !slices.ContainsFunc(endpoints, func(ep string) bool { return !slices.Contains(eps, ep) }) {
			return e
		}
	}
	return nil
}

// localClient returns a clientv3 client that calls the member's server
// directly: no gRPC, no TLS, no sockets.
func (e *Embedded) localClient() *clientv3.Client {
	return v3client.New(e.etcd.Server)
}

// localKV is the member's KV service as a client, as localClient's KV uses
// it (with the quota check of the gRPC service).
func (e *Embedded) localKV() etcdserverpb.KVClient {
	return adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(e.etcd.Server))
}

// quietCloseLogger is etcd's usual JSON logger at level, minus the errors
// every clean Close logs ("setting up serving from embedded etcd failed …
// server closed / use of closed network connection"): they describe our own
// shutdown, not a failure, and would teach operators to ignore etcd errors.
func quietCloseLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	zl, err := zc.Build()
	if err != nil {
		return nil, err
	}
	return zl.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return closeFilter{c} })), nil
}

type closeFilter struct{ zapcore.Core }

func (f closeFilter) With(fields []zapcore.Field) zapcore.Core {
	return closeFilter{f.Core.With(fields)}
}

func (f closeFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f closeFilter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Message == "setting up serving from embedded etcd failed." {
		for _, fl := range fields {
			if err, ok := fl.Interface.(error); ok && fl.Key == "error" && isClosedErr(err) {
				return nil
			}
		}
	}
	return f.Core.Write(e, fields)
}

func isClosedErr(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "server closed") || strings.Contains(msg, "use of closed network connection")
}
