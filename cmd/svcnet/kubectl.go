package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	// Client auth plugins, as the upstream kubectl binary has them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func newKubectlCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "kubectl [kubectl arguments]",
		Short: "Run kubectl against this svcnet (default: <data-dir>/admin.kubeconfig)",
		Long: `Run the real kubectl command tree (k8s.io/kubectl). Every argument after
"kubectl" goes to kubectl untouched. Unless KUBECONFIG or --kubeconfig is
given, it uses $SVCNET_DATA_DIR/admin.kubeconfig (default
/var/lib/svcnet/admin.kubeconfig) when that file exists.`,
		// Flags belong to kubectl, not to this wrapper: --help, -n, -o ...
		DisableFlagParsing: true,
		Run: func(_ *cobra.Command, args []string) {
			runKubectl(args)
		},
	}
}

// runKubectl runs kubectl with args (without the program name) and exits the
// process when kubectl fails, as the upstream binary does.
func runKubectl(args []string) {
	defaultKubeconfig(args)
	argv := append([]string{"kubectl"}, args...)
	// As upstream's main: set the verbosity before the command is built.
	_, _ = logs.GlogSetter(kubectlcmd.GetLogVerbosity(argv))
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	command := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
		PluginHandler: kubectlcmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     argv,
		ConfigFlags: genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().
			WithDiscoveryBurst(300).WithDiscoveryQPS(50.0).WithWarningPrinter(streams),
		IOStreams: streams,
	})
	command.SetArgs(args)
	if err := cli.RunNoErrOutput(command); err != nil {
		cmdutil.CheckErr(err) // prints like kubectl and exits non-zero
	}
}

// defaultKubeconfig points KUBECONFIG at the admin kubeconfig unless the user
// chose a kubeconfig (KUBECONFIG or --kubeconfig). A missing file leaves
// kubectl's own defaults; an unreadable one is still chosen, so that kubectl
// says "permission denied" instead of talking to another cluster.
func defaultKubeconfig(args []string) {
	if os.Getenv("KUBECONFIG") != "" || hasKubeconfigFlag(args) {
		return
	}
	path := filepath.Join(defaultDataDir(), "admin.kubeconfig")
	if _, err := os.Stat(path); err == nil || errors.Is(err, fs.ErrPermission) {
		os.Setenv("KUBECONFIG", path)
	}
}

func hasKubeconfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return true
		}
	}
	return false
}
