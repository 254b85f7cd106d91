package allocator

import (
	"errors"
	"fmt"
)

// ErrPortAllocated is returned by PortRange.Allocate for a port already
// allocated. The text is upstream's.
var ErrPortAllocated = errors.New("provided port is already allocated")

// PortNotInRangeError is returned by PortRange.Allocate for a port outside the
// range. The text is upstream's.
type PortNotInRangeError struct {
	ValidPorts string
}

func (e *PortNotInRangeError) Error() string {
	return fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %s", e.ValidPorts)
}

// PortRange allocates ports base .. base+size-1. Not safe for concurrent use.
type PortRange struct {
	base int
	r    bandedRange
}

// NewPortRange returns an empty allocator over ports base .. base+size-1.
func NewPortRange(base, size int) (*PortRange, error) {
	if base < 1 || size < 1 || base+size-1 > 65535 {
		return nil, fmt.Errorf("allocator: invalid port range %d-%d", base, base+size-1)
	}
	return &PortRange{
		base: base,
		r:    bandedRange{bm: newBitmap(size), offset: bandOffset(uint64(size), 16, 32, 128)},
	}, nil
}

// String returns the range as upstream prints it ("30000-32767").
func (p *PortRange) String() string {
	return fmt.Sprintf("%d-%d", p.base, p.base+p.r.bm.size-1)
}

// Base is the first port of the range.
func (p *PortRange) Base() int { return p.base }

// Size is the number of ports in the range.
func (p *PortRange) Size() int { return p.r.bm.size }

// Offset is the size of the static band: ports Base .. Base+Offset-1.
func (p *PortRange) Offset() int { return p.r.offset }

// Free is the number of unallocated ports.
func (p *PortRange) Free() int { return p.r.bm.free }

// Used is the number of allocated ports.
func (p *PortRange) Used() int { return p.r.bm.size - p.r.bm.free }

// Contains reports whether port is in the range.
func (p *PortRange) Contains(port int) bool {
	return port >= p.base && port-p.base < p.r.bm.size
}

// InStaticBand reports whether port is in the static (lower) band.
func (p *PortRange) InStaticBand(port int) bool {
	return p.Contains(port) && port-p.base < p.r.offset
}

// Allocate reserves port. It returns a *PortNotInRangeError for a port
// outside the range and ErrPortAllocated for one already allocated.
func (p *PortRange) Allocate(port int) error {
	if !p.Contains(port) {
		return &PortNotInRangeError{ValidPorts: p.String()}
	}
	if !p.r.bm.take(port - p.base) {
		return ErrPortAllocated
	}
	return nil
}

// AllocateNext reserves a free port, preferring the dynamic band (see the
// package doc). It returns ErrFull when none is left.
func (p *PortRange) AllocateNext() (int, error) {
	i, err := p.r.next()
	if err != nil {
		return 0, err
	}
	return p.base + i, nil
}

// Release frees port. It reports whether port was allocated.
func (p *PortRange) Release(port int) bool {
	return p.Contains(port) && p.r.bm.put(port-p.base)
}

// Has reports whether port is allocated.
func (p *PortRange) Has(port int) bool {
	return p.Contains(port) && !p.r.bm.isFree(port-p.base)
}

// ForEach calls fn for every allocated port in ascending order.
func (p *PortRange) ForEach(fn func(int)) {
	forEachUsed(p.r.bm, func(i int) { fn(p.base + i) })
}
