package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/proxy/modes"
)

// Bounds on waiting during `lab up`.
const (
	serverTimeout = 2 * time.Minute
	nodesTimeout  = 2 * time.Minute
	stopTimeout   = time.Minute
)

// Up builds the lab and returns once every node is Ready. On failure it
// removes what it created.
func Up(ctx context.Context, cfg Config) (_ *State, err error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("lab: own binary: %w", err)
		}
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}
	s, err := plan(cfg)
	if err != nil {
		return nil, err
	}
	if old, err := LoadState(s.DataDir); err == nil {
		if old.ServerPID > 0 && alive(old.ServerPID, dataMarker(old.DataDir)) {
			return nil, fmt.Errorf("lab: a lab is already up in %s (svcnet lab status; svcnet lab down first)", s.DataDir)
		}
	}
	if ns := labNetNS(); len(ns) > 0 {
		return nil, fmt.Errorf("lab: namespaces %s exist already: another lab is up (svcnet lab down --data-dir ... first)", strings.Join(ns, ", "))
	}
	if links := hostLabLinks(); len(links) > 0 {
		return nil, fmt.Errorf("lab: links %s exist already: another lab is up (svcnet lab down first)", strings.Join(links, ", "))
	}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(cfg.Out, "[svcnet lab] failed; removing what was created\n")
			if derr := Down(context.WithoutCancel(ctx), DownConfig{DataDir: s.DataDir, Out: cfg.Out}); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	if err := s.save(); err != nil {
		return nil, err
	}

	fmt.Fprintf(cfg.Out, "[svcnet lab] segment %s: bridge %s, host %s\n", cfg.Subnet.Masked(), s.Bridge, s.HostIP.Addr())
	if err := createSegment(ctx, s); err != nil {
		return nil, err
	}
	for i := range s.Nodes {
		n := &s.Nodes[i]
		if err := createNode(ctx, s, n); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Out, "[svcnet lab] node %-8s netns %-20s %s\n", n.Name, n.NetNS, n.IP)
	}
	if err := s.save(); err != nil {
		return nil, err
	}

	// The control plane, in the master namespace.
	m := s.Master()
	sargs := []string{"server", "--data-dir", s.ServerDir,
		"--bind-address", "0.0.0.0", "--secure-port", strconv.Itoa(SecurePort),
		"--advertise-address", m.IP.String()}
	for _, r := range cfg.LBIPPool {
		sargs = append(sargs, "--lb-ip-pool", r)
	}
	srv, err := startDetached(m.NetNS, s.Exe, sargs, filepath.Join(s.DataDir, "logs", "server.log"), filepath.Join(s.DataDir, "run", "server.pid"), dataMarker(s.DataDir))
	if err != nil {
		return nil, err
	}
	s.ServerPID = srv.pid
	if err := s.save(); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "[svcnet lab] API server (pid %d) starting in %s at %s\n", srv.pid, m.NetNS, s.ServerURL)
	if err := srv.waitLog("svcnet API server is ready", serverTimeout); err != nil {
		return nil, fmt.Errorf("lab: API server: %w", err)
	}
	if err := writeKubeconfig(s); err != nil {
		return nil, err
	}

	// One agent per node.
	agents := make([]*proc, len(s.Nodes))
	for i := range s.Nodes {
		n := &s.Nodes[i]
		args := []string{"agent",
			"--server", s.ServerURL,
			"--token", "@" + filepath.Join(s.ServerDir, "node-token"),
			"--ca-file", filepath.Join(s.ServerDir, "pki", "ca.crt"),
			"--node-name", n.Name, "--node-ip", n.IP.String(),
			"--root-dir", n.RootDir,
			"--cleanup",
		}
		if cfg.ProxyMode != "" {
			args = append(args, "--proxy-mode", cfg.ProxyMode)
		}
		for _, u := range cfg.DNSUpstreams {
			args = append(args, "--dns-upstream", u)
		}
		p, err := startDetached(n.NetNS, s.Exe, args, filepath.Join(s.DataDir, "logs", "agent-"+n.Name+".log"), filepath.Join(s.DataDir, "run", "agent-"+n.Name+".pid"), dataMarker(s.DataDir))
		if err != nil {
			return nil, err
		}
		n.AgentPID, agents[i] = p.pid, p
		fmt.Fprintf(cfg.Out, "[svcnet lab] agent %s (pid %d) starting\n", n.Name, p.pid)
	}
	if err := s.save(); err != nil {
		return nil, err
	}
	if err := waitNodes(ctx, s, agents); err != nil {
		return nil, err
	}

	// The host reaches pods through their node, Services through master.
	for _, n := range s.Nodes {
		if err := addRoute(ctx, s, n.PodCIDR, n.IP.String()); err != nil {
			return nil, err
		}
	}
	if err := addRoute(ctx, s, DefaultServiceCIDR.String(), m.IP.String()); err != nil {
		return nil, err
	}
	if err := s.save(); err != nil {
		return nil, err
	}
	printReady(cfg.Out, s)
	return s, nil
}

// preflight refuses early when the lab cannot work.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("svcnet lab must run as root: it creates network namespaces, a bridge, veths and routes")
	}
	need := []string{"ip", "nsenter"}
	switch {
	case cfg.ProxyMode != "" && !slices.Contains(modes.Supported(), cfg.ProxyMode):
		return fmt.Errorf("lab: --proxy-mode %q: want one of %s", cfg.ProxyMode, strings.Join(modes.Supported(), ", "))
	case cfg.ProxyMode == modes.IPTables:
		need = append(need, "iptables-restore")
	default:
		need = append(need, "nft")
	}
	if err := modes.CheckKernel(cfg.ProxyMode); err != nil {
		return fmt.Errorf("lab: --proxy-mode %s: %w", cfg.ProxyMode, err)
	}
	for _, bin := range need {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("svcnet lab needs %s: %w", bin, err)
		}
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return fmt.Errorf("svcnet lab needs /run/netns: %w", err)
	}
	if _, err := os.Stat(cfg.Exe); err != nil {
		return fmt.Errorf("lab: svcnet binary: %w", err)
	}
	return nil
}

// writeKubeconfig writes the admin kubeconfig with the server at the
// master's segment address, which the host reaches (the admin kubeconfig
// names the master's own loopback).
func writeKubeconfig(s *State) error {
	kc, err := clientcmd.LoadFromFile(filepath.Join(s.ServerDir, "admin.kubeconfig"))
	if err != nil {
		return fmt.Errorf("lab: admin kubeconfig: %w", err)
	}
	for _, c := range kc.Clusters {
		c.Server = s.ServerURL
	}
	if err := clientcmd.WriteToFile(*kc, s.Kubeconfig); err != nil {
		return fmt.Errorf("lab: kubeconfig: %w", err)
	}
	return nil
}

// waitNodes waits until every node is Ready with a podCIDR and records the
// podCIDRs; it fails when an agent exits.
func waitNodes(ctx context.Context, s *State, agents []*proc) error {
	rc, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	deadline := time.Now().Add(nodesTimeout)
	for {
		ready := 0
		for i := range s.Nodes {
			n := &s.Nodes[i]
			select {
			case <-agents[i].exited:
				return fmt.Errorf("lab: agent %s exited; last lines of its log:\n%s", n.Name, tail(agents[i].log, 30))
			default:
			}
			node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				continue
			}
			if p, err := netip.ParsePrefix(node.Spec.PodCIDR); err == nil && nodeReady(node) {
				n.PodCIDR = p.String()
				ready++
			}
		}
		if ready == len(s.Nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %d of %d nodes Ready after %v (logs in %s)", ready, len(s.Nodes), nodesTimeout, filepath.Join(s.DataDir, "logs"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func printReady(w io.Writer, s *State) {
	fmt.Fprintf(w, "\nsvcnet lab is up: %d nodes Ready.\n", len(s.Nodes))
	fmt.Fprintf(w, "  kubectl:  export KUBECONFIG=%s; svcnet kubectl get nodes -o wide\n", s.Kubeconfig)
	fmt.Fprintf(w, "  from this shell: curl <pod IP>, curl <ClusterIP>, curl <node IP>:<nodePort>, dig @10.96.0.10 <name>\n")
	fmt.Fprintf(w, "  on a node: svcnet lab exec %s -- ip addr\n", s.Master().Name)
	fmt.Fprintf(w, "  status:   svcnet lab status;  stop: svcnet lab down")
	if s.DataDir != DefaultDataDir {
		fmt.Fprintf(w, " --data-dir %s", s.DataDir)
	}
	fmt.Fprintf(w, "\n\n")
}
