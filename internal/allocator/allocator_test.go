package allocator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
)

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBitmapModel runs random operations against the bitmap and a plain map
// and checks that they agree after every step.
func TestBitmapModel(t *testing.T) {
	for _, size := range []int{1, 2, 63, 64, 65, 127, 4096, 4097, 64*64*64 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(size)))
			b := newBitmap(size)
			used := map[int]bool{}
			for step := 0; step < 20000; step++ {
				i := r.IntN(size)
				switch r.IntN(3) {
				case 0:
					if got, want := b.take(i), !used[i]; got != want {
						t.Fatalf("take(%d) = %v, want %v", i, got, want)
					}
					used[i] = true
				case 1:
					if got, want := b.put(i), used[i]; got != want {
						t.Fatalf("put(%d) = %v, want %v", i, got, want)
					}
					delete(used, i)
				case 2:
					to := i + r.IntN(size-i+1)
					want := -1
					for j := i; j < to; j++ {
						if !used[j] {
							want = j
							break
						}
					}
					if got := b.nextFree(i, to); got != want {
						t.Fatalf("nextFree(%d, %d) = %d, want %d", i, to, got, want)
					}
				}
				if b.free != size-len(used) {
					t.Fatalf("free = %d, want %d", b.free, size-len(used))
				}
			}
			var n int
			forEachUsed(b, func(i int) {
				if !used[i] {
					t.Fatalf("forEachUsed gave free index %d", i)
				}
				n++
			})
			if n != len(used) {
				t.Fatalf("forEachUsed gave %d indices, want %d", n, len(used))
			}
		})
	}
}

func TestIPRangeGeometry(t *testing.T) {
	tests := []struct {
		cidr         string
		size, offset int
		first, last  string // first and last allocatable addresses
		firstDynamic string
		notIn        []string
	}{
		{cidr: "10.96.0.0/12", size: 1<<20 - 2, offset: 256, first: "10.96.0.1", last: "10.111.255.254", firstDynamic: "10.96.1.1",
			notIn: []string{"10.96.0.0", "10.111.255.255", "10.112.0.0", "10.95.255.255", "fd00::1"}},
		{cidr: "10.0.0.0/24", size: 254, offset: 16, first: "10.0.0.1", last: "10.0.0.254", firstDynamic: "10.0.0.17",
			notIn: []string{"10.0.0.0", "10.0.0.255"}},
		{cidr: "10.0.0.0/20", size: 4094, offset: 256, first: "10.0.0.1", last: "10.0.15.254", firstDynamic: "10.0.1.1"},
		{cidr: "10.0.0.0/22", size: 1022, offset: 64, first: "10.0.0.1", last: "10.0.3.254", firstDynamic: "10.0.0.65"},
		{cidr: "10.0.0.0/28", size: 14, offset: 0, first: "10.0.0.1", last: "10.0.0.14", firstDynamic: "10.0.0.1"},
		{cidr: "10.0.0.0/30", size: 2, offset: 0, first: "10.0.0.1", last: "10.0.0.2", firstDynamic: "10.0.0.1"},
		{cidr: "fd00:10:96::/112", size: 65535, offset: 256, first: "fd00:10:96::1", last: "fd00:10:96::ffff", firstDynamic: "fd00:10:96::101",
			notIn: []string{"fd00:10:96::", "fd00:10:97::1", "10.0.0.1"}},
		{cidr: "fd00::/120", size: 255, offset: 16, first: "fd00::1", last: "fd00::ff", firstDynamic: "fd00::11"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			r, err := NewIPRange(mustCIDR(t, tt.cidr))
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != tt.size || r.Offset() != tt.offset || r.Free() != tt.size {
				t.Fatalf("size/offset/free = %d/%d/%d, want %d/%d/%d", r.Size(), r.Offset(), r.Free(), tt.size, tt.offset, tt.size)
			}
			for _, s := range []string{tt.first, tt.last} {
				if !r.Contains(netip.MustParseAddr(s)) {
					t.Errorf("Contains(%s) = false", s)
				}
			}
			if tt.offset > 0 {
				dyn := netip.MustParseAddr(tt.firstDynamic)
				if r.InStaticBand(dyn) || !r.InStaticBand(dyn.Prev()) {
					t.Errorf("static band does not end just before %s", dyn)
				}
			}
			for _, s := range tt.notIn {
				ip := netip.MustParseAddr(s)
				var nir *IPNotInRangeError
				if err := r.Allocate(ip); !errors.As(err, &nir) {
					t.Errorf("Allocate(%s) = %v, want IPNotInRangeError", s, err)
				}
			}
		})
	}
}

func TestIPRangeErrors(t *testing.T) {
	r, err := NewIPRange(mustCIDR(t, "10.96.0.0/12"))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.97.1.1")
	if err := r.Allocate(ip); err != nil {
		t.Fatal(err)
	}
	if err := r.Allocate(ip); err == nil || err.Error() != "provided IP is already allocated" {
		t.Fatalf("second Allocate = %v", err)
	}
	err = r.Allocate(netip.MustParseAddr("192.168.1.1"))
	want := "the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
	if err == nil || err.Error() != want {
		t.Fatalf("out of range: %v, want %q", err, want)
	}
	if !r.Has(ip) || r.Used() != 1 {
		t.Fatal("Has/Used wrong after Allocate")
	}
	if !r.Release(ip) || r.Release(ip) || r.Has(ip) || r.Used() != 0 {
		t.Fatal("Release wrong")
	}
	if _, err := NewIPRange(mustCIDR(t, "10.0.0.0/7")); err == nil {
		t.Fatal("a /7 should be refused")
	}
}

// TestIPRangeBands fills a range with AllocateNext and checks that every
// dynamic-band address goes before any static-band one, that every address is
// handed out once, and that a full range says ErrFull.
func TestIPRangeBands(t *testing.T) {
	for _, cidr := range []string{"10.0.0.0/24", "10.0.0.0/21", "fd00::/118", "10.0.0.0/29"} {
		t.Run(cidr, func(t *testing.T) {
			r, err := NewIPRange(mustCIDR(t, cidr))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[netip.Addr]bool{}
			dynamic := r.Size() - r.Offset()
			for n := 0; n < r.Size(); n++ {
				ip, err := r.AllocateNext()
				if err != nil {
					t.Fatalf("allocation %d: %v", n, err)
				}
				if seen[ip] || !r.Contains(ip) {
					t.Fatalf("allocation %d: %s repeated or out of range", n, ip)
				}
				seen[ip] = true
				if got := r.InStaticBand(ip); got != (n >= dynamic) {
					t.Fatalf("allocation %d: %s static=%v with %d dynamic addresses", n, ip, got, dynamic)
				}
			}
			if _, err := r.AllocateNext(); !errors.Is(err, ErrFull) {
				t.Fatalf("full range: %v", err)
			}
			// Free one static address: it is the only one left.
			var last netip.Addr
			r.ForEach(func(ip netip.Addr) { last = ip })
			r.Release(last)
			if ip, err := r.AllocateNext(); err != nil || ip != last {
				t.Fatalf("after release got %v %v, want %v", ip, err, last)
			}
		})
	}
}

func TestPortRange(t *testing.T) {
	p, err := NewPortRange(30000, 2768)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "30000-32767" || p.Offset() != 86 {
		t.Fatalf("range %s offset %d", p.String(), p.Offset())
	}
	if !p.InStaticBand(30085) || p.InStaticBand(30086) {
		t.Fatal("static band is not 30000-30085")
	}
	if err := p.Allocate(30002); err != nil {
		t.Fatal(err)
	}
	if err := p.Allocate(30002); err == nil || err.Error() != "provided port is already allocated" {
		t.Fatalf("second Allocate = %v", err)
	}
	for _, bad := range []int{29999, 32768, 80} {
		err := p.Allocate(bad)
		if err == nil || err.Error() != "provided port is not in the valid range. The range of valid ports is 30000-32767" {
			t.Fatalf("Allocate(%d) = %v", bad, err)
		}
	}
	seen := map[int]bool{30002: true}
	for n := 1; n < p.Size(); n++ {
		port, err := p.AllocateNext()
		if err != nil {
			t.Fatalf("allocation %d: %v", n, err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		if n <= p.Size()-p.Offset() && p.InStaticBand(port) {
			t.Fatalf("allocation %d came from the static band (%d) before the dynamic band was full", n, port)
		}
	}
	if _, err := p.AllocateNext(); !errors.Is(err, ErrFull) {
		t.Fatalf("full: %v", err)
	}
	if p.Free() != 0 || p.Used() != 2768 {
		t.Fatalf("free %d used %d", p.Free(), p.Used())
	}
	n := 0
	p.ForEach(func(int) { n++ })
	if n != 2768 {
		t.Fatalf("ForEach saw %d", n)
	}
	if _, err := NewPortRange(65000, 1000); err == nil {
		t.Fatal("range past 65535 accepted")
	}
	small, _ := NewPortRange(100, 16)
	if small.Offset() != 0 {
		t.Fatalf("16-port range offset %d", small.Offset())
	}
}

// BenchmarkIPAllocateNext measures one AllocateNext+Release with 0 and 10k
// addresses already allocated in a /12: the cost must not depend on how many
// are allocated.
func BenchmarkIPAllocateNext(b *testing.B) {
	for _, preallocated := range []int{0, 10000, 500000} {
		b.Run(fmt.Sprintf("allocated=%d", preallocated), func(b *testing.B) {
			r, err := NewIPRange(mustCIDR(b, "10.96.0.0/12"))
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < preallocated; i++ {
				if _, err := r.AllocateNext(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ip, err := r.AllocateNext()
				if err != nil {
					b.Fatal(err)
				}
				r.Release(ip)
			}
		})
	}
}

// BenchmarkPortAllocateNext is the NodePort counterpart (0 and 2000 of 2768
// ports allocated).
func BenchmarkPortAllocateNext(b *testing.B) {
	for _, preallocated := range []int{0, 2000} {
		b.Run(fmt.Sprintf("allocated=%d", preallocated), func(b *testing.B) {
			p, err := NewPortRange(30000, 2768)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < preallocated; i++ {
				if _, err := p.AllocateNext(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				port, err := p.AllocateNext()
				if err != nil {
					b.Fatal(err)
				}
				p.Release(port)
			}
		})
	}
}
