package agnhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// ServeHostnameConfig configures serve-hostname. Start from
// DefaultServeHostnameConfig.
type ServeHostnameConfig struct {
	Port  int  // --port (9376); 0 picks a free port
	HTTP  bool // --http (true): answer any HTTP request with the hostname
	TCP   bool // --tcp: write the hostname to each connection and close it
	UDP   bool // --udp: answer each datagram with the hostname
	Close bool // --close: send "Connection: close" on HTTP answers
	// ListenAddress is the IP to bind; empty means every address.
	ListenAddress string
	// Hostname is what is served; empty means os.Hostname() at start.
	Hostname string
	// TerminationGrace is how long RunServeHostname keeps serving after
	// SIGTERM (upstream: 60s, "awaiting pod deletion").
	TerminationGrace time.Duration
	Logger           *slog.Logger
}

// DefaultServeHostnameConfig returns upstream serve-hostname's defaults.
func DefaultServeHostnameConfig() ServeHostnameConfig {
	return ServeHostnameConfig{Port: 9376, HTTP: true, TerminationGrace: 60 * time.Second}
}

// ServeHostname is a running serve-hostname.
type ServeHostname struct {
	cfg     ServeHostnameConfig
	log     *slog.Logger
	tcpLn   net.Listener // HTTP or raw TCP
	srv     *http.Server
	udp     net.PacketConn
	wg      sync.WaitGroup
	closing chan struct{}
	once    sync.Once
}

// StartServeHostname binds and starts serving. HTTP and TCP/UDP are
// exclusive, as upstream refuses to serve both.
func StartServeHostname(ctx context.Context, cfg ServeHostnameConfig) (_ *ServeHostname, err error) {
	if cfg.HTTP && (cfg.TCP || cfg.UDP) {
		return nil, errors.New("agnhost serve-hostname: can't serve TCP/UDP mode and HTTP mode at the same time")
	}
	if cfg.Hostname == "" {
		if cfg.Hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("agnhost serve-hostname: %w", err)
		}
	}
	s := &ServeHostname{cfg: cfg, log: orDefaultLogger(cfg.Logger, "serve-hostname"), closing: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	addr := listenAddr(cfg.ListenAddress, cfg.Port)
	if cfg.TCP || cfg.HTTP {
		if s.tcpLn, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("agnhost serve-hostname: %w", err)
		}
	}
	if cfg.UDP {
		port := cfg.Port
		if port == 0 && s.tcpLn != nil {
			port = s.tcpLn.Addr().(*net.TCPAddr).Port // same port for both, as upstream
		}
		if s.udp, err = net.ListenPacket("udp", listenAddr(cfg.ListenAddress, port)); err != nil {
			return nil, fmt.Errorf("agnhost serve-hostname: %w", err)
		}
	}
	host := []byte(cfg.Hostname)
	switch {
	case cfg.HTTP:
		s.srv = &http.Server{
			ReadHeaderTimeout: time.Minute,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.log.Info("HTTP request", "client", r.RemoteAddr)
				if cfg.Close {
					w.Header().Add("Connection", "close")
				}
				w.Write(host)
			}),
		}
		s.goFunc(func() {
			if err := s.srv.Serve(s.tcpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("HTTP server failed", "err", err)
			}
		})
	case cfg.TCP:
		s.goFunc(func() {
			for {
				c, err := s.tcpLn.Accept()
				if err != nil {
					if !s.isClosing() {
						s.log.Error("accept failed", "err", err)
					}
					return
				}
				s.log.Info("TCP request", "client", c.RemoteAddr().String())
				c.Write(host)
				c.Close()
			}
		})
	}
	if s.udp != nil {
		s.goFunc(func() {
			var buf [16]byte
			for {
				_, client, err := s.udp.ReadFrom(buf[:])
				if err != nil {
					if !s.isClosing() {
						s.log.Error("UDP read failed", "err", err)
					}
					return
				}
				s.log.Info("UDP request", "client", client.String())
				s.udp.WriteTo(host, client)
			}
		})
	}
	s.log.Info("serving", "port", cfg.Port)
	return s, nil
}

// TCPAddr is the HTTP or raw TCP address, or nil.
func (s *ServeHostname) TCPAddr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// UDPAddr is the UDP address, or nil.
func (s *ServeHostname) UDPAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// Close stops serving and waits for the serving goroutines.
func (s *ServeHostname) Close() error {
	s.once.Do(func() {
		close(s.closing)
		if s.srv != nil {
			s.srv.Close()
		} else if s.tcpLn != nil {
			s.tcpLn.Close()
		}
		if s.udp != nil {
			s.udp.Close()
		}
	})
	s.wg.Wait()
	return nil
}

func (s *ServeHostname) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

func (s *ServeHostname) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// RunServeHostname is the serve-hostname command: serve until terminate
// yields (SIGTERM), keep serving TerminationGrace longer, then stop. It
// also stops when ctx ends.
func RunServeHostname(ctx context.Context, cfg ServeHostnameConfig, terminate <-chan os.Signal) error {
	s, err := StartServeHostname(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	select {
	case sig := <-terminate:
		s.log.Info("shutting down after receiving signal; awaiting pod deletion", "signal", sig.String(), "grace", cfg.TerminationGrace)
		sleepCtx(ctx, cfg.TerminationGrace)
	case <-ctx.Done():
	}
	return nil
}
