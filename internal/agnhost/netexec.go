package agnhost

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// NetexecConfig configures netexec. The zero value is not upstream's
// default: start from DefaultNetexecConfig.
type NetexecConfig struct {
	// HTTPPort is the HTTP(S) port (--http-port, 8080); 0 picks a free one.
	HTTPPort int
	// UDPPort is the UDP command port (--udp-port, 8081); -1 disables the
	// UDP server, 0 picks a free port.
	UDPPort int
	// SCTPPort is the SCTP command port (--sctp-port); -1 (the default)
	// disables it. Opening it loads the kernel's sctp module.
	SCTPPort int
	// ListenAddress is the IP the HTTP and SCTP servers bind; empty means
	// every address, like upstream. (No upstream flag: tests use loopback.)
	ListenAddress string
	// UDPListenAddresses are the IPs the UDP server binds, one socket each
	// (--udp-listen-addresses); empty means ListenAddress.
	UDPListenAddresses []string
	// DelayShutdown is how long the process lives after SIGTERM
	// (--delay-shutdown, whole seconds upstream). Meanwhile /readyz is 503.
	DelayShutdown time.Duration
	// HTTPOverride, when set, is the path and query every HTTP request is
	// served as (a GET), whatever its URL (--http-override).
	HTTPOverride string
	// TLSCertFile and TLSKeyFile turn HTTP into HTTPS (--tls-cert-file,
	// --tls-private-key-file). An empty key file means the key is in the
	// certificate file.
	TLSCertFile, TLSKeyFile string
	// Shell runs /shell commands as `Shell -c cmd` (/bin/sh).
	Shell string
	// UploadDir is where /upload writes files (/uploads).
	UploadDir string
	// Logger gets one line per request, like upstream's log output.
	Logger *slog.Logger
}

// DefaultNetexecConfig returns upstream netexec's defaults.
func DefaultNetexecConfig() NetexecConfig {
	return NetexecConfig{HTTPPort: 8080, UDPPort: 8081, SCTPPort: -1, Shell: "/bin/sh", UploadDir: "/uploads"}
}

// Netexec is a running netexec server. Start it with StartNetexec, stop it
// by cancelling the context given there, by Terminate (SIGTERM), or through
// its /exit and /shutdown endpoints; Wait returns the exit code.
type Netexec struct {
	cfg      NetexecConfig
	log      *slog.Logger
	ctx      context.Context // cancelled when the server stops; parents requests
	cancel   context.CancelFunc
	srv      *http.Server
	httpLn   net.Listener
	httpPort int
	udp      []*net.UDPConn
	sctpLn   net.Listener
	wg       sync.WaitGroup

	// ready is upstream's serverReady: a UDP or SCTP server is running.
	ready atomic.Bool

	termOnce    sync.Once
	terminating chan struct{} // closed by Terminate
	exit        chan exitRequest
	fatal       chan error
	waitOnce    sync.Once
	code        int
	err         error
}

// exitRequest asks Wait to return code, after letting open HTTP
// connections finish for up to grace (0: close them at once).
type exitRequest struct {
	code  int
	grace time.Duration
}

// StartNetexec binds netexec's sockets and starts serving. When it returns
// without error, the HTTP, UDP and SCTP addresses accept traffic.
func StartNetexec(ctx context.Context, cfg NetexecConfig) (_ *Netexec, err error) {
	if cfg.Shell == "" {
		cfg.Shell = "/bin/sh"
	}
	if cfg.UploadDir == "" {
		cfg.UploadDir = "/uploads"
	}
	n := &Netexec{
		cfg:         cfg,
		log:         orDefaultLogger(cfg.Logger, "netexec"),
		terminating: make(chan struct{}),
		exit:        make(chan exitRequest, 1),
		fatal:       make(chan error, 1),
	}
	n.ctx, n.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			n.closeSockets()
			n.cancel()
		}
	}()

	n.httpLn, err = net.Listen("tcp", listenAddr(cfg.ListenAddress, cfg.HTTPPort))
	if err != nil {
		return nil, fmt.Errorf("agnhost netexec: http: %w", err)
	}
	n.httpPort = n.httpLn.Addr().(*net.TCPAddr).Port
	if cfg.TLSCertFile != "" {
		cert, err := loadCert(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("agnhost netexec: %w", err)
		}
		n.httpLn = tls.NewListener(n.httpLn, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	if cfg.UDPPort != -1 {
		addrs := cfg.UDPListenAddresses
		if len(addrs) == 0 {
			addrs = []string{cfg.ListenAddress}
		}
		for _, a := range dedupe(addrs) {
			if a != "" && net.ParseIP(a) == nil {
				return nil, fmt.Errorf("agnhost netexec: invalid UDP listen address %q", a)
			}
			ua, err := net.ResolveUDPAddr("udp", listenAddr(a, cfg.UDPPort))
			if err != nil {
				return nil, fmt.Errorf("agnhost netexec: udp: %w", err)
			}
			c, err := net.ListenUDP("udp", ua)
			if err != nil {
				return nil, fmt.Errorf("agnhost netexec: udp: %w", err)
			}
			n.udp = append(n.udp, c)
		}
	}
	if cfg.SCTPPort != -1 {
		n.sctpLn, err = listenSCTP(cfg.ListenAddress, cfg.SCTPPort)
		if err != nil {
			return nil, fmt.Errorf("agnhost netexec: %w", err)
		}
	}

	n.srv = &http.Server{
		Handler:           n.handler(),
		BaseContext:       func(net.Listener) context.Context { return n.ctx },
		ReadHeaderTimeout: time.Minute,
	}
	n.goFunc(func() {
		if err := n.srv.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.fail(fmt.Errorf("agnhost netexec: http: %w", err))
		}
	})
	for _, c := range n.udp {
		n.goFunc(func() { n.serveUDP(c) })
	}
	if n.sctpLn != nil {
		n.goFunc(n.serveSCTP)
	}
	if len(n.udp) > 0 || n.sctpLn != nil {
		n.ready.Store(true)
	}
	n.log.Info("started", "http", n.httpLn.Addr().String(), "udp", n.UDPAddrs(), "sctp", n.SCTPAddr())
	return n, nil
}

// HTTPAddr is the bound HTTP(S) address.
func (n *Netexec) HTTPAddr() net.Addr { return n.httpLn.Addr() }

// UDPAddrs are the bound UDP addresses (none when UDP is off).
func (n *Netexec) UDPAddrs() []net.Addr {
	var out []net.Addr
	for _, c := range n.udp {
		out = append(out, c.LocalAddr())
	}
	return out
}

// SCTPAddr is the bound SCTP address, or nil.
func (n *Netexec) SCTPAddr() net.Addr {
	if n.sctpLn == nil {
		return nil
	}
	return n.sctpLn.Addr()
}

// Terminate is what SIGTERM does: /readyz turns to 503 "shutting down"
// (/healthz stays 200) and, after DelayShutdown, Wait returns 0. Everything
// keeps serving meanwhile. Later calls do nothing.
func (n *Netexec) Terminate() {
	n.termOnce.Do(func() {
		close(n.terminating)
		n.log.Info("SIGTERM received", "delay", n.cfg.DelayShutdown)
		n.goFunc(func() {
			if sleepCtx(n.ctx, n.cfg.DelayShutdown) {
				n.requestExit(exitRequest{code: 0})
			}
		})
	})
}

// Wait blocks until the server is asked to exit, stops it, and returns the
// process exit code: 0 after Terminate or /shutdown, /exit's code, 0 when
// StartNetexec's context is cancelled, and 1 with the error when a server
// failed. Every socket is closed when it returns.
func (n *Netexec) Wait() (int, error) {
	n.waitOnce.Do(func() {
		var req exitRequest
		select {
		case req = <-n.exit:
		case n.err = <-n.fatal:
			req.code = 1
		case <-n.ctx.Done():
		}
		n.code = req.code
		if req.grace > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), req.grace)
			err := n.srv.Shutdown(ctx)
			cancel()
			n.log.Info("graceful shutdown completed", "err", err)
		}
		n.cancel()
		n.closeSockets()
		n.wg.Wait()
	})
	return n.code, n.err
}

func (n *Netexec) requestExit(r exitRequest) {
	select {
	case n.exit <- r:
	default: // an exit is already pending; the first one wins
	}
}

func (n *Netexec) fail(err error) {
	select {
	case n.fatal <- err:
	default:
	}
}

func (n *Netexec) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Netexec) closeSockets() {
	if n.srv != nil {
		_ = n.srv.Close()
	} else if n.httpLn != nil {
		_ = n.httpLn.Close()
	}
	for _, c := range n.udp {
		_ = c.Close()
	}
	if n.sctpLn != nil {
		_ = n.sctpLn.Close()
	}
}

// serveUDP answers the command protocol on one UDP socket until it closes.
func (n *Netexec) serveUDP(c *net.UDPConn) {
	port := c.LocalAddr().(*net.UDPAddr).Port
	buf := make([]byte, 2048)
	for {
		size, client, err := c.ReadFromUDP(buf)
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.ready.Store(false)
			n.fail(fmt.Errorf("agnhost netexec: udp read: %w", err))
			return
		}
		reply, ok := commandReply(string(buf[:size]), client.String(), port)
		if !ok {
			if strings.TrimSpace(string(buf[:size])) != "" {
				n.log.Info("unknown UDP command", "client", client.String(), "command", string(buf[:size]))
			}
			continue
		}
		n.log.Info("UDP request", "client", client.String(), "command", strings.TrimSpace(string(buf[:size])))
		if _, err := c.WriteToUDP([]byte(reply), client); err != nil {
			n.log.Warn("UDP reply failed", "client", client.String(), "err", err)
		}
	}
}

// serveSCTP answers one command per SCTP association, then closes it.
func (n *Netexec) serveSCTP() {
	port := n.cfg.SCTPPort
	if a, ok := n.sctpLn.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	for {
		conn, err := n.sctpLn.Accept()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.ready.Store(false)
			n.fail(fmt.Errorf("agnhost netexec: sctp accept: %w", err))
			return
		}
		n.goFunc(func() {
			defer conn.Close()
			// Bound the read so that Wait never waits on a silent peer.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 1024)
			size, err := conn.Read(buf)
			if err != nil {
				return
			}
			client := conn.RemoteAddr().String()
			if reply, ok := commandReply(string(buf[:size]), client, port); ok {
				n.log.Info("SCTP request", "client", client, "command", strings.TrimSpace(string(buf[:size])))
				_, _ = conn.Write([]byte(reply))
			}
		})
	}
}

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
