package nodeipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
)

// ErrCIDRSetFull is returned by AllocateNext when every subnet is taken.
var ErrCIDRSetFull = errors.New("nodeipam: no remaining CIDRs in the cluster CIDR")

// maxSubnetBits bounds the number of subnets (2^16), as upstream's cidrset.
const maxSubnetBits = 16

// cidrSet hands out the subnets of one size inside a cluster CIDR: with
// 10.244.0.0/16 and mask size 24, subnet i is 10.244.i.0/24. It is a pure
// data structure, not safe for concurrent use; searches start after the last
// allocation (round robin), as upstream's range allocator does, so a just
// released subnet is not reused at once.
type cidrSet struct {
	cluster  netip.Prefix
	maskSize int
	shift    uint // host bits of a subnet
	size     int  // number of subnets
	used     []uint64
	count    int
	next     int
}

func newCIDRSet(cluster netip.Prefix, maskSize int) (*cidrSet, error) {
	cluster = cluster.Masked()
	bitLen := cluster.Addr().BitLen()
	if maskSize < cluster.Bits() || maskSize > bitLen {
		return nil, fmt.Errorf("nodeipam: node CIDR mask size %d does not fit cluster CIDR %s", maskSize, cluster)
	}
	if maskSize-cluster.Bits() > maxSubnetBits {
		return nil, fmt.Errorf("nodeipam: node CIDR mask size %d is too big for cluster CIDR %s: at most 2^%d subnets", maskSize, cluster, maxSubnetBits)
	}
	n := 1 << (maskSize - cluster.Bits())
	return &cidrSet{
		cluster:  cluster,
		maskSize: maskSize,
		shift:    uint(bitLen - maskSize),
		size:     n,
		used:     make([]uint64, (n+63)/64),
	}, nil
}

func (s *cidrSet) isUsed(i int) bool { return s.used[i/64]&(1<<(i%64)) != 0 }

func (s *cidrSet) set(i int, on bool) {
	if s.isUsed(i) == on {
		return
	}
	if on {
		s.used[i/64] |= 1 << (i % 64)
		s.count++
	} else {
		s.used[i/64] &^= 1 << (i % 64)
		s.count--
	}
}

// subnet returns subnet i.
func (s *cidrSet) subnet(i int) netip.Prefix {
	base := toU128(s.cluster.Addr())
	return netip.PrefixFrom(fromU128(base.add(u128{lo: uint64(i)}.shl(s.shift)), s.cluster.Addr().Is4()), s.maskSize)
}

// indices returns the subnets p covers (p may be larger or smaller than a
// subnet); p must lie inside the cluster CIDR.
func (s *cidrSet) indices(p netip.Prefix) (first, last int, err error) {
	p = p.Masked()
	if p.Addr().Is4() != s.cluster.Addr().Is4() || !s.cluster.Contains(p.Addr()) || p.Bits() < s.cluster.Bits() {
		return 0, 0, fmt.Errorf("nodeipam: CIDR %s is not inside the cluster CIDR %s", p, s.cluster)
	}
	off := toU128(p.Addr()).sub(toU128(s.cluster.Addr()))
	first = int(off.shr(s.shift).lo)
	last = first
	if p.Bits() < s.maskSize {
		last = first + 1<<(s.maskSize-p.Bits()) - 1
	}
	return first, last, nil
}

// Occupy marks every subnet p covers as used.
func (s *cidrSet) Occupy(p netip.Prefix) error {
	first, last, err := s.indices(p)
	if err != nil {
		return err
	}
	for i := first; i <= last; i++ {
		s.set(i, true)
	}
	return nil
}

// Release frees every subnet p covers.
func (s *cidrSet) Release(p netip.Prefix) error {
	first, last, err := s.indices(p)
	if err != nil {
		return err
	}
	for i := first; i <= last; i++ {
		s.set(i, false)
	}
	return nil
}

// Used reports whether the subnet holding p is taken.
func (s *cidrSet) Used(p netip.Prefix) bool {
	first, _, err := s.indices(p)
	return err == nil && s.isUsed(first)
}

// AllocateNext takes the next free subnet.
func (s *cidrSet) AllocateNext() (netip.Prefix, error) {
	if s.count >= s.size {
		return netip.Prefix{}, ErrCIDRSetFull
	}
	for n := 0; n < s.size; n++ {
		i := (s.next + n) % s.size
		if !s.isUsed(i) {
			s.set(i, true)
			s.next = (i + 1) % s.size
			return s.subnet(i), nil
		}
	}
	return netip.Prefix{}, ErrCIDRSetFull
}

// u128 is an address as a 128-bit integer (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func fromU128(x u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(x.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b)
}

func (x u128) add(y u128) u128 {
	lo, carry := bits.Add64(x.lo, y.lo, 0)
	return u128{hi: x.hi + y.hi + carry, lo: lo}
}

func (x u128) sub(y u128) u128 {
	lo, borrow := bits.Sub64(x.lo, y.lo, 0)
	return u128{hi: x.hi - y.hi - borrow, lo: lo}
}

func (x u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return x
	case n >= 64:
		return u128{hi: x.lo << (n - 64)}
	}
	return u128{hi: x.hi<<n | x.lo>>(64-n), lo: x.lo << n}
}

func (x u128) shr(n uint) u128 {
	switch {
	case n == 0:
		return x
	case n >= 64:
		return u128{lo: x.hi >> (n - 64)}
	}
	return u128{hi: x.hi >> n, lo: x.lo>>n | x.hi<<(64-n)}
}
