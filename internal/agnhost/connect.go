package agnhost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Connect failure reasons: the first word of the message connect prints on
// stderr, which e2e tests match (notably REFUSED: a Service without
// endpoints must reject, not drop).
const (
	ConnectUnknown = "UNKNOWN" // bad arguments, or an unclassified UDP error
	ConnectTimeout = "TIMEOUT"
	ConnectDNS     = "DNS"
	ConnectRefused = "REFUSED"
	ConnectOther   = "OTHER" // any other network error, e.g. no route to host
)

// ConnectOptions are connect's arguments.
type ConnectOptions struct {
	// Address is host:port; the host may be a name.
	Address string
	// Protocol is "tcp" (default), "udp" or "sctp".
	Protocol string
	// Timeout bounds the attempt; 0 means none (--timeout).
	Timeout time.Duration
	// Data is what UDP and SCTP send (a newline is appended) and expect an
	// answer to (--udp-data / --sctp-data, default "hostname").
	Data string
	// Resolver resolves the host; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// ConnectError is a failed connection attempt. Error() is the exact line
// upstream prints on stderr for it.
type ConnectError struct {
	Reason string // one of the Connect* constants
	Err    error
	// bare: upstream prints only the reason (TCP's "REFUSED", "TIMEOUT").
	bare bool
}

func (e *ConnectError) Error() string {
	if e.bare || e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ConnectReason returns the reason of a Connect error, or "" if err is not
// one.
func ConnectReason(err error) string {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

// Connect makes one connection attempt like agnhost connect: nil on
// success, else a *ConnectError. TCP succeeds once connected; UDP and SCTP
// need an answer to Data. The command prints the error on stderr and
// exits 1 (upstream uses exit code 1 for every failure).
func Connect(ctx context.Context, o ConnectOptions) error {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	if o.Data == "" {
		o.Data = "hostname"
	}
	r := o.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	host, port, err := net.SplitHostPort(o.Address)
	if err != nil {
		return &ConnectError{Reason: ConnectUnknown, Err: err}
	}
	switch o.Protocol {
	case "", "tcp", "udp", "sctp":
	default:
		return &ConnectError{Reason: ConnectUnknown, Err: fmt.Errorf("unsupported protocol %q", o.Protocol)}
	}
	network := o.Protocol
	if network == "" || network == "sctp" {
		network = "tcp" // for port-name lookup only
	}
	addr, err := resolve(ctx, r, network, host, port)
	if err != nil {
		return &ConnectError{Reason: ConnectDNS, Err: err}
	}
	switch o.Protocol {
	case "udp":
		return connectUDP(ctx, addr, o.Data)
	case "sctp":
		return connectSCTP(ctx, addr, o.Data)
	}
	return connectTCP(ctx, addr)
}

// resolve turns host and port into one ip:port, preferring IPv4 as
// net.ResolveTCPAddr does.
func resolve(ctx context.Context, r *net.Resolver, network, host, port string) (string, error) {
	p, err := r.LookupPort(ctx, network, port)
	if err != nil {
		return "", err
	}
	if host == "" {
		return net.JoinHostPort("", fmt.Sprint(p)), nil
	}
	ips, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	ip := ips[0]
	for _, a := range ips {
		if a.IP.To4() != nil {
			ip = a
			break
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(p)), nil
}

func connectTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		return nil
	}
	if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return &ConnectError{Reason: ConnectTimeout, Err: err, bare: true}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return &ConnectError{Reason: ConnectRefused, Err: err, bare: true}
	}
	return &ConnectError{Reason: ConnectOther, Err: err}
}

func connectUDP(ctx context.Context, addr, data string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return &ConnectError{Reason: ConnectOther, Err: err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write([]byte(data + "\n")); err != nil {
		return udpError(err)
	}
	buf := make([]byte, 1024)
	n, err := conn.Read(buf)
	if err != nil {
		return udpError(err)
	}
	if n == 0 {
		//lint:ignore ST1005 upstream agnhost's exact text, which tests match
		return &ConnectError{Reason: ConnectOther, Err: errors.New("No data received from the server. Cannot guarantee the server received the request.")}
	}
	return nil
}

func udpError(err error) error {
	switch {
	case isTimeout(err):
		return &ConnectError{Reason: ConnectTimeout, Err: err}
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused"):
		return &ConnectError{Reason: ConnectRefused, Err: err}
	}
	return &ConnectError{Reason: ConnectUnknown, Err: err}
}

// connectSCTP reports every non-timeout failure as OTHER, as upstream does.
func connectSCTP(ctx context.Context, addr, data string) error {
	conn, err := dialSCTP(ctx, addr, 0)
	if err != nil {
		if isTimeout(err) {
			return &ConnectError{Reason: ConnectTimeout, bare: true, Err: err}
		}
		return &ConnectError{Reason: ConnectOther, Err: err}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(data + "\n")); err != nil {
		return sctpIOError(err)
	}
	if _, err := conn.Read(make([]byte, 1024)); err != nil {
		return sctpIOError(err)
	}
	return nil
}

func sctpIOError(err error) error {
	if isTimeout(err) {
		return &ConnectError{Reason: ConnectTimeout, bare: true, Err: err}
	}
	return &ConnectError{Reason: ConnectOther, Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
