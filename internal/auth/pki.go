package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside the PKI directory (<data-dir>/pki).
const (
	CACertFile         = "ca.crt"
	CAKeyFile          = "ca.key"
	ServingCertFile    = "apiserver.crt"
	ServingKeyFile     = "apiserver.key"
	AdminCertFile      = "admin.crt"
	AdminKeyFile       = "admin.key"
	EtcdServerCertFile = "etcd-server.crt"
	EtcdServerKeyFile  = "etcd-server.key"
	EtcdClientCertFile = "etcd-client.crt"
	EtcdClientKeyFile  = "etcd-client.key"
	// KubeletClientCertFile and KubeletClientKeyFile are the client
	// certificate the API server presents to node agents (kubeadm's
	// apiserver-kubelet-client.crt).
	KubeletClientCertFile = "apiserver-kubelet-client.crt"
	KubeletClientKeyFile  = "apiserver-kubelet-client.key"
	kubeletClientName     = "kube-apiserver-kubelet-client"
	caCommonName          = "svcnet-ca"
	servingCommonName     = "kube-apiserver"
	etcdServerName        = "svcnet-etcd"
	etcdClientName        = "svcnet-apiserver-etcd-client"
	caValidity            = 10 * 365 * 24 * time.Hour
	leafValidity          = 365 * 24 * time.Hour
	leafRenewBefore       = 90 * 24 * time.Hour
	clockSkewAllowance    = 5 * time.Minute
	privateFileMode       = 0o600
	privateDirMode        = 0o700
	publicFileMode        = 0o644
	pemTypeCertificate    = "CERTIFICATE"
	pemTypeECPrivateKey   = "EC PRIVATE KEY"
)

// AdminUser is the user name of the admin client certificate and token.
const AdminUser = "admin"

// PKIConfig says where the PKI lives and what the serving certificate covers.
type PKIConfig struct {
	// Dir holds the PEM files (normally <data-dir>/pki). Created 0700.
	Dir string
	// ServingHosts are the DNS names and IP addresses the apiserver serving
	// certificate must cover (see APIServerSANs).
	ServingHosts []string
	// Now returns the current time; nil means time.Now (tests override it).
	Now func() time.Time
}

// PKI is the cluster's certificate authority and the certificates signed by
// it. Only the CA certificate and the file paths are meant to leave the
// server; the CA key stays inside.
type PKI struct {
	// Dir is the directory holding the files.
	Dir string
	// CA is the cluster CA certificate; CAPEM is its PEM encoding.
	CA    *x509.Certificate
	CAPEM []byte
	caKey crypto.Signer

	// Serving is the apiserver's serving certificate and key.
	Serving tls.Certificate
	// AdminCertPEM and AdminKeyPEM are the admin client certificate
	// (CN=admin, O=system:masters) and its key.
	AdminCertPEM, AdminKeyPEM []byte
	// KubeletClient is the client certificate the API server presents to
	// node agents when it proxies pods/log and pods/exec (CN
	// kube-apiserver-kubelet-client, O system:masters, as kubeadm issues it).
	KubeletClient tls.Certificate
}

// CAPool returns a pool holding only the cluster CA.
func (p *PKI) CAPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// Path returns the path of a file of the PKI (one of the *File constants).
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// APIServerSANs returns the subject alternative names of the apiserver
// serving certificate: the loopback names, this host's name, the in-cluster
// names and IP of the kubernetes Service, and extra (advertise address,
// --tls-san values). Duplicates and empty entries are dropped.
func APIServerSANs(serviceIP net.IP, extra ...string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if serviceIP != nil {
		hosts = append(hosts, serviceIP.String())
	}
	hosts = append(hosts,
		"kubernetes",
		"kubernetes.default",
		"kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local",
	)
	hosts = append(hosts, extra...)
	return dedupHosts(hosts)
}

func dedupHosts(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, h := range in {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// EnsurePKI loads the PKI from cfg.Dir, creating what is missing.
//
// The CA is created once and never replaced: every kubeconfig and agent trusts
// it. If only one of ca.crt and ca.key exists, or they do not parse or match,
// EnsurePKI fails rather than silently minting a new CA. Leaf certificates are
// (re)issued when missing, not signed by the CA, within 90 days of expiry, or
// (serving certificate) missing one of cfg.ServingHosts.
func EnsurePKI(cfg PKIConfig) (*PKI, error) {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if cfg.Dir == "" {
		return nil, errors.New("auth: PKI directory not set")
	}
	if err := os.MkdirAll(cfg.Dir, privateDirMode); err != nil {
		return nil, fmt.Errorf("auth: create PKI directory: %w", err)
	}
	p := &PKI{Dir: cfg.Dir}
	if err := p.ensureCA(now()); err != nil {
		return nil, err
	}

	serving := leafSpec{
		certFile: ServingCertFile, keyFile: ServingKeyFile,
		subject: pkix.Name{CommonName: servingCommonName},
		usage:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		hosts:   dedupHosts(cfg.ServingHosts),
	}
	certPEM, keyPEM, err := p.ensureLeaf(serving, now())
	if err != nil {
		return nil, err
	}
	if p.Serving, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("auth: load serving certificate: %w", err)
	}

	admin := leafSpec{
		certFile: AdminCertFile, keyFile: AdminKeyFile,
		subject: pkix.Name{CommonName: AdminUser, Organization: []string{GroupMasters}},
		usage:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if p.AdminCertPEM, p.AdminKeyPEM, err = p.ensureLeaf(admin, now()); err != nil {
		return nil, err
	}

	kubeletClient := leafSpec{
		certFile: KubeletClientCertFile, keyFile: KubeletClientKeyFile,
		subject: pkix.Name{CommonName: kubeletClientName, Organization: []string{GroupMasters}},
		usage:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err = p.ensureLeaf(kubeletClient, now())
	if err != nil {
		return nil, err
	}
	if p.KubeletClient, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("auth: load kubelet client certificate: %w", err)
	}

	// The embedded etcd serves TLS on loopback and requires a client
	// certificate from this CA, so that local users cannot bypass the API
	// server's authentication by talking to etcd directly.
	etcdServer := leafSpec{
		certFile: EtcdServerCertFile, keyFile: EtcdServerKeyFile,
		subject: pkix.Name{CommonName: etcdServerName},
		// etcd uses its serving certificate as a client certificate for
		// peer connections too.
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		hosts: []string{"localhost", "127.0.0.1", "::1"},
	}
	if _, _, err := p.ensureLeaf(etcdServer, now()); err != nil {
		return nil, err
	}
	etcdClient := leafSpec{
		certFile: EtcdClientCertFile, keyFile: EtcdClientKeyFile,
		subject: pkix.Name{CommonName: etcdClientName},
		usage:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if _, _, err := p.ensureLeaf(etcdClient, now()); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *PKI) ensureCA(now time.Time) error {
	certPath, keyPath := p.Path(CACertFile), p.Path(CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		cert, key, err := parsePair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("auth: existing CA in %s is unusable (remove the pki directory to start over): %w", p.Dir, err)
		}
		if !cert.IsCA {
			return fmt.Errorf("auth: %s is not a CA certificate", certPath)
		}
		p.CA, p.CAPEM, p.caKey = cert, certPEM, key
		return nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		// First start: mint the CA below.
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return fmt.Errorf("auth: read CA certificate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return fmt.Errorf("auth: read CA key: %w", keyErr)
	default:
		return fmt.Errorf("auth: only one of %s and %s exists; refusing to replace the CA", certPath, keyPath)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("auth: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-clockSkewAllowance),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("auth: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("auth: parse CA certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der})
	// Key first: a crash between the two writes leaves a lone key, which the
	// next start reports instead of silently minting a different CA.
	if err := WriteFileAtomic(keyPath, keyPEM, privateFileMode); err != nil {
		return err
	}
	if err := WriteFileAtomic(certPath, certPEM, publicFileMode); err != nil {
		return err
	}
	p.CA, p.CAPEM, p.caKey = cert, certPEM, key
	return nil
}

// leafSpec describes one certificate signed by the CA.
type leafSpec struct {
	certFile, keyFile string
	subject           pkix.Name
	usage             []x509.ExtKeyUsage
	hosts             []string
}

// ensureLeaf returns the PEM certificate and key for spec, reusing the files
// when they are still good and issuing a new pair otherwise.
func (p *PKI) ensureLeaf(spec leafSpec, now time.Time) (certPEM, keyPEM []byte, err error) {
	certPath, keyPath := p.Path(spec.certFile), p.Path(spec.keyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if certErr == nil && keyErr == nil {
		if cert, _, err := parsePair(certPEM, keyPEM); err == nil && p.leafStillGood(cert, spec, now) {
			return certPEM, keyPEM, nil
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: generate key for %s: %w", spec.certFile, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               spec.subject,
		NotBefore:             now.Add(-clockSkewAllowance),
		NotAfter:              now.Add(leafValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           spec.usage,
		BasicConstraintsValid: true,
	}
	for _, h := range spec.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, key.Public(), p.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: create %s: %w", spec.certFile, err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der})
	if err := WriteFileAtomic(keyPath, keyPEM, privateFileMode); err != nil {
		return nil, nil, err
	}
	if err := WriteFileAtomic(certPath, certPEM, publicFileMode); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// leafStillGood reports whether an existing certificate can be kept.
func (p *PKI) leafStillGood(cert *x509.Certificate, spec leafSpec, now time.Time) bool {
	if cert.CheckSignatureFrom(p.CA) != nil {
		return false
	}
	if now.Before(cert.NotBefore) || now.Add(leafRenewBefore).After(cert.NotAfter) {
		return false
	}
	if cert.Subject.CommonName != spec.subject.CommonName ||
		!slices.Equal(cert.Subject.Organization, spec.subject.Organization) {
		return false
	}
	for _, u := range spec.usage {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			return false
		}
	}
	for _, h := range spec.hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

// parsePair parses a PEM certificate and its PEM EC or PKCS#8 key and checks
// that they belong together.
func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != pemTypeCertificate {
		return nil, nil, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("no PEM private key")
	}
	var key crypto.Signer
	switch kb.Type {
	case pemTypeECPrivateKey:
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		var k any
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err == nil {
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, nil, fmt.Errorf("unsupported private key type %T", k)
			}
			key = s
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("parse private key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("marshal public key: %w", err)
	}
	if !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return nil, nil, errors.New("private key does not match certificate")
	}
	return cert, key, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("auth: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeECPrivateKey, Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("auth: random serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so readers never see a partial file. The file gets
// exactly mode perm (set with chmod, so the umask does not widen or narrow it).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}
