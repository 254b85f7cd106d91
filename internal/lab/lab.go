package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Fixed names: `lab down` finds what a failed `lab up` left by them.
const (
	// NetNSPrefix prefixes every node namespace name.
	NetNSPrefix = "svcnet-lab-"
	// Bridge is the segment's bridge in the host namespace.
	Bridge = "svcnetlab0"
	// HostLinkPrefix prefixes the host end of every node's veth.
	HostLinkPrefix = "svl-"
	// NodeLink is the node end of the veth, inside the node namespace.
	NodeLink = "eth0"
	// StateFile is the lab's state, in the data dir.
	StateFile = "lab.json"
	// KubeconfigFile is the admin kubeconfig for the host, in the data dir.
	KubeconfigFile = "kubeconfig"
	// SecurePort is the API server's port on the master's address.
	SecurePort = 6443
)

// Defaults of Config.
var (
	DefaultSubnet      = netip.MustParsePrefix("192.168.77.0/24")
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	DefaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
)

// DefaultDataDir is where the lab keeps its state when --data-dir is not
// given.
const DefaultDataDir = "/var/lib/svcnet-lab"

// Config configures `lab up`.
type Config struct {
	DataDir string
	// Nodes is the number of nodes (1 to 50): master, work1, work2, ….
	Nodes int
	// ProxyMode is passed to every agent ("" follows the kube-proxy
	// ConfigMap).
	ProxyMode string
	// Subnet is the private segment; the host takes its first address,
	// node i the address 10+i.
	Subnet netip.Prefix
	// DNSUpstreams are the node DNS's upstream resolvers (ip[:port]).
	DNSUpstreams []string
	// LBIPPool is passed to the server (LoadBalancer addresses).
	LBIPPool []string
	// Exe is the svcnet binary the processes run (default: this one).
	Exe string
	// Out receives progress lines.
	Out io.Writer
}

// Node is one node of a running lab.
type Node struct {
	Name     string     `json:"name"`
	NetNS    string     `json:"netns"`
	HostLink string     `json:"hostLink"`
	IP       netip.Addr `json:"ip"`
	PodCIDR  string     `json:"podCIDR,omitempty"`
	AgentPID int        `json:"agentPID,omitempty"`
	RootDir  string     `json:"rootDir"`
}

// State is <data-dir>/lab.json.
type State struct {
	DataDir    string       `json:"dataDir"`
	Exe        string       `json:"exe"`
	ProxyMode  string       `json:"proxyMode,omitempty"`
	Bridge     string       `json:"bridge"`
	HostIP     netip.Prefix `json:"hostIP"`
	ServerPID  int          `json:"serverPID,omitempty"`
	ServerURL  string       `json:"serverURL"`
	ServerDir  string       `json:"serverDir"`
	Kubeconfig string       `json:"kubeconfig"`
	Nodes      []Node       `json:"nodes"`
	// Routes are the host routes `lab up` added ("<dst> via <gw>").
	Routes []string `json:"routes,omitempty"`
}

// Master returns the first node (the one running the control plane).
func (s *State) Master() *Node { return &s.Nodes[0] }

// Node returns the node named name.
func (s *State) Node(name string) (*Node, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], nil
		}
	}
	names := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		names[i] = n.Name
	}
	return nil, fmt.Errorf("lab: no node %q (nodes: %s)", name, strings.Join(names, ", "))
}

// NodeName is the name of node i: master, work1, work2, ….
func NodeName(i int) string {
	if i == 0 {
		return "master"
	}
	return fmt.Sprintf("work%d", i)
}

// plan computes the names and addresses of a lab of cfg.Nodes nodes.
func plan(cfg Config) (*State, error) {
	if cfg.Nodes < 1 || cfg.Nodes > 50 {
		return nil, fmt.Errorf("lab: --nodes %d: want 1 to 50", cfg.Nodes)
	}
	sub := cfg.Subnet.Masked()
	if !sub.Addr().Is4() || sub.Bits() > 24 {
		return nil, fmt.Errorf("lab: subnet %v: want an IPv4 prefix of /24 or larger", cfg.Subnet)
	}
	if sub.Overlaps(DefaultClusterCIDR) || sub.Overlaps(DefaultServiceCIDR) {
		return nil, fmt.Errorf("lab: subnet %v overlaps the pod or Service CIDR", sub)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("lab: data dir: %w", err)
	}
	host := sub.Addr().Next()
	s := &State{
		DataDir:    dataDir,
		Exe:        cfg.Exe,
		ProxyMode:  cfg.ProxyMode,
		Bridge:     Bridge,
		HostIP:     netip.PrefixFrom(host, sub.Bits()),
		ServerDir:  filepath.Join(dataDir, "server"),
		Kubeconfig: filepath.Join(dataDir, KubeconfigFile),
	}
	ip := sub.Addr()
	for range 10 {
		ip = ip.Next()
	}
	for i := range cfg.Nodes {
		name := NodeName(i)
		s.Nodes = append(s.Nodes, Node{
			Name:     name,
			NetNS:    NetNSPrefix + name,
			HostLink: HostLinkPrefix + name,
			IP:       ip,
			RootDir:  filepath.Join(dataDir, "nodes", name),
		})
		ip = ip.Next()
	}
	s.ServerURL = fmt.Sprintf("https://%s:%d", s.Nodes[0].IP, SecurePort)
	return s, nil
}

func statePath(dataDir string) string { return filepath.Join(dataDir, StateFile) }

// LoadState reads <dataDir>/lab.json.
func LoadState(dataDir string) (*State, error) {
	b, err := os.ReadFile(statePath(dataDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("lab: no lab in %s (run svcnet lab up): %w", dataDir, err)
		}
		return nil, fmt.Errorf("lab: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", statePath(dataDir), err)
	}
	if len(s.Nodes) == 0 {
		return nil, fmt.Errorf("lab: %s lists no nodes", statePath(dataDir))
	}
	return &s, nil
}

// save writes the state atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.DataDir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("lab: save state: %w", err)
	}
	if err := os.Rename(tmp, statePath(s.DataDir)); err != nil {
		return fmt.Errorf("lab: save state: %w", err)
	}
	return nil
}
