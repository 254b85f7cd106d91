package list

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
)

// The first line ipvsadm prints (the kernel's IPVS version and connection
// table size; svcnet's kernel modes have neither, so these are the values
// every stock kernel reports).
const versionLine = "IP Virtual Server version 1.2.1 (size=4096)"

// Address families and protocol numbers, as ipvsadm compares them.
const (
	afInet  = 2
	afInet6 = 10
)

func protoNum(p v1.Protocol) int {
	switch p {
	case v1.ProtocolTCP:
		return 6
	case v1.ProtocolUDP:
		return 17
	case v1.ProtocolSCTP:
		return 132
	}
	return 255
}

func protoName(p v1.Protocol) string {
	switch p {
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		return string(p)
	}
	return "UNKNOWN"
}

func family(a netip.Addr) int {
	if a.Is4() {
		return afInet
	}
	return afInet6
}

// cmpAddr is libipvs's address comparison: the difference of the
// host-order 32-bit words, taken as a signed int. It is not a total order
// (10.96.0.1 sorts after 192.168.0.2, since their difference overflows);
// kept on purpose so the order matches real ipvsadm output.
func cmpAddr(a, b netip.Addr) int {
	if a.Is4() && b.Is4() {
		x, y := a.As4(), b.As4()
		return int(int32(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(y[:])))
	}
	x, y := a.As16(), b.As16()
	for i := 0; i < 16; i += 4 {
		if r := int32(binary.BigEndian.Uint32(x[i:]) - binary.BigEndian.Uint32(y[i:])); r != 0 {
			return int(r)
		}
	}
	return 0
}

// cmpServices is ipvs_cmp_services: fwmark (always 0 here), family,
// protocol, address, port.
func cmpServices(a, b *VirtualService) int {
	if r := family(a.Address.Addr()) - family(b.Address.Addr()); r != 0 {
		return r
	}
	if r := protoNum(a.Protocol) - protoNum(b.Protocol); r != 0 {
		return r
	}
	if r := cmpAddr(a.Address.Addr(), b.Address.Addr()); r != 0 {
		return r
	}
	return int(a.Address.Port()) - int(b.Address.Port())
}

// cmpDests is ipvs_cmp_dests: address, port.
func cmpDests(a, b RealServer) int {
	if r := cmpAddr(a.Address.Addr(), b.Address.Addr()); r != 0 {
		return r
	}
	return int(a.Address.Port()) - int(b.Address.Port())
}

// Sort puts services and real servers in ipvsadm's order. The input is
// first put in a total order, so the result is deterministic even where
// ipvsadm's comparison is not transitive.
func (t *Table) Sort() {
	slices.SortFunc(t.Services, func(a, b *VirtualService) int {
		return cmp.Or(protoNum(a.Protocol)-protoNum(b.Protocol), a.Address.Compare(b.Address))
	})
	slices.SortStableFunc(t.Services, cmpServices)
	for _, vs := range t.Services {
		slices.SortFunc(vs.RealServers, func(a, b RealServer) int { return a.Address.Compare(b.Address) })
		slices.SortStableFunc(vs.RealServers, cmpDests)
	}
}

// formatAddrPort is ipvsadm's numeric "addr:port" ("[addr]:port" for IPv6).
func formatAddrPort(ap netip.AddrPort) string {
	if ap.Addr().Is4() {
		return fmt.Sprintf("%s:%d", ap.Addr(), ap.Port())
	}
	return fmt.Sprintf("[%s]:%d", ap.Addr(), ap.Port())
}

// Render sorts t and writes it in `ipvsadm -Ln` layout.
func (t *Table) Render(w io.Writer) error {
	t.Sort()
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, versionLine)
	fmt.Fprint(bw, "Prot LocalAddress:Port Scheduler Flags\n"+
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	for _, vs := range t.Services {
		v4 := vs.Address.Addr().Is4()
		name := protoName(vs.Protocol) + "  " + formatAddrPort(vs.Address)
		if v4 && len(name) > 33 {
			name = name[:33]
		}
		fmt.Fprintf(bw, "%s %s", name, vs.Scheduler)
		if vs.Persistent > 0 {
			// IPv4 netmask 255.255.255.255 / IPv6 prefix 128: not printed.
			fmt.Fprintf(bw, " persistent %d", int64(vs.Persistent.Seconds()))
		}
		fmt.Fprintln(bw)
		for _, rs := range vs.RealServers {
			dname := formatAddrPort(rs.Address)
			if v4 && len(dname) > 28 {
				dname = dname[:28]
			}
			fmt.Fprintf(bw, "  -> %-28s %-7s %-6d %-10d %-10d\n", dname, rs.Forward, rs.Weight, rs.ActiveConn, rs.InActConn)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("list: write: %w", err)
	}
	return nil
}
