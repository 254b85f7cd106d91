package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcnet/svcnet/internal/proxy"
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
		Short: "Run the node service proxy (kube-proxy role; nftables, iptables or userspace mode)",
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
	fs.StringVar(&f.mode, "mode", "", "proxy mode: nftables, iptables or userspace (overrides the configuration; without it and --config, the mode follows ConfigMap kube-system/kube-proxy live)")
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
	cmd.AddCommand(cleanup)
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
		Logger:            logger,
	}, f.configFile == "" && !fl.Changed("mode"), nil)
}
