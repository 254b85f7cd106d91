package dns

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeUpstream is a local resolver on 127.0.0.1 (UDP and TCP) answering
// from a zone-file text table; every other name is NXDOMAIN with an SOA.
type fakeUpstream struct {
	addr    string
	queries atomic.Int64
	mu      sync.Mutex // guards records
	records map[string][]mdns.RR
}

func startFakeUpstream(t testing.TB, rrs ...string) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{records: map[string][]mdns.RR{}}
	for _, s := range rrs {
		f.add(t, s)
	}
	// The UDP port may be taken for TCP: try a few.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt > 20 {
			t.Fatal(err)
		}
	}
	f.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(f.serve)
	us := &mdns.Server{PacketConn: pc, Handler: h}
	ts := &mdns.Server{Listener: ln, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
	return f
}

func (f *fakeUpstream) add(t testing.TB, s string) {
	rr, err := mdns.NewRR(s)
	if err != nil {
		t.Fatalf("fake upstream RR %q: %v", s, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := strings.ToLower(rr.Header().Name)
	f.records[k] = append(f.records[k], rr)
}

func (f *fakeUpstream) serve(w mdns.ResponseWriter, r *mdns.Msg) {
	f.queries.Add(1)
	m := new(mdns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	f.mu.Lock()
	rrs := f.records[strings.ToLower(q.Name)]
	f.mu.Unlock()
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, mdns.Copy(rr))
		}
	}
	if len(rrs) == 0 {
		m.Rcode = mdns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		soa, _ := mdns.NewRR("example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30")
		m.Ns = []mdns.RR{soa}
	}
	size := 512
	if o := r.IsEdns0(); o != nil {
		size = int(o.UDPSize())
		m.SetEdns0(o.UDPSize(), false)
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// startServer runs a Server on 127.0.0.1 with an index built from snap
// (SOA serial 1) and marks it ready.
func startServer(t testing.TB, rc RecordConfig, snap Snapshot, upstreams ...string) *Server {
	t.Helper()
	s, err := NewServer(Config{Records: rc, Listen: "127.0.0.1:0", Upstreams: upstreams, Sockets: 1,
		HealthListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if snap.Services != nil {
		s.idx.Store(buildIndex(s.cfg.Records, snap, 1))
		s.SetReady(true)
	}
	return s
}

// ask sends one query over proto ("udp" or "tcp"); ednsSize 0 means no OPT.
func ask(t testing.TB, addr, proto, name string, qtype uint16, ednsSize uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	c := &mdns.Client{Net: proto, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", proto, name, mdns.TypeToString[qtype], err)
	}
	return r
}

// rrTexts renders RRs as zone-file lines, sorted, owner names lower-cased;
// TTLs of names outside the cluster zone are replaced by "TTL" (the cache
// ages them).
func rrTexts(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		out = append(out, normRR(rr.String()))
	}
	sort.Strings(out)
	return out
}

func normRR(s string) string {
	f := strings.Fields(s)
	if len(f) > 1 {
		f[0] = strings.ToLower(f[0])
		if !strings.HasSuffix(f[0], "cluster.local.") && !strings.HasSuffix(f[0], ".arpa.") {
			f[1] = "TTL"
		}
	}
	return strings.Join(f, " ")
}

func expTexts(t testing.TB, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		rr, err := mdns.NewRR(l)
		if err != nil || rr == nil {
			t.Fatalf("bad expectation %q: %v", l, err)
		}
		out = append(out, normRR(rr.String()))
	}
	sort.Strings(out)
	return out
}

// Object builders for tests.

func svc(ns, name string, typ corev1.ServiceType, clusterIPs []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	s.Spec.Type = typ
	if len(clusterIPs) > 0 {
		s.Spec.ClusterIP = clusterIPs[0]
		if clusterIPs[0] != corev1.ClusterIPNone {
			s.Spec.ClusterIPs = clusterIPs
		}
	}
	s.Spec.Ports = ports
	return s
}

func port(name string, proto corev1.Protocol, p int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: p}
}

type ep struct {
	ip, host string
	ready    *bool
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

func ptr[T any](v T) *T { return &v }

func slice(ns, svcName, name string, fam discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: fam,
		Ports:       ports,
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.host != "" {
			x.Hostname = ptr(e.host)
		}
		sl.Endpoints = append(sl.Endpoints, x)
	}
	return sl
}

func epPort(name string, proto corev1.Protocol, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(p)}
}

func snapshot(svcs []*corev1.Service, slices ...*discoveryv1.EndpointSlice) Snapshot {
	s := Snapshot{Services: svcs, Slices: map[string][]*discoveryv1.EndpointSlice{}}
	for _, sl := range slices {
		k := sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName]
		s.Slices[k] = append(s.Slices[k], sl)
	}
	return s
}

func manyEndpoints(n int) []ep {
	var out []ep
	for i := 0; i < n; i++ {
		out = append(out, ep{ip: fmt.Sprintf("10.244.%d.%d", 100+i/200, 1+i%200)})
	}
	return out
}
