package servicelb

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrPoolExhausted is returned by Pool.Next when no address of the family is
// free.
var ErrPoolExhausted = errors.New("no available IPs in the pool")

// ErrNoFamily is returned by Pool.Next when the pool holds no address of the
// family at all.
var ErrNoFamily = errors.New("the pool has no addresses of this IP family")

// NotInPoolError says a requested address is outside every pool range.
type NotInPoolError struct {
	IP   netip.Addr
	Pool string
}

func (e *NotInPoolError) Error() string {
	return fmt.Sprintf("IP %s is not in the load balancer IP pool (%s)", e.IP, e.Pool)
}

// InUseError says a requested address is held by another Service.
type InUseError struct {
	IP    netip.Addr
	Owner string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("IP %s is already allocated to Service %s", e.IP, e.Owner)
}

// addrRange is an inclusive range of addresses of one family.
type addrRange struct {
	first, last netip.Addr
	next        netip.Addr // where the next search starts (round robin)
}

func (r *addrRange) contains(ip netip.Addr) bool {
	return r.first.Compare(ip) <= 0 && ip.Compare(r.last) <= 0
}

// Pool hands out load balancer addresses from a set of ranges and remembers
// who holds each one. It is a pure data structure: not safe for concurrent
// use (the controller guards it with its mutex) and it does no I/O.
type Pool struct {
	text   string
	ranges []*addrRange // sorted, non-overlapping
	used   map[netip.Addr]string
}

// ParsePool builds a Pool from entries that are each a CIDR
// ("192.0.2.0/28") or an inclusive range ("192.0.2.10-192.0.2.20"); an entry
// may itself be a comma-separated list. A CIDR leaves out its first and last
// address (the network and broadcast addresses for IPv4, as Cilium's LB-IPAM
// does by default) unless it has fewer than four addresses; a range is taken
// as written. Ranges must not overlap. An empty list gives an empty pool,
// from which every allocation fails.
func ParsePool(entries []string) (*Pool, error) {
	p := &Pool{used: map[netip.Addr]string{}}
	var texts []string
	for _, e := range entries {
		for _, part := range strings.Split(e, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			r, err := parseRange(part)
			if err != nil {
				return nil, err
			}
			p.ranges = append(p.ranges, r)
			texts = append(texts, part)
		}
	}
	slices.SortFunc(p.ranges, func(a, b *addrRange) int { return a.first.Compare(b.first) })
	for i := 1; i < len(p.ranges); i++ {
		a, b := p.ranges[i-1], p.ranges[i]
		if a.first.Is4() == b.first.Is4() && b.first.Compare(a.last) <= 0 {
			return nil, fmt.Errorf("servicelb: pool ranges %s-%s and %s-%s overlap", a.first, a.last, b.first, b.last)
		}
	}
	p.text = strings.Join(texts, ",")
	return p, nil
}

func parseRange(s string) (*addrRange, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("servicelb: bad pool CIDR %q: %w", s, err)
		}
		if pfx != pfx.Masked() {
			return nil, fmt.Errorf("servicelb: pool CIDR %q has host bits set (did you mean %s?)", s, pfx.Masked())
		}
		first := pfx.Addr()
		last := lastAddr(pfx)
		if pfx.Addr().BitLen()-pfx.Bits() >= 2 {
			first, last = first.Next(), last.Prev()
		}
		return &addrRange{first: first, last: last, next: first}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("servicelb: bad pool entry %q: want a CIDR, an IP or a range first-last", s)
		}
		a, b = ip.String(), ip.String()
	}
	first, err := netip.ParseAddr(strings.TrimSpace(a))
	if err != nil {
		return nil, fmt.Errorf("servicelb: bad pool range %q: %w", s, err)
	}
	last, err := netip.ParseAddr(strings.TrimSpace(b))
	if err != nil {
		return nil, fmt.Errorf("servicelb: bad pool range %q: %w", s, err)
	}
	first, last = first.Unmap(), last.Unmap()
	if first.Zone() != "" || last.Zone() != "" {
		return nil, fmt.Errorf("servicelb: bad pool range %q: zones are not allowed", s)
	}
	if first.Is4() != last.Is4() || first.Compare(last) > 0 {
		return nil, fmt.Errorf("servicelb: bad pool range %q: the first address must not be after the last, in one family", s)
	}
	return &addrRange{first: first, last: last, next: first}, nil
}

// lastAddr is the highest address of pfx.
func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Addr().AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String is the pool as configured, for messages.
func (p *Pool) String() string {
	if p.text == "" {
		return "empty"
	}
	return p.text
}

// HasFamily reports whether the pool has any IPv4 (is4) or IPv6 addresses.
func (p *Pool) HasFamily(is4 bool) bool {
	for _, r := range p.ranges {
		if r.first.Is4() == is4 {
			return true
		}
	}
	return false
}

// Contains reports whether ip is in one of the pool's ranges.
func (p *Pool) Contains(ip netip.Addr) bool {
	for _, r := range p.ranges {
		if r.contains(ip) {
			return true
		}
	}
	return false
}

// Owner returns who holds ip.
func (p *Pool) Owner(ip netip.Addr) (string, bool) {
	o, ok := p.used[ip]
	return o, ok
}

// Used is the number of held addresses.
func (p *Pool) Used() int { return len(p.used) }

// Assign gives ip to owner. Assigning an address the owner already holds is
// a no-op.
func (p *Pool) Assign(ip netip.Addr, owner string) error {
	if !p.Contains(ip) {
		return &NotInPoolError{IP: ip, Pool: p.String()}
	}
	if o, ok := p.used[ip]; ok && o != owner {
		return &InUseError{IP: ip, Owner: o}
	}
	p.used[ip] = owner
	return nil
}

// Release frees ip if owner holds it, and reports whether it did.
func (p *Pool) Release(ip netip.Addr, owner string) bool {
	if o, ok := p.used[ip]; ok && o == owner {
		delete(p.used, ip)
		return true
	}
	return false
}

// Next gives owner a free address of the family, searching each range round
// robin from where the last search stopped, so a just-released address is
// not handed out again at once. The cost is the number of held addresses
// skipped, never the size of the range.
func (p *Pool) Next(is4 bool, owner string) (netip.Addr, error) {
	found := false
	for _, r := range p.ranges {
		if r.first.Is4() != is4 {
			continue
		}
		found = true
		ip := r.next
		for {
			if _, taken := p.used[ip]; !taken {
				p.used[ip] = owner
				r.next = ip.Next()
				if !r.next.IsValid() || !r.contains(r.next) {
					r.next = r.first
				}
				return ip, nil
			}
			ip = ip.Next()
			if !ip.IsValid() || !r.contains(ip) {
				ip = r.first
			}
			if ip == r.next {
				break // went all the way round
			}
		}
	}
	if !found {
		return netip.Addr{}, ErrNoFamily
	}
	return netip.Addr{}, ErrPoolExhausted
}
