package servicelb

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePool(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		want    []string // every address of the pool in order, when small
		wantErr string
	}{
		{name: "cidr drops first and last", entries: []string{"192.0.2.0/29"},
			want: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"}},
		{name: "tiny cidr kept whole", entries: []string{"192.0.2.8/31"}, want: []string{"192.0.2.8", "192.0.2.9"}},
		{name: "single address cidr", entries: []string{"192.0.2.7/32"}, want: []string{"192.0.2.7"}},
		{name: "range inclusive", entries: []string{"192.0.2.10-192.0.2.12"}, want: []string{"192.0.2.10", "192.0.2.11", "192.0.2.12"}},
		{name: "single address", entries: []string{"198.51.100.1"}, want: []string{"198.51.100.1"}},
		{name: "comma list and spaces", entries: []string{" 192.0.2.10 - 192.0.2.11 , 198.51.100.1"},
			want: []string{"192.0.2.10", "192.0.2.11", "198.51.100.1"}},
		{name: "ipv6 cidr", entries: []string{"2001:db8::/126"}, want: []string{"2001:db8::1", "2001:db8::2"}},
		{name: "empty", entries: nil, want: nil},
		{name: "host bits", entries: []string{"192.0.2.1/24"}, wantErr: "host bits set"},
		{name: "reversed", entries: []string{"192.0.2.9-192.0.2.1"}, wantErr: "must not be after"},
		{name: "mixed families", entries: []string{"192.0.2.1-2001:db8::1"}, wantErr: "one family"},
		{name: "overlap", entries: []string{"192.0.2.0/28", "192.0.2.5-192.0.2.30"}, wantErr: "overlap"},
		{name: "garbage", entries: []string{"pool"}, wantErr: "bad pool entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePool(tt.entries)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, is4 := range []bool{true, false} {
				for {
					ip, err := p.Next(is4, "x")
					if err != nil {
						break
					}
					got = append(got, ip.String())
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("addresses %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPoolAssignRelease(t *testing.T) {
	p, err := ParsePool([]string{"192.0.2.0/30", "2001:db8::10-2001:db8::10"})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	if err := p.Assign(a("192.0.2.2"), "ns/a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Assign(a("192.0.2.2"), "ns/a"); err != nil {
		t.Fatalf("re-assign to the holder: %v", err)
	}
	var inUse *InUseError
	if err := p.Assign(a("192.0.2.2"), "ns/b"); !errors.As(err, &inUse) || inUse.Owner != "ns/a" {
		t.Fatalf("assign held address: %v", err)
	}
	var notIn *NotInPoolError
	if err := p.Assign(a("192.0.2.3"), "ns/b"); !errors.As(err, &notIn) {
		t.Fatalf("assign broadcast address: %v", err)
	}
	if ip, err := p.Next(true, "ns/b"); err != nil || ip != a("192.0.2.1") {
		t.Fatalf("Next = %v %v", ip, err)
	}
	if _, err := p.Next(true, "ns/c"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Next on a full family = %v", err)
	}
	if ip, err := p.Next(false, "ns/c"); err != nil || ip != a("2001:db8::10") {
		t.Fatalf("Next IPv6 = %v %v", ip, err)
	}
	if p.Release(a("192.0.2.2"), "ns/b") {
		t.Fatal("released an address held by someone else")
	}
	if !p.Release(a("192.0.2.2"), "ns/a") || p.Used() != 2 {
		t.Fatal("release by the holder failed")
	}
	if ip, err := p.Next(true, "ns/c"); err != nil || ip != a("192.0.2.2") {
		t.Fatalf("Next after release = %v %v", ip, err)
	}
	empty, _ := ParsePool(nil)
	if _, err := empty.Next(true, "x"); !errors.Is(err, ErrNoFamily) {
		t.Fatalf("empty pool: %v", err)
	}
}

// TestPoolNextRoundRobin checks that Next keeps handing out distinct
// addresses under churn and never one that is held.
func TestPoolNextRoundRobin(t *testing.T) {
	p, err := ParsePool([]string{"10.0.0.0/28"})
	if err != nil {
		t.Fatal(err)
	}
	held := map[netip.Addr]bool{}
	for i := range 200 {
		if len(held) == 14 || i%3 == 2 {
			for ip := range held { // release one
				p.Release(ip, "o")
				delete(held, ip)
				break
			}
			continue
		}
		ip, err := p.Next(true, "o")
		if err != nil {
			t.Fatalf("step %d: %v with %d held", i, err, len(held))
		}
		if held[ip] {
			t.Fatalf("step %d: %s handed out twice", i, ip)
		}
		held[ip] = true
	}
}
