package dns

import (
	"bytes"
	"net/netip"
	"slices"
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
	more     *entryMore // the rare parts; nil for almost every name
}

// entryMore holds what few names have, out of line so that the 35000-odd
// entries of 10000 Services stay small.
type entryMore struct {
	txt     *answer
	soa, ns *answer // zone apex only
	// external is the target of an ExternalName Service: answered with a
	// CNAME plus the target chased through the resolver (not precomputed).
	external string
}

// external is the ExternalName target of e, or "".
func (e *entry) external() string {
	if e.more == nil {
		return ""
	}
	return e.more.external
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
	case mdns.TypeTXT, mdns.TypeSOA, mdns.TypeNS:
		if m := e.more; m != nil {
			switch qtype {
			case mdns.TypeTXT:
				a = m.txt
			case mdns.TypeSOA:
				a = m.soa
			default:
				a = m.ns
			}
		}
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

// serviceEndpoints collects the ready endpoints and the ports of every slice
// of a Service. An endpoint is ready when conditions.ready is nil or true
// (the EndpointSlice controller already sets it for publishNotReadyAddresses),
// or when the Service carries the tolerate-unready annotation.
func serviceEndpoints(svc *svcObj, sls []*sliceObj) ([]readyEndpoint, []portObj) {
	var eps []readyEndpoint
	var ports []portObj
	for _, sl := range sls {
		if sl.fqdn {
			continue
		}
		for _, p := range sl.ports {
			if !slices.Contains(ports, p) {
				ports = append(ports, p)
			}
		}
		for _, ep := range sl.endpoints {
			if !svc.tolerate && !ep.ready {
				continue
			}
			if len(ep.addrs) == 0 {
				continue
			}
			eps = append(eps, readyEndpoint{host: endpointHostname(ep.hostname, ep.addrs[0]), ips: ep.addrs})
		}
	}
	return eps, ports
}

// addService adds every record of one Service.
func (b *builder) addService(svc *svcObj, sls []*sliceObj) {
	ns, name := strings.ToLower(svc.ns), strings.ToLower(svc.name)
	base := name + "." + ns + ".svc." + b.zone

	if svc.typ == corev1.ServiceTypeExternalName {
		target := strings.ToLower(strings.TrimSuffix(svc.externalName, "."))
		if target == "" {
			return
		}
		if _, err := netip.ParseAddr(target); err == nil {
			return // CoreDNS skips an IP as ExternalName: NXDOMAIN
		}
		b.get(base).external = mdns.Fqdn(target)
		return
	}

	eps, epPorts := serviceEndpoints(svc, sls)
	headless := svc.headless
	clusterIPs := svc.clusterIPs
	if !headless && len(clusterIPs) == 0 {
		return // not yet allocated, or no address: no records
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
		for _, p := range svc.ports {
			b.addSRV(base, p.port, base, clusterIPs) // partial SRV: every port
			if p.name == "" {
				continue
			}
			pn := "_" + p.name + "._" + p.proto + "." + base
			b.addSRV(pn, p.port, base, clusterIPs)
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

func (b *builder) addPod(pod *podObj) {
	ns := strings.ToLower(pod.ns)
	for _, ip := range pod.ips {
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
		changes[k] = inputOf(s, snap.Slices[k])
	}
	pods := map[string]*podObj{}
	if cfg.Pods == PodsVerified {
		for _, p := range snap.Pods {
			pods[p.Namespace+"/"+p.Name] = compactPod(p)
		}
	}
	return st.apply(changes, pods, serial)
}

// inputOf is the serviceInput of a full Service and its slices.
func inputOf(s *corev1.Service, slices []*discoveryv1.EndpointSlice) serviceInput {
	in := serviceInput{svc: compactService(s)}
	for _, sl := range slices {
		in.slices = append(in.slices, compactSlice(sl))
	}
	return in
}

// packEntries turns a builder's names into packed entries keyed by wire
// name.
func (b *builder) packEntries() map[string]*entry {
	out := make(map[string]*entry, len(b.names))
	b.packInto(out)
	return out
}

// packInto packs a builder's names into out, keyed by wire name, and
// returns the keys.
func (b *builder) packInto(out map[string]*entry) []string {
	keys := make([]string, 0, len(b.names))
	// Answers are immutable once packed, and those owned by the query name
	// do not spell it (offset-12 pointer): names of one Service with the
	// same records (<svc> and _<port>._<proto>.<svc> A) share one.
	shared := map[string]*answer{}
	for name, be := range b.names {
		e := &entry{}
		pos := func(an, ex []mdns.RR) *answer {
			if len(an) == 0 {
				return nil
			}
			a := packAnswer(name, mdns.RcodeSuccess, an, nil, ex)
			k := string([]byte{byte(a.an), byte(a.an >> 8), byte(a.ex), byte(a.ex >> 8)}) + string(a.wire)
			if prev := shared[k]; prev != nil && prev.rcode == a.rcode && prev.ns == a.ns {
				return prev
			}
			shared[k] = a
			return a
		}
		if len(be.srv) > 0 {
			w := uint16(100 / len(be.srv))
			for _, rr := range be.srv {
				rr.(*mdns.SRV).Weight = w
			}
		}
		e.a, e.aaaa = pos(be.a, nil), pos(be.aaaa, nil)
		e.srv, e.ptr = pos(be.srv, be.srvEx), pos(be.ptr, nil)
		if txt := pos(be.txt, nil); txt != nil || be.external != "" {
			e.more = &entryMore{txt: txt, external: be.external}
		}
		k := string(wireName(name))
		out[k] = e
		keys = append(keys, k)
	}
	return keys
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
	var out [2048]byte
	wire := out[:0] // built on the stack, then copied once at its size
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
				wire = append(wire, 0xC0, 0x0C)
				wire = append(wire, w[on:]...)
			} else {
				wire = append(wire, w...)
			}
		}
	}
	if len(wire) > 0 {
		a.wire = bytes.Clone(wire)
		a.wire = a.wire[:len(a.wire):len(a.wire)]
	}
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
