package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// Config configures one iptables Backend (one IP family). The fields mean
// what they mean for the nftables backend.
type Config struct {
	// Family is v1.IPv4Protocol (iptables, the default) or v1.IPv6Protocol
	// (ip6tables).
	Family v1.IPFamily
	// NodeName is this node's name.
	NodeName string
	// NodeIPs are the node's addresses; NodePorts answer on those of this
	// family (never loopback) unless NodePortAddresses is set. The State's
	// NodeIPs are added at each sync.
	NodeIPs []netip.Addr
	// ClusterCIDRs are the pod CIDRs: ClusterIP traffic from outside the
	// first one of the family is masqueraded; pods reaching an external IP
	// of an ETP Local service are short-circuited to the cluster policy.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs: traffic to an unallocated address in them is dropped
	// (and to an unused port of an allocated ClusterIP rejected).
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses restricts NodePorts to the local addresses inside
	// these prefixes (as --nodeport-addresses).
	NodePortAddresses []netip.Prefix
	// InterfaceAddrs lists local addresses for NodePortAddresses (default
	// net.InterfaceAddrs).
	InterfaceAddrs func() ([]netip.Addr, error)
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// TCPBeLiberal, when false, drops forwarded packets conntrack marks
	// INVALID (KUBE-FORWARD), as upstream.
	TCPBeLiberal bool
	// Conntrack deletes stale UDP flows after endpoint changes; nil
	// disables the cleanup.
	Conntrack conntrack.Interface
	// Logger receives the backend's logs (default slog.Default()).
	Logger *slog.Logger
	// MaxChainsPerRestore, when positive, splits a sync or cleanup that
	// writes or deletes more chains than this into several
	// iptables-restore runs, whole services per run, the top-level chains
	// last, deletions after them (payload.split). iptables-nft-restore
	// finds a jump's target among the chains created in the same run by a
	// linear search, so one run that creates and jumps to n chains costs
	// O(n²) (v1.8.9 on this project's machine: 8k chains 0.6 s, 16k 2.3 s,
	// 32k 9.3 s; in runs of 8k, 0.6 s each). NewSystem sets
	// ChainsPerRestore(variant).
	MaxChainsPerRestore int
}

// ChainsPerRestore is the MaxChainsPerRestore for variant v: runs of
// 1000 chains for iptables-nft; one run for iptables-legacy, which
// replaces the whole table on every run (more runs would cost more).
func ChainsPerRestore(v Variant) int {
	if v == VariantNFT {
		return 1000
	}
	return 0
}

// Backend is the iptables proxy backend for one IP family. It implements
// proxy.Backend and proxy.SyncStats; Sync and Cleanup must not run
// concurrently.
type Backend struct {
	cfg          Config
	ipt          Interface
	ipv6         bool
	clusterCIDRs []netip.Prefix
	log          *slog.Logger

	// What the kernel holds, valid while needFull is false.
	needFull bool
	nodeIPs  []netip.Addr
	// serviceCIDRs (of this family) the last sync wrote the
	// "unallocated service IP" rules for (ServiceCIDRsOfFamily).
	serviceCIDRs []netip.Prefix
	records      map[proxy.ServicePortName]*svcPlan
	// rootChains holds, per entry of roots, the chains written for it
	// (the root chain and its KUBE-DST tree).
	rootChains []map[string][]string
	// fixedRules and svcRules count the rules outside the roots.
	fixedRules, svcRules int

	lastPartial bool
}

var (
	_ proxy.Backend   = (*Backend)(nil)
	_ proxy.SyncStats = (*Backend)(nil)
)

// New returns a Backend writing through ipt (NewExec for the real
// binaries, NewFake in tests).
func New(cfg Config, ipt Interface) (*Backend, error) {
	if cfg.Family == "" {
		cfg.Family = v1.IPv4Protocol
	}
	if cfg.Family != v1.IPv4Protocol && cfg.Family != v1.IPv6Protocol {
		return nil, fmt.Errorf("iptables: unknown IP family %q", cfg.Family)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = proxy.LocalAddrs
	}
	b := &Backend{
		cfg:      cfg,
		ipt:      ipt,
		ipv6:     cfg.Family == v1.IPv6Protocol,
		log:      cfg.Logger.With("component", "proxy-iptables", "family", string(cfg.Family)),
		needFull: true,
		records:  map[proxy.ServicePortName]*svcPlan{},
	}
	for _, p := range cfg.ClusterCIDRs {
		if p.Addr().Is4() == !b.ipv6 {
			b.clusterCIDRs = append(b.clusterCIDRs, p.Masked())
		}
	}
	return b, nil
}

// NewSystem returns the backends of both families for the iptables
// variant the system uses (DetectVariant), combined under the name
// "iptables": what `svcnet proxy --mode iptables` runs. cfg.Family is
// ignored.
func NewSystem(ctx context.Context, cfg Config) (proxy.Backend, error) {
	variant, err := DetectVariant(ctx)
	if err != nil {
		return nil, err
	}
	var backends []proxy.Backend
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		c := cfg
		c.Family = fam
		if c.MaxChainsPerRestore == 0 {
			c.MaxChainsPerRestore = ChainsPerRestore(variant)
		}
		b, err := New(c, NewExec(fam, variant))
		if err != nil {
			return nil, err
		}
		backends = append(backends, b)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("iptables proxy mode", "variant", string(variant))
	}
	return proxy.Combine("iptables", backends...), nil
}

// CleanupSystem removes everything the iptables mode may have installed,
// in both families and with both variants whose binaries exist (a node may
// have switched variants): what `svcnet proxy cleanup` runs.
func CleanupSystem(ctx context.Context) error {
	var errs []error
	for _, v := range []Variant{VariantNFT, VariantLegacy} {
		if _, err := exec.LookPath("iptables-" + string(v) + "-restore"); err != nil {
			continue
		}
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			b, err := New(Config{Family: fam}, NewExec(fam, v))
			if err != nil {
				return err
			}
			if err := b.Cleanup(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", v, fam, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "iptables" }

// LastSyncStats implements proxy.SyncStats.
func (b *Backend) LastSyncStats() (partial bool, rules int) {
	rules = b.fixedRules + b.svcRules
	for _, chains := range b.rootChains {
		for _, r := range chains {
			rules += len(r)
		}
	}
	return b.lastPartial, rules
}

// nodePortIPs computes the addresses NodePorts answer on.
func (b *Backend) nodePortIPs(st *proxy.State) []netip.Addr {
	out, err := proxy.NodePortAddrs(b.cfg.NodePortAddresses, b.cfg.InterfaceAddrs, b.cfg.NodeIPs, st.NodeIPs,
		func(a netip.Addr) bool { return a.Is4() == !b.ipv6 })
	if err != nil {
		b.log.Error("listing local addresses for NodePorts", "err", err)
	}
	return out
}

// jump connects a built-in chain to a top-level chain.
type jump struct {
	table, from, to, comment string
	newOnly                  bool // only new connections (-m conntrack --ctstate NEW)
}

func (j jump) rule() string {
	r := fmt.Sprintf(`-m comment --comment "%s"`, j.comment)
	if j.newOnly {
		r += " -m conntrack --ctstate NEW"
	}
	return r + " -j " + j.to
}

// jumps are upstream's, in the order they end up in each built-in chain.
var jumps = []jump{
	{tableFilter, "INPUT", kubeProxyFirewallChain, "kubernetes load balancer firewall", true},
	{tableFilter, "INPUT", kubeNodePortsChain, "kubernetes health check service ports", false},
	{tableFilter, "INPUT", kubeExternalServicesChain, "kubernetes externally-visible service portals", true},
	{tableFilter, "FORWARD", kubeProxyFirewallChain, "kubernetes load balancer firewall", true},
	{tableFilter, "FORWARD", kubeForwardChain, "kubernetes forwarding rules", false},
	{tableFilter, "FORWARD", kubeServicesChain, "kubernetes service portals", true},
	{tableFilter, "FORWARD", kubeExternalServicesChain, "kubernetes externally-visible service portals", true},
	{tableFilter, "OUTPUT", kubeProxyFirewallChain, "kubernetes load balancer firewall", true},
	{tableFilter, "OUTPUT", kubeServicesChain, "kubernetes service portals", true},
	{tableNAT, "PREROUTING", kubeServicesChain, "kubernetes service portals", false},
	{tableNAT, "OUTPUT", kubeServicesChain, "kubernetes service portals", false},
	{tableNAT, "POSTROUTING", kubePostroutingChain, "kubernetes postrouting rules", false},
}

// topChains are the fixed chains of each table.
var topChains = map[string][]string{
	tableFilter: {kubeServicesChain, kubeExternalServicesChain, kubeForwardChain, kubeNodePortsChain, kubeProxyFirewallChain},
	tableNAT:    {kubeServicesChain, kubeNodePortsChain, kubePostroutingChain, kubeMarkMasqChain},
}
