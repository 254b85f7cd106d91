package userspace

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// udpListener proxies the datagrams of one service port. Each client
// address (IP and port) gets a session: a connected socket to the endpoint
// chosen for it, whose replies are sent back to the client from the
// address the client's datagrams arrived at (IP_PKTINFO), so the
// conntrack entry of the redirect translates them back to the VIP. A
// session ends after the idle timeout, when its endpoint leaves the
// service, or when the endpoint answers with ICMP port unreachable (then
// the endpoint is ejected and the client's next datagram picks another).
type udpListener struct {
	l    *listener
	conn *net.UDPConn
	v6   bool
	port uint16

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
}

type udpSession struct {
	u      *udpListener
	client netip.AddrPort
	local  netip.Addr // where the client's datagrams arrive (reply source)
	ep     *endpoint
	conn   *net.UDPConn
	tp     bool         // bound to the client address
	last   atomic.Int64 // unix nanoseconds of the last datagram either way
	once   sync.Once
}

func udpNetwork(tcpNet string) string {
	if tcpNet == "tcp6" {
		return "udp6"
	}
	return "udp4"
}

func newUDPListener(l *listener, addr netip.Addr) (*udpListener, error) {
	network := udpNetwork(l.set.network)
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		return nil, err
	}
	u := &udpListener{l: l, conn: conn, v6: network == "udp6", sessions: map[netip.AddrPort]*udpSession{}}
	u.port = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if u.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("enable packet info: %w", err)
	}
	return u, nil
}

// localAddr extracts the datagram's destination address from its
// IP_PKTINFO / IPV6_PKTINFO control message.
func (u *udpListener) localAddr(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case !u.v6 && m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(m.Data[8:12]))
		case u.v6 && m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(m.Data[0:16]))
		}
	}
	return netip.Addr{}
}

func (u *udpListener) replyOOB(local netip.Addr) []byte {
	switch {
	case !local.IsValid():
		return nil
	case u.v6:
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: local.As16()})
	default:
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: local.As4()})
	}
}

func (u *udpListener) serve() {
	buf := make([]byte, 64*1024)
	oob := make([]byte, 512)
	for {
		n, oobn, _, from, err := u.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if u.l.closed.Load() {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		local := u.localAddr(oob[:oobn])
		// A session whose endpoint refused is replaced once per datagram.
		for try := 0; try < 2; try++ {
			s := u.session(from, local)
			if s == nil {
				break // no endpoints: the datagram is dropped
			}
			if _, err := s.conn.Write(buf[:n]); err != nil {
				if isRefused(err) {
					s.ep.fail(time.Now(), u.l.set.ejectBase, u.l.set.ejectMax)
				}
				s.close()
				continue
			}
			s.last.Store(time.Now().UnixNano())
			break
		}
	}
}

// session returns client's session, creating it (and choosing its
// endpoint) when there is none.
func (u *udpListener) session(client netip.AddrPort, local netip.Addr) *udpSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s := u.sessions[client]; s != nil {
		return s
	}
	now := time.Now()
	for _, ep := range u.l.candidates(client.Addr(), now) {
		conn, tp, err := u.l.dial(context.Background(), udpNetwork(u.l.set.network), client.Addr(), ep)
		if err != nil {
			ep.fail(now, u.l.set.ejectBase, u.l.set.ejectMax)
			continue
		}
		s := &udpSession{u: u, client: client, local: local, ep: ep, conn: conn.(*net.UDPConn), tp: tp}
		u.l.set.active.Add(1)
		s.last.Store(now.UnixNano())
		ep.active.Add(1)
		u.l.chosen(client.Addr(), ep, now)
		u.sessions[client] = s
		go s.relay()
		return s
	}
	return nil
}

// relay sends the endpoint's replies back to the client until the session
// idles out or fails.
func (s *udpSession) relay() {
	defer s.close()
	buf := make([]byte, 64*1024)
	idle := s.u.l.set.udpIdle
	oob := s.u.replyOOB(s.local)
	for {
		last := time.Unix(0, s.last.Load())
		_ = s.conn.SetReadDeadline(last.Add(idle))
		n, err := s.conn.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Since(time.Unix(0, s.last.Load())) < idle {
				continue // the client sent meanwhile
			}
			if isRefused(err) {
				s.ep.fail(time.Now(), s.u.l.set.ejectBase, s.u.l.set.ejectMax)
			}
			return
		}
		s.last.Store(time.Now().UnixNano())
		if _, _, err := s.u.conn.WriteMsgUDPAddrPort(buf[:n], oob, s.client); err != nil && s.u.l.closed.Load() {
			return
		}
	}
}

// close ends the session (idempotent).
func (s *udpSession) close() {
	s.once.Do(func() {
		s.u.mu.Lock()
		if s.u.sessions[s.client] == s {
			delete(s.u.sessions, s.client)
		}
		s.u.mu.Unlock()
		s.ep.active.Add(-1)
		s.u.l.set.active.Add(-1)
		_ = s.conn.Close()
	})
}

// dropSessions ends the sessions for which stale returns true.
func (u *udpListener) dropSessions(stale func(*udpSession) bool) {
	u.mu.Lock()
	var drop []*udpSession
	for _, s := range u.sessions {
		if stale(s) {
			drop = append(drop, s)
		}
	}
	u.mu.Unlock()
	for _, s := range drop {
		s.close()
	}
}

// closeListener closes the service socket. Sessions cannot answer their
// clients without it, so they end too.
func (u *udpListener) closeListener() {
	_ = u.conn.Close()
	u.dropSessions(func(*udpSession) bool { return true })
}
