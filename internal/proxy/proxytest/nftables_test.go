package proxytest_test

import (
	"cmp"
	"context"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// newNFTBackend returns the nftables backend over a fake, configured for the
// standard topology.
func newNFTBackend(t *testing.T) (*nftables.Backend, *proxytest.NFTTracer) {
	t.Helper()
	fake := nftables.NewFake(v1.IPv4Protocol)
	b, err := nftables.New(nftables.Config{
		Family:       v1.IPv4Protocol,
		NodeName:     proxytest.NodeName,
		NodeIPs:      proxytest.NodeIPs(),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ServiceCIDR)},
	}, fake)
	if err != nil {
		t.Fatal(err)
	}
	return b, proxytest.NewNFTTracer(proxytest.NodeIPs(), fake)
}

// TestNFTablesPacketFlow runs the standard packet-flow table through the
// nftables backend's rules (acceptance 2 of issue 5).
func TestNFTablesPacketFlow(t *testing.T) {
	b, tr := newNFTBackend(t)
	if err := b.Sync(context.Background(), proxytest.StandardState()); err != nil {
		t.Fatal(err)
	}
	proxytest.Run(t, tr, proxytest.StandardCases())
}

// TestNFTablesPacketFlowIPv6 runs the same table, mapped into IPv6, through
// the backend's ip6 table.
func TestNFTablesPacketFlowIPv6(t *testing.T) {
	fake := nftables.NewFake(v1.IPv6Protocol)
	b, err := nftables.New(nftables.Config{
		Family:       v1.IPv6Protocol,
		NodeName:     proxytest.NodeName,
		NodeIPs:      proxytest.NodeIPsIPv6(),
		ClusterCIDRs: []netip.Prefix{proxytest.IPv6Prefix(netip.MustParsePrefix(proxytest.ClusterCIDR))},
		ServiceCIDRs: []netip.Prefix{proxytest.IPv6Prefix(netip.MustParsePrefix(proxytest.ServiceCIDR))},
	}, fake)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(context.Background(), proxytest.StandardStateIPv6()); err != nil {
		t.Fatal(err)
	}
	proxytest.Run(t, proxytest.NewNFTTracer(proxytest.NodeIPsIPv6(), fake), proxytest.StandardCasesIPv6())
}

// TestNFTablesPacketFlowAfterPartialSyncs reaches StandardState through
// partial syncs only (services added one at a time in random order, then
// their endpoints dropped and restored, then one service deleted and
// re-added) and checks that the table still holds: partial syncs must leave
// the same dataplane as a full one.
func TestNFTablesPacketFlowAfterPartialSyncs(t *testing.T) {
	ctx := context.Background()
	want := proxytest.StandardState()
	names := slices.SortedFunc(maps.Keys(want.Services), func(a, b proxy.ServicePortName) int {
		return cmp.Compare(a.String(), b.String())
	})
	rng := rand.New(rand.NewPCG(5, 5))
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })

	b, tr := newNFTBackend(t)
	cur := proxy.NewState(proxytest.NodeName)
	cur.NodeIPs = proxytest.NodeIPs()
	cur.Full = true
	if err := b.Sync(ctx, cur); err != nil {
		t.Fatal(err)
	}
	gen := uint64(1)
	step := func(change func(st *proxy.State), changed ...proxy.ServicePortName) {
		t.Helper()
		gen++
		next := &proxy.State{
			NodeName: cur.NodeName, NodeIPs: cur.NodeIPs, Generation: gen,
			Services: maps.Clone(cur.Services), Endpoints: maps.Clone(cur.Endpoints),
			Changed: map[proxy.ServicePortName]struct{}{},
		}
		change(next)
		for _, n := range changed {
			next.Changed[n] = struct{}{}
		}
		if err := b.Sync(ctx, next); err != nil {
			t.Fatal(err)
		}
		if partial, _ := b.LastSyncStats(); !partial {
			t.Fatalf("generation %d: sync was full, want partial", gen)
		}
		cur = next
	}
	for _, n := range names {
		step(func(st *proxy.State) {
			st.Services[n] = want.Services[n]
			if eps, ok := want.Endpoints[n]; ok {
				st.Endpoints[n] = eps
			}
		}, n)
	}
	for _, n := range names {
		step(func(st *proxy.State) { delete(st.Endpoints, n) }, n)
	}
	for _, n := range names {
		step(func(st *proxy.State) {
			if eps, ok := want.Endpoints[n]; ok {
				st.Endpoints[n] = eps
			}
		}, n)
	}
	victim := names[0]
	step(func(st *proxy.State) { delete(st.Services, victim); delete(st.Endpoints, victim) }, victim)
	step(func(st *proxy.State) {
		st.Services[victim] = want.Services[victim]
		if eps, ok := want.Endpoints[victim]; ok {
			st.Endpoints[victim] = eps
		}
	}, victim)
	proxytest.Run(t, tr, proxytest.StandardCases())
}
