package agnhost

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestParsePorterEnv(t *testing.T) {
	got, err := ParsePorterEnv([]string{
		"PATH=/bin", "SERVE_PORT_9001=a", "SERVE_TCP_PORT_9002=b=c", "SERVE_UDP_PORT_9003=", "SERVE_TLS_PORT_9004=d", "SERVE_SCTP_PORT_9005=e",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []PorterPort{
		{"SERVE_PORT_9001", "http", 9001, "a"},
		{"SERVE_SCTP_PORT_9005", "sctp", 9005, "e"},
		{"SERVE_TCP_PORT_9002", "http", 9002, "b=c"},
		{"SERVE_TLS_PORT_9004", "https", 9004, "d"},
		{"SERVE_UDP_PORT_9003", "udp", 9003, ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{"SERVE_PORT_x=1", "SERVE_UDP_PORT_70000=1", "SERVE_PORT_=1"} {
		if _, err := ParsePorterEnv([]string{bad}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestPorter(t *testing.T) {
	env := []string{
		"SERVE_PORT_0=foo", "SERVE_TCP_PORT_0=tcp-value", "SERVE_UDP_PORT_0=udp-value", "SERVE_TLS_PORT_0=tls-value", "HOME=/",
	}
	tests := []struct {
		name string
		json bool
	}{{"plain", false}, {"--json-response", true}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := StartPorter(context.Background(), PorterConfig{Env: env, JSONResponse: tc.json, ListenAddress: "127.0.0.1", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				// The generated certificate is self-signed.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			}}
			for _, c := range []struct{ key, scheme, value string }{
				{"SERVE_PORT_0", "http", "foo"},
				{"SERVE_TCP_PORT_0", "http", "tcp-value"},
				{"SERVE_TLS_PORT_0", "https", "tls-value"},
			} {
				resp, err := client.Get(c.scheme + "://" + p.Addr(c.key).String() + "/some/path")
				if err != nil {
					t.Fatalf("%s: %v", c.key, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := c.value
				if tc.json {
					// Upstream's field order: Method, then Body.
					want = `{"Method":"GET","Body":"` + c.value + `"}`
				}
				if string(body) != want {
					t.Errorf("%s: %q, want %q", c.key, body, want)
				}
			}
			if got, _, ok := udpAsk(t, p.Addr("SERVE_UDP_PORT_0").String(), "x", 10*time.Second); !ok || got != "udp-value" {
				t.Errorf("UDP: %q, %v", got, ok)
			}
			if p.Addr("HOME") != nil {
				t.Errorf("served a non-porter variable")
			}
		})
	}
}
