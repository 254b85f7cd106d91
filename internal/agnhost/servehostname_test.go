package agnhost

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

func startServeHostname(t *testing.T, mutate func(*ServeHostnameConfig)) *ServeHostname {
	t.Helper()
	cfg := DefaultServeHostnameConfig()
	cfg.Port, cfg.ListenAddress, cfg.Hostname, cfg.Logger = 0, "127.0.0.1", "pod-a", testLogger(t)
	mutate(&cfg)
	s, err := StartServeHostname(context.Background(), cfg)
	if err != nil {
		t.Fatalf("StartServeHostname: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestServeHostnameHTTP(t *testing.T) {
	tests := []struct {
		name      string
		close     bool
		wantClose bool
	}{
		{"keep-alive", false, false},
		{"--close", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServeHostname(t, func(c *ServeHostnameConfig) { c.Close = tc.close })
			if s.UDPAddr() != nil {
				t.Errorf("UDP served in HTTP mode")
			}
			for _, path := range []string{"/", "/hostname", "/any/path"} {
				resp, err := http.Get("http://" + s.TCPAddr().String() + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "pod-a" {
					t.Errorf("GET %s: %d %q", path, resp.StatusCode, body)
				}
				if resp.Close != tc.wantClose {
					t.Errorf("GET %s: Connection: close = %v, want %v", path, resp.Close, tc.wantClose)
				}
			}
		})
	}
}

func TestServeHostnameTCPAndUDP(t *testing.T) {
	s := startServeHostname(t, func(c *ServeHostnameConfig) { c.HTTP, c.TCP, c.UDP = false, true, true })
	tcpPort := s.TCPAddr().(*net.TCPAddr).Port
	if udpPort := s.UDPAddr().(*net.UDPAddr).Port; udpPort != tcpPort {
		t.Errorf("UDP port %d differs from TCP port %d", udpPort, tcpPort)
	}
	for i := 0; i < 2; i++ { // the listener keeps accepting after a connection
		c, err := net.Dial("tcp", s.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c) // the server writes the hostname and closes
		c.Close()
		if err != nil || string(got) != "pod-a" {
			t.Errorf("TCP: %q, %v", got, err)
		}
	}
	// Any datagram gets the hostname, as `echo hostName | nc -u` expects.
	for _, msg := range []string{"hostName\n", "anything at all"} {
		if got, _, ok := udpAsk(t, s.UDPAddr().String(), msg, 10*time.Second); !ok || got != "pod-a" {
			t.Errorf("UDP %q: %q, %v", msg, got, ok)
		}
	}
}

func TestServeHostnameModes(t *testing.T) {
	tests := []struct {
		name           string
		http, tcp, udp bool
		wantErr        bool
		wantTCP        bool
		wantUDP        bool
	}{
		{"http", true, false, false, false, true, false},
		{"http and tcp", true, true, false, true, false, false},
		{"http and udp", true, false, true, true, false, false},
		{"udp only", false, false, true, false, false, true},
		{"tcp only", false, true, false, false, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultServeHostnameConfig()
			cfg.Port, cfg.ListenAddress, cfg.HTTP, cfg.TCP, cfg.UDP = 0, "127.0.0.1", tc.http, tc.tcp, tc.udp
			s, err := StartServeHostname(context.Background(), cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			defer s.Close()
			if (s.TCPAddr() != nil) != tc.wantTCP || (s.UDPAddr() != nil) != tc.wantUDP {
				t.Errorf("TCP %v UDP %v; want TCP %v UDP %v", s.TCPAddr(), s.UDPAddr(), tc.wantTCP, tc.wantUDP)
			}
		})
	}
}

func TestRunServeHostnameSIGTERM(t *testing.T) {
	cfg := DefaultServeHostnameConfig()
	cfg.Port, cfg.ListenAddress, cfg.TerminationGrace, cfg.Logger = 0, "127.0.0.1", 0, testLogger(t)
	term := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- RunServeHostname(context.Background(), cfg, term) }()
	term <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Errorf("RunServeHostname: %v", err)
	}
}
