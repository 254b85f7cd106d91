package dns

import (
	"maps"
	"slices"
	"sort"
	"strings"

	mdns "github.com/miekg/dns"
)

// serviceInput is a Service with its EndpointSlices; svc == nil means the
// Service is gone.
type serviceInput struct {
	svc    *svcObj
	slices []*sliceObj
}

// fragment is what one Service (or Pod) contributes: names only it owns
// (everything under <svc>.<ns>.svc.<zone>; their entries live in the index
// map, the fragment keeps only the keys to delete them), and PTRs, which
// are shared.
type fragment struct {
	ns    string
	names []string
	ptrs  []ptrRec
}

// ptrOwner is one Service's PTR at a reverse name (the map key).
type ptrOwner struct {
	key       string // "ns/name" of the Service
	target    string
	clusterIP bool
}

// indexState is the owner goroutine's copy-on-write state. apply clones the
// name map of the last published index, replaces the fragments of what
// changed, merges the reverse names they touch and returns a new immutable
// index. Readers keep using the old map until the pointer swap. Cost per
// change: one map clone plus the changed Services, not a full rebuild.
type indexState struct {
	cfg       RecordConfig
	zone      string
	zoneWire  []byte
	frags     map[string]*fragment  // "ns/name" → Service fragment
	podFrags  map[string]*fragment  // "ns/name" → Pod fragment
	ptrOwners map[string][]ptrOwner // reverse name → the PTRs Services give it
	nsCount   map[string]int
	names     map[string]*entry
}

func newIndexState(cfg RecordConfig) *indexState {
	zone := mdns.CanonicalName(cfg.Zone)
	st := &indexState{cfg: cfg, zone: zone, zoneWire: wireName(zone),
		frags: map[string]*fragment{}, podFrags: map[string]*fragment{},
		ptrOwners: map[string][]ptrOwner{}, nsCount: map[string]int{}, names: map[string]*entry{}}
	// Fixed structure of the zone (the apex, with its SOA, is set per apply).
	b := &builder{cfg: cfg, zone: zone, names: map[string]*bentry{}}
	b.get("svc." + zone)
	b.get("pod." + zone)
	b.get("dns-version." + zone).txt = []mdns.RR{&mdns.TXT{Hdr: hdr("dns-version."+zone, mdns.TypeTXT, 28800), Txt: []string{DNSSchemaVersion}}}
	maps.Copy(st.names, b.packEntries())
	return st
}

// serviceFragment builds one Service's names into names and returns its
// fragment.
func serviceFragment(cfg RecordConfig, zone string, in serviceInput, names map[string]*entry) *fragment {
	b := &builder{cfg: cfg, zone: zone, names: map[string]*bentry{}}
	b.addService(in.svc, in.slices)
	return &fragment{ns: strings.ToLower(in.svc.ns), names: b.packInto(names), ptrs: slices.Clip(b.ptrs)}
}

func podFragment(cfg RecordConfig, zone string, p *podObj, names map[string]*entry) *fragment {
	b := &builder{cfg: cfg, zone: zone, names: map[string]*bentry{}}
	b.addPod(p)
	return &fragment{names: b.packInto(names)}
}

// apply publishes a new index with the changed Services and Pods (nil:
// deleted) replaced.
func (st *indexState) apply(svcs map[string]serviceInput, pods map[string]*podObj, serial uint32) *index {
	names := maps.Clone(st.names)
	touched := map[string]bool{}
	nsTouched := map[string]bool{}
	for key, in := range svcs {
		if old := st.frags[key]; old != nil {
			for _, k := range old.names {
				delete(names, k)
			}
			for _, p := range old.ptrs {
				st.ptrOwners[p.rev] = slices.DeleteFunc(st.ptrOwners[p.rev], func(o ptrOwner) bool { return o.key == key })
				touched[p.rev] = true
			}
			st.nsCount[old.ns]--
			nsTouched[old.ns] = true
			delete(st.frags, key)
		}
		if in.svc == nil {
			continue
		}
		f := serviceFragment(st.cfg, st.zone, in, names)
		for _, p := range f.ptrs {
			st.ptrOwners[p.rev] = append(st.ptrOwners[p.rev], ptrOwner{key: key, target: p.target, clusterIP: p.clusterIP})
			touched[p.rev] = true
		}
		st.nsCount[f.ns]++
		nsTouched[f.ns] = true
		st.frags[key] = f
	}
	for key, p := range pods {
		if old := st.podFrags[key]; old != nil {
			for _, k := range old.names {
				delete(names, k)
			}
			delete(st.podFrags, key)
		}
		if p != nil {
			st.podFrags[key] = podFragment(st.cfg, st.zone, p, names)
		}
	}
	// A namespace with at least one Service exists (NODATA).
	for ns := range nsTouched {
		k := string(wireName(ns + ".svc." + st.zone))
		if st.nsCount[ns] > 0 {
			if names[k] == nil {
				names[k] = &entry{}
			}
		} else {
			delete(st.nsCount, ns)
			delete(names, k)
		}
	}
	// Reverse names: a ClusterIP owner wins; otherwise one PTR per
	// (endpoint, Service), as CoreDNS answers.
	for rev := range touched {
		k := string(wireName(rev))
		owners := st.ptrOwners[rev]
		if len(owners) == 0 {
			delete(st.ptrOwners, rev)
			delete(names, k)
			continue
		}
		var recs []ptrRec
		cluster := false
		for _, p := range owners {
			cluster = cluster || p.clusterIP
			recs = append(recs, ptrRec{rev: rev, target: p.target, clusterIP: p.clusterIP})
		}
		sort.Slice(recs, func(i, j int) bool { return recs[i].target < recs[j].target })
		var rrs []mdns.RR
		for _, p := range recs {
			if cluster && !p.clusterIP {
				continue
			}
			rrs = append(rrs, &mdns.PTR{Hdr: hdr(rev, mdns.TypePTR, st.cfg.TTL), Ptr: p.target})
		}
		names[k] = &entry{ptr: packAnswer(rev, mdns.RcodeSuccess, rrs, nil, nil)}
	}

	x := &index{cfg: st.cfg, zone: st.zone, zoneWire: st.zoneWire, names: names}
	soaTTL := min(st.cfg.TTL, 300)
	x.soa = &mdns.SOA{Hdr: hdr(st.zone, mdns.TypeSOA, soaTTL), Ns: "ns.dns." + st.zone, Mbox: "hostmaster." + st.zone,
		Serial: serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: st.cfg.TTL}
	x.nxdomain = packAnswer("", mdns.RcodeNameError, nil, []mdns.RR{x.soa}, nil)
	x.nodata = packAnswer("", mdns.RcodeSuccess, nil, []mdns.RR{x.soa}, nil)
	names[string(st.zoneWire)] = &entry{more: &entryMore{
		soa: packAnswer(st.zone, mdns.RcodeSuccess, []mdns.RR{x.soa}, nil, nil),
		ns:  packAnswer(st.zone, mdns.RcodeSuccess, []mdns.RR{&mdns.NS{Hdr: hdr(st.zone, mdns.TypeNS, st.cfg.TTL), Ns: "ns.dns." + st.zone}}, nil, nil),
	}}
	st.names = names
	return x
}
