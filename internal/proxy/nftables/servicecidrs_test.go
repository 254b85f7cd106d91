package nftables

import (
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// TestServiceCIDRObjects: the drop rule for unallocated addresses follows
// State.ServiceCIDRs (the ServiceCIDR objects) when known, else the
// configured CIDRs; a change rewrites the base rules (a full sync).
func TestServiceCIDRObjects(t *testing.T) {
	b, fake, _ := newTestBackend(t, testConfig(v1.IPv4Protocol))
	web := svcWithEps{svc{name: "web", cip: []string{"10.96.0.10"}, svcPort: 80}, []proxy.Endpoint{ep("10.244.0.5", 8080, testNode, "ready")}}
	st := buildState(web)
	mustSync(t, b, st)
	if dump := fake.Dump(); !strings.Contains(dump, "ip daddr 10.96.0.0/16 drop") {
		t.Fatalf("configured service CIDR not dropped:\n%s", dump)
	}

	st = buildState(web)
	st.Changed = nil
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("fd96::/112")}
	mustSync(t, b, st)
	if partial, _ := b.LastSyncStats(); partial {
		t.Error("a service CIDR change was a partial sync")
	}
	dump := fake.Dump()
	if !strings.Contains(dump, "ip daddr { 10.96.0.0/16, 10.100.0.0/24 } drop") || strings.Contains(dump, "fd96") {
		t.Fatalf("ServiceCIDR objects not programmed (IPv4 only):\n%s", dump)
	}

	st = buildState(web)
	st.Changed = nil
	st.ServiceCIDRs = []netip.Prefix{}
	mustSync(t, b, st)
	for _, l := range strings.Split(fake.Dump(), "\n") {
		if strings.Contains(l, clusterIPsCheckChain) && strings.HasSuffix(l, " drop") {
			t.Errorf("no ServiceCIDR objects left, but a range is still dropped: %s", l)
		}
	}
}
