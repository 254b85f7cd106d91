package etcd

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
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
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd *embed.Etcd
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
	cfg.UnsafeNoFsync = c.UnsafeNoFsync
	cfg.LogLevel = c.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
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
	return &Embedded{etcd: e}, nil
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

// Close stops the member.
func (e *Embedded) Close() { e.etcd.Close() }
