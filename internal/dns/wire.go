package dns

import (
	"encoding/binary"

	mdns "github.com/miekg/dns"
)

// query is what the fast path reads from a request without unpacking it.
type query struct {
	id       uint16
	flags    uint16 // request flags (RD, CD are echoed)
	qend     int    // end of the question in the request
	nameEnd  int    // end of the question name
	key      [256]byte
	keyLen   int
	labels   [128]uint8 // start offset of each label in key
	nlabels  int
	qtype    uint16
	qclass   uint16
	edns     bool
	udpSize  uint16
	do       bool
	ednsVers uint8
}

// parse reads a request. ok=false means the fast path cannot answer it
// (the slow path decides: FORMERR, NOTIMP, drop or a full unpack).
func (q *query) parse(req []byte) bool {
	if len(req) < 12 {
		return false
	}
	q.id = binary.BigEndian.Uint16(req)
	q.flags = binary.BigEndian.Uint16(req[2:])
	if q.flags&0x8000 != 0 || (q.flags>>11)&0xF != mdns.OpcodeQuery {
		return false
	}
	qd := binary.BigEndian.Uint16(req[4:])
	an := binary.BigEndian.Uint16(req[6:])
	ns := binary.BigEndian.Uint16(req[8:])
	ar := binary.BigEndian.Uint16(req[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return false
	}
	off := 12
	q.keyLen, q.nlabels = 0, 0
	for {
		if off >= len(req) {
			return false
		}
		l := int(req[off])
		if l == 0 {
			q.key[q.keyLen] = 0
			q.keyLen++
			off++
			break
		}
		if l > 63 || off+1+l > len(req) || q.keyLen+1+l+1 > 255 || q.nlabels >= len(q.labels) {
			return false // pointers, extended labels, oversize: slow path
		}
		q.labels[q.nlabels] = uint8(q.keyLen)
		q.nlabels++
		q.key[q.keyLen] = byte(l)
		for i := 0; i < l; i++ {
			c := req[off+1+i]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			q.key[q.keyLen+1+i] = c
		}
		q.keyLen += 1 + l
		off += 1 + l
	}
	q.nameEnd = off
	if off+4 > len(req) {
		return false
	}
	q.qtype = binary.BigEndian.Uint16(req[off:])
	q.qclass = binary.BigEndian.Uint16(req[off+2:])
	off += 4
	q.qend = off
	q.edns, q.do, q.udpSize, q.ednsVers = false, false, 0, 0
	if ar == 1 {
		// Only an OPT RR with the root owner is accepted here.
		if off+11 > len(req) || req[off] != 0 || binary.BigEndian.Uint16(req[off+1:]) != mdns.TypeOPT {
			return false
		}
		q.edns = true
		q.udpSize = binary.BigEndian.Uint16(req[off+3:])
		q.ednsVers = req[off+6]
		q.do = req[off+7]&0x80 != 0
		rdlen := int(binary.BigEndian.Uint16(req[off+9:]))
		off += 11 + rdlen
		if off > len(req) {
			return false
		}
	}
	if off != len(req) || q.qclass != mdns.ClassINET || q.ednsVers != 0 {
		return false
	}
	switch q.qtype {
	case mdns.TypeAXFR, mdns.TypeIXFR, mdns.TypeOPT, 0:
		return false
	}
	return true
}

// keyBytes is the lower-case wire name.
func (q *query) keyBytes() []byte { return q.key[:q.keyLen] }

// inZone reports whether the name is zoneWire or below it, and returns how
// many labels precede the zone.
func (q *query) inZone(zoneWire []byte) (int, bool) {
	zl := len(zoneWire)
	if q.keyLen < zl {
		return 0, false
	}
	start := q.keyLen - zl
	if start == 0 {
		return 0, string(q.key[:q.keyLen]) == string(zoneWire)
	}
	for i := 0; i < q.nlabels; i++ {
		if int(q.labels[i]) == start {
			return i, string(q.key[start:q.keyLen]) == string(zoneWire)
		}
	}
	return 0, false
}

// label returns label i (lower case, without its length byte).
func (q *query) label(i int) []byte {
	s := int(q.labels[i])
	return q.key[s+1 : s+1+int(q.key[s])]
}

// maxSize is the largest response the client takes over UDP.
func (q *query) maxSize(tcp bool) int {
	if tcp {
		return 65535
	}
	if !q.edns || q.udpSize < 512 {
		return 512
	}
	return int(q.udpSize)
}

// ourUDPSize is the EDNS0 buffer size we advertise (the DNS flag day 2020
// value, safe against fragmentation).
const ourUDPSize = 1232

// writeAnswer writes the response for a precomputed answer into out and
// returns it, or nil if it does not fit (the slow path then truncates).
func writeAnswer(out []byte, req []byte, q *query, a *answer, tcp bool) []byte {
	qlen := q.qend - 12
	n := 12 + qlen + len(a.wire)
	if q.edns {
		n += 11
	}
	if n > q.maxSize(tcp) || n > len(out) {
		return nil
	}
	out = out[:n]
	binary.BigEndian.PutUint16(out, q.id)
	// QR, AA, RA; RD and CD copied from the request.
	flags := uint16(0x8000|0x0400|0x0080) | q.flags&(0x0100|0x0010) | uint16(a.rcode&0xF)
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], a.an)
	binary.BigEndian.PutUint16(out[8:], a.ns)
	ar := a.ex
	if q.edns {
		ar++
	}
	binary.BigEndian.PutUint16(out[10:], ar)
	copy(out[12:], req[12:q.qend])
	p := 12 + qlen
	p += copy(out[p:], a.wire)
	if q.edns {
		putOPT(out[p:], q.do, 0)
	}
	return out
}

// putOPT writes an 11-byte OPT RR.
func putOPT(b []byte, do bool, extRcode uint8) {
	b[0] = 0
	binary.BigEndian.PutUint16(b[1:], mdns.TypeOPT)
	binary.BigEndian.PutUint16(b[3:], ourUDPSize)
	b[5] = extRcode
	b[6] = 0
	b[7] = 0
	if do {
		b[7] = 0x80
	}
	b[8] = 0
	binary.BigEndian.PutUint16(b[9:], 0)
}

// writeRcode writes a response with no records and the given rcode.
func writeRcode(out []byte, req []byte, q *query, rcode int) []byte {
	return writeAnswer(out, req, q, &answer{rcode: uint8(rcode)}, true)
}

// ttlOffsets walks a packed message and returns the offset of the TTL of
// every RR except OPT (used by the cache to age entries in place).
func ttlOffsets(msg []byte) ([]int, bool) {
	if len(msg) < 12 {
		return nil, false
	}
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	rrs := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) + int(binary.BigEndian.Uint16(msg[10:]))
	off := 12
	skipName := func() bool {
		for {
			if off >= len(msg) {
				return false
			}
			l := int(msg[off])
			switch {
			case l == 0:
				off++
				return true
			case l&0xC0 == 0xC0:
				off += 2
				return off <= len(msg)
			case l&0xC0 != 0:
				return false
			default:
				off += 1 + l
			}
		}
	}
	for i := 0; i < qd; i++ {
		if !skipName() {
			return nil, false
		}
		off += 4
	}
	var offs []int
	for i := 0; i < rrs; i++ {
		if !skipName() || off+10 > len(msg) {
			return nil, false
		}
		t := binary.BigEndian.Uint16(msg[off:])
		if t != mdns.TypeOPT {
			offs = append(offs, off+4)
		}
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	}
	if off > len(msg) {
		return nil, false
	}
	return offs, true
}
