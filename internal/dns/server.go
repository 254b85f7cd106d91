package dns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultZone          = "cluster.local"
	DefaultTTL           = 5
	DefaultCacheSize     = 10000
	DefaultMaxConcurrent = 1000
)

// ErrLoop is returned by Run when the loop probe came back through the
// upstream resolvers more than twice (as CoreDNS's loop plugin halts).
var ErrLoop = errors.New("dns: forwarding loop detected")

// Config configures a Server.
type Config struct {
	Records RecordConfig
	// Listen is the UDP and TCP address, e.g. "10.96.0.10:53" or
	// "127.0.0.1:0". Bind a specific IP: replies leave from the socket's
	// address.
	Listen string
	// Upstreams are "ip:port" resolvers for names outside the cluster zone.
	Upstreams []string
	// StubDomains maps a domain to the resolvers used for names below it.
	StubDomains map[string][]string
	// HealthListen serves /health and /ready; empty disables.
	HealthListen string
	// MetricsListen serves Prometheus /metrics; empty disables.
	MetricsListen string
	// CacheSize bounds the forward cache (entries); 0 means DefaultCacheSize.
	CacheSize int
	// Sockets is the number of SO_REUSEPORT UDP sockets; 0 means GOMAXPROCS.
	Sockets int
	// LoopDetect sends CoreDNS-style loop probes after start.
	LoopDetect bool
	// UpstreamTimeout is the per-try timeout of a forwarded query (default 2s).
	UpstreamTimeout time.Duration
	// OwnProcess says the process runs nothing but this DNS (`svcnet dns`):
	// Run then sets GOGC to 50 unless the GOGC variable is set, and at start
	// and after the first sync drops the binary's pages that only package
	// initialisers touched (see memory.go). The agent leaves it false.
	OwnProcess bool
	Logger     *slog.Logger
}

// Server answers DNS over UDP and TCP from the published record index,
// forwarding other names.
type Server struct {
	cfg      Config
	log      *slog.Logger
	zoneWire []byte
	idx      atomic.Pointer[index]
	ready    atomic.Bool
	cache    *cache
	fwd      *forwarder
	metrics  *metrics
	slowSem  chan struct{}

	// loopName is the current loop probe's name; each probe has its own,
	// so retries after upstream errors are not mistaken for a loop.
	loopName  atomic.Pointer[string]
	loopCount atomic.Int32
	fatal     chan error

	udp      []*net.UDPConn
	tcp      net.Listener
	https    []*http.Server
	wg       sync.WaitGroup
	stopOnce sync.Once
	cancel   context.CancelFunc
	udpAddr  *net.UDPAddr
	tcpAddr  net.Addr
	healthLn net.Addr
	metricLn net.Addr
}

// NewServer validates cfg and returns a Server that is not yet listening.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Records.Zone == "" {
		cfg.Records.Zone = DefaultZone
	}
	switch cfg.Records.Pods {
	case "":
		cfg.Records.Pods = PodsDisabled
	case PodsDisabled, PodsInsecure, PodsVerified:
	default:
		return nil, fmt.Errorf("dns: pods mode %q: want disabled, insecure or verified", cfg.Records.Pods)
	}
	if cfg.Records.TTL > 3600 {
		return nil, fmt.Errorf("dns: ttl %d out of range 0-3600", cfg.Records.TTL)
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Sockets <= 0 {
		cfg.Sockets = runtime.GOMAXPROCS(0)
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	fwd, err := newForwarder(cfg.Upstreams, cfg.StubDomains, cfg.UpstreamTimeout)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "dns"),
		zoneWire: wireName(mdns.CanonicalName(cfg.Records.Zone)),
		cache:    newCache(cfg.CacheSize),
		fwd:      fwd,
		metrics:  newMetrics(),
		slowSem:  make(chan struct{}, DefaultMaxConcurrent),
		fatal:    make(chan error, 1),
	}
	return s, nil
}

// SetSnapshot builds the whole index from snap and publishes it (Watch
// applies changes incrementally instead).
func (s *Server) SetSnapshot(snap Snapshot) {
	start := time.Now()
	s.publish(buildIndex(s.cfg.Records, snap, nowSerial()), time.Since(start))
}

func (s *Server) publish(x *index, took time.Duration) {
	s.idx.Store(x)
	s.metrics.indexNames.Set(float64(len(x.names)))
	s.metrics.buildSeconds.Observe(took.Seconds())
}

// SetReady marks the informers synced: cluster names are answered from the
// index instead of SERVFAIL.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports whether cluster names are being answered.
func (s *Server) Ready() bool { return s.ready.Load() && s.idx.Load() != nil }

// UDPAddr and TCPAddr are the bound addresses (after Start).
func (s *Server) UDPAddr() *net.UDPAddr { return s.udpAddr }

// TCPAddr is the bound TCP address (after Start).
func (s *Server) TCPAddr() net.Addr { return s.tcpAddr }

// HealthAddr is the bound /health, /ready address, or nil.
func (s *Server) HealthAddr() net.Addr { return s.healthLn }

// MetricsAddr is the bound /metrics address, or nil.
func (s *Server) MetricsAddr() net.Addr { return s.metricLn }

// Start binds every listener and starts serving. A failed start closes what
// was opened. Stop undoes it.
func (s *Server) Start(ctx context.Context) (err error) {
	ctx, s.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	// With port 0 the UDP sockets pick a port that TCP may not have free:
	// try again with another.
	for attempt := 0; ; attempt++ {
		err = s.bindDNS(ctx)
		if err == nil {
			break
		}
		_, port, _ := net.SplitHostPort(s.cfg.Listen)
		if port != "0" || attempt >= 20 {
			return err
		}
	}

	if s.cfg.HealthListen != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
		mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
			if !s.Ready() {
				http.Error(w, "informers not synced", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "OK")
		})
		if s.healthLn, err = s.serveHTTP(ctx, s.cfg.HealthListen, mux); err != nil {
			return err
		}
	}
	if s.cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
		if s.metricLn, err = s.serveHTTP(ctx, s.cfg.MetricsListen, mux); err != nil {
			return err
		}
	}

	wildcard := s.udpAddr.IP.IsUnspecified()
	for _, c := range s.udp {
		// Two readers per socket: one can answer while the other reads.
		for r := 0; r < 2; r++ {
			s.wg.Add(1)
			go func(c *net.UDPConn) {
				defer s.wg.Done()
				if wildcard {
					s.serveUDPSession(ctx, c)
				} else {
					s.serveUDP(ctx, c)
				}
			}(c)
		}
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.serveTCP(ctx) }()
	if s.cfg.LoopDetect {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.probeLoop(ctx) }()
	}
	s.log.Info("DNS server listening", "udp", s.udpAddr.String(), "tcp", s.tcpAddr.String(),
		"sockets", len(s.udp), "zone", s.cfg.Records.Zone, "upstreams", s.cfg.Upstreams)
	return nil
}

// bindDNS opens the UDP sockets and the TCP listener on one address; on
// failure it closes what it opened.
func (s *Server) bindDNS(ctx context.Context) (err error) {
	lc := net.ListenConfig{Control: reusePort}
	addr := s.cfg.Listen
	defer func() {
		if err != nil {
			for _, c := range s.udp {
				_ = c.Close()
			}
			s.udp = nil
		}
	}()
	for i := 0; i < s.cfg.Sockets; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		_ = c.SetReadBuffer(4 << 20)
		s.udp = append(s.udp, c)
		if i == 0 {
			s.udpAddr = c.LocalAddr().(*net.UDPAddr)
			addr = s.udpAddr.String() // port 0: the others share the chosen port
		}
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dns: listen tcp %s: %w", addr, err)
	}
	s.tcp, s.tcpAddr = ln, ln.Addr()
	return nil
}

// Stop closes every listener and waits for the serving goroutines.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		for _, c := range s.udp {
			_ = c.Close()
		}
		if s.tcp != nil {
			_ = s.tcp.Close()
		}
		for _, h := range s.https {
			_ = h.Close()
		}
		s.wg.Wait()
	})
}

// Fatal delivers an error that must end the server (a forwarding loop).
func (s *Server) Fatal() <-chan error { return s.fatal }

func (s *Server) serveHTTP(ctx context.Context, addr string, h http.Handler) (net.Addr, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen %s: %w", addr, err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.https = append(s.https, hs)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = hs.Serve(ln) }()
	return ln.Addr(), nil
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// serveUDP is the hot loop: read, answer from the index or the cache
// without allocating, write. Everything else goes to a goroutine.
func (s *Server) serveUDP(ctx context.Context, c *net.UDPConn) {
	buf := make([]byte, 65535)
	out := make([]byte, 65535)
	var q query
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		start := time.Now()
		s.metrics.reqUDP.Inc()
		resp, ok := s.fast(buf[:n], out, &q, false)
		if !ok {
			s.slowAsync(ctx, buf[:n], start, func(b []byte) { _, _ = c.WriteToUDPAddrPort(b, from) })
			continue
		}
		if resp != nil {
			_, _ = c.WriteToUDPAddrPort(resp, from)
		}
		s.metrics.observe(resp, start)
	}
}

// serveUDPSession is serveUDP for a wildcard bind: it answers from the
// address the query was sent to (miekg's session UDP, with control messages).
func (s *Server) serveUDPSession(ctx context.Context, c *net.UDPConn) {
	buf := make([]byte, 65535)
	out := make([]byte, 65535)
	var q query
	for {
		n, sess, err := mdns.ReadFromSessionUDP(c, buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		start := time.Now()
		s.metrics.reqUDP.Inc()
		resp, ok := s.fast(buf[:n], out, &q, false)
		if !ok {
			s.slowAsync(ctx, buf[:n], start, func(b []byte) { _, _ = mdns.WriteToSessionUDP(c, b, sess) })
			continue
		}
		if resp != nil {
			_, _ = mdns.WriteToSessionUDP(c, resp, sess)
		}
		s.metrics.observe(resp, start)
	}
}

// slowAsync answers req on a goroutine (forwarding may wait on upstreams);
// above DefaultMaxConcurrent it answers REFUSED at once, as CoreDNS's
// forward max_concurrent does.
func (s *Server) slowAsync(ctx context.Context, req []byte, start time.Time, write func([]byte)) {
	select {
	case s.slowSem <- struct{}{}:
	default:
		if r := refused(req); r != nil {
			write(r)
			s.metrics.observe(r, start)
		}
		return
	}
	cp := append([]byte(nil), req...)
	go func() {
		defer func() { <-s.slowSem }()
		resp := s.slow(ctx, cp, false)
		if resp != nil {
			write(resp)
		}
		s.metrics.observe(resp, start)
	}()
}

func refused(req []byte) []byte {
	m := new(mdns.Msg)
	if err := m.Unpack(req); err != nil || m.Response {
		return nil
	}
	r := new(mdns.Msg)
	r.SetRcode(m, mdns.RcodeRefused)
	b, _ := r.Pack()
	return b
}

func (s *Server) serveTCP(ctx context.Context) {
	for {
		conn, err := s.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveTCPConn(ctx, conn)
		}()
	}
}

// serveTCPConn answers length-prefixed queries in order until the client
// closes or is idle for 10 s.
func (s *Server) serveTCPConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	var q query
	out := make([]byte, 2+65535)
	var lenb [2]byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, lenb[:]); err != nil {
			return
		}
		n := int(lenb[0])<<8 | int(lenb[1])
		req := make([]byte, n)
		if _, err := io.ReadFull(conn, req); err != nil {
			return
		}
		start := time.Now()
		s.metrics.reqTCP.Inc()
		resp, ok := s.fast(req, out[2:], &q, true)
		if !ok {
			resp = s.slow(ctx, req, true)
		}
		s.metrics.observe(resp, start)
		if resp == nil {
			return // unparseable: close, as miekg does
		}
		frame := make([]byte, 2+len(resp))
		frame[0], frame[1] = byte(len(resp)>>8), byte(len(resp))
		copy(frame[2:], resp)
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(frame); err != nil {
			return
		}
	}
}

// fast answers from the index or the forward cache without allocating.
// ok=false hands the request to the slow path.
func (s *Server) fast(req, out []byte, q *query, tcp bool) (resp []byte, ok bool) {
	if !q.parse(req) {
		return nil, false
	}
	key := q.keyBytes()
	x := s.idx.Load()
	nl, inZone := q.inZone(s.zoneWire)
	if inZone && (x == nil || !s.ready.Load()) {
		return writeRcode(out, req, q, mdns.RcodeServerFailure), true
	}
	if x != nil {
		if e := x.lookup(key); e != nil {
			if e.external() != "" {
				return nil, false
			}
			r := writeAnswer(out, req, q, x.forType(e, q.qtype), tcp)
			return r, r != nil
		}
		if inZone {
			if x.cfg.Pods == PodsInsecure && nl == 3 && string(q.label(2)) == "pod" {
				return nil, false
			}
			r := writeAnswer(out, req, q, x.nxdomain, tcp)
			return r, r != nil
		}
	}
	if r := s.cache.writeHit(out, req, q, tcp); r != nil {
		s.metrics.cacheHits.Inc()
		return r, true
	}
	return nil, false
}

// slow answers anything with a full unpack: forwarding, ExternalName
// chasing, insecure pod names, truncation, malformed requests.
func (s *Server) slow(ctx context.Context, req []byte, tcp bool) []byte {
	if len(req) < 12 || req[2]&0x80 != 0 {
		return nil // too short for a header, or a response: drop
	}
	m := new(mdns.Msg)
	if err := m.Unpack(req); err != nil {
		return formErr(req)
	}
	reply := new(mdns.Msg)
	reply.SetReply(m)
	reply.RecursionAvailable = true
	if m.Opcode != mdns.OpcodeQuery {
		reply.SetRcode(m, mdns.RcodeNotImplemented)
		return pack(reply)
	}
	if len(m.Question) != 1 {
		return formErr(req)
	}
	opt := m.IsEdns0()
	do := opt != nil && opt.Do()
	if opt != nil && opt.Version() != 0 {
		reply.SetRcode(m, mdns.RcodeBadVers)
		reply.SetEdns0(ourUDPSize, do)
		return pack(reply)
	}
	qq := m.Question[0]
	if qq.Qclass != mdns.ClassINET || qq.Qtype == mdns.TypeAXFR || qq.Qtype == mdns.TypeIXFR {
		reply.Rcode = mdns.RcodeRefused
	} else {
		if ln := s.loopName.Load(); ln != nil && qq.Qtype == mdns.TypeHINFO && strings.EqualFold(qq.Name, *ln) {
			if s.loopCount.Add(1) > 2 {
				err := fmt.Errorf("%w: probe %s HINFO came back %d times; check the upstreams (%v)", ErrLoop, *ln, s.loopCount.Load(), s.cfg.Upstreams)
				s.log.Error("loop detected", "err", err)
				select {
				case s.fatal <- err:
				default:
				}
			}
		}
		res := s.resolve(ctx, qq.Name, qq.Qtype, do, 0)
		reply.Rcode = res.Rcode
		reply.Authoritative = res.Authoritative
		reply.Truncated = res.Truncated
		reply.Answer, reply.Ns, reply.Extra = res.Answer, res.Ns, res.Extra
	}
	size := 65535
	if !tcp {
		size = 512
		if opt != nil && opt.UDPSize() > 512 {
			size = int(opt.UDPSize())
		}
	}
	if opt != nil {
		reply.SetEdns0(ourUDPSize, do)
	}
	truncated := reply.Truncated
	reply.Truncate(size)
	reply.Truncated = reply.Truncated || truncated
	return pack(reply)
}

func pack(m *mdns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// formErr answers a request that does not unpack: its id and opcode, no
// sections, FORMERR.
func formErr(req []byte) []byte {
	out := make([]byte, 12)
	copy(out, req[:2])
	out[2] = 0x80 | req[2]&0x78 // QR + opcode
	out[3] = mdns.RcodeFormatError
	return out
}

// resolve answers (name, qtype) as a message with sections and rcode.
func (s *Server) resolve(ctx context.Context, name string, qtype uint16, do bool, depth int) *mdns.Msg {
	res := new(mdns.Msg)
	lname := strings.ToLower(mdns.Fqdn(name))
	key := wireName(lname)
	zone := mdns.CanonicalName(s.cfg.Records.Zone)
	inZone := mdns.IsSubDomain(zone, lname)
	x := s.idx.Load()
	if inZone && (x == nil || !s.ready.Load()) {
		res.Rcode = mdns.RcodeServerFailure
		return res
	}
	if x != nil {
		if e := x.lookup(key); e != nil {
			res.Authoritative = true
			if ext := e.external(); ext != "" {
				return s.resolveExternal(ctx, res, x, name, ext, qtype, do, depth)
			}
			fillFrom(res, x.forType(e, qtype), name, lname)
			return res
		}
		if inZone {
			res.Authoritative = true
			if x.cfg.Pods == PodsInsecure {
				if ip, ok := insecurePodIP(lname, zone); ok {
					switch {
					case qtype == mdns.TypeA && ip.Is4():
						res.Answer = []mdns.RR{&mdns.A{Hdr: hdr(name, mdns.TypeA, x.cfg.TTL), A: ip.AsSlice()}}
					case qtype == mdns.TypeAAAA && ip.Is6():
						res.Answer = []mdns.RR{&mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA, x.cfg.TTL), AAAA: ip.AsSlice()}}
					default:
						fillFrom(res, x.nodata, name, lname)
					}
					return res
				}
			}
			fillFrom(res, x.nxdomain, name, lname)
			return res
		}
	}
	return s.forward(ctx, lname, qtype, do)
}

// resolveExternal answers an ExternalName Service: the CNAME, then the
// target resolved (cluster index, cache or upstream) with TC passed on.
func (s *Server) resolveExternal(ctx context.Context, res *mdns.Msg, x *index, name, target string, qtype uint16, do bool, depth int) *mdns.Msg {
	if qtype == mdns.TypeSRV {
		fillFrom(res, x.nodata, name, "")
		return res
	}
	res.Answer = []mdns.RR{&mdns.CNAME{Hdr: hdr(name, mdns.TypeCNAME, x.cfg.TTL), Target: target}}
	if qtype == mdns.TypeCNAME || depth >= 8 {
		return res
	}
	sub := s.resolve(ctx, target, qtype, do, depth+1)
	res.Answer = append(res.Answer, sub.Answer...)
	res.Truncated = sub.Truncated
	return res
}

// fillFrom unpacks a precomputed answer into res: the wire sections behind
// a header and a question spelled as the client spelled it, so RRs owned by
// the query name come back with that spelling.
func fillFrom(res *mdns.Msg, a *answer, name, _ string) {
	res.Rcode = int(a.rcode)
	buf := make([]byte, 12, 12+len(name)+6+len(a.wire))
	buf[5] = 1 // QDCOUNT
	buf[6], buf[7] = byte(a.an>>8), byte(a.an)
	buf[8], buf[9] = byte(a.ns>>8), byte(a.ns)
	buf[10], buf[11] = byte(a.ex>>8), byte(a.ex)
	qn := make([]byte, 256)
	n, err := mdns.PackDomainName(mdns.Fqdn(name), qn, 0, nil, false)
	if err != nil {
		res.Rcode = mdns.RcodeServerFailure
		return
	}
	buf = append(buf, qn[:n]...)
	buf = append(buf, 0, 1, 0, 1)
	buf = append(buf, a.wire...)
	m := new(mdns.Msg)
	if err := m.Unpack(buf); err != nil {
		res.Rcode = mdns.RcodeServerFailure
		return
	}
	res.Answer, res.Ns, res.Extra = m.Answer, m.Ns, m.Extra
}

// insecurePodIP parses a-b-c-d.<ns>.pod.<zone> (IPv6: every ":" as "-").
func insecurePodIP(lname, zone string) (netip.Addr, bool) {
	rest := strings.TrimSuffix(lname, ".pod."+zone)
	if rest == lname {
		return netip.Addr{}, false
	}
	labels := strings.Split(rest, ".")
	if len(labels) != 2 {
		return netip.Addr{}, false
	}
	d := labels[0]
	if ip, err := netip.ParseAddr(strings.ReplaceAll(d, "-", ".")); err == nil && ip.Is4() {
		return ip, true
	}
	ip, err := netip.ParseAddr(strings.ReplaceAll(d, "-", ":"))
	if err != nil || !ip.Is6() {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}
