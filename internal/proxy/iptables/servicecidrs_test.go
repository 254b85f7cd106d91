package iptables_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestServiceCIDRObjects: the "unallocated service IP" DROP rules follow
// State.ServiceCIDRs (the ServiceCIDR objects) when known, else the
// configured CIDRs; a change is a full sync.
func TestServiceCIDRObjects(t *testing.T) {
	b, fake := goldenBackend(t, v1.IPv4Protocol, nil)
	ctx := context.Background()
	st := only(proxytest.StandardState(), "web")
	if err := b.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	drops := func() []string {
		var out []string
		for _, l := range splitLines(fake.Dump()) {
			if strings.Contains(l, "unallocated service IP") {
				out = append(out, l)
			}
		}
		return out
	}
	if d := drops(); len(d) != 1 || !strings.Contains(d[0], "-d 10.96.0.0/16 ") {
		t.Fatalf("configured CIDR: drop rules %q", d)
	}
	st = next(st, func(s *proxy.State) {
		s.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("fd96::/112")}
	})
	if err := b.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if partial, _ := b.LastSyncStats(); partial {
		t.Error("a service CIDR change was a partial sync")
	}
	if d := drops(); len(d) != 2 || !strings.Contains(d[0], "-d 10.96.0.0/16 ") || !strings.Contains(d[1], "-d 10.100.0.0/24 ") {
		t.Fatalf("ServiceCIDR objects: drop rules %q", d)
	}
	st = next(st, func(s *proxy.State) { s.ServiceCIDRs = []netip.Prefix{} })
	if err := b.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if d := drops(); len(d) != 0 {
		t.Fatalf("no ServiceCIDR objects: drop rules %q remain", d)
	}
}
