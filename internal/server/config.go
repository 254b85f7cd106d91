package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
)

// Defaults, as in kube-apiserver and ARCHITECTURE.md.
const (
	DefaultDataDir               = "/var/lib/svcnet"
	DefaultBindAddress           = "0.0.0.0"
	DefaultSecurePort            = 6443
	DefaultServiceClusterIPRange = "10.96.0.0/12"
	DefaultServiceNodePortRange  = "30000-32767"
	// DefaultEmbeddedEtcdClientURL is where the embedded etcd serves clients.
	// It is loopback only; see docs/operations.md for its exposure.
	DefaultEmbeddedEtcdClientURL = "https://127.0.0.1:2379"
	DefaultEmbeddedEtcdPeerURL   = "https://127.0.0.1:2380"
	// DefaultVersion is the GitVersion /version reports: the Kubernetes API
	// level svcnet serves, with svcnet as build metadata (like k3s does).
	DefaultVersion = "v1.37.2+svcnet"
)

// Files and directories inside the data directory.
const (
	PKIDir              = "pki"
	EtcdDir             = "etcd"
	TokenFile           = "tokens.csv"
	NodeTokenFile       = "node-token"
	AdminKubeconfigFile = "admin.kubeconfig"
	NodeKubeconfigFile  = "node.kubeconfig"
)

// Config configures Run. The zero value of every field means its default.
type Config struct {
	// DataDir holds the PKI, the token file, the kubeconfigs and the
	// embedded etcd's data (default /var/lib/svcnet).
	DataDir string
	// BindAddress is the IP the HTTPS server listens on (default 0.0.0.0).
	BindAddress string
	// SecurePort is the HTTPS port (default 6443).
	SecurePort int
	// AdvertiseAddress is the IP other nodes and pods reach the API server
	// at: the kubernetes Service's endpoint and node.kubeconfig's server.
	// Empty means the bind address, or, for 0.0.0.0, the host's default
	// interface address (as kube-apiserver chooses it).
	AdvertiseAddress string
	// TLSSANs are extra names or IPs for the serving certificate.
	TLSSANs []string
	// Profiling serves Go's profiles at /debug/pprof/ to the admin
	// (kube-apiserver's --profiling; the flag defaults to true).
	Profiling bool

	// EtcdServers are the client URLs of an external etcd cluster. Empty
	// starts an embedded single-member etcd in <data-dir>/etcd.
	EtcdServers []string
	// EtcdCAFile, EtcdCertFile and EtcdKeyFile secure the connection to
	// an external etcd (kube-apiserver's --etcd-cafile and friends).
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EmbeddedEtcdClientURL and EmbeddedEtcdPeerURL are where the embedded
	// etcd listens (defaults https://127.0.0.1:2379 and :2380; https means mutual
	// TLS with the certificates in <data-dir>/pki, http means no authentication).
	EmbeddedEtcdClientURL, EmbeddedEtcdPeerURL string
	// EtcdUnsafeNoFsync skips fsync in the embedded etcd: only for tests.
	EtcdUnsafeNoFsync bool

	// ServiceClusterIPRange is the CIDR ClusterIPs come from (default
	// 10.96.0.0/12); its first address is the kubernetes Service's IP.
	ServiceClusterIPRange string
	// ServiceNodePortRange is the NodePort range (default 30000-32767).
	ServiceNodePortRange string

	// Version is /version's GitVersion (default DefaultVersion).
	// Controllers, when set, runs the controllers once the bootstrap
	// objects exist, with admin credentials over the loopback listener, until
	// ctx ends (cmd/svcnet passes manager.Run; tests leave it nil). A non-nil
	// error stops the server.
	Controllers func(ctx context.Context, admin *rest.Config) error

	Version string
	// Logger receives the server's logs, and client-go's klog output.
	Logger *slog.Logger

	// OnReady, when set, is called once the server serves, the bootstrap
	// objects exist and the kubeconfigs are written.
	OnReady func(Info)
}

// Info describes a running server.
type Info struct {
	// URL is the loopback URL the admin kubeconfig uses.
	URL string
	// AdvertiseAddress is the address other nodes reach the server at.
	AdvertiseAddress net.IP
	// AdminKubeconfig, NodeKubeconfig and NodeTokenFile are file paths.
	AdminKubeconfig, NodeKubeconfig, NodeTokenFile string
	// EtcdEndpoints are the etcd client URLs the server uses.
	EtcdEndpoints []string
	// EtcdTLS is the client TLS configuration for EtcdEndpoints (nil for
	// plain http), for tools and tests that talk to etcd directly.
	EtcdTLS *tls.Config
}

// resolved is a Config with its defaults applied and its strings parsed.
type resolved struct {
	Config
	bindIP        net.IP
	advertiseIP   net.IP
	serviceCIDR   *net.IPNet
	serviceIP     net.IP
	nodePortRange utilnet.PortRange
	dnsIP         net.IP
}

func (c Config) resolve() (*resolved, error) {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	c.DataDir = abs
	if c.BindAddress == "" {
		c.BindAddress = DefaultBindAddress
	}
	if c.SecurePort == 0 {
		c.SecurePort = DefaultSecurePort
	}
	if c.SecurePort < 1 || c.SecurePort > 65535 {
		return nil, fmt.Errorf("server: --secure-port %d out of range", c.SecurePort)
	}
	if c.ServiceClusterIPRange == "" {
		c.ServiceClusterIPRange = DefaultServiceClusterIPRange
	}
	if c.ServiceNodePortRange == "" {
		c.ServiceNodePortRange = DefaultServiceNodePortRange
	}
	if c.EmbeddedEtcdClientURL == "" {
		c.EmbeddedEtcdClientURL = DefaultEmbeddedEtcdClientURL
	}
	if c.EmbeddedEtcdPeerURL == "" {
		c.EmbeddedEtcdPeerURL = DefaultEmbeddedEtcdPeerURL
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	r := &resolved{Config: c}

	if r.bindIP = net.ParseIP(c.BindAddress); r.bindIP == nil {
		return nil, fmt.Errorf("server: --bind-address %q is not an IP address", c.BindAddress)
	}
	_, r.serviceCIDR, err = net.ParseCIDR(c.ServiceClusterIPRange)
	if err != nil {
		return nil, fmt.Errorf("server: --service-cluster-ip-range: %w", err)
	}
	if r.serviceIP, err = firstServiceIP(r.serviceCIDR); err != nil {
		return nil, err
	}
	if r.dnsIP, err = dnsServiceIP(r.serviceCIDR); err != nil {
		return nil, err
	}
	pr, err := utilnet.ParsePortRange(c.ServiceNodePortRange)
	if err != nil {
		return nil, fmt.Errorf("server: --service-node-port-range: %w", err)
	}
	r.nodePortRange = *pr

	for _, u := range append([]string{c.EmbeddedEtcdClientURL, c.EmbeddedEtcdPeerURL}, c.EtcdServers...) {
		if _, err := url.Parse(u); err != nil {
			return nil, fmt.Errorf("server: etcd URL %q: %w", u, err)
		}
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		return nil, errors.New("server: --etcd-certfile and --etcd-keyfile go together")
	}

	if c.AdvertiseAddress != "" {
		if r.advertiseIP = net.ParseIP(c.AdvertiseAddress); r.advertiseIP == nil {
			return nil, fmt.Errorf("server: --advertise-address %q is not an IP address", c.AdvertiseAddress)
		}
		if !usableEndpointIP(r.advertiseIP) {
			return nil, fmt.Errorf("server: --advertise-address %s cannot be reached from pods and other nodes (loopback, link-local or unspecified)", r.advertiseIP)
		}
	} else if r.advertiseIP, err = chooseAdvertiseIP(r.bindIP); err != nil {
		return nil, err
	}
	return r, nil
}

// chooseAdvertiseIP picks the address the kubernetes Service's endpoint
// publishes when --advertise-address is not set: the bind address when it
// is usable from other hosts, else the host's default-route interface
// address (as kube-apiserver chooses it), else any global unicast address.
// A loopback-bound server (tests, single-host use) still advertises a real
// address, because the API rejects loopback endpoints.
func chooseAdvertiseIP(bind net.IP) (net.IP, error) {
	if usableEndpointIP(bind) {
		return bind, nil
	}
	if ip, err := utilnet.ChooseHostInterface(); err == nil && usableEndpointIP(ip) {
		return ip, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("server: list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && usableEndpointIP(n.IP) {
			return n.IP, nil
		}
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && usableEndpointIP(n.IP) {
			return n.IP, nil
		}
	}
	return nil, errors.New("server: this host has no address other nodes could reach; set --advertise-address")
}

// usableEndpointIP reports whether ip may be an Endpoints address.
func usableEndpointIP(ip net.IP) bool {
	return ip != nil && ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast()
}

// firstServiceIP returns the first usable address of the Service CIDR: the
// kubernetes Service's ClusterIP (10.96.0.1 for 10.96.0.0/12).
func firstServiceIP(cidr *net.IPNet) (net.IP, error) { return nthServiceIP(cidr, 1) }

// dnsServiceIP is the cluster DNS address: the tenth of the service CIDR
// (10.96.0.10 for 10.96.0.0/12), as kubeadm and k3s choose it.
func dnsServiceIP(cidr *net.IPNet) (net.IP, error) { return nthServiceIP(cidr, 10) }

func nthServiceIP(cidr *net.IPNet, n int) (net.IP, error) {
	ip := make(net.IP, len(cidr.IP))
	copy(ip, cidr.IP)
	for ; n > 0; n-- {
		for i := len(ip) - 1; i >= 0; i-- {
			ip[i]++
			if ip[i] != 0 {
				break
			}
		}
	}
	if !cidr.Contains(ip) {
		return nil, fmt.Errorf("server: service CIDR %s has no usable address", cidr)
	}
	return ip, nil
}

// loopbackHost is the host the server's own clients dial: loopback when the
// server listens on every address or on loopback, else the bind address.
func (r *resolved) loopbackHost() string {
	if r.bindIP.IsUnspecified() {
		if r.bindIP.To4() == nil {
			return "::1"
		}
		return "127.0.0.1"
	}
	return r.bindIP.String()
}

func (r *resolved) path(name string) string { return filepath.Join(r.DataDir, name) }
