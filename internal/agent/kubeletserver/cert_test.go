package kubeletserver

import (
	"bytes"
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestServingCertificate checks the SANs and that a restart keeps the
// certificate while a new node IP replaces it.
func TestServingCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ip1 := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	c1, err := ensureServingCert(dir, "node-a", ip1, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c1.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("node-a"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("10.0.0.5"); err != nil {
		t.Error(err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("serving certificate lacks server auth usage")
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
	}

	tests := []struct {
		name    string
		ips     []netip.Addr
		advance time.Duration
		wantNew bool
	}{
		{name: "restart keeps it", ips: ip1},
		{name: "new node IP replaces it", ips: []netip.Addr{netip.MustParseAddr("10.0.0.6")}, wantNew: true},
		{name: "near expiry replaces it", ips: ip1, advance: certValidity - certRenewBefore + time.Hour, wantNew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			a, err := ensureServingCert(d, "node-a", ip1, now)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ensureServingCert(d, "node-a", tt.ips, now.Add(tt.advance))
			if err != nil {
				t.Fatal(err)
			}
			if got := !bytes.Equal(a.Certificate[0], b.Certificate[0]); got != tt.wantNew {
				t.Errorf("replaced = %v, want %v", got, tt.wantNew)
			}
		})
	}
}
