package main

import (
	"context"
	"fmt"

	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
)

// bareNAT is a reference "backend" for the connection-rate rows only
// (-backend bare-nat): one nftables table whose nat-prerouting chain DNATs
// the target ClusterIP's ports straight to the server, and nothing else —
// no service dispatch, no filter chains, no masquerade checks. Its
// ClusterIP/direct ratio is the cost of in-kernel DNAT itself on this
// machine: the floor every kernel mode's ratio sits on. It ignores the
// State (the filler services are not programmed).
type bareNAT struct{ nft knftables.Interface }

func newBareNAT() (*bareNAT, error) {
	nft, err := knftables.New(knftables.IPv4Family, "svcnet-bench-bare-nat")
	if err != nil {
		return nil, err
	}
	return &bareNAT{nft: nft}, nil
}

func (b *bareNAT) Name() string { return "bare-nat" }

func (b *bareNAT) Sync(ctx context.Context, _ *proxy.State) error {
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Flush(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: "prerouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.DNATPriority)})
	for _, p := range [][2]int{{80, crPort}, {81, crBulkPort}} {
		tx.Add(&knftables.Rule{Chain: "prerouting",
			Rule: fmt.Sprintf("ip daddr %s tcp dport %d dnat to %s:%d", crVIP, p[0], crServer, p[1])})
	}
	return b.nft.Run(ctx, tx)
}

func (b *bareNAT) Cleanup(ctx context.Context) error {
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return b.nft.Run(ctx, tx)
}
