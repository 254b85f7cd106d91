package nodeipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCIDRSetGeometry(t *testing.T) {
	tests := []struct {
		cluster   string
		mask      int
		firstFew  []string
		lastOne   string
		size      int
		wantError string
	}{
		{cluster: "10.244.0.0/16", mask: 24, size: 256, firstFew: []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}, lastOne: "10.244.255.0/24"},
		{cluster: "10.0.0.0/8", mask: 24, size: 65536, firstFew: []string{"10.0.0.0/24", "10.0.1.0/24"}, lastOne: "10.255.255.0/24"},
		{cluster: "10.244.0.0/28", mask: 30, size: 4, firstFew: []string{"10.244.0.0/30", "10.244.0.4/30"}, lastOne: "10.244.0.12/30"},
		{cluster: "fd00:10:244::/56", mask: 64, size: 256, firstFew: []string{"fd00:10:244::/64", "fd00:10:244:1::/64"}, lastOne: "fd00:10:244:ff::/64"},
		{cluster: "fd00::/48", mask: 64, size: 65536, firstFew: []string{"fd00::/64", "fd00:0:0:1::/64"}, lastOne: "fd00:0:0:ffff::/64"},
		{cluster: "fd00::/100", mask: 112, size: 4096, firstFew: []string{"fd00::/112", "fd00::1:0/112"}, lastOne: "fd00::fff:0/112"},
		{cluster: "10.0.0.0/8", mask: 25, wantError: "too big"},
		{cluster: "10.244.0.0/16", mask: 8, wantError: "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.cluster, func(t *testing.T) {
			s, err := newCIDRSet(netip.MustParsePrefix(tt.cluster), tt.mask)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("err = %v, want %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.size != tt.size {
				t.Fatalf("size %d, want %d", s.size, tt.size)
			}
			for i, want := range tt.firstFew {
				p, err := s.AllocateNext()
				if err != nil || p.String() != want {
					t.Fatalf("allocation %d = %v %v, want %s", i, p, err, want)
				}
			}
			if got := s.subnet(s.size - 1).String(); got != tt.lastOne {
				t.Fatalf("last subnet %s, want %s", got, tt.lastOne)
			}
			first, last, err := s.indices(netip.MustParsePrefix(tt.lastOne))
			if err != nil || first != s.size-1 || last != s.size-1 {
				t.Fatalf("indices(last) = %d %d %v", first, last, err)
			}
		})
	}
}

func TestCIDRSetOccupyReleaseFull(t *testing.T) {
	s, err := newCIDRSet(netip.MustParsePrefix("10.244.0.0/22"), 24)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	// A /23 covers two subnets.
	if err := s.Occupy(p("10.244.2.0/23")); err != nil {
		t.Fatal(err)
	}
	if !s.Used(p("10.244.2.0/24")) || !s.Used(p("10.244.3.0/24")) || s.count != 2 {
		t.Fatal("Occupy of a /23 did not take both /24s")
	}
	for _, bad := range []string{"10.245.0.0/24", "10.0.0.0/8", "fd00::/64"} {
		if err := s.Occupy(p(bad)); err == nil {
			t.Errorf("Occupy(%s) succeeded", bad)
		}
	}
	got := map[string]bool{}
	for range 2 {
		q, err := s.AllocateNext()
		if err != nil {
			t.Fatal(err)
		}
		got[q.String()] = true
	}
	if !got["10.244.0.0/24"] || !got["10.244.1.0/24"] {
		t.Fatalf("allocated %v", got)
	}
	if _, err := s.AllocateNext(); !errors.Is(err, ErrCIDRSetFull) {
		t.Fatalf("full set: %v", err)
	}
	if err := s.Release(p("10.244.3.0/24")); err != nil {
		t.Fatal(err)
	}
	if q, err := s.AllocateNext(); err != nil || q.String() != "10.244.3.0/24" {
		t.Fatalf("after release: %v %v", q, err)
	}
}

func TestParseClusterCIDRs(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "10.244.0.0/16", want: "10.244.0.0/16"},
		{in: "10.244.0.0/16, fd00:10:244::/56", want: "10.244.0.0/16 fd00:10:244::/56"},
		{in: "10.244.0.0/16,10.245.0.0/16", wantErr: "at most one per IP family"},
		{in: "10.244.0.1/16", wantErr: "host bits"},
		{in: "", wantErr: "no cluster CIDR"},
		{in: "nope", wantErr: "bad cluster CIDR"},
	}
	for _, tt := range tests {
		got, err := ParseClusterCIDRs(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(prefixStrings(got), " ") != tt.want {
			t.Errorf("%q: %v %v, want %s", tt.in, got, err, tt.want)
		}
	}
}
