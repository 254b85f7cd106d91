// Package server wires svcnet's API server process (`svcnet server`): PKI
// and tokens, etcd (embedded or external), the storage, the kinds with the
// Service allocator, the HTTP handler, authentication, the TLS listener and
// the bootstrap objects.
//
// Start-up order, and why:
//
//  1. PKI and token file (internal/auth): everything after needs them, and
//     they are plain files, so a bad data dir fails fast.
//  2. etcd: the embedded member (loopback only) or a client of --etcd-servers.
//  3. The Service kind and its allocations; Repair runs before the listener
//     opens, so no request sees allocations a crash left inconsistent, then
//     Allocations.Run keeps them repaired in the background.
//  4. The handler chain auth.Middleware → apiserver (which authorizes with
//     auth.NodeAuthorizer), served over TLS ≥ 1.2 with client certificates
//     requested but not required (tokens are the other credential).
//  5. Bootstrap objects (namespaces, the kubernetes Service) are written
//     through the real listener with the admin certificate, so they go
//     through the same validation and allocation as any client's objects.
//  6. The kubeconfigs are written last: their existence means "ready".
//
// Every step that starts something pushes its stop onto a stack; a failed
// start and a normal shutdown both unwind the stack in reverse order.
// Shutdown cancels the context of in-flight requests (so watches end), then
// drains the HTTP server, the background loops, the etcd client, and etcd.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/svcnet/svcnet/internal/apiserver"
	"github.com/svcnet/svcnet/internal/apiserver/discovery"
	"github.com/svcnet/svcnet/internal/apiserver/openapi"
	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/bootstrap"
	"github.com/svcnet/svcnet/internal/registry/kinds"
	"github.com/svcnet/svcnet/internal/registry/service"
	"github.com/svcnet/svcnet/internal/storage/etcd"
)

const (
	// shutdownTimeout bounds the graceful drain of HTTP requests.
	shutdownTimeout = 10 * time.Second
	// readyTimeout bounds waiting for the server's own /readyz at start.
	readyTimeout = 60 * time.Second
	// etcdPingTimeout bounds the first request to etcd at start.
	etcdPingTimeout = 30 * time.Second
)

// klogOnce guards the one-time routing of klog into the first Run's logger.
var klogOnce sync.Once

// InitKlog points klog (client-go and apimachinery log through it) at
// logger, once per process: the first call wins. Run calls it; a test
// binary that starts servers while other goroutines already log through
// klog calls it first (at init), so the global is never written while they
// read it.
func InitKlog(logger *slog.Logger) {
	klogOnce.Do(func() { klog.SetSlogLogger(logger.With("component", "klog")) })
}

// Run runs the API server until ctx is cancelled or a component fails. It
// returns nil after a clean shutdown caused by ctx.
func Run(ctx context.Context, cfg Config) error {
	r, err := cfg.resolve()
	if err != nil {
		return err
	}
	log := r.Logger.With("component", "server")
	// client-go (the bootstrap client) and apimachinery log through klog.
	// klog is process-global: set it once, so a second Run in the same
	// process (tests restart servers under running clients) does not race
	// with goroutines logging through it.
	InitKlog(r.Logger)

	var stack stopStack
	defer func() {
		if stopErr := stack.unwind(); stopErr != nil {
			log.Warn("shutdown", "err", stopErr)
		}
	}()
	// Background work lives until shutdown, independently of the start-up
	// steps' ctx checks; stack.unwind cancels it.
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	stack.push("background context", func() error { cancelBG(); return nil })

	// 1. PKI, tokens.
	if err := os.MkdirAll(r.DataDir, 0o700); err != nil {
		return fmt.Errorf("server: data dir: %w", err)
	}
	sans := []string{r.advertiseIP.String()}
	if !r.bindIP.IsUnspecified() {
		sans = append(sans, r.bindIP.String())
	}
	pki, err := auth.EnsurePKI(auth.PKIConfig{
		Dir:          r.path(PKIDir),
		ServingHosts: auth.APIServerSANs(r.serviceIP, append(sans, r.TLSSANs...)...),
	})
	if err != nil {
		return err
	}
	tokens, err := auth.EnsureTokenFile(r.path(TokenFile))
	if err != nil {
		return err
	}
	if err := auth.WriteFileAtomic(r.path(NodeTokenFile), []byte(tokens.Join+"\n"), 0o600); err != nil {
		return err
	}

	// 2. etcd.
	endpoints := r.EtcdServers
	var etcdErr <-chan error // nil (never ready) for an external etcd
	clientCfg := clientv3.Config{}
	if len(endpoints) == 0 {
		// On https URLs (the default) the member requires a client
		// certificate from our CA: local users cannot bypass the API
		// server's authentication by talking to etcd directly.
		var embTLS *etcd.EmbeddedTLS
		if isHTTPS(r.EmbeddedEtcdClientURL) || isHTTPS(r.EmbeddedEtcdPeerURL) {
			embTLS = &etcd.EmbeddedTLS{
				CertFile: pki.Path(auth.EtcdServerCertFile),
				KeyFile:  pki.Path(auth.EtcdServerKeyFile),
				CAFile:   pki.Path(auth.CACertFile),
			}
		}
		if isHTTPS(r.EmbeddedEtcdClientURL) {
			cert, err := tls.LoadX509KeyPair(pki.Path(auth.EtcdClientCertFile), pki.Path(auth.EtcdClientKeyFile))
			if err != nil {
				return fmt.Errorf("server: etcd client certificate: %w", err)
			}
			clientCfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.CAPool(), Certificates: []tls.Certificate{cert}}
		}
		emb, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{
			DataDir:       r.path(EtcdDir),
			ClientURL:     r.EmbeddedEtcdClientURL,
			PeerURL:       r.EmbeddedEtcdPeerURL,
			UnsafeNoFsync: r.EtcdUnsafeNoFsync,
			TLS:           embTLS,
		})
		if err != nil {
			return err
		}
		stack.push("embedded etcd", func() error { emb.Close(); return nil })
		endpoints, etcdErr = emb.Endpoints(), emb.Err()
		log.Info("embedded etcd started", "endpoints", endpoints, "dir", r.path(EtcdDir))
	} else if clientCfg.TLS, err = etcdClientTLS(r); err != nil {
		return err
	}
	store, err := etcd.Dial(bg, endpoints, clientCfg)
	if err != nil {
		return err
	}
	stack.push("etcd client", store.Close)
	// clientv3 dials lazily and retries forever: bound the first request so
	// an unreachable --etcd-servers fails the start instead of hanging it.
	pingCtx, cancelPing := context.WithTimeout(ctx, etcdPingTimeout)
	_, err = store.CurrentRevision(pingCtx)
	cancelPing()
	if err != nil {
		return fmt.Errorf("server: etcd %v not reachable: %w", endpoints, err)
	}

	// 3. Kinds, with the Service allocations repaired before serving.
	svcKind, allocs, err := service.NewKind(service.Config{
		Store:         store,
		ServiceCIDR:   r.serviceCIDR,
		NodePortRange: r.nodePortRange,
		Logger:        r.Logger,
	})
	if err != nil {
		return err
	}
	if err := allocs.Repair(ctx); err != nil {
		return fmt.Errorf("server: repair service allocations: %w", err)
	}
	allocCtx, stopAllocs := context.WithCancel(bg)
	allocsDone := make(chan struct{})
	go func() {
		defer close(allocsDone)
		allocs.Run(allocCtx)
	}()
	stack.push("service allocations", func() error { stopAllocs(); <-allocsDone; return nil })
	all := kinds.All(svcKind)

	// 4. Handler chain and TLS listener.
	openapiHandler, err := openapi.NewHandler(all)
	if err != nil {
		return err
	}
	api, err := apiserver.New(apiserver.Config{
		Store:      store,
		Kinds:      all,
		Logger:     r.Logger.With("component", "apiserver"),
		Authorizer: auth.NodeAuthorizer{},
		OpenAPI:    openapiHandler,
		Discovery:  discovery.NewHandler(all),
		Version:    r.Version,
		Profiling:  r.Profiling,
		// pods/log and pods/exec reach the node agents with kubeadm's
		// apiserver-kubelet-client certificate.
		KubeletClientCert: &pki.KubeletClient,
		Ready: func() error {
			rctx, cancel := context.WithTimeout(bg, 2*time.Second)
			defer cancel()
			_, err := store.CurrentRevision(rctx)
			return err
		},
	})
	if err != nil {
		return err
	}
	// The apiserver's background work (finishing namespace deletions).
	if runner, ok := api.(interface{ Run(context.Context) }); ok {
		apiCtx, stopAPI := context.WithCancel(bg)
		apiDone := make(chan struct{})
		go func() {
			defer close(apiDone)
			runner.Run(apiCtx)
		}()
		stack.push("apiserver background work", func() error { stopAPI(); <-apiDone; return nil })
	}
	authn := auth.Union{auth.NewCertAuthenticator(pki.CAPool()), auth.NewTokenAuthenticator(tokens.Entries)}
	handler := auth.Middleware(api, authn)

	addr := net.JoinHostPort(r.bindIP.String(), strconv.Itoa(r.SecurePort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen: %w", err)
	}
	serveErr := serve(bg, &stack, ln, handler, servingTLS(pki), r.Logger)
	url := "https://" + net.JoinHostPort(r.loopbackHost(), strconv.Itoa(r.SecurePort))
	log.Info("serving", "address", addr, "advertise", r.advertiseIP.String())

	// 5. Bootstrap objects through the real listener.
	adminCreds := auth.Credentials{Server: url, CAData: pki.CAPEM, UserName: auth.AdminUser,
		ClientCertData: pki.AdminCertPEM, ClientKeyData: pki.AdminKeyPEM}
	restCfg, err := auth.RESTConfig(adminCreds)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "svcnet-server/bootstrap"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("server: bootstrap client: %w", err)
	}
	if err := waitReady(ctx, client, serveErr); err != nil {
		return err
	}
	if err := bootstrap.Ensure(ctx, client, r.serviceIP, r.advertiseIP, int32(r.SecurePort), r.Logger); err != nil {
		return fmt.Errorf("server: bootstrap: %w", err)
	}
	if err := bootstrap.EnsureServiceCIDR(ctx, client, []string{r.serviceCIDR.String()}, r.Logger); err != nil {
		return fmt.Errorf("server: bootstrap: %w", err)
	}
	if err := bootstrap.EnsureKubeDNS(ctx, client, r.dnsIP); err != nil {
		return fmt.Errorf("server: bootstrap kube-dns service: %w", err)
	}
	if err := bootstrap.EnsureKubeProxyConfigMap(ctx, client); err != nil {
		return fmt.Errorf("server: bootstrap kube-proxy configmap: %w", err)
	}

	// 6. Kubeconfigs.
	info := Info{
		URL:              url,
		AdvertiseAddress: r.advertiseIP,
		AdminKubeconfig:  r.path(AdminKubeconfigFile),
		NodeKubeconfig:   r.path(NodeKubeconfigFile),
		NodeTokenFile:    r.path(NodeTokenFile),
		EtcdEndpoints:    endpoints,
		EtcdTLS:          clientCfg.TLS,
	}
	if err := auth.WriteKubeconfig(info.AdminKubeconfig, adminCreds); err != nil {
		return err
	}
	nodeURL := "https://" + net.JoinHostPort(r.advertiseIP.String(), strconv.Itoa(r.SecurePort))
	if err := auth.WriteKubeconfig(info.NodeKubeconfig, auth.Credentials{
		Server: nodeURL, CAData: pki.CAPEM, UserName: "node", Token: tokens.Join,
	}); err != nil {
		return err
	}
	// 7. Controllers, as any other client of the API (admin credentials over
	// the loopback listener).
	mgrErr := make(chan error, 1)
	if r.Controllers != nil {
		mgrCtx, stopMgr := context.WithCancel(bg)
		mgrDone := make(chan struct{})
		mgrRest := rest.CopyConfig(restCfg)
		mgrRest.UserAgent = "svcnet-server/controllers"
		go func() {
			defer close(mgrDone)
			if err := r.Controllers(mgrCtx, mgrRest); err != nil {
				mgrErr <- err
			}
		}()
		stack.push("controllers", func() error { stopMgr(); <-mgrDone; return nil })
	}

	log.Info("ready", "url", url, "adminKubeconfig", info.AdminKubeconfig,
		"nodeKubeconfig", info.NodeKubeconfig, "nodeTokenFile", info.NodeTokenFile)
	if r.OnReady != nil {
		r.OnReady(info)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-serveErr:
		return fmt.Errorf("server: serve: %w", err)
	case err := <-etcdErr:
		return fmt.Errorf("server: embedded etcd: %w", err)
	case err := <-mgrErr:
		return fmt.Errorf("server: controllers: %w", err)
	}
}

// servingTLS is the listener's TLS configuration: the serving certificate,
// TLS 1.2 or newer, and client certificates requested and, when presented,
// verified against the cluster CA (token clients present none).
func servingTLS(p *auth.PKI) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Serving},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.CAPool(),
	}
}

// serve runs an HTTPS server on ln and pushes its shutdown on stack. The
// returned channel receives the error that ends serving, if any.
func serve(bg context.Context, stack *stopStack, ln net.Listener, h http.Handler, tlsCfg *tls.Config, logger *slog.Logger) <-chan error {
	// Requests' contexts derive from reqCtx, cancelled first at shutdown so
	// that watches and other long requests return and the drain is quick.
	reqCtx, cancelReqs := context.WithCancel(bg)
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    1 << 20,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	stack.push("https server", func() error {
		cancelReqs()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(bg), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return errors.Join(err, srv.Close())
		}
		return nil
	})
	return errc
}

// waitReady polls the server's /readyz until it answers ok.
func waitReady(ctx context.Context, client kubernetes.Interface, serveErr <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = fmt.Errorf("%q: %w", body, err)
		select {
		case err := <-serveErr:
			return fmt.Errorf("server: serve: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("server: not ready after %v: %w", readyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func isHTTPS(rawURL string) bool { return strings.HasPrefix(rawURL, "https://") }

// etcdClientTLS builds the client TLS configuration for an external etcd.
func etcdClientTLS(r *resolved) (*tls.Config, error) {
	if r.EtcdCAFile == "" && r.EtcdCertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.EtcdCAFile != "" {
		pem, err := os.ReadFile(r.EtcdCAFile)
		if err != nil {
			return nil, fmt.Errorf("server: --etcd-cafile: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server: --etcd-cafile %s holds no PEM certificate", r.EtcdCAFile)
		}
	}
	if r.EtcdCertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.EtcdCertFile, r.EtcdKeyFile)
		if err != nil {
			return nil, fmt.Errorf("server: --etcd-certfile/--etcd-keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// stopStack runs stop functions in reverse order of push.
type stopStack struct {
	stops []namedStop
}

type namedStop struct {
	name string
	stop func() error
}

func (s *stopStack) push(name string, stop func() error) {
	s.stops = append(s.stops, namedStop{name, stop})
}

func (s *stopStack) unwind() error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i].stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.stops[i].name, err))
		}
	}
	s.stops = nil
	return errors.Join(errs...)
}
