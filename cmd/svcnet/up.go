package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/agent"
	"github.com/svcnet/svcnet/internal/proxy/modes"
	"github.com/svcnet/svcnet/internal/server"
)

// upFlags are `svcnet up`'s own flags (the server's come from serverFlags).
type upFlags struct {
	server    serverFlags
	nodeName  string
	nodeIP    string
	proxyMode string
	keepRules bool
	noProxy   bool
	noDNS     bool
}

func (f *upFlags) add(fs *pflag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&f.nodeName, "node-name", host, "name of this host's Node")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's InternalIP (default: the address of the default-route interface)")
	fs.StringVar(&f.proxyMode, "proxy-mode", "", "proxy mode: nftables, iptables, userspace or ipvs (default: ConfigMap kube-system/kube-proxy, followed live)")
	fs.BoolVar(&f.keepRules, "keep-rules", false, "leave the proxy rules in place on exit")
	fs.BoolVar(&f.noProxy, "disable-proxy", false, "do not run the node proxy")
	fs.BoolVar(&f.noDNS, "disable-dns", false, "do not run the node-local cluster DNS")
}

// preflight refuses to start when `up` cannot work, before anything starts.
func (f *upFlags) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("svcnet up must run as root: the node agent creates network namespaces, veths, routes and proxy rules (try: sudo svcnet up)")
	}
	need := []string{"nsenter"}
	switch f.proxyMode {
	case "", modes.NFTables, modes.Userspace:
		need = append(need, "nft")
	case modes.IPTables:
		need = append(need, "iptables-restore")
	case modes.IPVS:
		need = append(need, "nft")
		if err := modes.CheckKernel(f.proxyMode); err != nil {
			return fmt.Errorf("--proxy-mode ipvs: %w", err)
		}
	}
	for _, bin := range need {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("svcnet up needs %s (Debian: apt-get install %s): %w", bin, debianPackage(bin), err)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("svcnet up needs network namespaces (CONFIG_NET_NS): %w", err)
	}
	return nil
}

func debianPackage(bin string) string {
	switch bin {
	case "nsenter":
		return "util-linux"
	case "nft":
		return "nftables"
	case "iptables-restore":
		return "iptables"
	}
	return bin
}

// lockDataDir takes an exclusive lock on <dataDir>/svcnet.lock for the
// life of the process, so two instances never share a data dir.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "svcnet.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another svcnet (lock %s held); stop it first or use --data-dir", dir, path)
	}
	_ = f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

func (f *upFlags) run(cmd *cobra.Command) error {
	if err := f.preflight(); err != nil {
		return err
	}
	sf := &f.server
	logger, err := newLogger(sf.logLevel)
	if err != nil {
		return err
	}
	lock, err := lockDataDir(sf.cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	nodeIP, err := nodeIPFlag(f.nodeIP)
	if err != nil {
		return err
	}
	if f.nodeName == "" {
		return errors.New("--node-name is required (the hostname is empty)")
	}
	w := cmd.ErrOrStderr()
	cfg, err := sf.config(logger)
	if err != nil {
		return err
	}
	if cfg.AdvertiseAddress == "" {
		cfg.AdvertiseAddress = nodeIP.String()
	}

	sigCtx, stopSignals := signalContext()
	defer stopSignals()
	serverCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	agentCtx, stopAgent := context.WithCancel(sigCtx)
	defer stopAgent()
	agentDone := make(chan error, 1)
	var agentStarted atomic.Bool

	cfg.OnReady = func(info server.Info) {
		fmt.Fprintf(w, "[svcnet up] API server ready at %s\n", info.URL)
		rc, err := clientcmd.BuildConfigFromFlags("", info.NodeKubeconfig)
		if err != nil {
			agentDone <- err
			return
		}
		rc.Host = info.URL // the loopback listener
		ac := agent.Config{
			Rest: rc, NodeName: f.nodeName, NodeIP: nodeIP,
			RootDir:       filepath.Join(cfg.DataDir, "agent", f.nodeName),
			CleanupOnExit: true,
			Log:           logger,
		}
		if !f.noProxy {
			ac.Proxy = &agent.ProxyConfig{Mode: f.proxyMode, KeepRules: f.keepRules}
			if p, err := netip.ParsePrefix(sf.mgr.ClusterCIDR); err == nil {
				ac.Proxy.ClusterCIDRs = []netip.Prefix{p}
			}
			if p, err := netip.ParsePrefix(cfg.ServiceClusterIPRange); err == nil {
				ac.Proxy.ServiceCIDRs = []netip.Prefix{p}
			}
		}
		if !f.noDNS {
			ac.DNS = &agent.DNSConfig{}
		}
		a, err := agent.New(ac)
		if err != nil {
			agentDone <- err
			return
		}
		agentStarted.Store(true)
		fmt.Fprintf(w, "[svcnet up] starting node agent %s (%s): pods, proxy, DNS\n", f.nodeName, nodeIP)
		go func() { agentDone <- a.Run(agentCtx) }()
		go func() {
			// Ready once the Node is Ready; then tell the user how to go on.
			if waitNodeReady(agentCtx, rc, f.nodeName) == nil {
				fmt.Fprintf(w, "\nsvcnet is up: node %s is Ready.\n", f.nodeName)
				fmt.Fprintf(w, "  kubectl:  svcnet kubectl get nodes,pods,svc -A -o wide\n")
				fmt.Fprintf(w, "            (or KUBECONFIG=%s kubectl ...)\n", info.AdminKubeconfig)
				fmt.Fprintf(w, "  agents on other hosts: svcnet agent --server https://%s:%d --token @%s --ca-file %s\n",
					cfg.AdvertiseAddress, cfg.SecurePort, info.NodeTokenFile, filepath.Join(cfg.DataDir, "pki", "ca.crt"))
				fmt.Fprintf(w, "  stop:     Ctrl-C (stops the pods%s)\n\n", map[bool]string{true: "; rules kept", false: " and removes the proxy rules"}[f.keepRules])
			}
		}()
	}

	serverDone := make(chan error, 1)
	go func() { serverDone <- server.Run(serverCtx, cfg) }()
	var runErr error
	select {
	case <-sigCtx.Done():
		fmt.Fprintln(w, "[svcnet up] stopping: node agent first (pods, rules), then the API server")
	case runErr = <-agentDone:
		agentStarted.Store(false)
		if runErr != nil {
			runErr = fmt.Errorf("node agent: %w", runErr)
		}
	case runErr = <-serverDone:
		stopAgent()
		if agentStarted.Load() {
			<-agentDone
		}
		return runErr
	}
	stopAgent()
	if agentStarted.Load() {
		if err := <-agentDone; err != nil && runErr == nil {
			runErr = fmt.Errorf("node agent: %w", err)
		}
	}
	stopServer()
	if err := <-serverDone; err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// waitNodeReady waits until Node name reports Ready=True.
func waitNodeReady(ctx context.Context, rc *rest.Config, name string) error {
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	for {
		if n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == v1.NodeReady && cond.Status == v1.ConditionTrue && n.Spec.PodCIDR != "" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
