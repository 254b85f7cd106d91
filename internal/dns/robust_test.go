package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func packQuery(t testing.TB, name string, qtype uint16, edns uint16) []byte {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fuzzServer is a Server that is not listening, with the fixture index and
// no upstream (forwarded names SERVFAIL at once).
func fuzzServer(t testing.TB) *Server {
	s, err := NewServer(Config{Records: RecordConfig{Zone: "cluster.local", TTL: 5, Pods: PodsInsecure}})
	if err != nil {
		t.Fatal(err)
	}
	s.idx.Store(buildIndex(s.cfg.Records, withExternal(fixture()), 1))
	s.SetReady(true)
	return s
}

// FuzzHandler is acceptance point 4: any packet through the fast and slow
// paths must not panic, and every answer must be a well-formed reply to it.
func FuzzHandler(f *testing.F) {
	for _, q := range []struct {
		n string
		t uint16
		e uint16
	}{
		{"web.default.svc.cluster.local.", mdns.TypeA, 0},
		{"service-headliness.default.svc.cluster.local.", mdns.TypeSRV, 1232},
		{"big.default.svc.cluster.local.", mdns.TypeA, 0},
		{"ext.default.svc.cluster.local.", mdns.TypeA, 0},
		{"10-1-2-3.default.pod.cluster.local.", mdns.TypeA, 4096},
		{"20.0.96.10.in-addr.arpa.", mdns.TypePTR, 0},
		{"nope.cluster.local.", mdns.TypeTXT, 512},
	} {
		f.Add(packQuery(f, q.n, q.t, q.e))
	}
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1})
	f.Add([]byte{0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63})
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, req []byte) {
		out := make([]byte, 65535)
		var q query
		for _, tcp := range []bool{false, true} {
			resp, ok := s.fast(req, out, &q, tcp)
			if !ok {
				resp = s.slow(context.Background(), req, tcp)
			}
			if resp == nil {
				continue
			}
			if len(resp) < 12 || resp[0] != req[0] || resp[1] != req[1] || resp[2]&0x80 == 0 {
				t.Fatalf("answer %x is not a reply to %x", resp, req)
			}
			if ok && !tcp && len(resp) > q.maxSize(false) {
				t.Fatalf("fast answer of %d bytes exceeds the client's %d", len(resp), q.maxSize(false))
			}
			m := new(mdns.Msg)
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("answer does not unpack: %v (%x)", err, resp)
			}
		}
	})
}

// TestMalformedPackets: garbage is dropped or answered FORMERR, and a
// client asking at the same time gets its answers.
func TestMalformedPackets(t *testing.T) {
	s := startServer(t, RecordConfig{Zone: "cluster.local", TTL: 5}, withExternal(fixture()))
	addr := s.UDPAddr().String()
	bad, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	header := []byte{0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		name    string
		pkt     []byte
		formerr bool
	}{
		{"truncated question", append(append([]byte{}, header...), 3, 'w', 'e'), true},
		{"label past the end", append(append([]byte{}, header...), 63, 'a'), true},
		{"pointer loop", append(append([]byte{}, header...), 0xC0, 0x0C, 0, 1, 0, 1), true},
		{"two questions", append([]byte{0xAB, 0xCD, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0}, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1), true},
		{"short", []byte{1, 2, 3}, false},
		{"a response", append([]byte{0xAB, 0xCD, 0x81, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}, 0, 0, 1, 0, 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := bad.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			// Another client is answered meanwhile.
			r := ask(t, addr, "udp", "web.default.svc.cluster.local.", mdns.TypeA, 0)
			if len(r.Answer) != 1 {
				t.Fatalf("good client got %v", r)
			}
			if !tc.formerr {
				_ = bad.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				buf := make([]byte, 512)
				if n, err := bad.Read(buf); err == nil {
					t.Fatalf("expected a drop, got %x", buf[:n])
				}
				return
			}
			_ = bad.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			n, err := bad.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			m := new(mdns.Msg)
			if err := m.Unpack(buf[:n]); err != nil || m.Rcode != mdns.RcodeFormatError || m.Id != 0xABCD {
				t.Fatalf("want FORMERR for id 0xABCD, got %v %v", m, err)
			}
		})
	}
	// A malformed TCP frame closes that connection only.
	c, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0, 3, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, addr, "tcp", "web.default.svc.cluster.local.", mdns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("good TCP client got %v", r)
	}
}

// TestFastPathAllocs: cluster answers, NXDOMAIN and cache hits are written
// without allocating.
func TestFastPathAllocs(t *testing.T) {
	up := startFakeUpstream(t, upstreamZone...)
	s := startServer(t, RecordConfig{Zone: "cluster.local", TTL: 5}, withExternal(fixture()), up.addr)
	ask(t, s.UDPAddr().String(), "udp", "www.example.com.", mdns.TypeA, 1232) // fill the cache
	out := make([]byte, 65535)
	var q query
	for _, tc := range []struct {
		name  string
		qtype uint16
		edns  uint16
		rcode int
	}{
		{"web.default.svc.cluster.local.", mdns.TypeA, 0, mdns.RcodeSuccess},
		{"service-headliness.default.svc.cluster.local.", mdns.TypeA, 1232, mdns.RcodeSuccess},
		{"_http._tcp.service-headliness.default.svc.cluster.local.", mdns.TypeSRV, 1232, mdns.RcodeSuccess},
		{"www.example.com.default.svc.cluster.local.", mdns.TypeA, 0, mdns.RcodeNameError},
		{"www.example.com.", mdns.TypeA, 1232, mdns.RcodeSuccess},
	} {
		req := packQuery(t, tc.name, tc.qtype, tc.edns)
		resp, ok := s.fast(req, out, &q, false)
		if !ok {
			t.Fatalf("%s: not answered by the fast path", tc.name)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(resp); err != nil || m.Rcode != tc.rcode || m.Id != 0x1234 {
			t.Fatalf("%s: %v %v", tc.name, m, err)
		}
		if n := testing.AllocsPerRun(200, func() { s.fast(req, out, &q, false) }); n != 0 {
			t.Errorf("%s: %.1f allocations per answer", tc.name, n)
		}
	}
}

// TestForwardCacheAndStubs: forwarded answers (positive and negative) are
// cached; stub domains go to their own resolver; the cache stays bounded.
func TestForwardCacheAndStubs(t *testing.T) {
	up := startFakeUpstream(t, upstreamZone...)
	corp := startFakeUpstream(t, "db.corp.example. 60 IN A 198.51.100.7")
	s, err := NewServer(Config{Records: RecordConfig{Zone: "cluster.local", TTL: 5}, Listen: "127.0.0.1:0",
		Upstreams: []string{up.addr}, StubDomains: map[string][]string{"corp.example": {corp.addr}}, CacheSize: 64, Sockets: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	addr := s.UDPAddr().String()
	for i := 0; i < 3; i++ {
		if r := ask(t, addr, "udp", "www.example.com.", mdns.TypeA, 0); len(r.Answer) != 1 {
			t.Fatalf("www.example.com: %v", r)
		}
		if r := ask(t, addr, "tcp", "missing.example.com.", mdns.TypeA, 0); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("missing.example.com: %v", r)
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream saw %d queries for 2 names asked 3 times each, want 2 (cache)", n)
	}
	if r := ask(t, addr, "udp", "db.corp.example.", mdns.TypeA, 0); len(r.Answer) != 1 || corp.queries.Load() != 1 {
		t.Errorf("stub domain: %v, corp upstream queries %d", r, corp.queries.Load())
	}
	for i := 0; i < 300; i++ {
		ask(t, addr, "udp", fmt.Sprintf("n%d.example.com.", i), mdns.TypeA, 0)
	}
	if n := s.cache.len(); n > 64 {
		t.Errorf("cache holds %d entries, bound 64", n)
	}
}

// TestLoopDetection: an upstream that forwards back to us is detected as
// CoreDNS's loop plugin does.
func TestLoopDetection(t *testing.T) {
	var ours string
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	loopy := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		c := &mdns.Client{Timeout: 3 * time.Second}
		resp, _, err := c.Exchange(r, ours)
		if err != nil {
			return
		}
		_ = w.WriteMsg(resp)
	})}
	s, err := NewServer(Config{Listen: "127.0.0.1:0", Upstreams: []string{pc.LocalAddr().String()}, LoopDetect: false, Sockets: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	ours = s.UDPAddr().String() // before the loopy resolver serves
	go func() { _ = loopy.ActivateAndServe() }()
	defer func() { _ = loopy.Shutdown() }()
	go s.probeLoop(context.Background())
	select {
	case err := <-s.Fatal():
		if !errors.Is(err, ErrLoop) {
			t.Fatalf("fatal %v, want ErrLoop", err)
		}
		t.Logf("detected: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("loop not detected")
	}
}
