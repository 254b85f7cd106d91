package ipvs

import (
	"fmt"
	"net/netip"
	"time"

	libipvs "github.com/moby/ipvs"
	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy/list"
)

// ListTable reads every virtual server and its real servers from h into a
// list.Table (Mode "ipvs"), whose Render prints what `ipvsadm -Ln` prints
// for the same kernel state. `svcnet proxy list` on an ipvs node can show
// the kernel's own view with it; the tests compare it with list.FromState.
func ListTable(h Handle) (*list.Table, error) {
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("ipvs: list virtual servers: %w", err)
	}
	t := &list.Table{Mode: list.ModeIPVS}
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		k := keyOf(s)
		vs := &list.VirtualService{
			Protocol:  protocolOf(k.proto),
			Address:   netip.AddrPortFrom(k.addr, k.port),
			Scheduler: s.SchedName,
		}
		if s.Flags&flagPersistent != 0 {
			vs.Persistent = time.Duration(s.Timeout) * time.Second
		}
		ds, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("ipvs: list real servers of %s: %w", k, err)
		}
		for _, d := range ds {
			vs.RealServers = append(vs.RealServers, list.RealServer{
				Address: destKey(d), Forward: forwardName(d.ConnectionFlags), Weight: d.Weight,
				ActiveConn: d.ActiveConnections, InActConn: d.InactiveConnections,
			})
		}
		t.Services = append(t.Services, vs)
	}
	return t, nil
}

func protocolOf(p uint16) v1.Protocol {
	switch p {
	case protoTCP:
		return v1.ProtocolTCP
	case protoUDP:
		return v1.ProtocolUDP
	case protoSCTP:
		return v1.ProtocolSCTP
	}
	return v1.Protocol(protoName(p))
}

// forwardName is ipvsadm's name of a forwarding method.
func forwardName(flags uint32) string {
	switch flags & libipvs.ConnectionFlagFwdMask {
	case libipvs.ConnectionFlagMasq:
		return list.ForwardMasq
	case libipvs.ConnectionFlagLocalNode:
		return "Local"
	case libipvs.ConnectionFlagTunnel:
		return "Tunnel"
	case libipvs.ConnectionFlagDirectRoute:
		return "Route"
	}
	return "Unknown"
}
