package userspace

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// TestServiceCIDRObjects: the drop rule for unallocated addresses follows
// State.ServiceCIDRs (the ServiceCIDR objects) when known, else the
// configured CIDRs.
func TestServiceCIDRObjects(t *testing.T) {
	fake := NewFake(v1.IPv4Protocol)
	b, err := New(Config{ListenAddr: netip.MustParseAddr("127.0.0.1"), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}, fake)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup(context.Background())
	web := svcSpec{name: "web", eps: []string{"10.244.1.2:8080"}}
	mustSync(t, b, stateOf(web))
	if d := fake.Dump(); !strings.Contains(d, "ip daddr { 10.96.0.0/16 } drop") {
		t.Fatalf("configured CIDR not dropped:\n%s", d)
	}
	st := stateOf(web)
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.100.0.0/24")}
	mustSync(t, b, st)
	if d := fake.Dump(); !strings.Contains(d, "ip daddr { 10.96.0.0/16, 10.100.0.0/24 } drop") {
		t.Fatalf("ServiceCIDR objects not programmed:\n%s", d)
	}
}
