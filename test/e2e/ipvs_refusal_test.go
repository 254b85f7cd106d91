package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/svcnet/svcnet/internal/proxy/ipvs"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestIPVSModeRefusedWithoutKernel is issue 9's "clean refusal at start when
// the kernel lacks IPVS, naming the missing module", for every command that
// starts a node proxy: `svcnet proxy` (the mode from --mode or from its
// --config file, as kube-proxy refuses "can't use the IPVS proxier"),
// `svcnet agent --proxy-mode ipvs`, `svcnet up --proxy-mode ipvs` and `svcnet
// lab up --proxy-mode ipvs`. Each must exit non-zero before starting
// anything, with an error that names ip_vs. On a kernel that has IPVS there
// is nothing to refuse; the ipvs mode itself is tested in the VM (make
// test-ipvs).
func TestIPVSModeRefusedWithoutKernel(t *testing.T) {
	proxytest.RequireSandbox(t)
	if err := ipvs.CheckKernel(ipvs.DefaultKernelPaths()); err == nil {
		t.Skip("this kernel has IPVS and dummy interfaces: the ipvs mode is accepted here (its tests run in make test-ipvs)")
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	// A server nobody listens on: the refusal must come before any request.
	writeFile(t, kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
	config := filepath.Join(dir, "kube-proxy.yaml")
	writeFile(t, config, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n")
	nftConfig := filepath.Join(dir, "kube-proxy-nft.yaml")
	writeFile(t, nftConfig, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n")

	for name, args := range map[string][]string{
		"proxy --mode":   {"proxy", "--kubeconfig", kubeconfig, "--node-name", "n1", "--config", nftConfig, "--mode", "ipvs"},
		"proxy --config": {"proxy", "--kubeconfig", kubeconfig, "--node-name", "n1", "--config", config},
		"agent":          {"agent", "--kubeconfig", kubeconfig, "--node-name", "n1", "--proxy-mode", "ipvs"},
		"up":             {"up", "--data-dir", filepath.Join(dir, "up"), "--proxy-mode", "ipvs"},
		"lab up":         {"lab", "up", "--data-dir", filepath.Join(dir, "lab"), "--proxy-mode", "ipvs"},
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			defer cancel()
			out, err := exec.CommandContext(ctx, svcnetBin, args...).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("svcnet %s did not exit (it must refuse at start):\n%s", strings.Join(args, " "), out)
			}
			if err == nil {
				t.Fatalf("svcnet %s succeeded on a kernel without IPVS:\n%s", strings.Join(args, " "), out)
			}
			if !strings.Contains(string(out), "ip_vs") {
				t.Errorf("svcnet %s: the refusal does not name the missing module ip_vs:\n%s", strings.Join(args, " "), out)
			}
		})
	}
	// Nothing was started: no lab state, no up data dir.
	for _, d := range []string{"up", "lab"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("%s: the refused command created %s", d, filepath.Join(dir, d))
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
