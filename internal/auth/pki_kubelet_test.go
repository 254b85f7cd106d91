package auth

import (
	"bytes"
	"crypto/x509"
	"os"
	"slices"
	"testing"
)

// TestEnsurePKIKubeletClientCert checks the apiserver-kubelet-client leaf:
// kubeadm's subject, a client (not serving) certificate of the CA, a
// private key file, and kept across restarts.
func TestEnsurePKIKubeletClientCert(t *testing.T) {
	dir := t.TempDir()
	p, err := EnsurePKI(PKIConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.KubeletClient.Certificate) == 0 || p.KubeletClient.PrivateKey == nil {
		t.Fatal("PKI.KubeletClient is empty")
	}
	cert, err := x509.ParseCertificate(p.KubeletClient.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "kube-apiserver-kubelet-client" || !slices.Equal(cert.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("subject = %v, want CN=kube-apiserver-kubelet-client, O=system:masters", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a client certificate of the CA: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("kubelet client certificate must not be usable as a serving certificate")
	}
	st, err := os.Stat(p.Path(KubeletClientKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", KubeletClientKeyFile, st.Mode().Perm())
	}
	p2, err := EnsurePKI(PKIConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.KubeletClient.Certificate[0], p2.KubeletClient.Certificate[0]) {
		t.Error("kubelet client certificate reissued on restart")
	}
}
