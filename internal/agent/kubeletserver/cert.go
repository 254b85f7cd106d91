package kubeletserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/svcnet/svcnet/internal/auth"
)

// File names of the self-signed serving certificate inside Config.CertDir
// (the kubelet's names in --cert-dir).
const (
	CertFile = "kubelet.crt"
	KeyFile  = "kubelet.key"
)

const (
	certValidity    = 365 * 24 * time.Hour
	certRenewBefore = 30 * 24 * time.Hour
	clockSkew       = 5 * time.Minute
)

// ensureServingCert loads the serving certificate from dir, or creates a
// self-signed one when it is missing, unusable, near expiry or lacks one of
// the wanted names.
func ensureServingCert(dir, nodeName string, ips []netip.Addr, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	dnsNames := []string{"localhost"}
	if nodeName != "" {
		dnsNames = append(dnsNames, nodeName)
	}
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && certStillGood(pair, dnsNames, ips, now) {
		return pair, nil
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: cert dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: serial: %w", err)
	}
	host := nodeName
	if host == "" {
		host = "svcnet-agent"
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The kubelet names its self-signed certificate "<host>@<unix time>".
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", host, now.Unix())},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dnsNames,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: encode key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	// Key first: a crash between the writes leaves a pair that does not
	// match, which the next start replaces.
	if err := auth.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: %w", err)
	}
	if err := auth.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kubeletserver: load new certificate: %w", err)
	}
	return pair, nil
}

// certStillGood reports whether an existing pair can be reused.
func certStillGood(pair tls.Certificate, dnsNames []string, ips []netip.Addr, now time.Time) bool {
	if len(pair.Certificate) == 0 {
		return false
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false
	}
	if now.Before(cert.NotBefore) || now.Add(certRenewBefore).After(cert.NotAfter) {
		return false
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, func(have net.IP) bool {
			a, ok := netip.AddrFromSlice(have)
			return ok && a.Unmap() == ip.Unmap()
		}) {
			return false
		}
	}
	return true
}
