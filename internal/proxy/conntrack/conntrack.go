// Package conntrack deletes stale UDP conntrack entries after service
// endpoints change.
//
// UDP has no connection teardown: a client that keeps sending to a service
// VIP keeps hitting the conntrack entry created by its first packet, which
// still points at the old (possibly deleted) endpoint, or at nothing at all
// when the first packet arrived while the service had no endpoints. Deleting
// those entries makes the next packet walk the service rules again. The
// netlink implementation uses github.com/vishvananda/netlink; Fake records
// calls for tests.
package conntrack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Stale describes the UDP flows of one service port that may be stale.
type Stale struct {
	// Frontends are the VIP:port pairs clients use (ClusterIPs, ExternalIPs,
	// LoadBalancer IPs).
	Frontends []netip.AddrPort
	// NodePort, when not 0, also matches flows to any address on this
	// destination port.
	NodePort uint16
	// Keep are the endpoints still in use: flows DNATed to one of them are
	// left alone. Every other flow to a frontend is deleted (including flows
	// that were never DNATed, e.g. created while the service had no
	// endpoints).
	Keep map[netip.AddrPort]bool
}

// Matches reports whether a UDP flow with original destination dst and
// reply source replySrc is stale according to s.
func (s *Stale) Matches(dst, replySrc netip.AddrPort) bool {
	hit := s.NodePort != 0 && dst.Port() == s.NodePort
	if !hit {
		for _, f := range s.Frontends {
			if f == dst {
				hit = true
				break
			}
		}
	}
	if !hit {
		return false
	}
	return !s.Keep[replySrc]
}

// Interface deletes stale UDP conntrack entries.
type Interface interface {
	// ClearStaleUDP deletes every UDP flow matched by any of stale and
	// returns how many it deleted.
	ClearStaleUDP(ctx context.Context, ipv6 bool, stale []Stale) (int, error)
}

// Netlink is the real implementation over the kernel conntrack table.
type Netlink struct{}

var _ Interface = Netlink{}

type filter struct{ stale []Stale }

func toAddrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

func (f filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != syscall.IPPROTO_UDP {
		return false
	}
	dst := toAddrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	rsrc := toAddrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	for i := range f.stale {
		if f.stale[i].Matches(dst, rsrc) {
			return true
		}
	}
	return false
}

// ClearStaleUDP implements Interface.
func (Netlink) ClearStaleUDP(_ context.Context, ipv6 bool, stale []Stale) (int, error) {
	if len(stale) == 0 {
		return 0, nil
	}
	fam := netlink.InetFamily(syscall.AF_INET)
	if ipv6 {
		fam = netlink.InetFamily(syscall.AF_INET6)
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filter{stale: stale})
	if err != nil {
		return int(n), fmt.Errorf("conntrack: delete stale UDP flows: %w", err)
	}
	return int(n), nil
}

// Fake records the Stale sets it is asked to clear.
type Fake struct {
	mu    sync.Mutex // guards Calls
	Calls [][]Stale
}

var _ Interface = (*Fake)(nil)

// ClearStaleUDP implements Interface.
func (f *Fake) ClearStaleUDP(_ context.Context, _ bool, stale []Stale) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, stale)
	return 0, nil
}
