package userspace

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestDestroyTimeWait: destroyTimeWait removes exactly the TIME_WAIT
// sockets its match accepts, in both families (the SOCK_DESTROY request is
// built here, not by the netlink library, for IPv6 and the cookie). The
// sockets are made on loopback inside the test's private namespace: a
// client that closes first keeps its socket in TIME_WAIT.
func TestDestroyTimeWait(t *testing.T) {
	proxytest.RequireSandbox(t)
	if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		family uint8
		addr   string
	}{{unix.AF_INET, "127.0.0.1"}, {unix.AF_INET6, "::1"}} {
		// timeWait returns the local ports of family's TIME_WAIT sockets to port.
		timeWait := func(port int) []uint16 {
			socks, err := netlink.SocketDiagTCP(c.family)
			if err != nil {
				t.Fatal(err)
			}
			var out []uint16
			for _, s := range socks {
				if s.State == netlink.TCP_TIME_WAIT && int(s.ID.DestinationPort) == port {
					out = append(out, s.ID.SourcePort)
				}
			}
			return out
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(c.addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		for range 3 {
			cl, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			srv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			cl.Close() // the client closes first: it ends in TIME_WAIT
			time.Sleep(20 * time.Millisecond)
			srv.Close()
		}
		ln.Close()
		deadline := time.Now().Add(5 * time.Second)
		for len(timeWait(port)) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: TIME_WAIT sockets %v, want 3", c.addr, timeWait(port))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// A match that accepts nothing leaves them; one that accepts the
		// address removes them all.
		if n, err := destroyTimeWait(c.family, func(netip.Addr) bool { return false }); err != nil || n != 0 || len(timeWait(port)) != 3 {
			t.Fatalf("%s, match nothing: destroyed %d (%v), %d left", c.addr, n, err, len(timeWait(port)))
		}
		want := netip.MustParseAddr(c.addr)
		n, err := destroyTimeWait(c.family, func(a netip.Addr) bool { return a == want })
		if err != nil {
			t.Fatalf("%s: %v", c.addr, err)
		}
		if left := timeWait(port); n < 3 || len(left) != 0 {
			t.Errorf("%s: destroyed %d, left %v; want all 3 gone", c.addr, n, left)
		}
	}
}
