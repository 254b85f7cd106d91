package main

import (
	"github.com/spf13/cobra"

	"github.com/svcnet/svcnet/internal/agent/runtime"
)

// newInternalCommand is `svcnet internal`: processes the agent's runtime
// starts for itself (pod sandboxes and container shims). Hidden: not for
// people.
func newInternalCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "internal",
		Short:  "Processes started by the svcnet agent's runtime",
		Hidden: true,
	}
	var sb runtime.SandboxOptions
	sandbox := &cobra.Command{
		Use:   "sandbox",
		Short: "Hold a pod's namespaces (started by the runtime in new namespaces)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return runtime.RunSandbox(sb)
		},
	}
	sandbox.Flags().StringVar(&sb.Dir, "dir", "", "the pod's state directory")
	sandbox.Flags().StringVar(&sb.Hostname, "hostname", "", "the pod's hostname")
	sandbox.Flags().BoolVar(&sb.HostNetwork, "host-network", false, "the pod uses the node's network and UTS namespaces")

	var specPath string
	shim := &cobra.Command{
		Use:   "shim",
		Short: "Run one container attempt and record its output and exit",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return runtime.RunShim(specPath)
		},
	}
	shim.Flags().StringVar(&specPath, "spec", "", "the attempt's spec file")
	cmd.AddCommand(sandbox, shim)
	return cmd
}
