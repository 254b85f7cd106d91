package agnhost

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// hostname is os.Hostname; in a pod it is the pod name. Upstream treats a
// failure as fatal; it cannot fail on Linux, so an empty answer is enough.
func hostname() string {
	h, _ := os.Hostname()
	return h
}

// commandReply answers one UDP or SCTP datagram of the netexec command
// protocol. raw is the datagram, client the sender's ip:port, serverPort the
// port the command arrived on. ok is false when nothing must be sent back
// (unknown or empty command), as upstream stays silent then.
//
// Matching is case-insensitive on the trimmed text. Like upstream, the echo
// reply is the lower-cased text while envvar keeps the name's case.
func commandReply(raw, client string, serverPort int) (reply string, ok bool) {
	rawText := strings.TrimSpace(raw)
	text := strings.ToLower(rawText)
	switch {
	case text == "hostname":
		return hostname(), true
	case strings.HasPrefix(text, "envvar "):
		_, name, _ := strings.Cut(rawText, " ")
		v, _ := os.LookupEnv(strings.TrimSpace(name))
		return v, true
	case strings.HasPrefix(text, "echo "):
		_, msg, _ := strings.Cut(text, " ")
		return msg, true
	case text == "clientip":
		return client, true
	case text == "serverport":
		return strconv.Itoa(serverPort), true
	}
	return "", false
}

// selfSignedCert makes a throwaway serving certificate for localhost,
// 127.0.0.1 and ::1 — what upstream's bundled localhost.crt covers — so that
// the TLS servers work without files. It lives only in memory.
func selfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agnhost: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agnhost: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"svcnet agnhost"}, CommonName: "localhost"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agnhost: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// loadCert loads certFile/keyFile, or makes a self-signed certificate when
// certFile is empty. An empty keyFile means the key is in certFile.
func loadCert(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" {
		return selfSignedCert()
	}
	if keyFile == "" {
		keyFile = certFile
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agnhost: load certificate: %w", err)
	}
	return c, nil
}

func orDefaultLogger(l *slog.Logger, name string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "agnhost-"+name)
}

// listenAddr joins a listen host (empty: all addresses) and port.
func listenAddr(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
