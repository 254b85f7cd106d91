package ipvs

import (
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// TestServiceCIDRObjects: the companion table drops unallocated addresses
// of State.ServiceCIDRs (the ServiceCIDR objects) when known, else of the
// configured CIDRs, per family; a change rewrites it.
func TestServiceCIDRObjects(t *testing.T) {
	e := newTestEnv(t, nil)
	st := threeServices()
	e.sync(t, st)
	v4 := func() string { return e.nft[v1.IPv4Protocol].Dump() }
	if d := v4(); !strings.Contains(d, "ip daddr { 10.96.0.0/12 }") {
		t.Fatalf("configured CIDR not dropped:\n%s", d)
	}
	st = next(st)
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.100.0.0/24")}
	e.sync(t, st)
	if d := v4(); !strings.Contains(d, "ip daddr { 10.96.0.0/12, 10.100.0.0/24 }") {
		t.Fatalf("ServiceCIDR objects not programmed:\n%s", d)
	}
	if d := e.nft[v1.IPv6Protocol].Dump(); strings.Contains(d, "fd96::/112") {
		t.Errorf("IPv6: the configured CIDR is still dropped though the objects name none:\n%s", d)
	}
}
