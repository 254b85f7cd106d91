package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// testServer is an HTTPS server with svcnet's TLS and authentication setup
// whose handler answers with the authenticated user.
type testServer struct {
	*httptest.Server
	pki    *PKI
	tokens *Tokens
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	p, err := EnsurePKI(PKIConfig{Dir: dir + "/pki", ServingHosts: APIServerSANs(nil)})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := EnsureTokenFile(dir + "/tokens.csv")
	if err != nil {
		t.Fatal(err)
	}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := UserFrom(r.Context())
		if u == nil {
			http.Error(w, "no user in context", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s|%s|%s", u.Name, strings.Join(u.Groups, ","), r.Header.Get("Authorization"))
	})
	authn := Union{NewCertAuthenticator(p.CAPool()), NewTokenAuthenticator(toks.Entries)}
	srv := httptest.NewUnstartedServer(Middleware(echo, authn))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.Serving},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.CAPool(),
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, pki: p, tokens: toks}
}

func (s *testServer) client(t *testing.T, certPEM, keyPEM []byte) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: s.pki.CAPool(), ServerName: "localhost"}
	if certPEM != nil {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func TestMiddleware(t *testing.T) {
	s := newTestServer(t)
	other, err := EnsurePKI(PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}

	const unauthorized = `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`
	tests := []struct {
		name     string
		path     string
		token    string // Authorization header value
		cert     [2][]byte
		wantCode int
		wantBody string // for 200: "user|groups|authorization header seen"
		wantErr  bool   // TLS handshake refused
	}{
		{name: "no credentials", path: "/api/v1/namespaces/default/services", wantCode: 401, wantBody: unauthorized},
		{name: "no credentials root", path: "/", wantCode: 401, wantBody: unauthorized},
		{name: "anonymous healthz", path: "/healthz", wantCode: 200, wantBody: "system:anonymous|system:unauthenticated|"},
		{name: "anonymous readyz with query", path: "/readyz?verbose", wantCode: 200, wantBody: "system:anonymous|system:unauthenticated|"},
		{name: "anonymous version", path: "/version", wantCode: 200, wantBody: "system:anonymous|system:unauthenticated|"},
		{name: "anonymous healthz subpath", path: "/healthz/etcd", wantCode: 401, wantBody: unauthorized},
		{name: "bad token even on public path", path: "/healthz", token: "Bearer nope", wantCode: 401, wantBody: unauthorized},
		{name: "bad token", path: "/api", token: "Bearer nope", wantCode: 401, wantBody: unauthorized},
		{name: "basic auth not supported", path: "/api", token: "Basic YWRtaW46YWRtaW4=", wantCode: 401, wantBody: unauthorized},
		{name: "admin token, header stripped", path: "/api", token: "Bearer " + s.tokens.Admin, wantCode: 200,
			wantBody: "admin|system:masters,system:authenticated|"},
		{name: "lowercase bearer", path: "/api", token: "bearer " + s.tokens.Join, wantCode: 200,
			wantBody: "system:nodes:join|system:nodes,system:authenticated|"},
		{name: "admin client certificate", path: "/api", cert: [2][]byte{s.pki.AdminCertPEM, s.pki.AdminKeyPEM}, wantCode: 200,
			wantBody: "admin|system:masters,system:authenticated|"},
		{name: "valid certificate wins over bad token", path: "/api", token: "Bearer nope",
			cert: [2][]byte{s.pki.AdminCertPEM, s.pki.AdminKeyPEM}, wantCode: 200,
			wantBody: "admin|system:masters,system:authenticated|"},
		{name: "certificate of another CA", path: "/api", cert: [2][]byte{other.AdminCertPEM, other.AdminKeyPEM}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", s.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", tt.token)
			}
			resp, err := s.client(t, tt.cert[0], tt.cert[1]).Do(req)
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request succeeded with status %d, want a TLS failure", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.wantCode)
			}
			if tt.wantCode == 401 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				var got, want map[string]any
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("401 body is not JSON: %s", body)
				}
				_ = json.Unmarshal([]byte(tt.wantBody), &want)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("401 body = %s, want %s", body, tt.wantBody)
				}
				return
			}
			if string(body) != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}
}

// TestCertAuthenticatorVerifies checks the authenticator itself rejects a
// foreign certificate, for TLS setups that request but do not verify.
func TestCertAuthenticatorVerifies(t *testing.T) {
	mine, err := EnsurePKI(PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	other, err := EnsurePKI(PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	parse := func(p []byte) *x509.Certificate {
		b, _ := pem.Decode(p)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name     string
		peers    []*x509.Certificate
		wantOK   bool
		wantErr  bool
		wantUser string
	}{
		{name: "no TLS client certificate"},
		{name: "own admin", peers: []*x509.Certificate{parse(mine.AdminCertPEM)}, wantOK: true, wantUser: "admin"},
		{name: "foreign admin", peers: []*x509.Certificate{parse(other.AdminCertPEM)}, wantErr: true},
		{name: "serving cert is not a client cert", peers: []*x509.Certificate{mine.Serving.Leaf}, wantErr: true},
	}
	a := NewCertAuthenticator(mine.CAPool())
	// Two rounds: the second is answered from the verification cache for
	// chains that verified, and must still reject the ones that did not.
	for round := 0; round < 2; round++ {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/round%d", tt.name, round), func(t *testing.T) {
				r := httptest.NewRequest("GET", "https://x/api", nil)
				r.TLS = &tls.ConnectionState{PeerCertificates: tt.peers}
				u, ok, err := a.AuthenticateRequest(r)
				if ok != tt.wantOK || (err != nil) != tt.wantErr {
					t.Fatalf("ok=%v err=%v, want ok=%v wantErr=%v", ok, err, tt.wantOK, tt.wantErr)
				}
				if ok && u.Name != tt.wantUser {
					t.Errorf("user = %s, want %s", u.Name, tt.wantUser)
				}
			})
		}
	}
	if n := len(a.verified); n != 1 {
		t.Errorf("verification cache holds %d chains, want 1 (only the valid one)", n)
	}
}
