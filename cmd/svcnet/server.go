package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"

	"github.com/svcnet/svcnet/internal/controller/manager"
	"github.com/svcnet/svcnet/internal/server"
)

// serverFlags are the flags of `svcnet server` and `svcnet up`, named as
// kube-apiserver names them where it has the same flag.
type serverFlags struct {
	cfg         server.Config
	logLevel    string
	controllers []string
	mgr         manager.Config
}

func (f *serverFlags) add(fs *pflag.FlagSet) {
	c := &f.cfg
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "directory for the PKI, tokens, kubeconfigs and embedded etcd data ($SVCNET_DATA_DIR)")
	fs.StringVar(&c.BindAddress, "bind-address", server.DefaultBindAddress, "IP address to serve HTTPS on")
	fs.IntVar(&c.SecurePort, "secure-port", server.DefaultSecurePort, "port to serve HTTPS on")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", "", "IP address other nodes reach the API server at (default: the bind address, or the host's default interface address)")
	fs.StringSliceVar(&c.TLSSANs, "tls-san", nil, "extra DNS names or IPs for the serving certificate (repeatable)")
	fs.BoolVar(&c.Profiling, "profiling", true, "serve Go's profiles at /debug/pprof/ (admin only)")
	fs.StringSliceVar(&c.EtcdServers, "etcd-servers", nil, "etcd client URLs of an external cluster (empty: run an embedded etcd in <data-dir>/etcd)")
	fs.StringVar(&c.EtcdCAFile, "etcd-cafile", "", "CA bundle to verify the external etcd's serving certificates")
	fs.StringVar(&c.EtcdCertFile, "etcd-certfile", "", "client certificate for the external etcd")
	fs.StringVar(&c.EtcdKeyFile, "etcd-keyfile", "", "client key for the external etcd")
	fs.StringVar(&c.EmbeddedEtcdClientURL, "embedded-etcd-client-url", server.DefaultEmbeddedEtcdClientURL, "where the embedded etcd serves clients (keep it on loopback)")
	fs.StringVar(&c.EmbeddedEtcdPeerURL, "embedded-etcd-peer-url", server.DefaultEmbeddedEtcdPeerURL, "where the embedded etcd listens for peers (keep it on loopback)")
	fs.BoolVar(&c.EtcdUnsafeNoFsync, "embedded-etcd-unsafe-no-fsync", false, "skip fsync in the embedded etcd (tests only: a crash may lose acknowledged writes)")
	fs.StringVar(&c.ServiceClusterIPRange, "service-cluster-ip-range", server.DefaultServiceClusterIPRange, "CIDR to allocate Service ClusterIPs from; its first address is the kubernetes Service")
	fs.StringVar(&c.ServiceNodePortRange, "service-node-port-range", server.DefaultServiceNodePortRange, "port range to allocate NodePorts from")
	fs.StringSliceVar(&f.controllers, "controllers", []string{"*"}, "controllers to run: '*' is all, 'foo' enables foo, '-foo' disables foo; known: "+strings.Join(manager.Names(), ", "))
	fs.StringVar(&f.mgr.ClusterCIDR, "cluster-cidr", manager.DefaultClusterCIDR, "pod CIDR; each Node gets a --node-cidr-mask-size block of it")
	fs.IntVar(&f.mgr.NodeCIDRMaskSize, "node-cidr-mask-size", manager.DefaultNodeCIDRMaskSize, "prefix length of each Node's pod CIDR")
	fs.StringSliceVar(&f.mgr.LBIPPool, "lb-ip-pool", nil, "addresses for LoadBalancer Services: CIDRs, single IPs or first-last ranges (empty: LoadBalancer Services stay <pending>)")
	fs.DurationVar(&f.mgr.NodeMonitorGracePeriod, "node-monitor-grace-period", manager.DefaultNodeMonitorGracePeriod, "how long a Node may go without renewing its Lease before it is marked NotReady")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	_ = fs.MarkHidden("embedded-etcd-unsafe-no-fsync")
}

// config is the server configuration the flags describe, with the
// controllers wired in (shared by `server` and `up`).
func (f *serverFlags) config(logger *slog.Logger) (server.Config, error) {
	disabled, err := manager.ParseControllers(f.controllers)
	if err != nil {
		return server.Config{}, fmt.Errorf("--controllers: %w", err)
	}
	cfg := f.cfg
	cfg.Logger = logger
	mgr := f.mgr
	mgr.Logger, mgr.Disabled = logger, disabled
	cfg.Controllers = func(ctx context.Context, admin *rest.Config) error {
		mgr.Rest = admin
		return manager.Run(ctx, mgr)
	}
	cfg.Version = server.DefaultVersion
	return cfg, nil
}

// run runs the server until SIGINT or SIGTERM.
func (f *serverFlags) run(cmd *cobra.Command) error {
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	cfg, err := f.config(logger)
	if err != nil {
		return err
	}
	cfg.OnReady = func(info server.Info) {
		w := cmd.ErrOrStderr()
		fmt.Fprintf(w, "\nsvcnet API server is ready at %s\n", info.URL)
		fmt.Fprintf(w, "  admin kubeconfig: %s\n", info.AdminKubeconfig)
		fmt.Fprintf(w, "    try: svcnet kubectl get svc -A   (or KUBECONFIG=%s kubectl ...)\n", info.AdminKubeconfig)
		fmt.Fprintf(w, "  node join token:  %s (kubeconfig for agents: %s, server %s)\n\n",
			info.NodeTokenFile, info.NodeKubeconfig, info.AdvertiseAddress)
	}
	ctx, stop := signalContext()
	defer stop()
	return server.Run(ctx, cfg)
}

func newServerCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Kubernetes-compatible API server (HTTPS :6443) on etcd",
		Long: `Run svcnet's API server: the Kubernetes REST API for Services and the kinds
around them, on an embedded etcd (default) or an external etcd cluster
(--etcd-servers). On first start it creates a CA and certificates in
<data-dir>/pki, a token file <data-dir>/tokens.csv, and writes
<data-dir>/admin.kubeconfig (used by "svcnet kubectl") and, for node agents,
<data-dir>/node.kubeconfig and <data-dir>/node-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd) },
	}
	f.add(cmd.Flags())
	return cmd
}

func newUpCommand() *cobra.Command {
	f := &upFlags{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run svcnet all-in-one on this host: API server, controllers and a node agent (as root)",
		Long: `Run svcnet all-in-one on this host, like k3s server: the API server on an
embedded etcd, the controllers, and one node agent for this host (pods as
processes, the node proxy, node-local cluster DNS), in one process.

kubectl is ready when "svcnet is up" is printed: run "svcnet kubectl ...".
Ctrl-C stops everything cleanly: the pods are stopped and the proxy rules
removed (unless --keep-rules). A second "svcnet up" on the same --data-dir
resumes the same cluster. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd) },
	}
	f.server.add(cmd.Flags())
	f.add(cmd.Flags())
	return cmd
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print svcnet's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "svcnet %s (Kubernetes API %s)\n", version, server.DefaultVersion)
		},
	}
}
