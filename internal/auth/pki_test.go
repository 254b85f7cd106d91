package auth

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func parseCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsurePKIServingSANs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	hosts := APIServerSANs(net.ParseIP("10.96.0.1"), "192.0.2.10", "api.example.test")
	p, err := EnsurePKI(PKIConfig{Dir: dir, ServingHosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	serving := parseCertFile(t, p.Path(ServingCertFile))

	hostname, _ := os.Hostname()
	wantDNS := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "api.example.test", hostname}
	for _, name := range wantDNS {
		// VerifyHostname is what a TLS client checks.
		if err := serving.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate does not cover %q: %v", name, err)
		}
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.96.0.1", "192.0.2.10"} {
		if err := serving.VerifyHostname(ip); err != nil {
			t.Errorf("serving certificate does not cover %s: %v", ip, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{
		DNSName:   "kubernetes.default.svc",
		Roots:     p.CAPool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Errorf("serving certificate does not verify against the CA: %v", err)
	}
	if p.Serving.Leaf == nil && len(p.Serving.Certificate) == 0 {
		t.Error("PKI.Serving is empty")
	}

	ca := parseCertFile(t, p.Path(CACertFile))
	if !ca.IsCA {
		t.Error("ca.crt is not a CA")
	}
	if got := ca.PublicKeyAlgorithm; got != x509.ECDSA {
		t.Errorf("CA key algorithm = %v, want ECDSA", got)
	}
}

func TestEnsurePKIAdminCert(t *testing.T) {
	p, err := EnsurePKI(PKIConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(p.AdminCertPEM)
	admin, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if admin.Subject.CommonName != "admin" || !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin subject = %v, want CN=admin, O=system:masters", admin.Subject)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate is not a client certificate of the CA: %v", err)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("admin certificate must not be usable as a serving certificate")
	}
}

func TestEnsurePKIFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := EnsurePKI(PKIConfig{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		mode os.FileMode
	}{
		{CAKeyFile, 0o600},
		{ServingKeyFile, 0o600},
		{AdminKeyFile, 0o600},
		{EtcdServerKeyFile, 0o600},
		{EtcdClientKeyFile, 0o600},
		{CACertFile, 0o644},
		{ServingCertFile, 0o644},
	}
	for _, tt := range tests {
		st, err := os.Stat(filepath.Join(dir, tt.file))
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		if st.Mode().Perm() != tt.mode {
			t.Errorf("%s mode = %v, want %v", tt.file, st.Mode().Perm(), tt.mode)
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("pki dir mode = %v, want 0700", st.Mode().Perm())
	}
}

// TestEnsurePKIReuse checks what a restart keeps and what it reissues.
func TestEnsurePKIReuse(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tests := []struct {
		name string
		// second start's hosts and clock offset
		hosts        []string
		advance      time.Duration
		wantNewServe bool
		wantNewAdmin bool
	}{
		{name: "same config keeps everything", hosts: []string{"a.test"}},
		{name: "new SAN reissues serving only", hosts: []string{"a.test", "b.test"}, wantNewServe: true},
		{name: "subset of SANs keeps serving", hosts: nil},
		{name: "near expiry reissues leaves", hosts: []string{"a.test"}, advance: leafValidity - leafRenewBefore + time.Hour, wantNewServe: true, wantNewAdmin: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p1, err := EnsurePKI(PKIConfig{Dir: dir, ServingHosts: []string{"a.test"}, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			serve1, _ := os.ReadFile(p1.Path(ServingCertFile))
			p2, err := EnsurePKI(PKIConfig{Dir: dir, ServingHosts: tt.hosts, Now: func() time.Time { return now.Add(tt.advance) }})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p1.CAPEM, p2.CAPEM) {
				t.Error("CA changed across restarts")
			}
			serve2, _ := os.ReadFile(p2.Path(ServingCertFile))
			if got := !bytes.Equal(serve1, serve2); got != tt.wantNewServe {
				t.Errorf("serving certificate reissued = %v, want %v", got, tt.wantNewServe)
			}
			if got := !bytes.Equal(p1.AdminCertPEM, p2.AdminCertPEM); got != tt.wantNewAdmin {
				t.Errorf("admin certificate reissued = %v, want %v", got, tt.wantNewAdmin)
			}
			for _, h := range tt.hosts {
				if err := parseCertFile(t, p2.Path(ServingCertFile)).VerifyHostname(h); err != nil {
					t.Errorf("serving certificate lacks %s: %v", h, err)
				}
			}
		})
	}
}

func TestEnsurePKIRefusesToReplaceCA(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(dir string) error
	}{
		{"lone key", func(dir string) error { return os.Remove(filepath.Join(dir, CACertFile)) }},
		{"lone cert", func(dir string) error { return os.Remove(filepath.Join(dir, CAKeyFile)) }},
		{"garbage cert", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CACertFile), []byte("not pem"), 0o644)
		}},
		{"mismatched key", func(dir string) error {
			other := t.TempDir()
			if _, err := EnsurePKI(PKIConfig{Dir: other}); err != nil {
				return err
			}
			k, err := os.ReadFile(filepath.Join(other, CAKeyFile))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, CAKeyFile), k, 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := EnsurePKI(PKIConfig{Dir: dir}); err != nil {
				t.Fatal(err)
			}
			if err := tt.corrupt(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := EnsurePKI(PKIConfig{Dir: dir}); err == nil {
				t.Fatal("EnsurePKI succeeded with a broken CA; want an error instead of a new CA")
			}
		})
	}
}

func TestAPIServerSANsDedup(t *testing.T) {
	got := APIServerSANs(net.ParseIP("10.96.0.1"), "127.0.0.1", "", "0:0:0:0:0:0:0:1", "kubernetes")
	seen := map[string]int{}
	for _, h := range got {
		seen[h]++
	}
	for h, n := range seen {
		if n > 1 {
			t.Errorf("%s listed %d times", h, n)
		}
	}
	if seen[""] != 0 {
		t.Error("empty SAN listed")
	}
	for _, want := range []string{"10.96.0.1", "::1", "kubernetes.default.svc.cluster.local"} {
		if seen[want] != 1 {
			t.Errorf("%s missing from %v", want, got)
		}
	}
}
