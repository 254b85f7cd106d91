package agnhost

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// requireSCTP skips unless the sctp module is already loaded: opening an
// SCTP socket would load it, changing the host for every other test.
func requireSCTP(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/net/sctp"); err != nil {
		t.Skip("kernel sctp module not loaded; not loading it from a test")
	}
}

func TestNetexecSCTP(t *testing.T) {
	requireSCTP(t)
	host := mustHostname(t)
	n := startNetexec(t, func(c *NetexecConfig) { c.UDPPort, c.SCTPPort = -1, 0 })
	sctpAddr := n.SCTPAddr().String()
	t.Run("connect", func(t *testing.T) {
		if err := Connect(context.Background(), ConnectOptions{Address: sctpAddr, Protocol: "sctp", Timeout: 30 * time.Second}); err != nil {
			t.Fatalf("connect sctp: %v", err)
		}
	})
	t.Run("dial", func(t *testing.T) {
		port := strconv.Itoa(n.SCTPAddr().(*net.TCPAddr).Port)
		code, body := get(t, "http://"+n.HTTPAddr().String()+"/dial?protocol=sctp&request=hostname&host=127.0.0.1&port="+port)
		var res DialResult
		if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || len(res.Responses) != 1 || res.Responses[0] != host {
			t.Fatalf("dial sctp: %d %s", code, body)
		}
	})
	t.Run("healthz", func(t *testing.T) {
		if code, _ := get(t, "http://"+n.HTTPAddr().String()+"/healthz"); code != 200 {
			t.Errorf("healthz with only SCTP: %d", code)
		}
	})
	t.Run("refused", func(t *testing.T) {
		err := Connect(context.Background(), ConnectOptions{Address: "127.0.0.1:" + freePort(t), Protocol: "sctp", Timeout: 30 * time.Second})
		if ConnectReason(err) != ConnectOther {
			t.Errorf("closed SCTP port: %v, want OTHER as upstream", err)
		}
	})
}

func TestPorterSCTP(t *testing.T) {
	requireSCTP(t)
	p, err := StartPorter(context.Background(), PorterConfig{Env: []string{"SERVE_SCTP_PORT_0=sctp-value"}, ListenAddress: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := dialSCTP(context.Background(), p.Addr("SERVE_SCTP_PORT_0").String(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil || string(buf[:k]) != "sctp-value" {
		t.Errorf("read %q, %v", buf[:k], err)
	}
}
