package agnhost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP uses one-to-one style sockets (SOCK_STREAM, IPPROTO_SCTP), which
// behave like TCP sockets for bind, listen, accept, connect, read and write.
// The file descriptor is handed to the net package, which treats any
// SOCK_STREAM inet socket as TCP: reads, writes, deadlines and addresses
// work; the TCP-only socket options it sets on accepted connections fail
// harmlessly. Creating the first SCTP socket loads the kernel's sctp module,
// so nothing here opens one unless an SCTP port was asked for.

// listenSCTP listens for SCTP associations on host:port. An empty host
// listens on every IPv4 and IPv6 address.
func listenSCTP(host string, port int) (net.Listener, error) {
	family, sa, err := sctpSockaddr(host, port)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, fmt.Errorf("sctp socket: %w", os.NewSyscallError("socket", err))
	}
	f := os.NewFile(uintptr(fd), "sctp")
	defer f.Close() // net.FileListener dups the descriptor
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("sctp setsockopt: %w", err)
	}
	if family == unix.AF_INET6 && host == "" {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("sctp bind %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, 128); err != nil {
		return nil, fmt.Errorf("sctp listen: %w", os.NewSyscallError("listen", err))
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("sctp listener: %w", err)
	}
	return ln, nil
}

// dialSCTP opens an SCTP association to addr (an IP:port; names are not
// resolved here). A zero timeout waits as long as the kernel does.
func dialSCTP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sctp dial: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); timeout == 0 || d < timeout {
			timeout = max(d, time.Millisecond)
		}
	}
	family, sa, err := sctpSockaddr(ap.Addr().Unmap().String(), int(ap.Port()))
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "sctp", Err: os.NewSyscallError("socket", err)}
	}
	f := os.NewFile(uintptr(fd), "sctp")
	defer f.Close() // net.FileConn dups the descriptor
	if timeout > 0 {
		// A blocking connect(2) gives up after SO_SNDTIMEO.
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("sctp setsockopt: %w", err)
		}
	}
	if err := unix.Connect(fd, sa); err != nil {
		if errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EAGAIN) {
			return nil, &net.OpError{Op: "dial", Net: "sctp", Err: errSCTPTimeout}
		}
		return nil, &net.OpError{Op: "dial", Net: "sctp", Err: os.NewSyscallError("connect", err)}
	}
	zero := unix.Timeval{}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &zero)
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("sctp conn: %w", err)
	}
	return c, nil
}

// errSCTPTimeout is a connect(2) that ran out of SO_SNDTIMEO.
var errSCTPTimeout error = sctpTimeoutError{}

type sctpTimeoutError struct{}

func (sctpTimeoutError) Error() string   { return "i/o timeout" }
func (sctpTimeoutError) Timeout() bool   { return true }
func (sctpTimeoutError) Temporary() bool { return true }

func sctpSockaddr(host string, port int) (int, unix.Sockaddr, error) {
	if port < 0 || port > 65535 {
		return 0, nil, fmt.Errorf("sctp: invalid port %d", port)
	}
	if host == "" {
		if ipv6Available() {
			return unix.AF_INET6, &unix.SockaddrInet6{Port: port}, nil
		}
		return unix.AF_INET, &unix.SockaddrInet4{Port: port}, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return 0, nil, fmt.Errorf("sctp: address %q: %w", host, err)
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: port, Addr: ip.As4()}, nil
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: port, Addr: ip.As16()}, nil
}

// ipv6Available reports whether the kernel has IPv6 (it may be disabled).
func ipv6Available() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
