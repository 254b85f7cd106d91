// Command svcnet is Kubernetes Service networking in one binary.
//
// This file only wires: flags into configs, signals into a context, and
// subcommands into the packages that do the work.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is svcnet's own version, set at build time with
// -ldflags "-X main.version=...".
var version = "v0.0.0-dev"

func main() {
	// Invoked through a symlink or copy named kubectl: be kubectl.
	if name := filepath.Base(os.Args[0]); name == "kubectl" || strings.HasPrefix(name, "kubectl.") {
		runKubectl(os.Args[1:])
		return
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "svcnet",
		Short: "Kubernetes Service networking in one binary",
		Long: `svcnet stores Services in a Kubernetes-compatible API server, allocates their
ClusterIPs and NodePorts, runs the controllers around them, programs the node
dataplane (svcnet proxy) and answers cluster DNS (svcnet dns). kubectl and
client-go work against it unmodified.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCommand(), newLabCommand())
	root.AddCommand(newServerCommand(), newUpCommand(), newKubectlCommand(), newVersionCommand(), newAgnhostCommand(), newDNSCommand(), newProxyCommand(), newInternalCommand())
	return root
}

// signalContext returns a context cancelled by SIGINT or SIGTERM. Only the
// long-running commands install it: kubectl keeps the default handling, so
// that Ctrl-C ends `kubectl get -w` at once.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// newLogger returns the process logger: text on stderr at level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// defaultDataDir is $SVCNET_DATA_DIR, else /var/lib/svcnet.
func defaultDataDir() string {
	if d := os.Getenv("SVCNET_DATA_DIR"); d != "" {
		return d
	}
	return "/var/lib/svcnet"
}
