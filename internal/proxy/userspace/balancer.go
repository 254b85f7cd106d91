package userspace

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Algorithm is a load-balancing algorithm: how a listener orders the
// endpoints of its service for a new connection.
type Algorithm string

// The algorithms (values of Config.Algorithm and of the Service annotation
// svcnet.io/lb-algorithm).
const (
	// RoundRobin takes the endpoints in turn (the default).
	RoundRobin Algorithm = "round-robin"
	// LeastConnections takes the endpoint with the fewest active
	// connections (UDP sessions count as connections); ties in turn.
	LeastConnections Algorithm = "least-connections"
	// Random takes a uniformly random endpoint.
	Random Algorithm = "random"
	// SourceHash keeps a client IP on one endpoint with rendezvous
	// (highest-random-weight) hashing, a consistent hash: adding an
	// endpoint to N moves only the clients the newcomer wins (1/(N+1) of
	// them on average), removing one moves only that endpoint's clients.
	SourceHash Algorithm = "source-hash"
)

// ParseAlgorithm parses an algorithm name. It accepts the names above and
// the ipvs-style short forms rr, lc, random, sh; "" is RoundRobin.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "round-robin", "roundrobin", "rr":
		return RoundRobin, nil
	case "least-connections", "leastconnections", "least-conn", "lc":
		return LeastConnections, nil
	case "random":
		return Random, nil
	case "source-hash", "sourcehash", "sh", "consistent-hash":
		return SourceHash, nil
	}
	return "", fmt.Errorf("unknown load-balancing algorithm %q (want round-robin, least-connections, random or source-hash)", s)
}

// endpoint is the runtime record of one backend of one listener. It lives
// as long as the endpoint stays in the service, so connection counts and
// ejection survive syncs.
type endpoint struct {
	addr netip.AddrPort
	// active counts open TCP connections / UDP sessions.
	active atomic.Int64
	// failures counts consecutive connect failures; ejectedUntil (unix
	// nanoseconds) is when a failing endpoint is tried again.
	failures     atomic.Int32
	ejectedUntil atomic.Int64
}

func newEndpoint(addr netip.AddrPort) *endpoint { return &endpoint{addr: addr} }

// ejected reports whether ep is in its back-off period at now.
func (ep *endpoint) ejected(now time.Time) bool {
	return now.UnixNano() < ep.ejectedUntil.Load()
}

// fail records a connect failure and ejects ep for base·2^(failures-1),
// at most max.
func (ep *endpoint) fail(now time.Time, base, max time.Duration) {
	n := ep.failures.Add(1)
	d := base
	for i := int32(1); i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	ep.ejectedUntil.Store(now.Add(d).UnixNano())
}

// succeed clears ep's failure record.
func (ep *endpoint) succeed() {
	if ep.failures.Load() != 0 {
		ep.failures.Store(0)
		ep.ejectedUntil.Store(0)
	}
}

// balancer orders a listener's endpoints for one new connection from
// client: the first is the choice, the rest the retry order.
type balancer interface {
	order(client netip.Addr, eps []*endpoint) []*endpoint
}

func newBalancer(a Algorithm) balancer {
	switch a {
	case LeastConnections:
		return &leastConn{}
	case Random:
		return randomBalancer{}
	case SourceHash:
		return sourceHash{}
	}
	return &roundRobin{}
}

type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) order(_ netip.Addr, eps []*endpoint) []*endpoint {
	return rotate(eps, r.next.Add(1)-1)
}

// rotate returns eps starting at index start mod len(eps).
func rotate(eps []*endpoint, start uint64) []*endpoint {
	out := make([]*endpoint, 0, len(eps))
	if len(eps) == 0 {
		return out
	}
	i := int(start % uint64(len(eps)))
	out = append(out, eps[i:]...)
	return append(out, eps[:i]...)
}

// leastConn orders by active connections; equal counts rotate so idle
// endpoints share the load.
type leastConn struct{ next atomic.Uint64 }

func (l *leastConn) order(_ netip.Addr, eps []*endpoint) []*endpoint {
	out := rotate(eps, l.next.Add(1)-1)
	active := make(map[*endpoint]int64, len(out))
	for _, ep := range out {
		active[ep] = ep.active.Load() // one snapshot: the sort needs a stable key
	}
	slices.SortStableFunc(out, func(a, b *endpoint) int {
		switch x, y := active[a], active[b]; {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return out
}

type randomBalancer struct{}

func (randomBalancer) order(_ netip.Addr, eps []*endpoint) []*endpoint {
	out := slices.Clone(eps)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// sourceHash is rendezvous hashing: every (client, endpoint) pair gets a
// pseudo-random weight; endpoints are tried by decreasing weight. A
// client's first choice changes only when its winner leaves or a newcomer
// outweighs it.
type sourceHash struct{}

func (sourceHash) order(client netip.Addr, eps []*endpoint) []*endpoint {
	out := slices.Clone(eps)
	w := make(map[*endpoint]uint64, len(out))
	for _, ep := range out {
		w[ep] = hrwWeight(client, ep.addr)
	}
	slices.SortFunc(out, func(a, b *endpoint) int {
		switch x, y := w[a], w[b]; {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return a.addr.Compare(b.addr)
	})
	return out
}

// hrwWeight hashes client and endpoint together (FNV-1a, then the
// splitmix64 finalizer for avalanche), stable across processes and nodes.
func hrwWeight(client netip.Addr, ep netip.AddrPort) uint64 {
	h := fnv.New64a()
	c := client.Unmap().As16()
	e := ep.Addr().Unmap().As16()
	h.Write(c[:])
	h.Write(e[:])
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], ep.Port())
	h.Write(p[:])
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
