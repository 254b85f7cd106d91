package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrIPAllocated is returned by IPRange.Allocate for an IP already allocated.
// The text is upstream's.
var ErrIPAllocated = errors.New("provided IP is already allocated")

// IPNotInRangeError is returned by IPRange.Allocate for an IP outside the
// range's usable addresses. The text is upstream's.
type IPNotInRangeError struct {
	IP         netip.Addr
	ValidRange string
}

func (e *IPNotInRangeError) Error() string {
	return fmt.Sprintf("the provided IP (%v) is not in the valid range. The range of valid IPs is %s", e.IP, e.ValidRange)
}

// MaxIPRangeBits is the largest number of host bits an IPRange accepts.
const MaxIPRangeBits = 24

// IPRange allocates addresses of one CIDR. The network address and, for IPv4,
// the broadcast address are never handed out. Not safe for concurrent use.
type IPRange struct {
	prefix netip.Prefix
	is4    bool
	// base is the first usable address (network + 1) as an integer: the
	// IPv4 address, or the low 64 bits of the IPv6 address (the high 64 bits
	// are fixed by the prefix since at most MaxIPRangeBits are host bits).
	base uint64
	high uint64 // IPv6 only: the fixed high 64 bits
	r    bandedRange
}

// NewIPRange returns an empty allocator over cidr.
func NewIPRange(cidr *net.IPNet) (*IPRange, error) {
	if cidr == nil {
		return nil, errors.New("allocator: nil CIDR")
	}
	ones, bitsLen := cidr.Mask.Size()
	if bitsLen == 0 {
		return nil, fmt.Errorf("allocator: CIDR %v has a non-canonical mask", cidr)
	}
	addr, ok := netip.AddrFromSlice(cidr.IP)
	if !ok {
		return nil, fmt.Errorf("allocator: bad CIDR address %v", cidr.IP)
	}
	addr = addr.Unmap()
	if addr.BitLen() != bitsLen {
		return nil, fmt.Errorf("allocator: CIDR %v mixes address families", cidr)
	}
	hostBits := bitsLen - ones
	if hostBits > MaxIPRangeBits {
		return nil, fmt.Errorf("allocator: CIDR %v is too large; at most %d host bits are supported", cidr, MaxIPRangeBits)
	}
	prefix := netip.PrefixFrom(addr, ones).Masked()
	total := uint64(1) << hostBits
	usable := int64(total) - 1 // not the network address
	if addr.Is4() {
		usable-- // nor the broadcast address
	}
	if usable < 0 {
		usable = 0
	}
	r := &IPRange{prefix: prefix, is4: addr.Is4()}
	net0 := prefix.Addr()
	if r.is4 {
		b := net0.As4()
		r.base = uint64(binary.BigEndian.Uint32(b[:])) + 1
	} else {
		b := net0.As16()
		r.high = binary.BigEndian.Uint64(b[:8])
		r.base = binary.BigEndian.Uint64(b[8:]) + 1
	}
	offset := bandOffset(total, 16, 16, 256)
	if offset > int(usable) {
		offset = int(usable)
	}
	r.r = bandedRange{bm: newBitmap(int(usable)), offset: offset}
	return r, nil
}

// CIDR returns the range's network as a string ("10.96.0.0/12").
func (r *IPRange) CIDR() string { return r.prefix.String() }

// Prefix returns the range's network.
func (r *IPRange) Prefix() netip.Prefix { return r.prefix }

// Size is the number of allocatable addresses.
func (r *IPRange) Size() int { return r.r.bm.size }

// Offset is the size of the static band: addresses network+1 .. network+Offset.
func (r *IPRange) Offset() int { return r.r.offset }

// Free is the number of unallocated addresses.
func (r *IPRange) Free() int { return r.r.bm.free }

// Used is the number of allocated addresses.
func (r *IPRange) Used() int { return r.r.bm.size - r.r.bm.free }

// index returns ip's bitmap index, or false when ip is not allocatable here.
func (r *IPRange) index(ip netip.Addr) (int, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.Is4() != r.is4 || !r.prefix.Contains(ip) {
		return 0, false
	}
	var v uint64
	if r.is4 {
		b := ip.As4()
		v = uint64(binary.BigEndian.Uint32(b[:]))
	} else {
		b := ip.As16()
		v = binary.BigEndian.Uint64(b[8:])
	}
	if v < r.base {
		return 0, false // the network address
	}
	i := v - r.base
	if i >= uint64(r.r.bm.size) {
		return 0, false // the IPv4 broadcast address
	}
	return int(i), true
}

func (r *IPRange) addr(i int) netip.Addr {
	v := r.base + uint64(i)
	if r.is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], r.high)
	binary.BigEndian.PutUint64(b[8:], v)
	return netip.AddrFrom16(b)
}

// Contains reports whether ip is one of the range's allocatable addresses.
func (r *IPRange) Contains(ip netip.Addr) bool {
	_, ok := r.index(ip)
	return ok
}

// InStaticBand reports whether ip is in the range's static (lower) band.
func (r *IPRange) InStaticBand(ip netip.Addr) bool {
	i, ok := r.index(ip)
	return ok && i < r.r.offset
}

// Allocate reserves ip. It returns an *IPNotInRangeError when ip is not
// allocatable here and ErrIPAllocated when it is already allocated.
func (r *IPRange) Allocate(ip netip.Addr) error {
	i, ok := r.index(ip)
	if !ok {
		return &IPNotInRangeError{IP: ip, ValidRange: r.prefix.String()}
	}
	if !r.r.bm.take(i) {
		return ErrIPAllocated
	}
	return nil
}

// AllocateNext reserves a free address, preferring the dynamic band (see the
// package doc). It returns ErrFull when none is left.
func (r *IPRange) AllocateNext() (netip.Addr, error) {
	i, err := r.r.next()
	if err != nil {
		return netip.Addr{}, err
	}
	return r.addr(i), nil
}

// Release frees ip. It reports whether ip was allocated; releasing an address
// that is free or outside the range does nothing.
func (r *IPRange) Release(ip netip.Addr) bool {
	i, ok := r.index(ip)
	return ok && r.r.bm.put(i)
}

// Has reports whether ip is allocated.
func (r *IPRange) Has(ip netip.Addr) bool {
	i, ok := r.index(ip)
	return ok && !r.r.bm.isFree(i)
}

// ForEach calls fn for every allocated address in ascending order.
func (r *IPRange) ForEach(fn func(netip.Addr)) {
	forEachUsed(r.r.bm, func(i int) { fn(r.addr(i)) })
}
