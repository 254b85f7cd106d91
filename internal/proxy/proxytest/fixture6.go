package proxytest

import (
	"net/netip"
	"strings"

	"github.com/svcnet/svcnet/internal/proxy"
)

// The IPv6 variant of the table: every IPv4 address a.b.c.d of the fixture
// becomes fd00::a.b.c.d (the 32 bits appended to fd00::/96), and a /n
// prefix becomes a /(96+n), so containment and every expectation carry
// over unchanged.

var v6Base = netip.MustParseAddr("fd00::")

// IPv6Addr maps an IPv4 address of the fixture into fd00::/96.
func IPv6Addr(a netip.Addr) netip.Addr {
	if !a.Is4() {
		return a
	}
	b := v6Base.As16()
	v4 := a.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

// IPv6Prefix maps an IPv4 prefix of the fixture into fd00::/96.
func IPv6Prefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4() {
		return p
	}
	return netip.PrefixFrom(IPv6Addr(p.Addr()), 96+p.Bits())
}

// ipv6AddrPort maps the address of an ip:port.
func ipv6AddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(IPv6Addr(ap.Addr()), ap.Port())
}

// NodeIPsIPv6 returns this node's addresses in the IPv6 variant.
func NodeIPsIPv6() []netip.Addr { return []netip.Addr{IPv6Addr(netip.MustParseAddr(NodeIP))} }

// StandardStateIPv6 is StandardState with every address mapped by IPv6Addr.
func StandardStateIPv6() *proxy.State {
	st := StandardState()
	for i, a := range st.NodeIPs {
		st.NodeIPs[i] = IPv6Addr(a)
	}
	for _, sp := range st.Services {
		for _, list := range [][]netip.Addr{sp.ClusterIPs, sp.ExternalIPs, sp.LoadBalancerIPs} {
			for i, a := range list {
				list[i] = IPv6Addr(a)
			}
		}
		for i, p := range sp.LoadBalancerSourceRanges {
			sp.LoadBalancerSourceRanges[i] = IPv6Prefix(p)
		}
	}
	for _, eps := range st.Endpoints {
		for i := range eps {
			eps[i].IP = IPv6Addr(eps[i].IP)
		}
	}
	return st
}

// StandardCasesIPv6 is StandardCases with every address mapped by IPv6Addr.
func StandardCasesIPv6() []Case {
	cases := StandardCases()
	m := func(s string) string { return IPv6Addr(netip.MustParseAddr(s)).String() }
	for i := range cases {
		c := &cases[i]
		c.Src, c.Dst = m(c.Src), m(c.Dst)
		if c.After != "" {
			c.After = ipv6AddrPort(netip.MustParseAddrPort(c.After)).String()
		}
		if rest, ok := strings.CutPrefix(c.Want, "DNAT "); ok {
			var eps []string
			for _, s := range strings.Split(rest, ",") {
				eps = append(eps, ipv6AddrPort(netip.MustParseAddrPort(s)).String())
			}
			c.Want = "DNAT " + strings.Join(eps, ",")
		}
	}
	return cases
}
