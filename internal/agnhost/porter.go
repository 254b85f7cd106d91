package agnhost

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Porter environment variable prefixes: the suffix is the port, the value
// is what is served there.
const (
	PorterPortPrefix = "SERVE_PORT_"      // HTTP
	PorterTCPPrefix  = "SERVE_TCP_PORT_"  // HTTP too, despite the name
	PorterUDPPrefix  = "SERVE_UDP_PORT_"  // the value, to any datagram
	PorterTLSPrefix  = "SERVE_TLS_PORT_"  // HTTPS
	PorterSCTPPrefix = "SERVE_SCTP_PORT_" // the value, to each association
)

// PorterConfig configures porter.
type PorterConfig struct {
	// Env is the process environment ("KEY=value"); only the SERVE_*
	// variables matter, plus CERT_FILE and KEY_FILE for the TLS ports.
	Env []string
	// JSONResponse answers HTTP with {"Method":…,"Body":value}
	// (--json-response).
	JSONResponse bool
	// ListenAddress is the IP to bind; empty means every address
	// (upstream binds 0.0.0.0, IPv4 only).
	ListenAddress string
	Logger        *slog.Logger
}

// PorterPort is one variable porter serves.
type PorterPort struct {
	Key      string // the variable name, e.g. SERVE_PORT_9001
	Protocol string // "http", "https", "udp" or "sctp"
	Port     int    // as named; 0 binds a free port (see Porter.Addr)
	Value    string
}

// ParsePorterEnv picks the porter variables out of env, sorted by name.
func ParsePorterEnv(env []string) ([]PorterPort, error) {
	prefixes := []struct{ prefix, proto string }{
		// SERVE_PORT_ first: it is not a prefix of the others.
		{PorterPortPrefix, "http"}, {PorterTCPPrefix, "http"}, {PorterUDPPrefix, "udp"},
		{PorterTLSPrefix, "https"}, {PorterSCTPPrefix, "sctp"},
	}
	var out []PorterPort
	for _, kv := range env {
		key, value, _ := strings.Cut(kv, "=")
		for _, p := range prefixes {
			suffix, ok := strings.CutPrefix(key, p.prefix)
			if !ok {
				continue
			}
			port, err := strconv.Atoi(suffix)
			if err != nil || port < 0 || port > 65535 {
				return nil, fmt.Errorf("agnhost porter: %s: invalid port %q", key, suffix)
			}
			out = append(out, PorterPort{Key: key, Protocol: p.proto, Port: port, Value: value})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Porter is a running porter.
type Porter struct {
	log     *slog.Logger
	addrs   map[string]net.Addr
	closers []func()
	wg      sync.WaitGroup
	once    sync.Once
	closing chan struct{}
}

// StartPorter binds every port named in cfg.Env and serves. Unlike
// upstream, which logs a failed port and serves the others, a port that
// cannot be bound fails the start.
func StartPorter(ctx context.Context, cfg PorterConfig) (_ *Porter, err error) {
	ports, err := ParsePorterEnv(cfg.Env)
	if err != nil {
		return nil, err
	}
	p := &Porter{log: orDefaultLogger(cfg.Logger, "porter"), addrs: map[string]net.Addr{}, closing: make(chan struct{})}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	var cert *tls.Certificate
	for _, pp := range ports {
		addr := listenAddr(cfg.ListenAddress, pp.Port)
		switch pp.Protocol {
		case "http", "https":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("agnhost porter: %s: %w", pp.Key, err)
			}
			p.addrs[pp.Key] = ln.Addr()
			if pp.Protocol == "https" {
				if cert == nil {
					c, err := loadCert(envValue(cfg.Env, "CERT_FILE"), envValue(cfg.Env, "KEY_FILE"))
					if err != nil {
						ln.Close()
						return nil, err
					}
					cert = &c
				}
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
			}
			srv := &http.Server{Handler: porterHandler(pp.Value, cfg.JSONResponse), ReadHeaderTimeout: time.Minute}
			p.closers = append(p.closers, func() { srv.Close() })
			p.goFunc(func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					p.log.Error("server failed", "key", pp.Key, "err", err)
				}
			})
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return nil, fmt.Errorf("agnhost porter: %s: %w", pp.Key, err)
			}
			p.addrs[pp.Key] = pc.LocalAddr()
			p.closers = append(p.closers, func() { pc.Close() })
			p.goFunc(func() { p.serveUDP(pc, pp.Value) })
		case "sctp":
			ln, err := listenSCTP(cfg.ListenAddress, pp.Port)
			if err != nil {
				return nil, fmt.Errorf("agnhost porter: %s: %w", pp.Key, err)
			}
			p.addrs[pp.Key] = ln.Addr()
			p.closers = append(p.closers, func() { ln.Close() })
			p.goFunc(func() { p.serveSCTP(ln, pp.Value) })
		}
		p.log.Info("serving", "key", pp.Key, "addr", p.addrs[pp.Key].String())
	}
	return p, nil
}

// Addr is where the variable key is served, or nil.
func (p *Porter) Addr(key string) net.Addr { return p.addrs[key] }

// Close stops every server and waits for them.
func (p *Porter) Close() error {
	p.once.Do(func() {
		close(p.closing)
		for _, c := range p.closers {
			c()
		}
	})
	p.wg.Wait()
	return nil
}

func (p *Porter) goFunc(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

func (p *Porter) serveUDP(pc net.PacketConn, value string) {
	buf := make([]byte, 16)
	for {
		_, client, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if _, err := pc.WriteTo([]byte(value), client); err != nil {
			p.log.Warn("UDP reply failed", "client", client.String(), "err", err)
		}
	}
}

func (p *Porter) serveSCTP(ln net.Listener, value string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.goFunc(func() {
			defer c.Close()
			_, _ = c.Write([]byte(value))
		})
	}
}

func porterHandler(value string, jsonResponse bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonResponse {
			fmt.Fprint(w, value)
			return
		}
		data, err := json.Marshal(struct{ Method, Body string }{r.Method, value})
		if err != nil {
			http.Error(w, fmt.Sprintf("Internal Server Error: %v", err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(data)
	})
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
