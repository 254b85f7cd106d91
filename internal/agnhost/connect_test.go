package agnhost

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// noDNSResolver fails every DNS query without sending one: tests never
// leave loopback. /etc/hosts is still read.
func noDNSResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("DNS disabled in tests")
	}}
}

// fullBacklogListener returns the address of a loopback TCP listener
// whose accept queue is full and never drained: the kernel drops further
// SYNs, so a connection attempt times out instead of being refused. It
// skips the test if the kernel does not behave so.
func fullBacklogListener(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one queued connection
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return addr // the queue is full
			}
			t.Fatalf("filling the accept queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("kernel kept accepting into a full backlog; cannot produce a loopback timeout")
	return ""
}

func TestConnect(t *testing.T) {
	n := startNetexec(t, nil)
	closed := freePort(t)
	tests := []struct {
		name       string
		opts       ConnectOptions
		wantReason string // "" means success
		wantMsg    string // prefix of Error()
	}{
		{"tcp ok", ConnectOptions{Address: n.HTTPAddr().String()}, "", ""},
		{"tcp ok with timeout", ConnectOptions{Address: n.HTTPAddr().String(), Protocol: "tcp", Timeout: 30 * time.Second}, "", ""},
		{"tcp ok via /etc/hosts name", ConnectOptions{Address: "localhost:" + strconv.Itoa(n.HTTPAddr().(*net.TCPAddr).Port), Timeout: 30 * time.Second}, "", ""},
		{"tcp refused", ConnectOptions{Address: "127.0.0.1:" + closed, Timeout: 3 * time.Second}, ConnectRefused, "REFUSED"},
		{"udp ok", ConnectOptions{Address: n.UDPAddrs()[0].String(), Protocol: "udp", Timeout: 30 * time.Second}, "", ""},
		{"udp refused", ConnectOptions{Address: "127.0.0.1:" + closed, Protocol: "udp", Timeout: 30 * time.Second}, ConnectRefused, "REFUSED: "},
		{"udp no answer", ConnectOptions{Address: n.UDPAddrs()[0].String(), Protocol: "udp", Data: "bogus", Timeout: 200 * time.Millisecond}, ConnectTimeout, "TIMEOUT: "},
		{"dns", ConnectOptions{Address: "no-such-service.svcnet.test:80", Timeout: 3 * time.Second}, ConnectDNS, "DNS: "},
		{"bad address", ConnectOptions{Address: "127.0.0.1"}, ConnectUnknown, "UNKNOWN: "},
		{"bad protocol", ConnectOptions{Address: "127.0.0.1:80", Protocol: "icmp"}, ConnectUnknown, "UNKNOWN: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Resolver = noDNSResolver()
			err := Connect(context.Background(), tc.opts)
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				return
			}
			if got := ConnectReason(err); got != tc.wantReason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.wantReason)
			}
			if !strings.HasPrefix(err.Error(), tc.wantMsg) {
				t.Errorf("message %q, want prefix %q", err.Error(), tc.wantMsg)
			}
			if tc.wantMsg == "REFUSED" && err.Error() != "REFUSED" {
				t.Errorf("TCP refusal prints %q, upstream prints exactly REFUSED", err.Error())
			}
		})
	}
}

func TestConnectTCPTimeout(t *testing.T) {
	addr := fullBacklogListener(t)
	err := Connect(context.Background(), ConnectOptions{Address: addr, Timeout: 300 * time.Millisecond})
	if ConnectReason(err) != ConnectTimeout || err.Error() != "TIMEOUT" {
		t.Fatalf("Connect to a full backlog: %v, want TIMEOUT", err)
	}
}
