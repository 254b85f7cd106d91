package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The default embedded etcd speaks mutual TLS: a client without a
// certificate from the cluster CA is refused, the server's own client works.
func TestEmbeddedEtcdRequiresClientCertificate(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.EmbeddedEtcdClientURL = fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	cfg.EmbeddedEtcdPeerURL = fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	info, _ := runServer(t, cfg)
	if info.EtcdTLS == nil {
		t.Fatal("Info.EtcdTLS is nil for an https embedded etcd")
	}

	try := func(c clientv3.Config) error {
		c.Endpoints = info.EtcdEndpoints
		c.DialTimeout = 3 * time.Second
		c.Logger = zap.NewNop()
		cli, err := clientv3.New(c)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = cli.Put(ctx, "/svcnet-test/probe", "x")
		return err
	}

	noCert := info.EtcdTLS.Clone()
	noCert.Certificates = nil
	if err := try(clientv3.Config{TLS: noCert}); err == nil {
		t.Fatal("a client without a certificate wrote to the embedded etcd")
	}
	if err := try(clientv3.Config{}); err == nil {
		t.Fatal("a plaintext client wrote to the embedded etcd")
	}
	if err := try(clientv3.Config{TLS: info.EtcdTLS}); err != nil {
		t.Fatalf("the server's own etcd credentials were refused: %v", err)
	}
}
