package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
)

func main() {
	ctx := context.Background()
	fake := nftables.NewFake(v1.IPv4Protocol)
	b, _ := nftables.New(nftables.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, fake)
	st := proxy.NewState("n")
	for i := range 10000 {
		n := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "b", Name: fmt.Sprintf("s%05d", i)}, Port: "p", Protocol: v1.ProtocolTCP}
		st.Services[n] = &proxy.ServicePort{Name: n, Protocol: v1.ProtocolTCP, Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.96.%d.%d", i/250, i%250+1))}}
		for j := range 10 {
			k := i*10 + j
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", 128+k/65000, (k/250)%256, k%250+1)), Port: 8080, Ready: true, Serving: true})
		}
	}
	if err := b.Sync(ctx, st); err != nil {
		panic(err)
	}
	os.Stdout.WriteString(fake.Dump())
}
