// Package ports hands tests loopback TCP ports to listen on.
//
// The usual trick — listen on port 0, note the port, close — returns a port
// from the kernel's ephemeral range, the range every outgoing connection on
// the machine takes its source port from. Between the close and the
// server's own bind, any connection (another test package running in
// parallel, a client of this one) may take it: "bind: address already in
// use", seen in CI. Free picks ports below the ephemeral range instead,
// which outgoing connections never use; a port another listener holds
// fails the bind check and the next candidate is tried.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// lowest is the bottom of the range Free picks from.
const lowest = 10000

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports handed out by this process
)

// Free returns a loopback TCP port that is free now and outside the
// ephemeral range; it is not handed out twice by one test process.
func Free(t testing.TB) int {
	t.Helper()
	top := ephemeralStart() - 1
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(top-lowest+1)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		handed[p] = true
		return p
	}
	t.Fatalf("ports: no free port in %d-%d after 200 tries", lowest, top)
	return 0
}

// ephemeralStart is the first port of net.ipv4.ip_local_port_range
// (32768 when it cannot be read, the kernel's default).
func ephemeralStart() int {
	start := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > lowest+1000 {
			start = lo
		}
	}
	return start
}
