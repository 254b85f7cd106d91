package dns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// forwarder sends names outside the cluster zone to upstream resolvers:
// the longest matching stub domain's, else the default ones. Each try is
// UDP, retried over TCP when the answer is truncated (CoreDNS's forward
// did not, coredns#4183); a failing upstream makes it try the next one.
type forwarder struct {
	def     []string
	stubs   []stub // longest domain first
	timeout time.Duration
	next    atomic.Uint32
}

type stub struct {
	domain    string // canonical FQDN
	upstreams []string
}

func newForwarder(def []string, stubs map[string][]string, timeout time.Duration) (*forwarder, error) {
	f := &forwarder{timeout: timeout}
	var err error
	if f.def, err = normalizeUpstreams(def); err != nil {
		return nil, err
	}
	for d, ups := range stubs {
		n, err := normalizeUpstreams(ups)
		if err != nil {
			return nil, fmt.Errorf("dns: stub domain %s: %w", d, err)
		}
		f.stubs = append(f.stubs, stub{domain: mdns.CanonicalName(d), upstreams: n})
	}
	sort.Slice(f.stubs, func(i, j int) bool { return len(f.stubs[i].domain) > len(f.stubs[j].domain) })
	return f, nil
}

// normalizeUpstreams turns "ip" or "ip:port" into "ip:port".
func normalizeUpstreams(in []string) ([]string, error) {
	var out []string
	for _, u := range in {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if ap, err := netip.ParseAddrPort(u); err == nil {
			out = append(out, ap.String())
			continue
		}
		ip, err := netip.ParseAddr(strings.Trim(u, "[]"))
		if err != nil {
			return nil, fmt.Errorf("dns: upstream %q: want ip or ip:port", u)
		}
		out = append(out, netip.AddrPortFrom(ip, 53).String())
	}
	return out, nil
}

func (f *forwarder) upstreamsFor(name string) []string {
	for _, s := range f.stubs {
		if mdns.IsSubDomain(s.domain, name) {
			return s.upstreams
		}
	}
	return f.def
}

var errNoUpstream = errors.New("dns: no upstream resolver answered")

func (f *forwarder) exchange(ctx context.Context, name string, qtype uint16, do bool) (*mdns.Msg, error) {
	ups := f.upstreamsFor(name)
	if len(ups) == 0 {
		return nil, fmt.Errorf("%w: none configured for %s", errNoUpstream, name)
	}
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ourUDPSize, do)
	start := int(f.next.Add(1))
	var lastErr error
	for i := range ups {
		addr := ups[(start+i)%len(ups)]
		c := &mdns.Client{Net: "udp", Timeout: f.timeout, UDPSize: ourUDPSize}
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && r.Truncated {
			c.Net = "tcp"
			r, _, err = c.ExchangeContext(ctx, m, addr)
		}
		if err != nil {
			lastErr = err
			continue
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w: %s: %w", errNoUpstream, name, lastErr)
}

// forward answers a name outside the cluster zone from the cache or the
// upstreams; SERVFAIL when none answers.
func (s *Server) forward(ctx context.Context, lname string, qtype uint16, do bool) *mdns.Msg {
	key := wireName(lname)
	if m := s.cache.getMsg(key, qtype, do); m != nil {
		s.metrics.cacheHits.Inc()
		return m
	}
	s.metrics.cacheMisses.Inc()
	s.metrics.forwards.Inc()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := s.fwd.exchange(ctx, lname, qtype, do)
	if err != nil {
		s.log.Debug("forward failed", "name", lname, "err", err)
		res := new(mdns.Msg)
		res.Rcode = mdns.RcodeServerFailure
		return res
	}
	if qtype != mdns.TypeHINFO {
		s.cache.put(key, qtype, do, r)
	}
	res := new(mdns.Msg)
	res.Rcode = r.Rcode
	res.Truncated = r.Truncated
	res.Answer, res.Ns = r.Answer, r.Ns
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			res.Extra = append(res.Extra, rr)
		}
	}
	return res
}

// probeLoop is CoreDNS's loop plugin: query ourselves for a random HINFO
// name that only a loop brings back; stop after the first clean answer.
func (s *Server) probeLoop(ctx context.Context) {
	if len(s.fwd.def) == 0 {
		return
	}
	addr := s.udpAddr.String()
	if s.udpAddr.IP.IsUnspecified() {
		addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(s.udpAddr.Port))
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("%d.%d.", randUint32(), randUint32())
		s.loopCount.Store(0)
		s.loopName.Store(&name)
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeHINFO)
		c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && r.Rcode != mdns.RcodeServerFailure {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ResolvConfUpstreams reads the nameservers of a resolv.conf file.
func ResolvConfUpstreams(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			out = append(out, fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dns: read %s: %w", path, err)
	}
	return normalizeUpstreams(out)
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
