package userspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// lnKey names a listener: one per service port, plus a second one for the
// external entry points (NodePort, ExternalIPs, LoadBalancer IPs) when
// the internal and external traffic policies differ.
type lnKey struct {
	name     proxy.ServicePortName
	external bool
}

func (k lnKey) String() string {
	if k.external {
		return k.name.String() + "/" + string(k.name.Protocol) + " (external)"
	}
	return k.name.String() + "/" + string(k.name.Protocol)
}

// svcConfig is what a listener serves; Sync swaps it atomically.
type svcConfig struct {
	eps      []*endpoint
	alg      Algorithm
	bal      balancer
	affinity time.Duration
	tp       transparency
}

// settings are the Backend knobs every listener reads.
type settings struct {
	network     string // "tcp4"/"tcp6" (the UDP networks derive from it)
	dialTimeout time.Duration
	maxTries    int
	ejectBase   time.Duration
	ejectMax    time.Duration
	udpIdle     time.Duration
	log         *slog.Logger
	// netns is where sockets are created (see netnsHandle).
	netns *netnsHandle
	// transparent enables binding the client's address (see
	// transparent.go); clusterCIDRs are the in-cluster sources.
	transparent  atomic.Bool
	clusterCIDRs []netip.Prefix
	// active counts open proxied connections and UDP sessions: after
	// Cleanup they still need conntrack NAT (and, when transparent, the
	// policy route) until they end.
	active atomic.Int64
}

// transparency says for which clients a listener binds the client address.
type transparency int

const (
	transparentNever     transparency = iota
	transparentInCluster              // ClusterIP: clients in the cluster CIDRs
	transparentAlways                 // external entry points of ETP Local services
)

// listener is the local socket one service port's traffic is redirected
// to, with the per-service load-balancing state.
type listener struct {
	key   lnKey
	proto v1.Protocol
	port  uint16
	set   *settings

	cfg atomic.Pointer[svcConfig]
	// byAddr keeps endpoint records across syncs (Sync goroutine only).
	byAddr map[netip.AddrPort]*endpoint

	affMu   sync.Mutex
	aff     map[netip.Addr]affinityEntry
	affAdds int

	tcp    *net.TCPListener
	udp    *udpListener
	closed atomic.Bool
}

type affinityEntry struct {
	ep   netip.AddrPort
	last time.Time
}

// newListener opens the socket on addr (port 0: the kernel picks) and
// starts serving.
func newListener(key lnKey, addr netip.Addr, set *settings) (*listener, error) {
	l := &listener{key: key, proto: key.name.Protocol, set: set, byAddr: map[netip.AddrPort]*endpoint{}, aff: map[netip.Addr]affinityEntry{}}
	l.cfg.Store(&svcConfig{bal: newBalancer(RoundRobin), alg: RoundRobin})
	if err := set.netns.do(func() error { return l.open(addr) }); err != nil {
		return nil, err
	}
	if l.tcp != nil {
		go l.serveTCP()
	} else {
		go l.udp.serve()
	}
	return l, nil
}

func (l *listener) open(addr netip.Addr) error {
	key, set := l.key, l.set
	switch l.proto {
	case v1.ProtocolTCP:
		ln, err := net.ListenTCP(set.network, net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		if err != nil {
			return fmt.Errorf("userspace: listen for %s: %w", key, err)
		}
		l.tcp = ln
		l.port = uint16(ln.Addr().(*net.TCPAddr).Port)
	case v1.ProtocolUDP:
		u, err := newUDPListener(l, addr)
		if err != nil {
			return fmt.Errorf("userspace: listen for %s: %w", key, err)
		}
		l.udp = u
		l.port = u.port
	default:
		return fmt.Errorf("userspace: protocol %s is not supported", l.proto)
	}
	return nil
}

// update installs the service's new endpoints and settings, keeping the
// records of endpoints that stay.
func (l *listener) update(eps []proxy.Endpoint, alg Algorithm, affinity time.Duration, tp transparency) {
	next := make(map[netip.AddrPort]*endpoint, len(eps))
	list := make([]*endpoint, 0, len(eps))
	for _, e := range eps {
		ap := e.AddrPort()
		if _, dup := next[ap]; dup {
			continue
		}
		ep := l.byAddr[ap]
		if ep == nil {
			ep = newEndpoint(ap)
		}
		next[ap] = ep
		list = append(list, ep)
	}
	l.byAddr = next
	old := l.cfg.Load()
	cfg := &svcConfig{eps: list, alg: alg, affinity: affinity, bal: old.bal, tp: tp}
	if alg != old.alg {
		cfg.bal = newBalancer(alg)
	}
	l.cfg.Store(cfg)
	if affinity == 0 {
		l.affMu.Lock()
		clear(l.aff)
		l.affMu.Unlock()
	}
	if l.udp != nil {
		l.udp.dropSessions(func(s *udpSession) bool { return next[s.ep.addr] != s.ep })
	}
}

// close stops accepting; established connections and UDP sessions go on
// until they end (a mode switch or a service deletion does not cut them).
func (l *listener) close() {
	if !l.closed.CompareAndSwap(false, true) {
		return
	}
	if l.tcp != nil {
		_ = l.tcp.Close()
	}
	if l.udp != nil {
		l.udp.closeListener()
	}
}

// candidates returns the endpoints to try for a new connection from
// client, in order: the affinity endpoint if any, then the balancer's
// order over the endpoints not ejected (so their shares stay even), then
// the ejected ones, soonest back first (tried only when every other one
// failed).
func (l *listener) candidates(client netip.Addr, now time.Time) []*endpoint {
	cfg := l.cfg.Load()
	if len(cfg.eps) == 0 {
		return nil
	}
	healthy := make([]*endpoint, 0, len(cfg.eps))
	var ejected []*endpoint
	for _, ep := range cfg.eps {
		if ep.ejected(now) {
			ejected = append(ejected, ep)
		} else {
			healthy = append(healthy, ep)
		}
	}
	order := healthy
	if len(healthy) > 0 {
		order = cfg.bal.order(client, healthy)
	}
	if cfg.affinity > 0 {
		l.affMu.Lock()
		e, ok := l.aff[client]
		if ok && now.Sub(e.last) > cfg.affinity {
			delete(l.aff, client)
			ok = false
		}
		l.affMu.Unlock()
		if ok {
			if i := slices.IndexFunc(order, func(ep *endpoint) bool { return ep.addr == e.ep }); i > 0 {
				ep := order[i]
				copy(order[1:i+1], order[:i])
				order[0] = ep
			}
		}
	}
	slices.SortStableFunc(ejected, func(a, b *endpoint) int {
		x, y := a.ejectedUntil.Load(), b.ejectedUntil.Load()
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	out := append(order, ejected...)
	if l.set.maxTries > 0 && len(out) > l.set.maxTries {
		out = out[:l.set.maxTries]
	}
	return out
}

// chosen records that client now uses ep (session affinity).
func (l *listener) chosen(client netip.Addr, ep *endpoint, now time.Time) {
	cfg := l.cfg.Load()
	if cfg.affinity <= 0 {
		return
	}
	l.affMu.Lock()
	defer l.affMu.Unlock()
	l.aff[client] = affinityEntry{ep: ep.addr, last: now}
	l.affAdds++
	if l.affAdds >= 1024 {
		l.affAdds = 0
		for c, e := range l.aff {
			if now.Sub(e.last) > cfg.affinity {
				delete(l.aff, c)
			}
		}
	}
}

func (l *listener) serveTCP() {
	delay := 5 * time.Millisecond
	for {
		c, err := l.tcp.AcceptTCP()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			l.set.log.Warn("accept failed", "service", l.key.String(), "err", err)
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		go l.handleTCP(c)
	}
}

// handleTCP connects the accepted client to a backend, trying the next
// one on a connect failure, and splices the two sockets.
func (l *listener) handleTCP(c *net.TCPConn) {
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	bc, ep, _, err := l.dialTCP(context.Background(), client)
	if err != nil {
		l.set.log.Debug("no backend reachable", "service", l.key.String(), "client", client, "err", err)
		_ = c.SetLinger(0) // reset: the client sees the failure at once
		_ = c.Close()
		return
	}
	ep.active.Add(1)
	defer ep.active.Add(-1)
	l.set.active.Add(1)
	defer l.set.active.Add(-1)
	splice(c, bc)
}

// dialTCP tries the candidates in order until one accepts.
func (l *listener) dialTCP(ctx context.Context, client netip.Addr) (*net.TCPConn, *endpoint, bool, error) {
	now := time.Now()
	cands := l.candidates(client, now)
	if len(cands) == 0 {
		return nil, nil, false, errNoEndpoints
	}
	var errs []error
	for _, ep := range cands {
		c, tp, err := l.dial(ctx, l.set.network, client, ep)
		if err != nil {
			ep.fail(time.Now(), l.set.ejectBase, l.set.ejectMax)
			l.set.log.Debug("backend connect failed; trying the next", "service", l.key.String(), "endpoint", ep.addr, "err", err)
			errs = append(errs, err)
			continue
		}
		ep.succeed()
		l.chosen(client, ep, time.Now())
		return c.(*net.TCPConn), ep, tp, nil
	}
	return nil, nil, false, errors.Join(errs...)
}

var errNoEndpoints = errors.New("no endpoints")

// transparentFor reports whether the connection of client to ep binds the
// client's address (see transparent.go): never for hairpin or loopback
// clients.
func (l *listener) transparentFor(client netip.Addr, ep netip.AddrPort) bool {
	if !l.set.transparent.Load() || client.IsLoopback() || client == ep.Addr() {
		return false
	}
	switch l.cfg.Load().tp {
	case transparentAlways:
		return true
	case transparentInCluster:
		if len(l.set.clusterCIDRs) == 0 {
			return true
		}
		for _, p := range l.set.clusterCIDRs {
			if p.Contains(client) {
				return true
			}
		}
	}
	return false
}

// dial connects to ep on network ("tcp4", "udp6" …) in the backend's
// namespace, bound to the client's address when transparent (then tp is
// true).
func (l *listener) dial(ctx context.Context, network string, client netip.Addr, ep *endpoint) (_ net.Conn, tp bool, _ error) {
	d := net.Dialer{Timeout: l.set.dialTimeout}
	tp = l.transparentFor(client, ep.addr)
	if tp {
		d.Control = setTransparent
	}
	var c net.Conn
	var err error
	for try := 0; try < tpPortTries; try++ {
		if tp {
			d.LocalAddr = localAddrFor(network, client)
		}
		err = l.set.netns.do(func() error {
			var err error
			c, err = d.DialContext(ctx, network, ep.addr.String())
			return err
		})
		// A transparent TCP source port is drawn at random (see
		// tpLowPorts): another draw when it is taken.
		if !tp || !(errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)) {
			break
		}
	}
	return c, tp, err
}

// splice copies both directions between a and b. io.Copy between two
// *net.TCPConn uses splice(2) (zero-copy through a pipe). A clean EOF is
// passed on as a half-close; an error closes both sides.
func splice(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = a.SetLinger(0)
			_ = b.SetLinger(0)
			_ = a.Close()
			_ = b.Close()
		})
	}
	half := func(dst, src *net.TCPConn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, net.ErrClosed) {
			closeBoth()
			return
		}
		_ = dst.CloseWrite()
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// isRefused reports an ICMP port unreachable surfaced on a connected UDP
// socket (or a refused TCP connect).
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
