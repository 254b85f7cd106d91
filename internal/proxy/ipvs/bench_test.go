package ipvs_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/ipvs"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
)

// benchState is n ClusterIP services × 10 endpoints.
func benchState(n int) *proxy.State {
	st := proxy.NewState("node-a")
	st.Full = true
	for i := range n {
		name := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Protocol: v1.ProtocolTCP}
		st.Services[name] = &proxy.ServicePort{Name: name, Protocol: v1.ProtocolTCP, Port: 80,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}}
		for j := range 10 {
			st.Endpoints[name] = append(st.Endpoints[name], proxy.Endpoint{
				IP: netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), Port: int32(8000 + j), Ready: true, Serving: true})
		}
		st.Changed[name] = struct{}{}
	}
	return st
}

// oneChange returns st with one endpoint of one service moved, as a
// partial State.
func oneChange(st *proxy.State, round int) *proxy.State {
	n := *st
	n.Full = false
	n.Endpoints = map[proxy.ServicePortName][]proxy.Endpoint{}
	for k, v := range st.Endpoints {
		n.Endpoints[k] = v
	}
	name := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: "svc-7"}, Protocol: v1.ProtocolTCP}
	eps := append([]proxy.Endpoint(nil), st.Endpoints[name]...)
	eps[0].Port = int32(20000 + round%1000)
	n.Endpoints[name] = eps
	n.Changed = map[proxy.ServicePortName]struct{}{name: {}}
	return &n
}

type benchBackend interface {
	proxy.Backend
}

func benchBackends(b *testing.B) map[string]func() benchBackend {
	return map[string]func() benchBackend{
		"ipvs": func() benchBackend {
			be, err := ipvs.NewSystem(ipvs.Config{NodeName: "node-a", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}})
			if err != nil {
				b.Fatal(err)
			}
			return be
		},
		"nftables": func() benchBackend {
			nft, err := nftables.NewInterface(v1.IPv4Protocol)
			if err != nil {
				b.Fatal(err)
			}
			be, err := nftables.New(nftables.Config{Family: v1.IPv4Protocol, NodeName: "node-a",
				ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}, nft)
			if err != nil {
				b.Fatal(err)
			}
			return be
		},
	}
}

// BenchmarkSync: cold full sync and one-service change of 1k services ×
// 10 endpoints, ipvs against nftables, on the same kernel (hack/ipvs-vm.sh
// BENCH=1 runs it in the VM; software emulation, so compare ratios).
func BenchmarkSync(b *testing.B) {
	requireIPVS(b)
	ctx := context.Background()
	for _, mode := range []string{"nftables", "ipvs"} {
		for _, n := range []int{1000} {
			st := benchState(n)
			b.Run(fmt.Sprintf("%s/cold/%d", mode, n), func(b *testing.B) {
				be := benchBackends(b)[mode]()
				for range b.N {
					b.StopTimer()
					if err := be.Cleanup(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if err := be.Sync(ctx, st); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				_ = be.Cleanup(ctx)
			})
			b.Run(fmt.Sprintf("%s/one-change/%d", mode, n), func(b *testing.B) {
				be := benchBackends(b)[mode]()
				if err := be.Sync(ctx, st); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := range b.N {
					if err := be.Sync(ctx, oneChange(st, i)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				_ = be.Cleanup(ctx)
			})
		}
	}
}
