package conntrack

import (
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestFilterMatchesStaleUDPFlows(t *testing.T) {
	keep := netip.MustParseAddrPort("10.244.2.2:53")
	f := filter{stale: []Stale{{
		Frontends: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")},
		NodePort:  30053,
		Keep:      map[netip.AddrPort]bool{keep: true},
	}}}
	flow := func(proto uint8, dst string, dport uint16, rsrc string, rport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP("10.244.0.9"), DstIP: net.ParseIP(dst), DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(rsrc), SrcPort: rport},
		}
	}
	cases := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"to VIP, DNATed to a removed endpoint", flow(syscall.IPPROTO_UDP, "10.96.0.10", 53, "10.244.1.1", 53), true},
		{"to VIP, DNATed to a kept endpoint", flow(syscall.IPPROTO_UDP, "10.96.0.10", 53, "10.244.2.2", 53), false},
		{"to VIP, never DNATed", flow(syscall.IPPROTO_UDP, "10.96.0.10", 53, "10.96.0.10", 53), true},
		{"to a NodePort on any address", flow(syscall.IPPROTO_UDP, "192.168.0.10", 30053, "10.244.1.1", 53), true},
		{"TCP is never touched", flow(syscall.IPPROTO_TCP, "10.96.0.10", 53, "10.244.1.1", 53), false},
		{"other service", flow(syscall.IPPROTO_UDP, "10.96.0.11", 53, "10.244.1.1", 53), false},
		{"IPv4-mapped addresses are unmapped", flow(syscall.IPPROTO_UDP, "::ffff:10.96.0.10", 53, "::ffff:10.244.2.2", 53), false},
	}
	for _, tc := range cases {
		if got := f.MatchConntrackFlow(tc.flow); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
