package dns

import (
	"encoding/binary"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Cache TTL bounds, as CoreDNS's cache plugin defaults.
const (
	maxPositiveTTL = 3600
	maxNegativeTTL = 1800
	cacheShards    = 64
)

// cache holds forwarded answers (positive and negative) as packed wire
// messages without OPT, so a hit is a copy plus in-place TTL and id
// patches. Only names outside the cluster zone are cached: cluster names
// are answered from the index, so a new Service is never hidden behind a
// stale negative entry.
type cache struct {
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex // guards m
	m  map[string]*cacheEntry
}

type cacheEntry struct {
	wire    []byte // id 0, lower-case question, no OPT
	ttlOffs []int
	ttls    []uint32
	stored  time.Time
	expires time.Time
}

func newCache(size int) *cache {
	c := &cache{perShard: (size + cacheShards - 1) / cacheShards}
	for i := range c.shards {
		c.shards[i].m = map[string]*cacheEntry{}
	}
	return c
}

// cacheKey is the lower-case wire name, the type and the DO bit.
func cacheKey(buf []byte, name []byte, qtype uint16, do bool) []byte {
	b := append(buf[:0], name...)
	b = binary.BigEndian.AppendUint16(b, qtype)
	if do {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return b
}

func shardOf(key []byte) int {
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % cacheShards)
}

func (c *cache) get(key []byte, now time.Time) *cacheEntry {
	sh := &c.shards[shardOf(key)]
	sh.mu.RLock()
	e := sh.m[string(key)]
	sh.mu.RUnlock()
	if e == nil || !now.Before(e.expires) {
		return nil
	}
	return e
}

// writeHit writes a cached answer for q into out, or returns nil.
func (c *cache) writeHit(out, req []byte, q *query, tcp bool) []byte {
	var kb [260]byte
	now := time.Now()
	e := c.get(cacheKey(kb[:0], q.keyBytes(), q.qtype, q.do), now)
	if e == nil {
		return nil
	}
	n := len(e.wire)
	if q.edns {
		n += 11
	}
	if n > q.maxSize(tcp) || n > len(out) {
		return nil
	}
	out = out[:n]
	copy(out, e.wire)
	binary.BigEndian.PutUint16(out, q.id)
	out[2] = out[2]&^0x01 | byte(q.flags>>8)&0x01 // RD from the request
	copy(out[12:q.qend], req[12:q.qend])          // the client's spelling
	age := uint32(now.Sub(e.stored) / time.Second)
	for i, off := range e.ttlOffs {
		t := uint32(0)
		if e.ttls[i] > age {
			t = e.ttls[i] - age
		}
		binary.BigEndian.PutUint32(out[off:], t)
	}
	if q.edns {
		ar := binary.BigEndian.Uint16(out[10:])
		binary.BigEndian.PutUint16(out[10:], ar+1)
		putOPT(out[len(e.wire):], q.do, 0)
	}
	return out
}

// getMsg returns a cached answer unpacked with aged TTLs, or nil.
func (c *cache) getMsg(name []byte, qtype uint16, do bool) *mdns.Msg {
	var kb [260]byte
	now := time.Now()
	e := c.get(cacheKey(kb[:0], name, qtype, do), now)
	if e == nil {
		return nil
	}
	m := new(mdns.Msg)
	if err := m.Unpack(e.wire); err != nil {
		return nil
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Ttl > age {
				h.Ttl -= age
			} else {
				h.Ttl = 0
			}
		}
	}
	return m
}

// put stores an upstream response for (name, qtype, do) if it is cacheable.
func (c *cache) put(name []byte, qtype uint16, do bool, r *mdns.Msg) {
	ttl, ok := cacheTTL(r)
	if !ok || ttl == 0 {
		return
	}
	m := r.Copy()
	m.Id = 0
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		return
	}
	offs, ok := ttlOffsets(wire)
	if !ok {
		return
	}
	ttls := make([]uint32, len(offs))
	for i, off := range offs {
		ttls[i] = binary.BigEndian.Uint32(wire[off:])
	}
	now := time.Now()
	e := &cacheEntry{wire: wire, ttlOffs: offs, ttls: ttls, stored: now, expires: now.Add(time.Duration(ttl) * time.Second)}
	key := cacheKey(nil, name, qtype, do)
	sh := &c.shards[shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, exists := sh.m[string(key)]; !exists && len(sh.m) >= c.perShard {
		// Evict expired entries first, else one arbitrary entry (map order
		// is random).
		for k, old := range sh.m {
			if !now.Before(old.expires) {
				delete(sh.m, k)
			}
		}
		for k := range sh.m {
			if len(sh.m) < c.perShard {
				break
			}
			delete(sh.m, k)
		}
	}
	sh.m[string(key)] = e
}

// len is the number of entries (tests and metrics).
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.RLock()
		n += len(c.shards[i].m)
		c.shards[i].mu.RUnlock()
	}
	return n
}

// cacheTTL is how long r may be cached: the smallest answer TTL for a
// positive answer, the SOA's min(TTL, MINIMUM) for NXDOMAIN/NODATA.
// SERVFAIL, REFUSED and truncated answers are not cached.
func cacheTTL(r *mdns.Msg) (uint32, bool) {
	if r.Truncated {
		return 0, false
	}
	switch r.Rcode {
	case mdns.RcodeSuccess:
		if len(r.Answer) > 0 {
			ttl := uint32(maxPositiveTTL)
			for _, rr := range r.Answer {
				ttl = min(ttl, rr.Header().Ttl)
			}
			return ttl, true
		}
	case mdns.RcodeNameError:
	default:
		return 0, false
	}
	for _, rr := range r.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl, maxNegativeTTL), true
		}
	}
	return 0, false
}
