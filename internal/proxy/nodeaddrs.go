package proxy

import (
	"net"
	"net/netip"
	"slices"
)

// LocalAddrs lists the addresses of this network namespace's interfaces:
// the default InterfaceAddrs of every backend's config.
func LocalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// NodePortAddrs returns the addresses NodePorts answer on, as every mode
// computes them: with nodePortAddresses set, the local addresses (from
// local) inside those prefixes; otherwise the node IPs (configured ones and
// the Node object's, from the State). Loopback is never included; the result
// is deduplicated and sorted. keep filters by family (nil keeps all). The
// error is local's: the node IPs are still returned with it.
func NodePortAddrs(prefixes []netip.Prefix, local func() ([]netip.Addr, error), nodeIPs, stateIPs []netip.Addr, keep func(netip.Addr) bool) ([]netip.Addr, error) {
	var cand []netip.Addr
	var err error
	if len(prefixes) > 0 {
		var addrs []netip.Addr
		addrs, err = local()
		for _, a := range addrs {
			if slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
				cand = append(cand, a)
			}
		}
	} else {
		cand = append(append(cand, nodeIPs...), stateIPs...)
	}
	var out []netip.Addr
	for _, a := range cand {
		a = a.Unmap()
		if a.IsValid() && !a.IsLoopback() && (keep == nil || keep(a)) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out, err
}
