package dns

import (
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// PodMode is the `pods` option of the CoreDNS kubernetes plugin: how
// a-b-c-d.<ns>.pod.<zone> names are answered.
type PodMode string

// The pod modes.
const (
	PodsDisabled PodMode = "disabled" // always NXDOMAIN
	PodsInsecure PodMode = "insecure" // the IP comes from the name, unchecked
	PodsVerified PodMode = "verified" // answered only if a pod with that IP exists in that namespace
)

// DNSSchemaVersion is the version of the Kubernetes DNS specification served
// at dns-version.<zone> TXT.
const DNSSchemaVersion = "1.1.0"

// tolerateUnreadyAnnotation is the pre-publishNotReadyAddresses annotation
// the spec still honours.
const tolerateUnreadyAnnotation = "service.alpha.kubernetes.io/tolerate-unready-endpoints"

// RecordConfig says how records are built.
type RecordConfig struct {
	Zone string  // cluster domain, e.g. "cluster.local" (with or without the final dot)
	TTL  uint32  // TTL of every cluster record and the SOA minimum
	Pods PodMode // pod record mode
}

// Snapshot is what the index is built from: the Services, their
// EndpointSlices (grouped by Service "<ns>/<name>") and, only with
// PodsVerified, the Pods.
type Snapshot struct {
	Services []*corev1.Service
	Slices   map[string][]*discoveryv1.EndpointSlice
	Pods     []*corev1.Pod
}

// answer is a precomputed response to one (name, type): the packed
// answer, authority and additional sections. Every RR whose owner is the
// query name starts with a compression pointer to offset 12 (the question
// name), so one answer serves every spelling of the name, and the slow path
// gets RRs back by unpacking header + question + wire. No RR objects are
// kept: memory is the wire bytes.
type answer struct {
	rcode      uint8
	an, ns, ex uint16
	wire       []byte
}

// entry is one existing name of the cluster zone or of a reverse zone.
type entry struct {
	a, aaaa  *answer
	srv, ptr *answer
	txt      *answer
	soa, ns  *answer // zone apex only
	// external is the target of an ExternalName Service: answered with a
	// CNAME plus the target chased through the resolver (not precomputed).
	external string
}

// index is an immutable view of every cluster record. The owner goroutine
// builds a new one and publishes it with an atomic pointer; readers never
// lock.
type index struct {
	cfg      RecordConfig
	zone     string // canonical FQDN "cluster.local."
	zoneWire []byte // lower-case wire form of zone
	names    map[string]*entry
	nxdomain *answer
	nodata   *answer
	soa      mdns.RR
}

func (x *index) lookup(wireKey []byte) *entry { return x.names[string(wireKey)] }

// forType returns the precomputed answer for qtype at e, or nodata.
func (x *index) forType(e *entry, qtype uint16) *answer {
	var a *answer
	switch qtype {
	case mdns.TypeA:
		a = e.a
	case mdns.TypeAAAA:
		a = e.aaaa
	case mdns.TypeSRV:
		a = e.srv
	case mdns.TypePTR:
		a = e.ptr
	case mdns.TypeTXT:
		a = e.txt
	case mdns.TypeSOA:
		a = e.soa
	case mdns.TypeNS:
		a = e.ns
	}
	if a == nil {
		return x.nodata
	}
	return a
}

// builder accumulates records per name before they are packed.
type builder struct {
	cfg   RecordConfig
	zone  string
	names map[string]*bentry
	ptrs  []ptrRec
}

// ptrRec is one PTR a Service contributes; reverse names are shared between
// Services, so they are merged in indexState, not in a fragment.
type ptrRec struct {
	rev, target string
	clusterIP   bool
}

type bentry struct {
	a, aaaa, srv, srvEx, ptr, txt []mdns.RR
	seen                          map[string]struct{} // dedup of "type/value"
	external                      string
	exists                        bool
}

func (b *builder) get(name string) *bentry {
	e := b.names[name]
	if e == nil {
		e = &bentry{exists: true}
		b.names[name] = e
	}
	return e
}

func (e *bentry) once(key string) bool {
	if e.seen == nil {
		e.seen = map[string]struct{}{}
	}
	if _, ok := e.seen[key]; ok {
		return false
	}
	e.seen[key] = struct{}{}
	return true
}

func hdr(name string, t uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: ttl}
}

// addAddr adds an A or AAAA record for ip at name.
func (b *builder) addAddr(name string, ip netip.Addr) {
	e := b.get(name)
	if !e.once("ip/" + ip.String()) {
		return
	}
	if ip.Is4() {
		e.a = append(e.a, &mdns.A{Hdr: hdr(name, mdns.TypeA, b.cfg.TTL), A: ip.AsSlice()})
	} else {
		e.aaaa = append(e.aaaa, &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA, b.cfg.TTL), AAAA: ip.AsSlice()})
	}
}

func (b *builder) addSRV(name string, port int32, target string, targetIPs []netip.Addr) {
	e := b.get(name)
	if e.once("srv/" + target + "/" + itoa(int(port))) {
		e.srv = append(e.srv, &mdns.SRV{Hdr: hdr(name, mdns.TypeSRV, b.cfg.TTL), Priority: 0, Port: uint16(port), Target: target})
	}
	for _, ip := range targetIPs {
		if !e.once("srvex/" + target + "/" + ip.String()) {
			continue
		}
		if ip.Is4() {
			e.srvEx = append(e.srvEx, &mdns.A{Hdr: hdr(target, mdns.TypeA, b.cfg.TTL), A: ip.AsSlice()})
		} else {
			e.srvEx = append(e.srvEx, &mdns.AAAA{Hdr: hdr(target, mdns.TypeAAAA, b.cfg.TTL), AAAA: ip.AsSlice()})
		}
	}
}

func (b *builder) addPTR(ip netip.Addr, target string, clusterIP bool) {
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	for _, p := range b.ptrs {
		if p.rev == rev && p.target == target {
			return
		}
	}
	b.ptrs = append(b.ptrs, ptrRec{rev: rev, target: target, clusterIP: clusterIP})
}

// endpointHostname names an endpoint as CoreDNS does (without
// endpoint_pod_names): its hostname, else its dashed IP.
func endpointHostname(hostname string, ip netip.Addr) string {
	if hostname != "" {
		return strings.ToLower(hostname)
	}
	return dashedIP(ip)
}

// dashedIP is 10-244-1-5 or fd00--1 (a trailing "-" gets a "0").
func dashedIP(ip netip.Addr) string {
	if ip.Is4() {
		return strings.ReplaceAll(ip.String(), ".", "-")
	}
	s := strings.ReplaceAll(ip.String(), ":", "-")
	if strings.HasSuffix(s, "-") {
		s += "0"
	}
	return s
}

type readyEndpoint struct {
	host string
	ips  []netip.Addr
}

type slicePort struct {
	name, proto string
	port        int32
}

// serviceEndpoints collects the ready endpoints and the ports of every slice
// of a Service. An endpoint is ready when conditions.ready is nil or true
// (the EndpointSlice controller already sets it for publishNotReadyAddresses),
// or when the Service carries the tolerate-unready annotation.
func serviceEndpoints(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) ([]readyEndpoint, []slicePort) {
	tolerate := svc.Annotations[tolerateUnreadyAnnotation] == "true"
	var eps []readyEndpoint
	var ports []slicePort
	seenPort := map[slicePort]bool{}
	for _, sl := range slices {
		if sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, p := range sl.Ports {
			sp := slicePort{proto: "tcp"}
			if p.Name != nil {
				sp.name = strings.ToLower(*p.Name)
			}
			if p.Protocol != nil {
				sp.proto = strings.ToLower(string(*p.Protocol))
			}
			if p.Port != nil {
				sp.port = *p.Port
			}
			if !seenPort[sp] {
				seenPort[sp] = true
				ports = append(ports, sp)
			}
		}
		for _, ep := range sl.Endpoints {
			if !tolerate && ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			var ips []netip.Addr
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					ips = append(ips, ip.Unmap())
				}
			}
			if len(ips) == 0 {
				continue
			}
			h := ""
			if ep.Hostname != nil {
				h = *ep.Hostname
			}
			eps = append(eps, readyEndpoint{host: endpointHostname(h, ips[0]), ips: ips})
		}
	}
	return eps, ports
}

// addService adds every record of one Service.
func (b *builder) addService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) {
	ns, name := strings.ToLower(svc.Namespace), strings.ToLower(svc.Name)
	base := name + "." + ns + ".svc." + b.zone

	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		target := strings.ToLower(strings.TrimSuffix(svc.Spec.ExternalName, "."))
		if target == "" {
			return
		}
		if _, err := netip.ParseAddr(target); err == nil {
			return // CoreDNS skips an IP as ExternalName: NXDOMAIN
		}
		b.get(base).external = mdns.Fqdn(target)
		return
	}

	eps, epPorts := serviceEndpoints(svc, slices)
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	var clusterIPs []netip.Addr
	if !headless {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, s := range ips {
			if ip, err := netip.ParseAddr(s); err == nil {
				clusterIPs = append(clusterIPs, ip.Unmap())
			}
		}
		if len(clusterIPs) == 0 {
			return // not yet allocated, or no address: no records
		}
	}

	// Endpoint names exist for every Service with ready endpoints (CoreDNS
	// serves them for ClusterIP Services too); so do their PTRs.
	for _, ep := range eps {
		for _, ip := range ep.ips {
			b.addAddr(ep.host+"."+base, ip)
			b.addPTR(ip, ep.host+"."+base, false)
		}
	}

	if !headless {
		for _, ip := range clusterIPs {
			b.addAddr(base, ip)
			b.addPTR(ip, base, true)
		}
		for _, p := range svc.Spec.Ports {
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			b.addSRV(base, p.Port, base, clusterIPs) // partial SRV: every port
			if p.Name == "" {
				continue
			}
			pn := "_" + strings.ToLower(p.Name) + "._" + proto + "." + base
			b.addSRV(pn, p.Port, base, clusterIPs)
			for _, ip := range clusterIPs {
				b.addAddr(pn, ip)
			}
		}
		return
	}

	// Headless: the name exists only with ready endpoints (spec 1.0.1).
	if len(eps) == 0 {
		return
	}
	for _, ep := range eps {
		target := ep.host + "." + base
		for _, ip := range ep.ips {
			b.addAddr(base, ip)
		}
		if len(epPorts) == 0 {
			continue
		}
		for _, p := range epPorts {
			b.addSRV(base, p.port, target, ep.ips)
			if p.name == "" {
				continue
			}
			pn := "_" + p.name + "._" + p.proto + "." + base
			b.addSRV(pn, p.port, target, ep.ips)
			for _, ip := range ep.ips {
				b.addAddr(pn, ip)
			}
		}
	}
}

func (b *builder) addPod(pod *corev1.Pod) {
	ns := strings.ToLower(pod.Namespace)
	ips := pod.Status.PodIPs
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	for _, p := range ips {
		ip, err := netip.ParseAddr(p.IP)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		b.addAddr(podDashed(ip)+"."+ns+".pod."+b.zone, ip)
	}
}

// podDashed is the pod-record form of an IP: every "." or ":" becomes "-".
func podDashed(ip netip.Addr) string {
	if ip.Is4() {
		return strings.ReplaceAll(ip.String(), ".", "-")
	}
	return strings.ReplaceAll(ip.String(), ":", "-")
}

// buildIndex builds the whole record index from a snapshot. It is a pure
// function (tests use it); the server keeps an indexState and applies only
// what changed.
func buildIndex(cfg RecordConfig, snap Snapshot, serial uint32) *index {
	st := newIndexState(cfg)
	changes := make(map[string]serviceInput, len(snap.Services))
	for _, s := range snap.Services {
		k := s.Namespace + "/" + s.Name
		changes[k] = serviceInput{svc: s, slices: snap.Slices[k]}
	}
	pods := map[string]*corev1.Pod{}
	if cfg.Pods == PodsVerified {
		for _, p := range snap.Pods {
			pods[p.Namespace+"/"+p.Name] = p
		}
	}
	return st.apply(changes, pods, serial)
}

// packEntries turns a builder's names into packed entries keyed by wire
// name.
func (b *builder) packEntries() map[string]*entry {
	out := make(map[string]*entry, len(b.names))
	for name, be := range b.names {
		e := &entry{external: be.external}
		pos := func(an, ex []mdns.RR) *answer {
			if len(an) == 0 {
				return nil
			}
			return packAnswer(name, mdns.RcodeSuccess, an, nil, ex)
		}
		if len(be.srv) > 0 {
			w := uint16(100 / len(be.srv))
			for _, rr := range be.srv {
				rr.(*mdns.SRV).Weight = w
			}
		}
		e.a, e.aaaa = pos(be.a, nil), pos(be.aaaa, nil)
		e.srv, e.ptr, e.txt = pos(be.srv, be.srvEx), pos(be.ptr, nil), pos(be.txt, nil)
		out[string(wireName(name))] = e
	}
	return out
}

// wireName is the lower-case wire form of a canonical name.
func wireName(name string) []byte {
	buf := make([]byte, 256)
	n, err := mdns.PackDomainName(strings.ToLower(name), buf, 0, nil, false)
	if err != nil {
		return nil
	}
	return buf[:n:n]
}

// packAnswer packs the sections; RRs owned by qname get a pointer to the
// question (offset 12) as owner.
func packAnswer(qname string, rcode int, an, ns, ex []mdns.RR) *answer {
	a := &answer{rcode: uint8(rcode), an: uint16(len(an)), ns: uint16(len(ns)), ex: uint16(len(ex))}
	var buf [1024]byte
	for _, sec := range [][]mdns.RR{an, ns, ex} {
		for _, rr := range sec {
			need := mdns.Len(rr) + 16
			tmp := buf[:]
			if need > len(tmp) {
				tmp = make([]byte, need)
			}
			n, err := mdns.PackRR(rr, tmp, 0, nil, false)
			if err != nil {
				continue
			}
			w := tmp[:n]
			if qname != "" && rr.Header().Name == qname {
				on, _ := mdns.PackDomainName(qname, buf2(), 0, nil, false)
				a.wire = append(a.wire, 0xC0, 0x0C)
				a.wire = append(a.wire, w[on:]...)
			} else {
				a.wire = append(a.wire, w...)
			}
		}
	}
	a.wire = a.wire[:len(a.wire):len(a.wire)]
	return a
}

func buf2() []byte { return make([]byte, 256) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	p := len(b)
	neg := i < 0
	if neg {
		i = -i
	}
	for i > 0 {
		p--
		b[p] = byte('0' + i%10)
		i /= 10
	}
	if neg {
		p--
		b[p] = '-'
	}
	return string(b[p:])
}

// nowSerial is the SOA serial: the build time in Unix seconds.
func nowSerial() uint32 { return uint32(time.Now().Unix()) }
