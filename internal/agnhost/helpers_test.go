package agnhost

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain doubles as the pause command when re-executed by TestPauseSignal,
// so that real signal delivery is exercised in a process of its own.
func TestMain(m *testing.M) {
	if os.Getenv("AGNHOST_TEST_PAUSE") == "1" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		os.Exit(Pause(os.Stdout, sigs, os.Getenv("TERMINATION_MESSAGE_PATH")))
	}
	os.Exit(m.Run())
}

// testLogger sends component logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startNetexec runs a netexec on loopback with free ports, stopped at the
// end of the test.
func startNetexec(t *testing.T, mutate func(*NetexecConfig)) *Netexec {
	t.Helper()
	cfg := DefaultNetexecConfig()
	cfg.HTTPPort, cfg.UDPPort, cfg.ListenAddress = 0, 0, "127.0.0.1"
	cfg.Logger = testLogger(t)
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := StartNetexec(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("StartNetexec: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		n.Wait()
	})
	return n
}

// get does one HTTP GET without connection reuse and returns status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// udpAsk sends msg to addr and returns the reply; ok is false when none
// came within a generous deadline.
func udpAsk(t *testing.T, addr, msg string, wait time.Duration) (reply string, local string, ok bool) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatalf("dial udp %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write udp: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", c.LocalAddr().String(), false
	}
	return string(buf[:n]), c.LocalAddr().String(), true
}

func mustHostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
