package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/agent"
	"github.com/svcnet/svcnet/internal/proxy/modes"
)

// agentFlags are the flags of `svcnet agent`.
type agentFlags struct {
	server, token, caFile string
	kubeconfig            string
	nodeName, nodeIP      string
	rootDir               string
	kubeletPort           int
	clusterDNS            []string
	clusterDomain         string
	cleanup               bool
	logLevel              string
	proxyMode             string
	noProxy, noDNS        bool
	keepRules             bool
	clusterCIDR           string
	serviceCIDR           string
	dnsUpstreams          []string
}

func (f *agentFlags) add(fs *pflag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&f.server, "server", "", "API server URL, e.g. https://10.0.0.1:6443 (with --token)")
	fs.StringVar(&f.token, "token", "", "node join token (from the server's <data-dir>/node-token), or @FILE to read it from FILE")
	fs.StringVar(&f.caFile, "ca-file", "", "CA certificate of the API server (default: <data-dir>/pki/ca.crt when it exists)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of any Kubernetes API server (instead of --server/--token)")
	fs.StringVar(&f.nodeName, "node-name", host, "name of this node's Node object")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's InternalIP (default: the address of the default-route interface)")
	fs.StringVar(&f.rootDir, "root-dir", "", "agent state: pod directories, IPAM, kubelet certificate (default <data-dir>/agent/<node-name>)")
	fs.IntVar(&f.kubeletPort, "kubelet-port", agent.DefaultKubeletPort, "port for /containerLogs and /exec (kubectl logs/exec via the API server)")
	fs.StringSliceVar(&f.clusterDNS, "cluster-dns", []string{agent.DefaultClusterDNS.String()}, "nameserver IPs of ClusterFirst pods")
	fs.StringVar(&f.clusterDomain, "cluster-domain", agent.DefaultClusterDomain, "cluster DNS domain")
	fs.BoolVar(&f.cleanup, "cleanup", false, "on exit stop every pod of this node and remove their network (default: leave them running for the next agent to adopt)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.proxyMode, "proxy-mode", "", "proxy mode: nftables, iptables, userspace or ipvs (default: ConfigMap kube-system/kube-proxy, followed live)")
	fs.BoolVar(&f.noProxy, "disable-proxy", false, "do not run the node proxy (kube-proxy role)")
	fs.BoolVar(&f.noDNS, "disable-dns", false, "do not run the node-local cluster DNS")
	fs.BoolVar(&f.keepRules, "keep-rules", false, "with --cleanup, leave the proxy rules in place")
	fs.StringVar(&f.clusterCIDR, "cluster-cidr", agent.DefaultClusterCIDR.String(), "pod CIDR of the cluster (the proxy masquerades traffic from outside it)")
	fs.StringVar(&f.serviceCIDR, "service-cidr", agent.DefaultServiceCIDR.String(), "service CIDR (unallocated addresses in it are dropped)")
	fs.StringSliceVar(&f.dnsUpstreams, "dns-upstream", nil, "upstream resolvers ip[:port] of the node DNS (default: the nameservers of /etc/resolv.conf)")
}

func newAgentCommand() *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: register this Node and run its pods as processes",
		Long: `agent is svcnet's node agent (the kubelet role, for process pods, plus the
node proxy and node-local cluster DNS). It registers
this host as a Node, renews its Lease, and runs the pods bound to it: each pod
gets its own network, UTS and mount namespaces, a veth to the node with an IP
from the node's podCIDR, and its containers' command + args run as processes
inside them. kubectl logs and exec reach the pods through the API server.
The node proxy programs Services (mode from --proxy-mode, else ConfigMap
kube-system/kube-proxy, switched live when it changes); the DNS answers on
<node-ip>:53 and is published as this node's endpoint of Service kube-dns.

Connect with --server and --token (the server's <data-dir>/node-token), or
with --kubeconfig for any Kubernetes API server. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run() },
	}
	f.add(cmd.Flags())
	return cmd
}

func (f *agentFlags) run() error {
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("svcnet agent must run as root: it creates network namespaces, veth pairs and routes")
	}
	// An explicit --proxy-mode the kernel cannot run is refused at start, as
	// kube-proxy does; a mode from the ConfigMap is followed live instead
	// (the agent also runs pods), and a failing one is logged and retried.
	if !f.noProxy {
		if err := modes.CheckKernel(f.proxyMode); err != nil {
			return fmt.Errorf("--proxy-mode %s: %w", f.proxyMode, err)
		}
	}
	rc, err := f.restConfig()
	if err != nil {
		return err
	}
	if f.nodeName == "" {
		return errors.New("--node-name is required (the hostname is empty)")
	}
	ip, err := nodeIPFlag(f.nodeIP)
	if err != nil {
		return err
	}
	var dnsIPs []netip.Addr
	for _, s := range f.clusterDNS {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--cluster-dns: %w", err)
		}
		dnsIPs = append(dnsIPs, a)
	}
	root := f.rootDir
	if root == "" {
		root = filepath.Join(defaultDataDir(), "agent", f.nodeName)
	}
	ac := agent.Config{
		Rest: rc, NodeName: f.nodeName, NodeIP: ip, RootDir: root,
		ClusterDNS: dnsIPs, ClusterDomain: f.clusterDomain,
		KubeletPort: f.kubeletPort, CleanupOnExit: f.cleanup, Log: logger,
	}
	if !f.noProxy {
		cc, err := netip.ParsePrefix(f.clusterCIDR)
		if err != nil {
			return fmt.Errorf("--cluster-cidr: %w", err)
		}
		sc, err := netip.ParsePrefix(f.serviceCIDR)
		if err != nil {
			return fmt.Errorf("--service-cidr: %w", err)
		}
		ac.Proxy = &agent.ProxyConfig{Mode: f.proxyMode, KeepRules: f.keepRules,
			ClusterCIDRs: []netip.Prefix{cc}, ServiceCIDRs: []netip.Prefix{sc}}
	}
	if !f.noDNS {
		ac.DNS = &agent.DNSConfig{Upstreams: f.dnsUpstreams}
	}
	a, err := agent.New(ac)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	return a.Run(ctx)
}

// restConfig builds the client config from --kubeconfig or
// --server/--token/--ca-file.
func (f *agentFlags) restConfig() (*rest.Config, error) {
	if f.kubeconfig != "" {
		if f.server != "" || f.token != "" {
			return nil, errors.New("use either --kubeconfig or --server/--token, not both")
		}
		rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		return rc, nil
	}
	if f.server == "" || f.token == "" {
		return nil, errors.New("--server and --token are required (or --kubeconfig)")
	}
	token := f.token
	if file, ok := strings.CutPrefix(token, "@"); ok {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	ca := f.caFile
	if ca == "" {
		ca = filepath.Join(defaultDataDir(), "pki", "ca.crt")
		if _, err := os.Stat(ca); err != nil {
			return nil, fmt.Errorf("--ca-file is required: no CA at %s (copy the server's <data-dir>/pki/ca.crt)", ca)
		}
	}
	return &rest.Config{Host: f.server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: ca}}, nil
}

// nodeIPFlag parses --node-ip, defaulting to the source address of the
// default route (a route lookup; no packet is sent).
func nodeIPFlag(s string) (netip.Addr, error) {
	if s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("--node-ip: %w", err)
		}
		return a, nil
	}
	routes, err := netlink.RouteGet(net.IPv4(192, 0, 2, 1))
	if err == nil {
		for _, r := range routes {
			if a, ok := netip.AddrFromSlice(r.Src); ok && a.IsValid() {
				return a.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("--node-ip is required: this host has no default route to take the address from")
}
