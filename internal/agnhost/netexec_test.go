package agnhost

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCommandReply(t *testing.T) {
	t.Setenv("AGNHOST_TEST_VAR", "Some Value")
	host := mustHostname(t)
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"hostname", host, true},
		{"  HostName\n", host, true},
		{"echo Hello World", "hello world", true}, // upstream lower-cases
		{"ECHO x", "x", true},
		{"echo", "", false}, // no space: not the echo command
		{"clientip", "10.0.0.1:1234", true},
		{"serverport", "8081", true},
		{"envvar AGNHOST_TEST_VAR", "Some Value", true},
		{"ENVVAR AGNHOST_TEST_VAR\n", "Some Value", true},
		{"envvar AGNHOST_TEST_UNSET", "", true},
		{"bogus", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		got, ok := commandReply(tc.in, "10.0.0.1:1234", 8081)
		if got != tc.want || ok != tc.ok {
			t.Errorf("commandReply(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNetexecHTTP(t *testing.T) {
	t.Setenv("AGNHOST_TEST_VAR", "value-1")
	host := mustHostname(t)
	n := startNetexec(t, nil)
	base := "http://" + n.HTTPAddr().String()
	port := strconv.Itoa(n.HTTPAddr().(*net.TCPAddr).Port)

	exact := func(want string) func(string) error {
		return func(got string) error {
			if got != want {
				return fmt.Errorf("body %q, want %q", got, want)
			}
			return nil
		}
	}
	prefix := func(want string) func(string) error {
		return func(got string) error {
			if !strings.HasPrefix(got, want) {
				return fmt.Errorf("body %q, want prefix %q", got, want)
			}
			return nil
		}
	}
	jsonEq := func(want map[string]string) func(string) error {
		return func(got string) error {
			var m map[string]string
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				return fmt.Errorf("body %q: %v", got, err)
			}
			if fmt.Sprint(m) != fmt.Sprint(want) {
				return fmt.Errorf("body %v, want %v", m, want)
			}
			return nil
		}
	}
	tests := []struct {
		path string
		code int
		body func(string) error
	}{
		{"/", 200, prefix("NOW: ")},
		{"/not/an/endpoint", 200, prefix("NOW: ")},
		{"/hostname", 200, exact(host)},
		{"/hostName", 200, exact(host)},
		{"/clientip", 200, func(got string) error {
			h, p, err := net.SplitHostPort(got)
			if err != nil || h != "127.0.0.1" || p == "0" || p == port {
				return fmt.Errorf("clientip %q is not 127.0.0.1:<client port>", got)
			}
			return nil
		}},
		{"/serverport", 200, exact(port)},
		{"/echo?msg=hello%20there", 200, exact("hello there")},
		{"/echo?msg=teapot&code=418", 418, exact("teapot")},
		{"/echo?msg=x&code=abc", 200, prefix("argument 'code' must be an integer")},
		{"/header?key=User-Agent", 200, exact("Go-http-client/1.1")},
		{"/header", 200, func(got string) error {
			var h map[string][]string
			if err := json.Unmarshal([]byte(got), &h); err != nil || h["User-Agent"][0] != "Go-http-client/1.1" {
				return fmt.Errorf("header dump %q (%v)", got, err)
			}
			return nil
		}},
		{"/envvar?var=AGNHOST_TEST_VAR", 200, exact("value-1")},
		{"/envvar?key=AGNHOST_TEST_VAR", 200, exact("value-1")},
		{"/envvar", 400, prefix("'var' query parameter is required")},
		{"/envvar?var=AGNHOST_TEST_UNSET", 500, prefix(`env var "AGNHOST_TEST_UNSET" is not set`)},
		{"/healthz", 200, exact("")},
		{"/readyz", 200, exact("ok")},
		{"/shell?shellCommand=echo%20hi", 200, jsonEq(map[string]string{"output": "hi\n"})},
		{"/shell?cmd=echo%20oops%3B%20exit%203", 200, jsonEq(map[string]string{"output": "oops\n", "error": "exit status 3"})},
		{"/redirect?location=" + url.QueryEscape("/echo?msg=redirected") + "&code=307", 200, exact("redirected")},
		{"/dial?host=127.0.0.1&port=1", 400, prefix("request parameter not specified")},
		{"/dial?request=hostname&host=127.0.0.1&port=1&protocol=gopher", 400, prefix("unsupported protocol. gopher")},
		{"/dial?request=hostname&host=127.0.0.1&port=1&tries=x", 400, prefix("tries parameter is invalid")},
		{"/dial?request=hostname&host=127.0.0.1&port=notaport", 400, prefix("host and/or port param are invalid")},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if code != tc.code {
				t.Errorf("status %d, want %d (body %q)", code, tc.code, body)
			}
			if err := tc.body(body); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNetexecUDP(t *testing.T) {
	t.Setenv("AGNHOST_TEST_VAR", "Value-2")
	host := mustHostname(t)
	n := startNetexec(t, nil)
	addr := n.UDPAddrs()[0].String()
	port := strconv.Itoa(n.UDPAddrs()[0].(*net.UDPAddr).Port)
	tests := []struct {
		msg  string
		want func(local string) string
	}{
		{"hostname", func(string) string { return host }},
		{"HOSTNAME\n", func(string) string { return host }},
		{"echo Hello UDP\n", func(string) string { return "hello udp" }},
		{"clientip", func(local string) string { return local }},
		{"serverport", func(string) string { return port }},
		{"envvar AGNHOST_TEST_VAR", func(string) string { return "Value-2" }},
	}
	for _, tc := range tests {
		got, local, ok := udpAsk(t, addr, tc.msg, 10*time.Second)
		if !ok {
			t.Errorf("%q: no reply", tc.msg)
			continue
		}
		if want := tc.want(local); got != want {
			t.Errorf("%q: reply %q, want %q", tc.msg, got, want)
		}
	}
	// Unknown commands get no reply, and the server keeps serving.
	if got, _, ok := udpAsk(t, addr, "bogus", 200*time.Millisecond); ok {
		t.Errorf("unknown command answered %q", got)
	}
	if got, _, ok := udpAsk(t, addr, "hostname", 10*time.Second); !ok || got != host {
		t.Errorf("after unknown command: %q, %v", got, ok)
	}
}

func TestNetexecUDPListenAddresses(t *testing.T) {
	addrs := []string{"127.0.0.1"}
	if ln, err := net.ListenPacket("udp", "[::1]:0"); err == nil {
		ln.Close()
		addrs = append(addrs, "::1")
	}
	n := startNetexec(t, func(c *NetexecConfig) { c.UDPListenAddresses = append(addrs, "127.0.0.1") })
	if got := len(n.UDPAddrs()); got != len(addrs) {
		t.Fatalf("UDP sockets %v, want one per distinct address %v", n.UDPAddrs(), addrs)
	}
	for _, a := range n.UDPAddrs() {
		if got, _, ok := udpAsk(t, a.String(), "hostname", 10*time.Second); !ok || got != mustHostname(t) {
			t.Errorf("%s: %q, %v", a, got, ok)
		}
	}
}

// freePort returns a loopback TCP and UDP port nothing listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestNetexecDial(t *testing.T) {
	host := mustHostname(t)
	client := startNetexec(t, nil)
	server := startNetexec(t, nil)
	base := "http://" + client.HTTPAddr().String()
	httpPort := strconv.Itoa(server.HTTPAddr().(*net.TCPAddr).Port)
	udpPort := strconv.Itoa(server.UDPAddrs()[0].(*net.UDPAddr).Port)
	closed := freePort(t)
	tests := []struct {
		name          string
		query         string
		wantResponses []string
		wantErrors    []string // substrings, one per error
	}{
		{"http hostname", "request=hostname&protocol=http&host=127.0.0.1&port=" + httpPort + "&tries=3", []string{host, host, host}, nil},
		{"http default protocol", "request=echo%3Fmsg%3Dthrough&host=127.0.0.1&port=" + httpPort, []string{"through"}, nil},
		{"udp hostname", "request=hostname&protocol=udp&host=127.0.0.1&port=" + udpPort + "&tries=2", []string{host, host}, nil},
		{"udp echo", "request=echo%20Relayed&protocol=UDP&host=127.0.0.1&port=" + udpPort, []string{"relayed"}, nil},
		{"http refused", "request=hostname&host=127.0.0.1&port=" + closed + "&tries=2", nil, []string{"connection refused", "connection refused"}},
		{"udp refused", "request=hostname&protocol=udp&host=127.0.0.1&port=" + closed, nil, []string{"reading from udp connection failed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base+"/dial?"+tc.query)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			var res DialResult
			if err := json.Unmarshal([]byte(body), &res); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if fmt.Sprint(res.Responses) != fmt.Sprint(tc.wantResponses) {
				t.Errorf("responses %q, want %q", res.Responses, tc.wantResponses)
			}
			if len(res.Errors) != len(tc.wantErrors) {
				t.Fatalf("errors %q, want %d matching %q", res.Errors, len(tc.wantErrors), tc.wantErrors)
			}
			for i, e := range res.Errors {
				if !strings.Contains(e, tc.wantErrors[i]) {
					t.Errorf("error %q does not contain %q", e, tc.wantErrors[i])
				}
			}
			if tc.wantErrors == nil && strings.Contains(body, "errors") || tc.wantResponses == nil && strings.Contains(body, "responses") {
				t.Errorf("empty lists must be left out: %s", body)
			}
		})
	}
}

func TestNetexecTerminate(t *testing.T) {
	t.Run("delayed", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := DefaultNetexecConfig()
		cfg.HTTPPort, cfg.UDPPort, cfg.ListenAddress, cfg.DelayShutdown = 0, 0, "127.0.0.1", time.Hour
		cfg.Logger = testLogger(t)
		n, err := StartNetexec(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + n.HTTPAddr().String()
		n.Terminate()
		n.Terminate() // idempotent
		if code, body := get(t, base+"/readyz"); code != 503 || body != "shutting down" {
			t.Errorf("readyz after SIGTERM: %d %q, want 503 \"shutting down\"", code, body)
		}
		if code, _ := get(t, base+"/healthz"); code != 200 {
			t.Errorf("healthz after SIGTERM: %d, want 200", code)
		}
		if code, body := get(t, base+"/hostname"); code != 200 || body != mustHostname(t) {
			t.Errorf("still serving during the delay: %d %q", code, body)
		}
		cancel()
		if code, err := n.Wait(); code != 0 || err != nil {
			t.Errorf("Wait = %d, %v; want 0, nil", code, err)
		}
	})
	t.Run("immediate", func(t *testing.T) {
		n := startNetexec(t, nil)
		n.Terminate()
		if code, err := n.Wait(); code != 0 || err != nil {
			t.Errorf("Wait = %d, %v; want 0, nil", code, err)
		}
		if c, err := net.Dial("tcp", n.HTTPAddr().String()); err == nil {
			c.Close()
			t.Errorf("HTTP port still open after Wait")
		}
	})
}

func TestNetexecExit(t *testing.T) {
	tests := []struct {
		path     string
		code     int
		answered bool // false: the connection is dropped, as on os.Exit
	}{
		{"/exit?code=7", 7, false},
		{"/exit", 0, false},
		{"/exit?code=3&timeout=5s", 3, true},
		{"/exit?code=4&wait=10ms&timeout=1s", 4, true},
		{"/shutdown", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			n := startNetexec(t, nil)
			c := &http.Client{Timeout: 30 * time.Second}
			resp, err := c.Get("http://" + n.HTTPAddr().String() + tc.path)
			if err == nil {
				resp.Body.Close()
			}
			if answered := err == nil; answered != tc.answered {
				t.Errorf("answered = %v (%v), want %v", answered, err, tc.answered)
			}
			code, werr := n.Wait()
			if code != tc.code || werr != nil {
				t.Errorf("Wait = %d, %v; want %d", code, werr, tc.code)
			}
		})
	}
	t.Run("bad arguments keep serving", func(t *testing.T) {
		n := startNetexec(t, nil)
		base := "http://" + n.HTTPAddr().String()
		for _, q := range []string{"code=x", "timeout=x", "wait=x"} {
			if code, body := get(t, base+"/exit?"+q); code != 200 || !strings.HasPrefix(body, "argument") {
				t.Errorf("/exit?%s: %d %q", q, code, body)
			}
		}
		if code, _ := get(t, base+"/healthz"); code != 200 {
			t.Errorf("server stopped after bad /exit arguments")
		}
	})
}

func TestNetexecHTTPOverride(t *testing.T) {
	tests := []struct {
		override, path string
		check          func(string) bool
	}{
		{"/echo?msg=overridden", "/anything?msg=ignored", func(b string) bool { return b == "overridden" }},
		{"/hostname", "/", func(b string) bool { return b == mustHostname(t) }},
		{"/clientip", "/echo?msg=x", func(b string) bool { return strings.HasPrefix(b, "127.0.0.1:") }},
	}
	for _, tc := range tests {
		n := startNetexec(t, func(c *NetexecConfig) { c.HTTPOverride = tc.override })
		if code, body := get(t, "http://"+n.HTTPAddr().String()+tc.path); code != 200 || !tc.check(body) {
			t.Errorf("override %s, GET %s: %d %q", tc.override, tc.path, code, body)
		}
	}
}

func TestNetexecWithoutUDP(t *testing.T) {
	n := startNetexec(t, func(c *NetexecConfig) { c.UDPPort = -1 })
	if len(n.UDPAddrs()) != 0 {
		t.Errorf("UDP sockets %v with --udp-port=-1", n.UDPAddrs())
	}
	base := "http://" + n.HTTPAddr().String()
	// Upstream: healthy/ready only once a UDP or SCTP server runs.
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, base+p); code != http.StatusPreconditionFailed {
			t.Errorf("%s = %d, want 412", p, code)
		}
	}
}

func TestNetexecUpload(t *testing.T) {
	dir := t.TempDir()
	n := startNetexec(t, func(c *NetexecConfig) { c.UploadDir = dir })
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "payload.txt")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(fw, "uploaded content")
	mw.Close()
	resp, err := http.Post("http://"+n.HTTPAddr().String()+"/upload", mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated || filepath.Dir(out["output"]) != dir {
		t.Fatalf("upload: %d %v", resp.StatusCode, out)
	}
	if data, err := os.ReadFile(out["output"]); err != nil || string(data) != "uploaded content" {
		t.Errorf("uploaded file: %q, %v", data, err)
	}
}

func TestNetexecTLS(t *testing.T) {
	cert, err := selfSignedCert()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	n := startNetexec(t, func(c *NetexecConfig) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })

	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	resp, err := c.Get("https://" + n.HTTPAddr().String() + "/hostname")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != mustHostname(t) {
		t.Errorf("https /hostname = %q", body)
	}
}

func TestNetexecPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultNetexecConfig()
	cfg.ListenAddress, cfg.HTTPPort, cfg.UDPPort = "127.0.0.1", ln.Addr().(*net.TCPAddr).Port, 0
	if _, err := StartNetexec(context.Background(), cfg); err == nil {
		t.Fatal("StartNetexec on a used port succeeded")
	}
}
