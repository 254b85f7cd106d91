package userspace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/svcnet/svcnet/internal/proxy"
)

// Transparent proxying: the proxy's connection to the endpoint is bound
// to the client's address (IP_TRANSPARENT lets a socket bind a non-local
// address), so the endpoint sees the real client. The endpoint's replies
// are addressed to the client; for them to reach the proxy's socket
// instead of being forwarded, packets that belong to a transparent socket
// are marked in prerouting ("socket transparent 1", before routing) and a
// policy rule sends marked packets to a routing table whose only route is
// "local default dev lo":
//
//	chain mangle-prerouting { type filter hook prerouting priority mangle;
//	    meta l4proto { tcp, udp } socket transparent 1 meta mark set mark or 0x100000 }
//	ip rule add fwmark 0x100000/0x100000 lookup 7723 priority 9000
//	ip route add local default dev lo table 7723
//
// This only works when the endpoint's replies pass through this node,
// which is why a listener binds the client address only where the
// nftables mode would not masquerade: ClusterIP traffic from a client in
// the cluster CIDRs, and external traffic of externalTrafficPolicy Local
// services (whose endpoints are all on this node). Everything else (and
// hairpin connections, and loopback clients) connects from the node's own
// address, like masquerading.
const (
	transparentMark     = 0x100000
	transparentTable    = 7723
	transparentPriority = 9000
	manglePrerouting    = "mangle-prerouting"
)

func (b *Backend) familyNum() int {
	if b.ipv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func (b *Backend) policyRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = b.familyNum()
	r.Mark = transparentMark
	mask := uint32(transparentMark)
	r.Mask = &mask
	r.Table = transparentTable
	r.Priority = transparentPriority
	return r
}

func (b *Backend) localRoute() (*netlink.Route, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if b.ipv6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       dst,
		Table:     transparentTable,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Family:    b.familyNum(),
	}, nil
}

// setupPolicyRouting installs the policy rule and local route (idempotent).
func (b *Backend) setupPolicyRouting() error {
	route, err := b.localRoute()
	if err != nil {
		return fmt.Errorf("transparent proxy: %w", err)
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("transparent proxy: local route in table %d: %w", transparentTable, err)
	}
	if err := netlink.RuleAdd(b.policyRule()); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("transparent proxy: policy rule: %w", err)
	}
	return nil
}

// cleanupPolicyRouting removes them; missing ones are fine.
func (b *Backend) cleanupPolicyRouting() error {
	var errs []error
	for {
		err := netlink.RuleDel(b.policyRule())
		if err != nil {
			if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("transparent proxy: delete policy rule: %w", err))
			}
			break
		}
	}
	if route, err := b.localRoute(); err != nil {
		errs = append(errs, err)
	} else if err := netlink.RouteDel(route); err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.ENOENT) {
		errs = append(errs, fmt.Errorf("transparent proxy: delete local route: %w", err))
	}
	return errors.Join(errs...)
}

// Transparent TCP connections take their source port at random from
// outside Linux's default ephemeral range (32768-60999), which pods keep:
// from 1024-32767 and 61000-65535. The kernel would pick a port among the
// node's own sockets only, and so could pick the port of a connection the
// client itself has open to the same endpoint — forwarded pod to pod, or
// DNATed by a kernel mode before a switch to this one. The endpoint's
// replies on that connection would then meet the proxy's socket in the
// kernel's early demux and be delivered to it, and the client's
// connection would stall (TestSwitchToUserspaceKeepsStreamOnSharedPort).
// A client port out there is still possible (a client that binds one, or
// a pod with a wider range), only not by default.
//
// The bind is to an explicit port with SO_REUSEADDR, so sockets to
// different endpoints may share it and connect fails only when the whole
// 4-tuple is taken (by a live or TIME_WAIT socket; the 36k ports give a
// client and endpoint pair about as many as the kernel's own range did);
// dial then draws again. Neither needs a scan of the range (a bind to
// "client:0" would scan the ephemeral range for a port free for the
// address alone; the listeners of a node with many services hold a good
// part of it: measured, with 10k services that scan halved the mode's
// new-connection rate).
const (
	tpLowPorts  = 32768 - 1024  // 1024-32767
	tpHighPorts = 65536 - 61000 // 61000-65535
	tpPortTries = 32
)

// setTransparent is a Dialer.Control that sets IP_TRANSPARENT (or
// IPV6_TRANSPARENT) before the socket binds the client's address, and for
// TCP SO_REUSEADDR (see tpLowPorts).
func setTransparent(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" || network == "udp6" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1)
		}
		if serr == nil && (network == "tcp4" || network == "tcp6") {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// localAddrFor returns the address to bind for network when connecting on
// behalf of client transparently: for TCP with a port drawn from outside
// the default ephemeral range (see tpLowPorts).
func localAddrFor(network string, client netip.Addr) net.Addr {
	if network == "udp4" || network == "udp6" {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(client, 0))
	}
	port := 1024 + rand.IntN(tpLowPorts+tpHighPorts)
	if port >= 32768 {
		port += 61000 - 32768
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(client, uint16(port)))
}

// netnsHandle pins the network namespace the Backend was created in, when
// it is not the process's own, so that sockets created later on other
// goroutines (listeners, connections to endpoints) land in it.
type netnsHandle struct {
	f *os.File // nil: the process's namespace
}

// currentNetns returns the calling thread's namespace, or a nil handle
// when it is the process's.
func currentNetns() (*netnsHandle, error) {
	var self, thread unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return &netnsHandle{}, nil // no procfs: assume the process's namespace
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	path := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	if err := unix.Stat(path, &thread); err != nil {
		return nil, fmt.Errorf("netns of the current thread: %w", err)
	}
	if self.Ino == thread.Ino && self.Dev == thread.Dev {
		return &netnsHandle{}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns of the current thread: %w", err)
	}
	return &netnsHandle{f: f}, nil
}

// do runs fn with the calling goroutine's thread in the namespace.
func (h *netnsHandle) do(fn func() error) error {
	if h == nil || h.f == nil {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(h.f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime discards it with the
		// goroutine, so nothing else runs in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("netns: leave: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// destroyTransparentTimeWait removes the TIME_WAIT sockets that this
// namespace's transparent backend connections left behind: TCP sockets in
// TIME_WAIT whose local address is none of the namespace's own (only a
// transparent bind to a client's address makes such a socket). It runs in
// the backend's namespace (netnsHandle.do) when the mode stops proxying,
// and returns how many it removed.
//
// Why: such a socket holds the 4-tuple client:port → endpoint:port for a
// minute. After a switch to a kernel mode, a client that reuses the port
// towards the same endpoint is DNATed onto that very tuple and forwarded
// through this node, where the endpoint's SYN-ACK meets the TIME_WAIT
// socket in the kernel's early demux and is dropped on forwarding
// (ip_forward drops packets that carry a local socket): the connection
// hangs until the socket expires. The kernel destroys TIME_WAIT sockets on
// request (SOCK_DESTROY). Another transparent proxy on the node would lose
// its TIME_WAIT sockets too; that costs it only the protection against
// late duplicates of closed connections.
func (b *Backend) destroyTransparentTimeWait() (int, error) {
	addrs, err := proxy.LocalAddrs()
	if err != nil {
		return 0, fmt.Errorf("transparent proxy: list local addresses: %w", err)
	}
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		local[a] = true
	}
	family := uint8(unix.AF_INET)
	if b.ipv6 {
		family = unix.AF_INET6
	}
	n, err := destroyTimeWait(family, func(src netip.Addr) bool { return !local[src] && !src.IsLoopback() })
	if err != nil {
		return n, fmt.Errorf("transparent proxy: %w", err)
	}
	return n, nil
}

// destroyTimeWait destroys the TCP sockets of family in TIME_WAIT whose
// local address match accepts, and returns how many it destroyed.
func destroyTimeWait(family uint8, match func(src netip.Addr) bool) (int, error) {
	socks, err := netlink.SocketDiagTCP(family)
	if err != nil {
		return 0, fmt.Errorf("list TCP sockets: %w", err)
	}
	n := 0
	var errs []error
	for _, s := range socks {
		src, ok := netip.AddrFromSlice(s.ID.Source)
		if s.State != netlink.TCP_TIME_WAIT || !ok || !match(src.Unmap()) {
			continue
		}
		req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
		req.AddData(&sockDestroyRequest{family: family, id: s.ID})
		_, err := req.Execute(unix.NETLINK_INET_DIAG, 0)
		switch {
		case err == nil:
			n++
		case errors.Is(err, syscall.ENOENT):
			// Expired meanwhile.
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("destroy %d TIME_WAIT sockets: %w", len(errs), errs[0])
	}
	return n, nil
}

// sockDestroyRequest is the struct inet_diag_req_v2 of a SOCK_DESTROY
// request (linux/inet_diag.h) for one socket of either family, named by
// its 4-tuple and the cookie a dump returned. (netlink.SocketDestroy builds
// it for IPv4 only and without the cookie.)
type sockDestroyRequest struct {
	family uint8
	id     netlink.SocketID
}

// sizeofInetDiagReqV2 is sizeof(struct inet_diag_req_v2).
const sizeofInetDiagReqV2 = 56

func (r *sockDestroyRequest) Len() int { return sizeofInetDiagReqV2 }

func (r *sockDestroyRequest) Serialize() []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0], b[1] = r.family, unix.IPPROTO_TCP // then ext, pad and states: 0
	binary.BigEndian.PutUint16(b[8:], r.id.SourcePort)
	binary.BigEndian.PutUint16(b[10:], r.id.DestinationPort)
	src, dst := r.id.Source.To16(), r.id.Destination.To16()
	if r.family == unix.AF_INET {
		src, dst = r.id.Source.To4(), r.id.Destination.To4()
	}
	copy(b[12:28], src)
	copy(b[28:44], dst)
	binary.NativeEndian.PutUint32(b[44:], r.id.Interface)
	binary.NativeEndian.PutUint32(b[48:], r.id.Cookie[0])
	binary.NativeEndian.PutUint32(b[52:], r.id.Cookie[1])
	return b
}
