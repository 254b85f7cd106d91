package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/svcnet/svcnet/internal/storage/etcd"
)

// rawPrefix is where the raw put measurement writes. It sits beside the API
// server's /registry/ tree (same depth, similar length) so the server never
// sees these keys as objects. rawAllocPrefix holds the allocation keys of
// the create-shaped transactions. Both are under rawRoot, which is deleted
// after every row.
const (
	rawRoot        = "/registry-bench/"
	rawPrefix      = rawRoot + "core/services/bench/"
	rawAllocPrefix = rawRoot + "allocations/clusterips/"
)

// rateResult is one measured write rate.
type rateResult struct {
	ok, failed int
	elapsed    time.Duration
	lat        []time.Duration // per successful write
	firstErr   error
}

// merge adds o's counts, time and latencies to r.
func (r *rateResult) merge(o rateResult) {
	r.ok += o.ok
	r.failed += o.failed
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

func (r rateResult) perSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// opTimeout bounds one write, so a dead server or etcd ends a measurement
// within seconds instead of leaving clients retrying.
const opTimeout = 10 * time.Second

// runWorkers runs op from conc goroutines until maxOps operations were started
// or dur has passed, and measures successes, failures and latencies. op gets a
// unique sequence number; conc workers share no state but the counter.
func runWorkers(ctx context.Context, conc, maxOps int, dur time.Duration, op func(ctx context.Context, worker, seq int) error) rateResult {
	var next atomic.Int64
	deadline := time.Now().Add(dur)
	var mu sync.Mutex // guards res
	var res rateResult
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			var lat []time.Duration
			ok, failed := 0, 0
			var firstErr error
			for time.Now().Before(deadline) && ctx.Err() == nil {
				seq := int(next.Add(1)) - 1
				if seq >= maxOps {
					break
				}
				t0 := time.Now()
				opCtx, cancelOp := context.WithTimeout(ctx, opTimeout)
				err := op(opCtx, w, seq)
				cancelOp()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					// Many failures in a row mean the server is broken; stop
					// instead of spinning until the deadline.
					if failed > 50 && failed > ok {
						break
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				ok++
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.lat = append(res.lat, lat...)
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// dialEtcd returns a clientv3 client for loopback endpoints; with caFile (and
// optionally a client certificate) it speaks TLS.
func dialEtcd(ctx context.Context, endpoints []string, caFile, certFile, keyFile string) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		Context:     ctx,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	}
	if caFile != "" || certFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("bench: etcd CA: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("bench: etcd CA %s: no certificate", caFile)
			}
		}
		if certFile != "" {
			kp, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("bench: etcd client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: dial etcd %v: %w", endpoints, err)
	}
	return c, nil
}

// rawPuts measures clientv3 Put at concurrency conc over one client (one
// gRPC connection), as the API server has one etcd client shared by all its
// request goroutines. etcd batches concurrent proposals into one fsync, so
// the rate at 8 is well above the rate at 1 on a disk where fsync dominates.
func rawPuts(ctx context.Context, c *clientv3.Client, conc, maxOps int, dur time.Duration, tag string, value []byte) rateResult {
	return runWorkers(ctx, conc, maxOps, dur, func(ctx context.Context, w, seq int) error {
		key := fmt.Sprintf("%s%s-%06d", rawPrefix, tag, seq)
		_, err := c.Put(ctx, key, string(value))
		return err
	})
}

// rawCreateTxns measures, like rawPuts, etcd transactions of the shape the
// API server writes for a ClusterIP Service create: the object key and its
// ClusterIP's allocation key, each created only if absent (create revision
// 0), and on failure a read of both (what the server does to find which
// one was taken). The two keys get values the size of what the server
// stored. No API server can create such Services faster than etcd commits
// these transactions.
func rawCreateTxns(ctx context.Context, c *clientv3.Client, conc, maxOps int, dur time.Duration, tag string, value, allocValue []byte) rateResult {
	return runWorkers(ctx, conc, maxOps, dur, func(ctx context.Context, w, seq int) error {
		obj := fmt.Sprintf("%s%s-%06d", rawPrefix, tag, seq)
		alloc := fmt.Sprintf("%s%s-%06d", rawAllocPrefix, tag, seq)
		r, err := c.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(obj), "=", 0), clientv3.Compare(clientv3.CreateRevision(alloc), "=", 0)).
			Then(clientv3.OpPut(obj, string(value)), clientv3.OpPut(alloc, string(allocValue))).
			Else(clientv3.OpGet(obj), clientv3.OpGet(alloc)).
			Commit()
		if err == nil && !r.Succeeded {
			err = fmt.Errorf("bench: create txn on %s: a key already exists", obj)
		}
		return err
	})
}

// cleanRaw deletes every key the raw measurements wrote.
func cleanRaw(ctx context.Context, c *clientv3.Client) error {
	_, err := c.Delete(ctx, rawRoot, clientv3.WithPrefix())
	return err
}

// ownEtcd starts an embedded, fsync'ing etcd member in dir on loopback, for
// when the server under test does not expose its embedded etcd.
func ownEtcd(ctx context.Context, dir string) (*etcd.Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var lastErr error
	for range 3 { // a free port can be taken between probe and bind
		e, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{
			DataDir:   filepath.Join(dir, "etcd"),
			ClientURL: "http://" + freeLoopback(),
			PeerURL:   "http://" + freeLoopback(),
			LogLevel:  "fatal",
		})
		if err == nil {
			return e, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("bench: own embedded etcd: %w", lastErr)
}

// freeLoopback returns "127.0.0.1:port" for a port that was free a moment ago.
func freeLoopback() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}
