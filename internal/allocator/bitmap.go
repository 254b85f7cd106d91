// Package allocator holds svcnet's pure value allocators: an IP allocator over
// a CIDR (ClusterIPs) and a port allocator over a port range (NodePorts).
// They do no I/O and take no locks; the Service registry keeps one of each as
// an in-memory mirror of the allocation keys stored in etcd and guards it with
// its own mutex.
//
// # Design
//
// Both allocators map their values onto indices 0..size-1 of one bitmap.
// Allocation cost must not grow with the number of allocated values (the
// upstream IPAddress allocator lists every allocated IP per allocation and
// slows down as Services grow), so the bitmap is hierarchical: level 0 has one
// bit per value (1 = free); each bit of level k+1 says whether the matching
// 64-bit word of level k has any free bit. Finding the first free index at or
// after any position walks at most one word per level (bits.TrailingZeros64),
// so AllocateNext, Allocate, Release and Has are O(levels) — four levels for
// 2^24 values — however full the range is.
//
// # Bands
//
// As upstream (KEP-3070 for Service IPs, KEP-3668 for NodePorts), each range
// is split into a lower static band, which users are encouraged to pick fixed
// values from, and an upper dynamic band. AllocateNext starts at a random
// point of the upper band and takes the first free value from there (wrapping
// inside the band); only when the upper band is full does it do the same in
// the lower band. The static band size is min(max(16, size/16), 256) for IPs
// (computed from the CIDR size) and min(max(16, size/32), 128) for ports, and
// zero for ranges of at most 16 values. For 10.96.0.0/12 the static band is
// 10.96.0.1-10.96.1.0; for ports 30000-32767 it is 30000-30085.
package allocator

import (
	"errors"
	"math/bits"
	"math/rand/v2"
)

// ErrFull is returned by AllocateNext when every value is allocated.
var ErrFull = errors.New("range is full")

// bitmap is a hierarchical free-set over [0, size). Not safe for concurrent use.
type bitmap struct {
	size int
	free int
	// levels[0] has one bit per index, set when the index is free. Bit j of
	// levels[k+1][i] is set when levels[k][i*64+j] != 0. The last level has
	// exactly one word.
	levels [][]uint64
}

func newBitmap(size int) *bitmap {
	b := &bitmap{size: size, free: size}
	n := (size + 63) / 64
	if n == 0 {
		n = 1
	}
	l0 := make([]uint64, n)
	for i := range l0 {
		l0[i] = ^uint64(0)
	}
	if tail := size % 64; tail != 0 {
		l0[n-1] = (uint64(1) << tail) - 1
	}
	if size == 0 {
		l0[0] = 0
	}
	b.levels = append(b.levels, l0)
	for len(b.levels[len(b.levels)-1]) > 1 {
		below := b.levels[len(b.levels)-1]
		up := make([]uint64, (len(below)+63)/64)
		for i, w := range below {
			if w != 0 {
				up[i/64] |= 1 << (i % 64)
			}
		}
		b.levels = append(b.levels, up)
	}
	return b
}

func (b *bitmap) isFree(i int) bool {
	return b.levels[0][i/64]&(1<<(i%64)) != 0
}

// take marks i used; it reports false when i was already used.
func (b *bitmap) take(i int) bool {
	if !b.isFree(i) {
		return false
	}
	for k := range b.levels {
		w := &b.levels[k][i/64]
		*w &^= 1 << (i % 64)
		if *w != 0 {
			break
		}
		i /= 64
	}
	b.free--
	return true
}

// put marks i free; it reports false when i was already free.
func (b *bitmap) put(i int) bool {
	if b.isFree(i) {
		return false
	}
	for k := range b.levels {
		w := &b.levels[k][i/64]
		wasZero := *w == 0
		*w |= 1 << (i % 64)
		if !wasZero {
			break
		}
		i /= 64
	}
	b.free++
	return true
}

// nextSet returns the smallest index >= pos whose bit is set in level k, or -1.
func (b *bitmap) nextSet(k, pos int) int {
	words := b.levels[k]
	w := pos / 64
	if w >= len(words) {
		return -1
	}
	if m := words[w] & (^uint64(0) << (pos % 64)); m != 0 {
		return w*64 + bits.TrailingZeros64(m)
	}
	if k+1 == len(b.levels) {
		return -1 // the top level is one word
	}
	nw := b.nextSet(k+1, w+1)
	if nw < 0 {
		return -1
	}
	return nw*64 + bits.TrailingZeros64(words[nw])
}

// nextFree returns the smallest free index in [from, to), or -1.
func (b *bitmap) nextFree(from, to int) int {
	if from >= to {
		return -1
	}
	i := b.nextSet(0, from)
	if i < 0 || i >= to {
		return -1
	}
	return i
}

// pickIn returns a free index of [lo, hi) found by scanning forward from a
// random point and wrapping once, or -1.
func (b *bitmap) pickIn(lo, hi int) int {
	if lo >= hi {
		return -1
	}
	start := lo + rand.IntN(hi-lo)
	if i := b.nextFree(start, hi); i >= 0 {
		return i
	}
	return b.nextFree(lo, start)
}

// bandedRange is a bitmap whose indices [0, offset) are the static band.
type bandedRange struct {
	bm     *bitmap
	offset int
}

// next allocates an index from the dynamic band, then the static band.
func (r *bandedRange) next() (int, error) {
	if r.bm.free == 0 {
		return 0, ErrFull
	}
	i := r.bm.pickIn(r.offset, r.bm.size)
	if i < 0 {
		i = r.bm.pickIn(0, r.offset)
	}
	if i < 0 {
		return 0, ErrFull
	}
	r.bm.take(i)
	return i, nil
}

// bandOffset is upstream's min(max(lo, size/step), hi), or 0 for size <= lo.
func bandOffset(size uint64, lo, step, hi uint64) int {
	if size <= lo {
		return 0
	}
	return int(min(max(lo, size/step), hi))
}

// forEachUsed calls fn for every used index in ascending order.
func forEachUsed(b *bitmap, fn func(int)) {
	for w, word := range b.levels[0] {
		used := ^word
		for used != 0 {
			i := w*64 + bits.TrailingZeros64(used)
			if i >= b.size {
				return
			}
			fn(i)
			used &= used - 1
		}
	}
}
