package main

import (
	"context"
	"errors"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/svcnet/svcnet/internal/lab"
)

// labDataDir is --data-dir of `svcnet lab`: $SVCNET_LAB_DIR, else
// /var/lib/svcnet-lab.
func labDataDir() string {
	if d := os.Getenv("SVCNET_LAB_DIR"); d != "" {
		return d
	}
	return lab.DefaultDataDir
}

func newLabCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A multi-node svcnet cluster on this machine (nodes as network namespaces)",
		Long: `lab runs a cluster of N nodes on this machine, like the seed's master, work1,
work2: each node is a network namespace on a private L2 segment (a bridge in
this namespace), running its own svcnet agent (pods, proxy, DNS); the API
server runs in the master's namespace. This shell gets an address on the
segment and routes for the pod and Service CIDRs, so curl and dig reach pod
IPs, ClusterIPs, NodePorts and 10.96.0.10 from here. Needs root.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", labDataDir(), "lab state, logs, server data and node dirs ($SVCNET_LAB_DIR)")
	cmd.AddCommand(newLabUpCommand(&dataDir), newLabDownCommand(&dataDir), newLabStatusCommand(&dataDir), newLabExecCommand(&dataDir))
	return cmd
}

func newLabUpCommand(dataDir *string) *cobra.Command {
	cfg := lab.Config{}
	var subnet string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create the lab's nodes and start the API server and one agent per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := netip.ParsePrefix(subnet)
			if err != nil {
				return err
			}
			cfg.Subnet, cfg.DataDir, cfg.Out = p, *dataDir, cmd.OutOrStdout()
			ctx, stop := signalContext()
			defer stop()
			_, err = lab.Up(ctx, cfg)
			return err
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&cfg.Nodes, "nodes", 3, "number of nodes: master, work1, work2, …")
	fs.StringVar(&cfg.ProxyMode, "proxy-mode", "", "proxy mode of every agent: nftables, iptables, userspace or ipvs (default: ConfigMap kube-system/kube-proxy, followed live)")
	fs.StringVar(&subnet, "subnet", lab.DefaultSubnet.String(), "the nodes' private segment; this host takes its first address, the nodes .10, .11, …")
	fs.StringSliceVar(&cfg.DNSUpstreams, "dns-upstream", nil, "upstream resolvers ip[:port] of the nodes' DNS (default: /etc/resolv.conf's)")
	fs.StringSliceVar(&cfg.LBIPPool, "lb-ip-pool", nil, "addresses for LoadBalancer Services (CIDRs, IPs or first-last ranges)")
	return cmd
}

func newLabDownCommand(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the lab and remove its namespaces, links and routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(context.Background(), lab.DownConfig{DataDir: *dataDir, Out: cmd.OutOrStdout()})
		},
	}
}

func newLabStatusCommand(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's nodes, addresses and processes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Status(cmd.Context(), *dataDir, cmd.OutOrStdout())
		},
	}
}

func newLabExecCommand(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NODE -- COMMAND [ARGS...]",
		Short: "Run a command on a node (inside its network namespace; KUBECONFIG set)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := lab.Exec(context.Background(), *dataDir, args[0], args[1:], os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
			var ee *lab.ExitError
			if errors.As(err, &ee) {
				os.Exit(ee.Code)
			}
			return err
		},
	}
}
