package dns

import (
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

const soaLine = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"

// fixture is the cluster every record test reads.
func fixture() Snapshot {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	headPorts := []discoveryv1.EndpointPort{epPort("http", tcp, 8080)}
	tolerate := svc("default", "tolerant", "", []string{"None"})
	tolerate.Annotations = map[string]string{tolerateUnreadyAnnotation: "true"}
	big := svc("default", "big", "", []string{"None"})
	return snapshot(
		[]*corev1.Service{
			svc("default", "web", corev1.ServiceTypeClusterIP, []string{"10.96.0.20"},
				port("http", tcp, 80), port("dns", udp, 53), port("", tcp, 8080)),
			svc("default", "web6", corev1.ServiceTypeClusterIP, []string{"fd00:10:96::20"}, port("http", tcp, 80)),
			svc("default", "dual", corev1.ServiceTypeClusterIP, []string{"10.96.0.30", "fd00:10:96::30"}, port("http", tcp, 80)),
			svc("default", "service-headliness", corev1.ServiceTypeClusterIP, []string{"None"}, port("http", tcp, 8080)),
			svc("default", "empty-headless", corev1.ServiceTypeClusterIP, []string{"None"}),
			svc("default", "unready", corev1.ServiceTypeClusterIP, []string{"None"}),
			tolerate, big,
			svc("default", "ext", corev1.ServiceTypeExternalName, nil),
			svc("default", "ext-ip", corev1.ServiceTypeExternalName, nil),
			svc("other", "api", corev1.ServiceTypeClusterIP, []string{"10.96.5.5"}, port("https", tcp, 443)),
		},
		// service-headliness spreads over three slices (two IPv4, one IPv6).
		slice("default", "service-headliness", "sh-1", discoveryv1.AddressTypeIPv4, headPorts,
			ep{ip: "10.244.1.5", host: "pod-a"}, ep{ip: "10.244.1.6", ready: yes}, ep{ip: "10.244.1.7", ready: no}),
		slice("default", "service-headliness", "sh-2", discoveryv1.AddressTypeIPv4, headPorts, ep{ip: "10.244.2.8"}),
		slice("default", "service-headliness", "sh-3", discoveryv1.AddressTypeIPv6, headPorts, ep{ip: "fd00:244::5", host: "pod-a"}),
		slice("default", "unready", "u-1", discoveryv1.AddressTypeIPv4, headPorts, ep{ip: "10.244.3.1", ready: no}),
		slice("default", "tolerant", "t-1", discoveryv1.AddressTypeIPv4, headPorts, ep{ip: "10.244.3.2", ready: no}),
		slice("default", "big", "b-1", discoveryv1.AddressTypeIPv4, nil, manyEndpoints(60)...),
		slice("default", "web", "w-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{epPort("http", tcp, 8080)}, ep{ip: "10.244.4.4"}),
	)
}

func withExternal(s Snapshot) Snapshot {
	for _, x := range s.Services {
		switch x.Name {
		case "ext":
			x.Spec.ExternalName = "www.example.com"
		case "ext-ip":
			x.Spec.ExternalName = "192.0.2.9"
		}
	}
	return s
}

// upstreamZone is what the fake upstream resolver knows.
var upstreamZone = []string{
	"www.example.com. 300 IN A 192.0.2.53",
	"www.example.com. 300 IN AAAA 2001:db8::53",
	"ipv6only.example.com. 300 IN AAAA 2001:db8::66",
}

type recordCase struct {
	name  string
	qtype uint16
	rcode int
	// noAA marks forwarded answers (not authoritative).
	noAA   bool
	answer []string
	ns     []string
	extra  []string
}

// TestRecords is acceptance point 1: every record kind, positive and
// negative, IPv4 and IPv6, over UDP and TCP, with expectations as zone-file
// RR text. The index is built from objects directly; e2e_test.go runs a
// subset through the real API server.
func TestRecords(t *testing.T) {
	up := startFakeUpstream(t, upstreamZone...)
	s := startServer(t, RecordConfig{Zone: "cluster.local", TTL: 5}, withExternal(fixture()), up.addr)
	A, AAAA, SRV, PTR, TXT := mdns.TypeA, mdns.TypeAAAA, mdns.TypeSRV, mdns.TypePTR, mdns.TypeTXT
	nodata := []string{soaLine}
	cases := []recordCase{
		{name: "dns-version.cluster.local.", qtype: TXT, answer: []string{`dns-version.cluster.local. 28800 IN TXT "1.1.0"`}},
		// ClusterIP, IPv4, IPv6, dual stack.
		{name: "web.default.svc.cluster.local.", qtype: A, answer: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "web.default.svc.cluster.local.", qtype: AAAA, ns: nodata},
		{name: "web.default.svc.cluster.local.", qtype: TXT, ns: nodata},
		{name: "web.default.svc.cluster.local.", qtype: mdns.TypeMX, ns: nodata},
		{name: "WEB.Default.SVC.Cluster.Local.", qtype: A, answer: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "web6.default.svc.cluster.local.", qtype: AAAA, answer: []string{"web6.default.svc.cluster.local. 5 IN AAAA fd00:10:96::20"}},
		{name: "web6.default.svc.cluster.local.", qtype: A, ns: nodata},
		{name: "dual.default.svc.cluster.local.", qtype: A, answer: []string{"dual.default.svc.cluster.local. 5 IN A 10.96.0.30"}},
		{name: "dual.default.svc.cluster.local.", qtype: AAAA, answer: []string{"dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::30"}},
		{name: "api.other.svc.cluster.local.", qtype: A, answer: []string{"api.other.svc.cluster.local. 5 IN A 10.96.5.5"}},
		{name: "web.other.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "nope.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "www.example.com.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "a.b.c.web.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		// Endpoint names of a ClusterIP Service (CoreDNS serves them).
		{name: "10-244-4-4.web.default.svc.cluster.local.", qtype: A, answer: []string{"10-244-4-4.web.default.svc.cluster.local. 5 IN A 10.244.4.4"}},
		// SRV, ClusterIP: named ports only, target the Service, address in additional.
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: SRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "_dns._udp.web.default.svc.cluster.local.", qtype: SRV,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: A, answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "_http._udp.web.default.svc.cluster.local.", qtype: SRV, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "_nope._tcp.web.default.svc.cluster.local.", qtype: SRV, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "web.default.svc.cluster.local.", qtype: SRV, answer: []string{ // partial SRV: every port, unnamed too
			"web.default.svc.cluster.local. 5 IN SRV 0 33 80 web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN SRV 0 33 53 web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN SRV 0 33 8080 web.default.svc.cluster.local.",
		}, extra: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "_http._tcp.dual.default.svc.cluster.local.", qtype: SRV,
			answer: []string{"_http._tcp.dual.default.svc.cluster.local. 5 IN SRV 0 100 80 dual.default.svc.cluster.local."},
			extra:  []string{"dual.default.svc.cluster.local. 5 IN A 10.96.0.30", "dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::30"}},
		// PTR: ClusterIPs (v4, v6) and endpoints.
		{name: "20.0.96.10.in-addr.arpa.", qtype: PTR, answer: []string{"20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}},
		{name: "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.", qtype: PTR,
			answer: []string{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web6.default.svc.cluster.local."}},
		{name: "5.1.244.10.in-addr.arpa.", qtype: PTR, answer: []string{"5.1.244.10.in-addr.arpa. 5 IN PTR pod-a.service-headliness.default.svc.cluster.local."}},
		{name: "6.1.244.10.in-addr.arpa.", qtype: PTR, answer: []string{"6.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-6.service-headliness.default.svc.cluster.local."}},
		{name: "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.", qtype: PTR,
			answer: []string{"5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa. 5 IN PTR pod-a.service-headliness.default.svc.cluster.local."}},
		{name: "20.0.96.10.in-addr.arpa.", qtype: A, ns: nodata},
		// Unknown reverse names fall through to the upstream (NXDOMAIN there).
		{name: "99.0.96.10.in-addr.arpa.", qtype: PTR, rcode: mdns.RcodeNameError, noAA: true,
			ns: []string{"example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30"}},
		// Headless: ready endpoints of every slice; not-ready left out.
		{name: "service-headliness.default.svc.cluster.local.", qtype: A, answer: []string{
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.5",
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.6",
			"service-headliness.default.svc.cluster.local. 5 IN A 10.244.2.8",
		}},
		{name: "service-headliness.default.svc.cluster.local.", qtype: AAAA, answer: []string{
			"service-headliness.default.svc.cluster.local. 5 IN AAAA fd00:244::5"}},
		{name: "pod-a.service-headliness.default.svc.cluster.local.", qtype: A, answer: []string{
			"pod-a.service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.5"}},
		{name: "pod-a.service-headliness.default.svc.cluster.local.", qtype: AAAA, answer: []string{
			"pod-a.service-headliness.default.svc.cluster.local. 5 IN AAAA fd00:244::5"}},
		{name: "10-244-1-6.service-headliness.default.svc.cluster.local.", qtype: A, answer: []string{
			"10-244-1-6.service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.6"}},
		{name: "10-244-1-6.service-headliness.default.svc.cluster.local.", qtype: AAAA, ns: nodata},
		{name: "10-244-1-7.service-headliness.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "_http._tcp.service-headliness.default.svc.cluster.local.", qtype: SRV, answer: []string{
			"_http._tcp.service-headliness.default.svc.cluster.local. 5 IN SRV 0 33 8080 pod-a.service-headliness.default.svc.cluster.local.",
			"_http._tcp.service-headliness.default.svc.cluster.local. 5 IN SRV 0 33 8080 10-244-1-6.service-headliness.default.svc.cluster.local.",
			"_http._tcp.service-headliness.default.svc.cluster.local. 5 IN SRV 0 33 8080 10-244-2-8.service-headliness.default.svc.cluster.local.",
		}, extra: []string{
			"pod-a.service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.5",
			"pod-a.service-headliness.default.svc.cluster.local. 5 IN AAAA fd00:244::5",
			"10-244-1-6.service-headliness.default.svc.cluster.local. 5 IN A 10.244.1.6",
			"10-244-2-8.service-headliness.default.svc.cluster.local. 5 IN A 10.244.2.8",
		}},
		{name: "empty-headless.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "unready.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "tolerant.default.svc.cluster.local.", qtype: A, answer: []string{"tolerant.default.svc.cluster.local. 5 IN A 10.244.3.2"}},
		// ExternalName: CNAME plus the target chased through the upstream.
		{name: "ext.default.svc.cluster.local.", qtype: A, answer: []string{
			"ext.default.svc.cluster.local. 5 IN CNAME www.example.com.",
			"www.example.com. 300 IN A 192.0.2.53"}},
		{name: "ext.default.svc.cluster.local.", qtype: AAAA, answer: []string{
			"ext.default.svc.cluster.local. 5 IN CNAME www.example.com.",
			"www.example.com. 300 IN AAAA 2001:db8::53"}},
		{name: "ext.default.svc.cluster.local.", qtype: mdns.TypeCNAME, answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{name: "ext.default.svc.cluster.local.", qtype: SRV, ns: nodata},
		{name: "ext-ip.default.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		// Zone structure: apex, svc, pod and namespaces exist (NODATA).
		{name: "cluster.local.", qtype: mdns.TypeSOA, answer: []string{soaLine}},
		{name: "cluster.local.", qtype: mdns.TypeNS, answer: []string{"cluster.local. 5 IN NS ns.dns.cluster.local."}},
		{name: "cluster.local.", qtype: A, ns: nodata},
		{name: "svc.cluster.local.", qtype: A, ns: nodata},
		{name: "pod.cluster.local.", qtype: A, ns: nodata},
		{name: "default.svc.cluster.local.", qtype: A, ns: nodata},
		{name: "nonamespace.svc.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "foo.bar.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata},
		{name: "10-244-1-5.default.pod.cluster.local.", qtype: A, rcode: mdns.RcodeNameError, ns: nodata}, // pods disabled
		// Forwarded names.
		{name: "www.example.com.", qtype: A, noAA: true, answer: []string{"www.example.com. 300 IN A 192.0.2.53"}},
		{name: "WWW.Example.COM.", qtype: AAAA, noAA: true, answer: []string{"www.example.com. 300 IN AAAA 2001:db8::53"}},
		{name: "ipv6only.example.com.", qtype: A, noAA: true,
			ns: []string{"example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30"}},
		{name: "missing.example.com.", qtype: A, rcode: mdns.RcodeNameError, noAA: true,
			ns: []string{"example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30"}},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, edns := range []uint16{0, 1232} {
			for _, c := range cases {
				t.Run(proto+"/"+itoa(int(edns))+"/"+c.name+"/"+mdns.TypeToString[c.qtype], func(t *testing.T) {
					r := ask(t, s.UDPAddr().String(), proto, c.name, c.qtype, edns)
					checkReply(t, r, c)
					if !r.RecursionAvailable {
						t.Errorf("RA not set")
					}
					if (r.IsEdns0() != nil) != (edns != 0) {
						t.Errorf("OPT in reply %v, in request %v", r.IsEdns0() != nil, edns != 0)
					}
					for _, rr := range r.Answer {
						if strings.EqualFold(rr.Header().Name, c.name) && rr.Header().Name != c.name {
							t.Errorf("owner %q does not keep the question's spelling %q", rr.Header().Name, c.name)
						}
					}
				})
			}
		}
	}
}

func checkReply(t *testing.T, r *mdns.Msg, c recordCase) {
	t.Helper()
	if r.Rcode != c.rcode {
		t.Errorf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[c.rcode])
	}
	if r.Authoritative == c.noAA {
		t.Errorf("AA=%v, want %v", r.Authoritative, !c.noAA)
	}
	if r.Truncated {
		t.Errorf("TC set")
	}
	for _, sec := range []struct {
		what      string
		got, want []string
	}{
		{"answer", rrTexts(r.Answer), expTexts(t, c.answer)},
		{"authority", rrTexts(r.Ns), expTexts(t, c.ns)},
		{"additional", rrTexts(r.Extra), expTexts(t, c.extra)},
	} {
		if !slices.Equal(sec.got, sec.want) {
			t.Errorf("%s:\n got  %q\n want %q", sec.what, sec.got, sec.want)
		}
	}
}

// TestTruncation: a headless Service with 60 endpoints does not fit in 512
// bytes: UDP without EDNS0 gets TC (and what fits), EDNS0 4096 and TCP get
// all 60 records.
func TestTruncation(t *testing.T) {
	s := startServer(t, RecordConfig{Zone: "cluster.local", TTL: 5}, withExternal(fixture()))
	name := "big.default.svc.cluster.local."
	addr := s.UDPAddr().String()
	for _, tc := range []struct {
		proto    string
		edns     uint16
		wantTC   bool
		wantFull bool
	}{
		{"udp", 0, true, false},
		{"udp", 600, true, false},
		{"udp", 4096, false, true},
		{"tcp", 0, false, true},
	} {
		r := ask(t, addr, tc.proto, name, mdns.TypeA, tc.edns)
		if r.Truncated != tc.wantTC {
			t.Errorf("%s edns=%d: TC=%v, want %v", tc.proto, tc.edns, r.Truncated, tc.wantTC)
		}
		if full := len(r.Answer) == 60; full != tc.wantFull {
			t.Errorf("%s edns=%d: %d answers", tc.proto, tc.edns, len(r.Answer))
		}
		r.Compress = true
		if r.Len() > max(512, int(tc.edns)) && tc.proto == "udp" {
			t.Errorf("%s edns=%d: %d bytes exceed the client's buffer", tc.proto, tc.edns, r.Len())
		}
	}
}

// TestPodModes covers a-b-c-d.<ns>.pod.<zone> in the three modes.
func TestPodModes(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = "default", "p"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:244::5"}}
	snap := withExternal(fixture())
	snap.Pods = []*corev1.Pod{pod}
	nx := recordCase{rcode: mdns.RcodeNameError, ns: []string{soaLine}}
	a := func(n, ip string) recordCase {
		return recordCase{answer: []string{n + " 5 IN A " + ip}}
	}
	aaaa := func(n, ip string) recordCase {
		return recordCase{answer: []string{n + " 5 IN AAAA " + ip}}
	}
	const v4, v6, other = "10-244-1-5.default.pod.cluster.local.", "fd00-244--5.default.pod.cluster.local.", "10-244-9-9.default.pod.cluster.local."
	for _, tc := range []struct {
		mode  PodMode
		name  string
		qtype uint16
		want  recordCase
	}{
		{PodsDisabled, v4, mdns.TypeA, nx},
		{PodsInsecure, v4, mdns.TypeA, a(v4, "10.244.1.5")},
		{PodsInsecure, other, mdns.TypeA, a(other, "10.244.9.9")},
		{PodsInsecure, v6, mdns.TypeAAAA, aaaa(v6, "fd00:244::5")},
		{PodsInsecure, v4, mdns.TypeAAAA, recordCase{ns: []string{soaLine}}},
		{PodsInsecure, "not-an-ip.default.pod.cluster.local.", mdns.TypeA, nx},
		{PodsVerified, v4, mdns.TypeA, a(v4, "10.244.1.5")},
		{PodsVerified, v6, mdns.TypeAAAA, aaaa(v6, "fd00:244::5")},
		{PodsVerified, other, mdns.TypeA, nx},
		{PodsVerified, "10-244-1-5.other.pod.cluster.local.", mdns.TypeA, nx},
	} {
		s := startServer(t, RecordConfig{Zone: "cluster.local", TTL: 5, Pods: tc.mode}, snap)
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(string(tc.mode)+"/"+proto+"/"+tc.name, func(t *testing.T) {
				checkReply(t, ask(t, s.UDPAddr().String(), proto, tc.name, tc.qtype, 0), tc.want)
			})
		}
	}
}
