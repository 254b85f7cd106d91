// Package kubeletserver is the node agent's streaming endpoint: the part of
// the kubelet's HTTPS server (port 10250) that the API server proxies
// pods/log and pods/exec to.
//
// # Endpoints
//
//	GET      /healthz                                   "ok", no client certificate needed
//	GET      /containerLogs/{ns}/{pod}/{container}      ?follow&previous&timestamps&tailLines&limitBytes&sinceSeconds&sinceTime
//	GET|POST /exec/{ns}/{pod}/{container}               ?command=..&input=1&output=1&error=1&tty=1
//	GET|POST /exec/{ns}/{pod}/{uid}/{container}
//
// The paths, query parameters and error codes are the kubelet's, so the API
// server builds its URLs the way kube-apiserver's LogLocation and
// ExecLocation do. Errors before a stream starts are plain-text bodies with
// the kubelet's status codes (404 unknown pod, 400 bad request, 422 invalid
// log options); the API server turns them into Status objects.
//
// # Exec protocols
//
// SPDY (v1 to v4.channel.k8s.io) and the legacy WebSocket subprotocols are
// served by cri-streaming's remotecommand.ServeExec, the same code the
// container runtimes' streaming servers use. WebSocket v5.channel.k8s.io,
// which kubectl tries first, adds a CLOSE signal for stdin and is not in
// ServeExec; serveExecV5 (exec.go) serves it on apimachinery-compatible
// wsstream channels, so that the API server can proxy every exec request
// unchanged instead of translating WebSocket to SPDY as kube-apiserver
// does for kubelets without WebSocket support.
//
// # Security
//
// Every endpoint except /healthz requires a TLS client certificate that
// verifies against Config.ClientCAs (the cluster CA, which signs the API
// server's apiserver-kubelet-client certificate): without one the answer is
// 401. Authorization beyond that is the API server's (pods/log get,
// pods/exec create). The serving certificate is self-signed, kept in
// Config.CertDir and reused across restarts, like the kubelet's when it has
// no --tls-cert-file; the API server does not verify it (kube-apiserver
// without --kubelet-certificate-authority).
package kubeletserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// Provider runs the node's side of logs and exec: the pod runtime.
type Provider interface {
	// PodUID returns the UID of the pod namespace/name running on this node.
	PodUID(namespace, name string) (uid string, ok bool)
	// Logs writes the container's log to w as opts asks (follow blocks
	// until ctx ends or the container's log ends). An error wrapping
	// ErrNotFound is answered 404.
	Logs(ctx context.Context, uid, container string, opts *corev1.PodLogOptions, w io.Writer) error
	// Exec runs cmd in the container's namespaces, wiring the given streams
	// (nil when not requested; stderr is nil with a tty). A non-zero exit is
	// an error implementing k8s.io/utils/exec.ExitError.
	Exec(ctx context.Context, uid, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan remotecommand.TerminalSize) error
}

// ErrNotFound may be wrapped by a Provider's error to mean "no such
// container" (answered 404, as the kubelet does).
var ErrNotFound = errors.New("not found")

// Config configures a Server.
type Config struct {
	// Addr is the listen address (":10250"; port 0 picks a free port).
	Addr string
	// ClientCAs verify callers' client certificates (the cluster CA).
	ClientCAs *x509.CertPool
	// CertDir keeps the self-signed serving certificate (kubelet.crt,
	// kubelet.key), reused on restart.
	CertDir string
	// NodeName and NodeIPs are the serving certificate's SANs.
	NodeName string
	NodeIPs  []netip.Addr
	Provider Provider
	Log      *slog.Logger
}

const (
	// streamIdleTimeout is the kubelet's default
	// --streaming-connection-idle-timeout.
	streamIdleTimeout = 4 * time.Hour
	// shutdownTimeout bounds the drain of plain requests at shutdown.
	shutdownTimeout = 5 * time.Second
)

// Server is the agent's kubelet-style HTTPS server.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener
	srv *http.Server

	mu      sync.Mutex // guards the field below
	running bool       // Run was called
}

// New checks cfg, loads or creates the serving certificate and binds
// cfg.Addr; Run serves.
func New(cfg Config) (*Server, error) {
	if cfg.Provider == nil {
		return nil, errors.New("kubeletserver: Config.Provider is required")
	}
	if cfg.ClientCAs == nil {
		return nil, errors.New("kubeletserver: Config.ClientCAs is required")
	}
	if cfg.CertDir == "" {
		return nil, errors.New("kubeletserver: Config.CertDir is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":10250"
	}
	logger := cfg.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cert, err := ensureServingCert(cfg.CertDir, cfg.NodeName, cfg.NodeIPs, time.Now())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("kubeletserver: listen: %w", err)
	}
	s := &Server{cfg: cfg, log: logger.With("component", "kubeletserver"), ln: ln}
	s.srv = &http.Server{
		Handler: s.routes(),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			// /healthz needs no certificate; every other handler checks
			// for a verified chain (requireClientCert).
			ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs:  cfg.ClientCAs,
			// SPDY upgrades need HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Close releases the listener of a Server whose Run was never called (a
// failed start of the agent); a running Server stops when Run's ctx ends.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	return s.ln.Close()
}

// Addr returns the bound address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then closes the listener, cancels running
// streams (their requests' contexts) and waits briefly for plain requests.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("kubeletserver: Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	// Requests (also hijacked exec streams, which Shutdown does not track)
	// get contexts cancelled at shutdown, so Provider calls return.
	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()
	s.srv.BaseContext = func(net.Listener) context.Context { return reqCtx }

	errc := make(chan error, 1)
	go func() { errc <- s.srv.ServeTLS(s.ln, "", "") }()
	s.log.Info("serving", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("kubeletserver: serve: %w", err)
	case <-ctx.Done():
	}
	cancelReqs()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubeletserver: serve: %w", err)
	}
	return nil
}

// routes builds the handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	mux.Handle("GET /containerLogs/{ns}/{pod}/{container}", s.requireClientCert(http.HandlerFunc(s.serveLogs)))
	exec := s.requireClientCert(http.HandlerFunc(s.serveExec))
	for _, m := range []string{"GET", "POST"} {
		mux.Handle(m+" /exec/{ns}/{pod}/{container}", exec)
		mux.Handle(m+" /exec/{ns}/{pod}/{uid}/{container}", exec)
	}
	return mux
}

// requireClientCert answers 401 unless the TLS handshake verified a client
// certificate against Config.ClientCAs.
func (s *Server) requireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			s.log.Debug("rejected request without client certificate", "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
