package ipvs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	libipvs "github.com/moby/ipvs"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
)

// Config configures the ipvs Backend (both IP families).
type Config struct {
	NodeName string
	// NodeIPs are the node's addresses: NodePorts get a virtual server on
	// each (never loopback), unless NodePortAddresses is set. The State's
	// NodeIPs are added at each sync.
	NodeIPs []netip.Addr
	// ClusterCIDRs are the pod CIDRs: traffic to a ClusterIP from outside
	// them is masqueraded.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs: traffic to an address in them that no Service has is
	// dropped.
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses restricts NodePorts to the local addresses inside
	// these prefixes (InterfaceAddrs lists them; default net.InterfaceAddrs).
	NodePortAddresses []netip.Prefix
	InterfaceAddrs    func() ([]netip.Addr, error)
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// Scheduler is KubeProxyConfiguration ipvs.scheduler ("" = rr).
	Scheduler string
	// TCPTimeout, TCPFinTimeout and UDPTimeout are the IPVS connection
	// timeouts (ipvs.tcpTimeout …); zero leaves the kernel's value.
	TCPTimeout, TCPFinTimeout, UDPTimeout time.Duration

	// Handle, Link, NFT (per family "ip"/"ip6" table TableName) and Sysctl
	// are the kernel interfaces; NewSystem fills them with the real ones,
	// tests with fakes. Sysctl nil skips the sysctls.
	Handle Handle
	Link   Link
	NFT    map[v1.IPFamily]knftables.Interface
	Sysctl func(name, value string) error
	// Conntrack deletes the conntrack entries of UDP flows whose real
	// server was removed (nil: no cleanup). IPVS moves such flows itself
	// (expire_nodest_conn), but their conntrack entry would keep the old
	// reply tuple.
	Conntrack conntrack.Interface

	Logger *slog.Logger
}

// Backend is the ipvs proxy backend. It implements proxy.Backend and
// proxy.SyncStats; Sync and Cleanup must not run concurrently.
type Backend struct {
	cfg          Config
	h            Handle
	link         Link
	log          *slog.Logger
	defaultSched string

	needFull    bool
	initialized bool
	nodeIPs     []netip.Addr
	// serviceCIDRs (both families) the nftables companion table was last
	// written with (proxy.ServiceCIDRsOfFamily).
	serviceCIDRs []netip.Prefix
	records      map[proxy.ServicePortName][]*virtualServer
	owners       map[vsKey]proxy.ServicePortName
	// draining are removed TCP/SCTP real servers kept with weight 0 while
	// they have connections.
	draining map[vsKey]map[netip.AddrPort]bool
	addrs    map[netip.Addr]bool // on the link, as last written
	nft      *nftBook            // nil until the first full sync, and after an error

	lastPartial bool
	entries     int
	staleUDP    []conntrack.Stale
}

var (
	_ proxy.Backend   = (*Backend)(nil)
	_ proxy.SyncStats = (*Backend)(nil)
)

// New returns a Backend on the interfaces in cfg (all of Handle, Link and
// NFT are required; see NewSystem for the real kernel).
func New(cfg Config) (*Backend, error) {
	if cfg.Handle == nil || cfg.Link == nil || cfg.NFT == nil {
		return nil, errors.New("ipvs: Config needs Handle, Link and NFT (NewSystem fills them)")
	}
	sched, err := ParseScheduler(cfg.Scheduler)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = localAddrs
	}
	return &Backend{
		cfg: cfg, h: cfg.Handle, link: cfg.Link, defaultSched: sched,
		log:      cfg.Logger.With("component", "proxy-ipvs"),
		needFull: true,
		records:  map[proxy.ServicePortName][]*virtualServer{},
		owners:   map[vsKey]proxy.ServicePortName{},
		draining: map[vsKey]map[netip.AddrPort]bool{},
	}, nil
}

// NewSystem returns a Backend on this network namespace's kernel. It
// refuses (wrapping ErrNoIPVS, naming the module) when the kernel has no
// IPVS or no dummy interfaces.
func NewSystem(cfg Config) (*Backend, error) {
	if _, err := ParseScheduler(cfg.Scheduler); err != nil {
		return nil, err
	}
	h, err := NewHandle()
	if err != nil {
		return nil, err
	}
	cfg.Handle, cfg.Link, cfg.Sysctl, cfg.Conntrack = h, NetlinkLink{}, WriteSysctl, conntrack.Netlink{}
	if cfg.NFT, err = NewNFT(); err != nil {
		h.Close()
		return nil, err
	}
	return New(cfg)
}

// NewNFT returns the real knftables interfaces of both families' table.
func NewNFT() (map[v1.IPFamily]knftables.Interface, error) {
	out := map[v1.IPFamily]knftables.Interface{}
	for fam, nf := range map[v1.IPFamily]knftables.Family{v1.IPv4Protocol: knftables.IPv4Family, v1.IPv6Protocol: knftables.IPv6Family} {
		nft, err := knftables.New(nf, TableName)
		if err != nil {
			return nil, fmt.Errorf("ipvs: nftables: %w", err)
		}
		out[fam] = nft
	}
	return out, nil
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "ipvs" }

// LastSyncStats implements proxy.SyncStats: rules are virtual plus real
// servers.
func (b *Backend) LastSyncStats() (bool, int) { return b.lastPartial, b.entries }

func localAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// nodePortIPs: the local addresses inside NodePortAddresses when set (but
// not service IPs on kube-ipvs0), else the node IPs; never loopback.
func (b *Backend) nodePortIPs(st *proxy.State) []netip.Addr {
	var cand []netip.Addr
	if len(b.cfg.NodePortAddresses) > 0 {
		local, err := b.cfg.InterfaceAddrs()
		if err != nil {
			b.log.Error("listing local addresses for NodePorts", "err", err)
		}
		for _, a := range local {
			if b.addrs[a] {
				continue
			}
			for _, p := range b.cfg.NodePortAddresses {
				if p.Contains(a) {
					cand = append(cand, a)
					break
				}
			}
		}
	} else {
		cand = append(append(cand, b.cfg.NodeIPs...), st.NodeIPs...)
	}
	var out []netip.Addr
	for _, a := range cand {
		if a = a.Unmap(); a.IsValid() && !a.IsLoopback() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// setup is the once-per-process part: the dummy interface, sysctls and the
// IPVS timeouts.
func (b *Backend) setup() error {
	if err := b.link.Ensure(); err != nil {
		return err
	}
	if b.cfg.Sysctl != nil {
		for _, s := range sysctls {
			if err := b.cfg.Sysctl(s.name, s.value); err != nil {
				return err
			}
		}
	}
	if b.cfg.TCPTimeout > 0 || b.cfg.TCPFinTimeout > 0 || b.cfg.UDPTimeout > 0 {
		c := &libipvs.Config{TimeoutTCP: b.cfg.TCPTimeout, TimeoutTCPFin: b.cfg.TCPFinTimeout, TimeoutUDP: b.cfg.UDPTimeout}
		if err := b.h.SetConfig(c); err != nil {
			return fmt.Errorf("ipvs: set timeouts: %w", err)
		}
	}
	return nil
}

// Sync implements proxy.Backend. A full sync (first, st.Full, node IP
// change, after an error) compares every desired virtual server with the
// kernel and deletes the kernel's virtual servers on kube-ipvs0 addresses
// and node IPs that nothing wants; a partial sync only looks at the
// services in st.Changed (and added or removed ones), and among those only
// touches the virtual and real servers that differ.
func (b *Backend) Sync(ctx context.Context, st *proxy.State) (err error) {
	defer func() {
		if err != nil {
			b.needFull = true
		}
	}()
	if !b.initialized {
		if err := b.setup(); err != nil {
			return err
		}
		b.initialized = true
	}
	nodeIPs := b.nodePortIPs(st)
	scidrs := slices.Concat(proxy.ServiceCIDRsOfFamily(st, b.cfg.ServiceCIDRs, false), proxy.ServiceCIDRsOfFamily(st, b.cfg.ServiceCIDRs, true))
	full := b.needFull || st.Full || !slices.Equal(nodeIPs, b.nodeIPs) || !slices.Equal(scidrs, b.serviceCIDRs)
	oldNodeIPs := b.nodeIPs
	b.nodeIPs, b.serviceCIDRs = nodeIPs, scidrs

	var cands []proxy.ServicePortName
	seen := map[proxy.ServicePortName]bool{}
	add := func(n proxy.ServicePortName) {
		if !seen[n] {
			seen[n] = true
			cands = append(cands, n)
		}
	}
	if full {
		for n := range st.Services {
			add(n)
		}
		for n := range b.records {
			add(n)
		}
	} else {
		for n := range st.Changed {
			add(n)
		}
		for n := range b.records {
			if _, ok := st.Services[n]; !ok {
				add(n)
			}
		}
		for n := range st.Services {
			if _, ok := b.records[n]; !ok {
				add(n)
			}
		}
	}
	slices.SortFunc(cands, func(x, y proxy.ServicePortName) int {
		return strings.Compare(x.String()+"/"+string(x.Protocol), y.String()+"/"+string(y.Protocol))
	})

	// A full sync reads all virtual servers at once; a partial one asks
	// for the few it looks at, so it costs O(changed services).
	var kernel map[vsKey]*libipvs.Service
	if full {
		if kernel, err = b.kernelServices(); err != nil {
			return err
		}
	}
	lookup := func(k vsKey) *libipvs.Service {
		if full {
			return kernel[k]
		}
		s, err := b.h.GetService(k.service())
		if err != nil {
			return nil // absent (ESRCH); anything else shows at the write
		}
		return s
	}

	// Release the candidates' keys first, so a key moving between two
	// candidates goes to its new owner.
	for _, n := range cands {
		for _, vs := range b.records[n] {
			if b.owners[vs.key] == n {
				delete(b.owners, vs.key)
			}
		}
	}
	var errs []error
	wanted := map[vsKey]bool{}
	for _, n := range cands {
		old := b.records[n]
		var plan []*virtualServer
		if sp, ok := st.Services[n]; ok {
			for _, vs := range b.plan(sp, st.Endpoints[n], nodeIPs) {
				if owner, taken := b.owners[vs.key]; taken && owner != n {
					b.log.Warn("virtual server used by two services; keeping the first", "vs", vs.key.String(), "service", n.String(), "owner", owner.String())
					continue
				}
				b.owners[vs.key] = n
				plan = append(plan, vs)
			}
		}
		if plan == nil {
			delete(b.records, n)
		} else {
			b.records[n] = plan
		}
		oldByKey := map[vsKey]*virtualServer{}
		for _, vs := range old {
			oldByKey[vs.key] = vs
		}
		for _, vs := range plan {
			wanted[vs.key] = true
			prev := oldByKey[vs.key]
			if !full && prev != nil && prev.equal(vs) {
				continue
			}
			errs = append(errs, b.syncVirtualServer(vs, lookup(vs.key)))
		}
		for _, vs := range old {
			if _, owned := b.owners[vs.key]; wanted[vs.key] || owned {
				continue
			}
			if ks := lookup(vs.key); ks != nil {
				errs = append(errs, b.delVirtualServer(vs.key))
				delete(kernel, vs.key)
			}
		}
	}
	if full {
		// Leftovers: virtual servers on our addresses nobody wants.
		ours, err := b.link.Addrs()
		if err != nil {
			return err
		}
		mine := map[netip.Addr]bool{}
		for _, a := range slices.Concat(ours, nodeIPs, oldNodeIPs) {
			mine[a] = true
		}
		for k := range kernel {
			if _, owned := b.owners[k]; !owned && mine[k.addr] {
				errs = append(errs, b.delVirtualServer(k))
			}
		}
	}
	errs = append(errs, b.drain())
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := b.syncAddrs(full); err != nil {
		return err
	}
	if err := b.syncNFT(ctx, full, cands); err != nil {
		return err
	}
	b.clearStaleUDP(ctx)
	b.entries = 0
	for _, plan := range b.records {
		for _, vs := range plan {
			b.entries += 1 + len(vs.dests)
		}
	}
	b.needFull = false
	b.lastPartial = !full
	return nil
}

// clearStaleUDP deletes the conntrack entries of UDP flows to real servers
// this sync removed. Failures are logged: the next packet of such a flow
// is still moved by IPVS.
func (b *Backend) clearStaleUDP(ctx context.Context) {
	stale := b.staleUDP
	b.staleUDP = nil
	if b.cfg.Conntrack == nil || len(stale) == 0 {
		return
	}
	for _, v6 := range []bool{false, true} {
		var fam []conntrack.Stale
		for _, s := range stale {
			if s.Frontends[0].Addr().Is6() == v6 {
				fam = append(fam, s)
			}
		}
		if len(fam) == 0 {
			continue
		}
		if _, err := b.cfg.Conntrack.ClearStaleUDP(ctx, v6, fam); err != nil {
			b.log.Warn("deleting stale UDP conntrack entries", "err", err)
		}
	}
}

func (b *Backend) kernelServices() (map[vsKey]*libipvs.Service, error) {
	svcs, err := b.h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("ipvs: list virtual servers: %w", err)
	}
	out := make(map[vsKey]*libipvs.Service, len(svcs))
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		out[keyOf(s)] = s
	}
	return out, nil
}

func (b *Backend) service(vs *virtualServer) *libipvs.Service {
	s := vs.key.service()
	s.SchedName = vs.sched
	if vs.timeout > 0 {
		s.Flags = flagPersistent
		s.Timeout = vs.timeout
		if vs.key.af == afInet {
			s.Netmask = 0xffffffff
		} else {
			s.Netmask = 128
		}
	}
	return s
}

// syncVirtualServer makes the kernel's virtual server k (nil when absent)
// and its real servers match vs.
func (b *Backend) syncVirtualServer(vs *virtualServer, k *libipvs.Service) error {
	s := b.service(vs)
	var have map[netip.AddrPort]*libipvs.Destination
	if k == nil {
		if err := b.h.NewService(s); err != nil {
			return fmt.Errorf("ipvs: add virtual server %s: %w", vs.key, err)
		}
	} else {
		if k.SchedName != s.SchedName || k.Flags&flagPersistent != s.Flags&flagPersistent ||
			(s.Flags&flagPersistent != 0 && k.Timeout != s.Timeout) {
			if err := b.h.UpdateService(s); err != nil {
				return fmt.Errorf("ipvs: update virtual server %s: %w", vs.key, err)
			}
		}
		ds, err := b.h.GetDestinations(s)
		if err != nil {
			return fmt.Errorf("ipvs: list real servers of %s: %w", vs.key, err)
		}
		have = make(map[netip.AddrPort]*libipvs.Destination, len(ds))
		for _, d := range ds {
			have[destKey(d)] = d
		}
	}
	var errs []error
	dr := b.draining[vs.key]
	for ap, w := range vs.dests {
		d := &libipvs.Destination{Address: net.IP(ap.Addr().AsSlice()), Port: ap.Port(), Weight: w,
			AddressFamily: vs.key.af, ConnectionFlags: libipvs.ConnectionFlagMasq}
		delete(dr, ap)
		if cur, ok := have[ap]; ok {
			if cur.Weight != w || cur.ConnectionFlags&libipvs.ConnectionFlagFwdMask != libipvs.ConnectionFlagMasq {
				if err := b.h.UpdateDestination(s, d); err != nil {
					errs = append(errs, fmt.Errorf("ipvs: update real server %s of %s: %w", ap, vs.key, err))
				}
			}
			continue
		}
		if err := b.h.NewDestination(s, d); err != nil {
			errs = append(errs, fmt.Errorf("ipvs: add real server %s to %s: %w", ap, vs.key, err))
		}
	}
	removed := false
	for ap, d := range have {
		if _, ok := vs.dests[ap]; ok {
			continue
		}
		removed = true
		// Removed endpoint: TCP and SCTP connections drain on weight 0;
		// UDP has no end of connection to wait for, so it goes at once
		// (expire_nodest_conn moves its flows on at their next packet).
		if vs.key.proto != protoUDP && d.ActiveConnections+d.InactiveConnections > 0 {
			if d.Weight != 0 {
				d.Weight = 0
				if err := b.h.UpdateDestination(s, d); err != nil {
					errs = append(errs, fmt.Errorf("ipvs: drain real server %s of %s: %w", ap, vs.key, err))
					continue
				}
			}
			if b.draining[vs.key] == nil {
				b.draining[vs.key] = map[netip.AddrPort]bool{}
			}
			b.draining[vs.key][ap] = true
			continue
		}
		if err := b.h.DelDestination(s, d); err != nil {
			errs = append(errs, fmt.Errorf("ipvs: delete real server %s of %s: %w", ap, vs.key, err))
		}
		delete(b.draining[vs.key], ap)
	}
	if len(b.draining[vs.key]) == 0 {
		delete(b.draining, vs.key)
	}
	if vs.key.proto == protoUDP && removed {
		keep := map[netip.AddrPort]bool{}
		for ap, w := range vs.dests {
			if w > 0 {
				keep[ap] = true
			}
		}
		b.staleUDP = append(b.staleUDP, conntrack.Stale{Frontends: []netip.AddrPort{netip.AddrPortFrom(vs.key.addr, vs.key.port)}, Keep: keep})
	}
	return errors.Join(errs...)
}

func (b *Backend) delVirtualServer(k vsKey) error {
	delete(b.draining, k)
	if err := b.h.DelService(k.service()); err != nil {
		return fmt.Errorf("ipvs: delete virtual server %s: %w", k, err)
	}
	return nil
}

// drain deletes draining real servers whose connections have ended.
func (b *Backend) drain() error {
	var errs []error
	for k, aps := range b.draining {
		s := k.service()
		ds, err := b.h.GetDestinations(s)
		if err != nil {
			delete(b.draining, k) // the virtual server is gone
			continue
		}
		for _, d := range ds {
			ap := destKey(d)
			if !aps[ap] || d.ActiveConnections+d.InactiveConnections > 0 {
				continue
			}
			if err := b.h.DelDestination(s, d); err != nil {
				errs = append(errs, fmt.Errorf("ipvs: delete drained real server %s of %s: %w", ap, k, err))
				continue
			}
			delete(aps, ap)
		}
		if len(aps) == 0 {
			delete(b.draining, k)
		}
	}
	return errors.Join(errs...)
}

// syncAddrs puts exactly the ClusterIPs, ExternalIPs and LB IPs on the link.
func (b *Backend) syncAddrs(full bool) error {
	want := map[netip.Addr]bool{}
	for _, plan := range b.records {
		for _, vs := range plan {
			if vs.entry != EntryNodePort {
				want[vs.key.addr] = true
			}
		}
	}
	if !full && mapsEqual(want, b.addrs) {
		return nil
	}
	have, err := b.link.Addrs()
	if err != nil {
		return err
	}
	var errs []error
	hs := map[netip.Addr]bool{}
	for _, a := range have {
		hs[a] = true
		if !want[a] {
			errs = append(errs, b.link.DelAddr(a))
		}
	}
	for a := range want {
		if !hs[a] {
			errs = append(errs, b.link.AddAddr(a))
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.addrs = nil
		return err
	}
	b.addrs = want
	return nil
}

func mapsEqual(a, b map[netip.Addr]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// Cleanup implements proxy.Backend: it deletes every IPVS virtual server
// (svcnet owns IPVS on its nodes, as kube-proxy does), kube-ipvs0 and the
// nftables tables.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	svcs, err := b.h.GetServices()
	if err != nil {
		errs = append(errs, fmt.Errorf("ipvs: list virtual servers: %w", err))
	}
	for _, s := range svcs {
		if err := b.h.DelService(s); err != nil {
			errs = append(errs, fmt.Errorf("ipvs: delete virtual server %s: %w", keyOf(s), err))
		}
	}
	errs = append(errs, b.link.Delete(), cleanupNFT(ctx, b.cfg.NFT))
	b.needFull, b.initialized = true, false
	clear(b.records)
	clear(b.owners)
	clear(b.draining)
	b.nft = nil
	b.addrs = nil
	return errors.Join(errs...)
}

// CleanupSystem removes what the ipvs mode installs in this network
// namespace (`svcnet proxy cleanup`, a start in another mode): when
// kube-ipvs0 exists (the mode ran here), every IPVS virtual server,
// kube-ipvs0 and the tables; otherwise only the tables (on a kernel
// without IPVS nothing else can exist). It loads no module.
func CleanupSystem(ctx context.Context) error {
	nft, err := NewNFT()
	if err != nil {
		return err
	}
	paths := DefaultKernelPaths()
	paths.Modprobe = func(string) error { return errors.New("not loaded for a cleanup") }
	// Without IPVS, or without kube-ipvs0 (the ipvs mode never ran here, or
	// was cleaned up), the IPVS table is someone else's: leave it.
	if CheckKernel(paths) != nil {
		return errors.Join(cleanupNFT(ctx, nft), NetlinkLink{}.Delete())
	}
	if _, err := os.Stat(filepath.Join(paths.Sys, "class/net", LinkName)); err != nil {
		return cleanupNFT(ctx, nft)
	}
	h, err := libipvs.New("")
	if err != nil {
		return fmt.Errorf("ipvs: open netlink handle: %w", err)
	}
	defer h.Close()
	b, err := New(Config{Handle: h, Link: NetlinkLink{}, NFT: nft})
	if err != nil {
		return err
	}
	return b.Cleanup(ctx)
}
