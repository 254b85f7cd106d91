package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/list"
	"github.com/svcnet/svcnet/internal/proxy/modes"
)

// proxyFlags are the flags of `svcnet proxy`. Flags that are set override
// the KubeProxyConfiguration (from --config, else from ConfigMap
// kube-system/kube-proxy).
type proxyFlags struct {
	kubeconfig        string
	nodeName          string
	configFile        string
	mode              string
	clusterCIDR       string
	serviceCIDR       string
	nodePortAddresses []string
	nodeIPs           []string
	masqueradeAll     bool
	healthzAddr       string
	metricsAddr       string
	logLevel          string
}

func newProxyCommand() *cobra.Command {
	f := &proxyFlags{}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the node service proxy (kube-proxy role; nftables, iptables, userspace or ipvs mode)",
		Long: `proxy programs this node's dataplane for every Service: ClusterIPs,
NodePorts, ExternalIPs and LoadBalancer IPs, with the EndpointSlices of the
API server as backends. It serves /healthz and /livez on :10256 and /metrics
and /proxyMode on 127.0.0.1:10249, as kube-proxy does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the API server (required)")
	host, _ := os.Hostname()
	fs.StringVar(&f.nodeName, "node-name", host, "name of this node's Node object")
	fs.StringVar(&f.configFile, "config", "", "KubeProxyConfiguration file (default: ConfigMap kube-system/kube-proxy key config.conf)")
	fs.StringVar(&f.mode, "mode", "", "proxy mode: nftables, iptables, userspace or ipvs (overrides the configuration; without it and --config, the mode follows ConfigMap kube-system/kube-proxy live)")
	fs.StringVar(&f.clusterCIDR, "cluster-cidr", "", "pod CIDR(s), comma-separated (overrides clusterCIDR)")
	fs.StringVar(&f.serviceCIDR, "service-cidr", "", "service CIDR(s), comma-separated: unallocated addresses in them are dropped")
	fs.StringSliceVar(&f.nodePortAddresses, "nodeport-addresses", nil, "CIDRs of the local addresses NodePorts answer on (default: the node IPs)")
	fs.StringSliceVar(&f.nodeIPs, "node-ip", nil, "node IPs (default: from the Node object)")
	fs.BoolVar(&f.masqueradeAll, "masquerade-all", false, "masquerade all traffic to ClusterIPs")
	fs.StringVar(&f.healthzAddr, "healthz-bind-address", "", "address for /healthz and /livez (overrides healthzBindAddress)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", "", "address for /metrics and /proxyMode (overrides metricsBindAddress)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")

	cleanup := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every rule any proxy mode of svcnet installed on this node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			return cleanupProxy(ctx, cmd)
		},
	}
	cmd.AddCommand(cleanup, newProxyListCommand())
	return cmd
}

// cleanupProxy removes the rules of every proxy mode.
func cleanupProxy(ctx context.Context, cmd *cobra.Command) error {
	if err := modes.Cleanup(ctx, ""); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "removed the rules of every svcnet proxy mode (%s)\n", strings.Join(modes.Supported(), ", "))
	return nil
}

func (f *proxyFlags) run(cmd *cobra.Command) error {
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if f.kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	if f.nodeName == "" {
		return fmt.Errorf("--node-name is required")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()

	var cfg *kpconfig.KubeProxyConfiguration
	if f.configFile != "" {
		cfg, err = proxy.LoadConfigFile(f.configFile)
	} else {
		cfg, err = proxy.LoadConfigMap(ctx, client)
	}
	if err != nil {
		return err
	}
	fl := cmd.Flags()
	if fl.Changed("mode") {
		cfg.Mode = kpconfig.ProxyMode(f.mode)
	}
	// As kube-proxy: a mode the kernel cannot run is refused at start,
	// whether it came from --mode, --config or the ConfigMap.
	if err := modes.CheckKernel(string(cfg.Mode)); err != nil {
		return err
	}
	if fl.Changed("cluster-cidr") {
		cfg.ClusterCIDR = f.clusterCIDR
	}
	if fl.Changed("nodeport-addresses") {
		cfg.NodePortAddresses = f.nodePortAddresses
	}
	if fl.Changed("masquerade-all") {
		cfg.NFTables.MasqueradeAll = f.masqueradeAll
	}
	if fl.Changed("healthz-bind-address") {
		cfg.HealthzBindAddress = f.healthzAddr
	}
	if fl.Changed("metrics-bind-address") {
		cfg.MetricsBindAddress = f.metricsAddr
	}
	clusterCIDRs, err := proxy.ParsePrefixes(cfg.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("clusterCIDR: %w", err)
	}
	serviceCIDRs, err := proxy.ParsePrefixes(f.serviceCIDR)
	if err != nil {
		return fmt.Errorf("--service-cidr: %w", err)
	}
	npa, err := proxy.ParsePrefixes(cfg.NodePortAddresses...)
	if err != nil {
		return fmt.Errorf("nodePortAddresses: %w", err)
	}
	var nodeIPs []netip.Addr
	for _, s := range f.nodeIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--node-ip: %w", err)
		}
		nodeIPs = append(nodeIPs, a)
	}

	return modes.Run(ctx, client, cfg, modes.Options{
		NodeName:          f.nodeName,
		NodeIPs:           nodeIPs,
		ClusterCIDRs:      clusterCIDRs,
		ServiceCIDRs:      serviceCIDRs,
		NodePortAddresses: npa,
		MasqueradeAll:     cfg.NFTables.MasqueradeAll || cfg.IPTables.MasqueradeAll,
		TCPBeLiberal:      cfg.Conntrack.TCPBeLiberal,
		Algorithm:         cfg.IPVS.Scheduler,
		IPVSScheduler:     cfg.IPVS.Scheduler,
		IPVSTCPTimeout:    cfg.IPVS.TCPTimeout.Duration,
		IPVSTCPFinTimeout: cfg.IPVS.TCPFinTimeout.Duration,
		IPVSUDPTimeout:    cfg.IPVS.UDPTimeout.Duration,
		Logger:            logger,
	}, f.configFile == "" && !fl.Changed("mode"), nil)
}

// proxyListFlags are the flags of `svcnet proxy list`.
type proxyListFlags struct {
	kubeconfig string
	nodeName   string
	nodeIPs    []string
	mode       string
	configFile string
}

func newProxyListCommand() *cobra.Command {
	f := &proxyListFlags{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List this node's virtual services and their endpoints, as ipvsadm -Ln does",
		Long: `list prints every virtual service the node proxy programs (ClusterIPs,
NodePorts on the node addresses, ExternalIPs, LoadBalancer IPs) with its real
servers, in the layout of "ipvsadm -Ln", whatever the proxy mode. The view is
computed from the API server's Services and EndpointSlices with the proxy's
own conversion code; ActiveConn/InActConn are counted from this node's
conntrack table (TCP ESTABLISHED = active). The Scheduler column says how the
mode picks an endpoint: "random" for nftables and iptables, the balancer's
algorithm (rr, lc, random, sh) for userspace, the ipvs scheduler for ipvs;
"persistent N" is ClientIP session affinity with timeout N seconds.

The mode is --mode, else what the local proxy reports on its metrics address
(/proxyMode), else the KubeProxyConfiguration's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			return f.run(ctx, cmd)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the API server (default: $KUBECONFIG, else <data-dir>/admin.kubeconfig)")
	host, _ := os.Hostname()
	fs.StringVar(&f.nodeName, "node-name", host, "name of this node's Node object")
	fs.StringSliceVar(&f.nodeIPs, "node-ip", nil, "extra node IPs NodePorts answer on, as given to the proxy (the Node object's addresses are always used)")
	fs.StringVar(&f.mode, "mode", "", "proxy mode to show: nftables, iptables, userspace or ipvs (default: the running proxy's)")
	fs.StringVar(&f.configFile, "config", "", "KubeProxyConfiguration file (default: ConfigMap kube-system/kube-proxy key config.conf)")
	return cmd
}

func (f *proxyListFlags) run(ctx context.Context, cmd *cobra.Command) error {
	// As `svcnet kubectl`: --kubeconfig, else $KUBECONFIG, else the admin
	// kubeconfig of the data directory.
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	switch {
	case f.kubeconfig != "":
		rules.ExplicitPath = f.kubeconfig
	case os.Getenv("KUBECONFIG") == "":
		rules.ExplicitPath = filepath.Join(defaultDataDir(), "admin.kubeconfig")
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	var cfg *kpconfig.KubeProxyConfiguration
	if f.configFile != "" {
		cfg, err = proxy.LoadConfigFile(f.configFile)
	} else {
		cfg, err = proxy.LoadConfigMap(ctx, client)
	}
	if err != nil {
		return err
	}
	npa, err := proxy.ParsePrefixes(cfg.NodePortAddresses...)
	if err != nil {
		return fmt.Errorf("nodePortAddresses: %w", err)
	}
	var nodeIPs []netip.Addr
	for _, s := range f.nodeIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--node-ip: %w", err)
		}
		nodeIPs = append(nodeIPs, a)
	}
	mode := f.mode
	if mode == "" {
		if m, err := list.RunningMode(ctx, cfg.MetricsBindAddress); err == nil {
			mode = m
		} else {
			mode = string(cfg.Mode)
			fmt.Fprintf(cmd.ErrOrStderr(), "no proxy answered on %s (%v); showing the configured mode %s\n", cfg.MetricsBindAddress, err, mode)
		}
	}
	tbl, err := list.Build(ctx, client, list.Options{
		NodeName: f.nodeName, NodeIPs: nodeIPs, NodePortAddresses: npa,
		Mode: mode, Scheduler: cfg.IPVS.Scheduler,
	})
	if err != nil {
		return err
	}
	if list.CountsSupported(tbl.Mode) {
		if err := tbl.CountConnections(ctx, list.Netlink{}); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "connection counts unavailable: %v\n", err)
		}
	} else {
		fmt.Fprintf(cmd.ErrOrStderr(), "connection counts are not available in %s mode (flows end at the proxy, not at the endpoints)\n", tbl.Mode)
	}
	return tbl.Render(cmd.OutOrStdout())
}
