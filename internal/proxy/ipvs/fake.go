package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// FakeHandle is an in-memory Handle with the kernel's semantics for what
// the backend uses: creating an existing virtual or real server fails with
// EEXIST, changing or deleting a missing one with ENOENT/ESRCH, listed
// services carry the kernel's hashed flag. Every mutating call is appended
// to Ops ("add-service TCP 10.96.0.1:443", "update-dest …"), so tests can
// see exactly what a sync touched. It is safe for concurrent use.
type FakeHandle struct {
	mu       sync.Mutex
	services map[vsKey]*fakeService
	config   libipvs.Config
	// Ops lists the mutating calls in order; ResetOps clears it.
	Ops []string
	// Gets counts GetDestinations calls.
	Gets int
}

type fakeService struct {
	svc   libipvs.Service
	dests map[netip.AddrPort]*libipvs.Destination
}

var _ Handle = (*FakeHandle)(nil)

// NewFakeHandle returns an empty FakeHandle.
func NewFakeHandle() *FakeHandle {
	return &FakeHandle{services: map[vsKey]*fakeService{}}
}

// ResetOps clears Ops and Gets.
func (f *FakeHandle) ResetOps() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops, f.Gets = nil, 0
}

// SetCounts sets the connection counters of a real server, as the kernel
// would report them (for drain tests).
func (f *FakeHandle) SetCounts(proto uint16, vs, rs netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	af := uint16(afInet)
	if vs.Addr().Is6() {
		af = afInet6
	}
	s, ok := f.services[vsKey{af, proto, vs.Addr(), vs.Port()}]
	if !ok {
		return fmt.Errorf("fake ipvs: no service %s", vs)
	}
	d, ok := s.dests[rs]
	if !ok {
		return fmt.Errorf("fake ipvs: no destination %s in %s", rs, vs)
	}
	d.ActiveConnections, d.InactiveConnections = active, inactive
	return nil
}

func (f *FakeHandle) op(format string, args ...any) {
	f.Ops = append(f.Ops, fmt.Sprintf(format, args...))
}

func (f *FakeHandle) lookup(s *libipvs.Service) (*fakeService, vsKey, error) {
	k := keyOf(s)
	fs, ok := f.services[k]
	if !ok {
		return nil, k, fmt.Errorf("fake ipvs: service %s: %w", k, unix.ESRCH)
	}
	return fs, k, nil
}

func (f *FakeHandle) GetServices() ([]*libipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*libipvs.Service, 0, len(f.services))
	for _, s := range f.services {
		c := s.svc
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *libipvs.Service) int { return cmpKey(keyOf(a), keyOf(b)) })
	return out, nil
}

// GetService implements Handle.
func (f *FakeHandle) GetService(s *libipvs.Service) (*libipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, _, err := f.lookup(s)
	if err != nil {
		return nil, err
	}
	c := fs.svc
	return &c, nil
}

func (f *FakeHandle) NewService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := keyOf(s)
	if _, ok := f.services[k]; ok {
		return fmt.Errorf("fake ipvs: add service %s: %w", k, unix.EEXIST)
	}
	if s.SchedName == "" {
		return fmt.Errorf("fake ipvs: add service %s without scheduler: %w", k, unix.EINVAL)
	}
	c := *s
	c.Flags |= flagHashed
	f.services[k] = &fakeService{svc: c, dests: map[netip.AddrPort]*libipvs.Destination{}}
	f.op("add-service %s %s", k, describeSvc(s))
	return nil
}

func (f *FakeHandle) UpdateService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.lookup(s)
	if err != nil {
		return err
	}
	c := *s
	c.Flags |= flagHashed
	fs.svc = c
	f.op("update-service %s %s", k, describeSvc(s))
	return nil
}

func (f *FakeHandle) DelService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, k, err := f.lookup(s)
	if err != nil {
		return err
	}
	delete(f.services, k)
	f.op("del-service %s", k)
	return nil
}

func (f *FakeHandle) GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Gets++
	fs, _, err := f.lookup(s)
	if err != nil {
		return nil, err
	}
	out := make([]*libipvs.Destination, 0, len(fs.dests))
	for _, d := range fs.dests {
		c := *d
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *libipvs.Destination) int { return destKey(a).Compare(destKey(b)) })
	return out, nil
}

func (f *FakeHandle) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.lookup(s)
	if err != nil {
		return err
	}
	dk := destKey(d)
	if _, ok := fs.dests[dk]; ok {
		return fmt.Errorf("fake ipvs: add dest %s to %s: %w", dk, k, unix.EEXIST)
	}
	c := *d
	fs.dests[dk] = &c
	f.op("add-dest %s -> %s weight %d", k, dk, d.Weight)
	return nil
}

func (f *FakeHandle) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.lookup(s)
	if err != nil {
		return err
	}
	dk := destKey(d)
	old, ok := fs.dests[dk]
	if !ok {
		return fmt.Errorf("fake ipvs: update dest %s of %s: %w", dk, k, unix.ENOENT)
	}
	c := *d
	c.ActiveConnections, c.InactiveConnections = old.ActiveConnections, old.InactiveConnections
	fs.dests[dk] = &c
	f.op("update-dest %s -> %s weight %d", k, dk, d.Weight)
	return nil
}

func (f *FakeHandle) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, k, err := f.lookup(s)
	if err != nil {
		return err
	}
	dk := destKey(d)
	if _, ok := fs.dests[dk]; !ok {
		return fmt.Errorf("fake ipvs: del dest %s of %s: %w", dk, k, unix.ENOENT)
	}
	delete(fs.dests, dk)
	f.op("del-dest %s -> %s", k, dk)
	return nil
}

func (f *FakeHandle) GetConfig() (*libipvs.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.config
	return &c, nil
}

// SetConfig sets the timeouts that are not zero (zero leaves the kernel's
// value, as IP_VS_SO_SET_TIMEOUT does).
func (f *FakeHandle) SetConfig(c *libipvs.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.TimeoutTCP > 0 {
		f.config.TimeoutTCP = c.TimeoutTCP
	}
	if c.TimeoutTCPFin > 0 {
		f.config.TimeoutTCPFin = c.TimeoutTCPFin
	}
	if c.TimeoutUDP > 0 {
		f.config.TimeoutUDP = c.TimeoutUDP
	}
	f.op("set-config tcp=%s tcpfin=%s udp=%s", c.TimeoutTCP, c.TimeoutTCPFin, c.TimeoutUDP)
	return nil
}

func describeSvc(s *libipvs.Service) string {
	d := s.SchedName
	if s.Flags&flagPersistent != 0 {
		d += fmt.Sprintf(" persistent %d", s.Timeout)
	}
	return d
}

func cmpKey(a, b vsKey) int {
	if a.af != b.af {
		return int(a.af) - int(b.af)
	}
	if a.proto != b.proto {
		return int(a.proto) - int(b.proto)
	}
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	return int(a.port) - int(b.port)
}
