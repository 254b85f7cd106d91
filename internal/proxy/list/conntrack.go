package list

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
)

// Flow is one conntrack entry, reduced to what the counts need.
type Flow struct {
	Protocol v1.Protocol
	// OrigDst is the destination the client used (original direction).
	OrigDst netip.AddrPort
	// ReplySrc is the source of the reply direction: the DNAT target.
	ReplySrc netip.AddrPort
	// Active is IPVS's notion: a TCP connection in state ESTABLISHED.
	Active bool
}

// FlowLister lists the node's conntrack flows.
type FlowLister interface {
	Flows(ctx context.Context) ([]Flow, error)
}

// Flows is a fixed list of flows: the FlowLister of tests.
type Flows []Flow

var _ FlowLister = Flows(nil)

// Flows implements FlowLister.
func (f Flows) Flows(context.Context) ([]Flow, error) { return f, nil }

// Netlink lists the kernel conntrack table (both families) of the
// calling thread's network namespace.
type Netlink struct{}

var _ FlowLister = Netlink{}

// tcpEstablished is TCP_CONNTRACK_ESTABLISHED.
const tcpEstablished = 3

// Flows implements FlowLister.
func (Netlink) Flows(_ context.Context) ([]Flow, error) {
	var out []Flow
	for _, fam := range []netlink.InetFamily{syscall.AF_INET, syscall.AF_INET6} {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return nil, fmt.Errorf("list: conntrack table: %w", err)
		}
		for _, f := range flows {
			var proto v1.Protocol
			switch f.Forward.Protocol {
			case syscall.IPPROTO_TCP:
				proto = v1.ProtocolTCP
			case syscall.IPPROTO_UDP:
				proto = v1.ProtocolUDP
			case syscall.IPPROTO_SCTP:
				proto = v1.ProtocolSCTP
			default:
				continue
			}
			fl := Flow{
				Protocol: proto,
				OrigDst:  addrPort(f.Forward.DstIP, f.Forward.DstPort),
				ReplySrc: addrPort(f.Reverse.SrcIP, f.Reverse.SrcPort),
			}
			if tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && proto == v1.ProtocolTCP {
				fl.Active = tcp.State == tcpEstablished
			}
			out = append(out, fl)
		}
	}
	return out, nil
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// CountsSupported reports whether conntrack attributes a mode's flows to
// endpoints: in userspace mode the client's flow ends at the proxy's
// listener and the proxy opens a separate flow to the endpoint.
func CountsSupported(mode string) bool { return mode != ModeUserspace }

// CountConnections lists the flows with l and counts them with
// AddConnections.
func (t *Table) CountConnections(ctx context.Context, l FlowLister) error {
	flows, err := l.Flows(ctx)
	if err != nil {
		return err
	}
	t.AddConnections(flows)
	return nil
}

// AddConnections counts flows into the real servers' ActiveConn and
// InActConn (see the package doc). Flows that were not translated (reply
// source = original destination) are ignored; a translated flow whose
// target is not a real server adds that target with weight 0.
func (t *Table) AddConnections(flows []Flow) {
	idx := make(map[vsKey]*VirtualService, len(t.Services))
	for _, vs := range t.Services {
		idx[vsKey{vs.Protocol, vs.Address}] = vs
	}
	for _, f := range flows {
		vs := idx[vsKey{f.Protocol, f.OrigDst}]
		if vs == nil || f.ReplySrc == f.OrigDst || !f.ReplySrc.IsValid() {
			continue
		}
		i := -1
		for j := range vs.RealServers {
			if vs.RealServers[j].Address == f.ReplySrc {
				i = j
				break
			}
		}
		if i < 0 {
			vs.RealServers = append(vs.RealServers, RealServer{Address: f.ReplySrc, Forward: ForwardMasq, Weight: 0})
			i = len(vs.RealServers) - 1
		}
		if f.Active {
			vs.RealServers[i].ActiveConn++
		} else {
			vs.RealServers[i].InActConn++
		}
	}
}
