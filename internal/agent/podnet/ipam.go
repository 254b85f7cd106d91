package podnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
)

// ipamState is the IPAM file: the node's podCIDR, the last address handed
// out (allocation continues after it, so a released address is not reused
// at once while conntrack entries and peers' caches may still name it), and
// every allocation by pod UID.
type ipamState struct {
	PodCIDR     string            `json:"podCIDR"`
	Last        string            `json:"last,omitempty"`
	Allocations map[string]string `json:"allocations"`
}

// ipam is the in-memory allocator: pure apart from load/save.
type ipam struct {
	prefix netip.Prefix
	last   netip.Addr // zero: start at the beginning
	byUID  map[string]netip.Addr
	used   map[netip.Addr]string
}

func newIPAM(prefix netip.Prefix) *ipam {
	return &ipam{prefix: prefix, byUID: map[string]netip.Addr{}, used: map[netip.Addr]string{}}
}

// usable reports whether a is an address pods may get: inside the prefix,
// not the network address, not the first host address (.1, kept free by
// convention for the node or a gateway) and not the broadcast address.
func usable(prefix netip.Prefix, a netip.Addr) bool {
	if !prefix.Contains(a) {
		return false
	}
	first := prefix.Masked().Addr()
	if a == first || a == first.Next() {
		return false
	}
	return a != lastAddr(prefix)
}

// lastAddr returns the highest address of an IPv4 prefix (its broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	for i := 3; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		b[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	return netip.AddrFrom4(b)
}

// next returns the first free usable address after i.last, wrapping
// around, or false when the range is full.
func (i *ipam) next() (netip.Addr, bool) {
	start := i.last
	if !start.IsValid() || !i.prefix.Contains(start) {
		start = i.prefix.Masked().Addr()
	}
	a := start
	for {
		a = a.Next()
		if !i.prefix.Contains(a) {
			a = i.prefix.Masked().Addr()
		}
		if usable(i.prefix, a) {
			if _, taken := i.used[a]; !taken {
				return a, true
			}
		}
		if a == start {
			return netip.Addr{}, false
		}
	}
}

// set records uid → a.
func (i *ipam) set(uid string, a netip.Addr) {
	if old, ok := i.byUID[uid]; ok {
		delete(i.used, old)
	}
	i.byUID[uid] = a
	i.used[a] = uid
}

// remove forgets uid's allocation.
func (i *ipam) remove(uid string) {
	if a, ok := i.byUID[uid]; ok {
		delete(i.used, a)
		delete(i.byUID, uid)
	}
}

// clone returns a deep copy (to try a change before it is persisted).
func (i *ipam) clone() *ipam {
	c := newIPAM(i.prefix)
	c.last = i.last
	for uid, a := range i.byUID {
		c.set(uid, a)
	}
	return c
}

// state renders the persisted form.
func (i *ipam) state() ipamState {
	s := ipamState{PodCIDR: i.prefix.String(), Allocations: map[string]string{}}
	if i.last.IsValid() {
		s.Last = i.last.String()
	}
	for uid, a := range i.byUID {
		s.Allocations[uid] = a.String()
	}
	return s
}

// loadIPAM reads path (a missing file is an empty IPAM). Allocations that
// are invalid or outside prefix (the node's podCIDR changed) are dropped
// and returned so the caller can log them; a duplicated address keeps the
// lexically first UID.
func loadIPAM(path string, prefix netip.Prefix) (*ipam, []string, error) {
	i := newIPAM(prefix)
	if path == "" {
		return i, nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return i, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("podnet: reading IPAM state: %w", err)
	}
	var s ipamState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, nil, fmt.Errorf("podnet: parsing IPAM state %s: %w", path, err)
	}
	if a, err := netip.ParseAddr(s.Last); err == nil && prefix.Contains(a) {
		i.last = a
	}
	uids := make([]string, 0, len(s.Allocations))
	for uid := range s.Allocations {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	var dropped []string
	for _, uid := range uids {
		a, err := netip.ParseAddr(s.Allocations[uid])
		if err != nil || !usable(prefix, a) {
			dropped = append(dropped, uid)
			continue
		}
		if _, dup := i.used[a]; dup {
			dropped = append(dropped, uid)
			continue
		}
		i.set(uid, a)
	}
	return i, dropped, nil
}

// save writes the state atomically: a temporary file, fsync, rename, fsync
// of the directory, so a crash leaves either the old or the new file.
func (i *ipam) save(path string) error {
	if path == "" {
		return nil
	}
	data, err := json.MarshalIndent(i.state(), "", "  ")
	if err != nil {
		return fmt.Errorf("podnet: encoding IPAM state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("podnet: saving IPAM state: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("podnet: saving IPAM state: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(data, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("podnet: saving IPAM state: %w", werr)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
