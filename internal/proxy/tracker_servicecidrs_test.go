package proxy

import (
	"net/netip"
	"slices"
	"testing"
)

func TestTrackerServiceCIDRs(t *testing.T) {
	tr := NewTracker("node-a")
	tr.SetSynced(true, true)
	st, _ := tr.Snapshot(false)
	if st.ServiceCIDRs != nil || st.Full {
		t.Fatalf("before any ServiceCIDR: ServiceCIDRs %v full %v, want nil/false", st.ServiceCIDRs, st.Full)
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("10.96.0.1/12"), netip.MustParsePrefix("10.96.0.0/12")}
	if !tr.SetServiceCIDRs(cidrs) {
		t.Fatal("first SetServiceCIDRs reported no change")
	}
	st, _ = tr.Snapshot(false)
	want := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.100.0.0/24")}
	if !slices.Equal(st.ServiceCIDRs, want) || !st.Full {
		t.Fatalf("after SetServiceCIDRs: %v full %v, want %v (masked, sorted, deduplicated) and a full snapshot", st.ServiceCIDRs, st.Full, want)
	}
	if tr.SetServiceCIDRs(slices.Clone(want)) {
		t.Error("the same CIDRs again reported a change")
	}
	if st, _ = tr.Snapshot(false); st.Full {
		t.Error("a snapshot after an unchanged SetServiceCIDRs is full")
	}
	// No ServiceCIDR objects at all is not "unknown": backends then drop nothing.
	if !tr.SetServiceCIDRs([]netip.Prefix{}) {
		t.Fatal("emptying reported no change")
	}
	if st, _ = tr.Snapshot(false); st.ServiceCIDRs == nil || len(st.ServiceCIDRs) != 0 {
		t.Errorf("after emptying: %#v, want an empty non-nil slice", st.ServiceCIDRs)
	}
}

func TestServiceCIDRsOfFamily(t *testing.T) {
	configured := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd96::/112")}
	for _, tc := range []struct {
		name string
		st   *State
		ipv6 bool
		want []netip.Prefix
	}{
		{"unknown: configured", &State{}, false, configured[:1]},
		{"unknown: configured v6", &State{}, true, configured[1:]},
		{"known: objects", &State{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("fd00::/64")}}, false, []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24")}},
		{"known: none", &State{ServiceCIDRs: []netip.Prefix{}}, false, nil},
	} {
		if got := ServiceCIDRsOfFamily(tc.st, configured, tc.ipv6); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
