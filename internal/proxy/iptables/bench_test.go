package iptables_test

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// nopIPT accepts every payload and has empty tables: the backend's own
// cost, without iptables-restore or the Fake.
type nopIPT struct{ bytes int }

func (n *nopIPT) Restore(_ context.Context, p []byte) error { n.bytes += len(p); return nil }
func (n *nopIPT) Save(context.Context, string) ([]byte, error) {
	return nil, nil
}

// BenchmarkOneServiceChange measures a partial Sync (one endpoint
// replaced) with 10k services installed.
func BenchmarkOneServiceChange(b *testing.B) {
	ctx := context.Background()
	st := scaleState(10000)
	be, err := iptables.New(iptables.Config{Family: v1.IPv4Protocol, NodeName: proxytest.NodeName,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)}}, &nopIPT{})
	if err != nil {
		b.Fatal(err)
	}
	if err := be.Sync(ctx, st); err != nil {
		b.Fatal(err)
	}
	names := slices.Collect(maps.Keys(st.Services))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := names[i%len(names)]
		next := *st
		next.Full = false
		next.Endpoints = maps.Clone(st.Endpoints)
		eps := slices.Clone(st.Endpoints[n])
		eps[0].IP = netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
		next.Endpoints[n] = eps
		next.Changed = map[proxy.ServicePortName]struct{}{n: {}}
		if err := be.Sync(ctx, &next); err != nil {
			b.Fatal(err)
		}
		st = &next
	}
}
