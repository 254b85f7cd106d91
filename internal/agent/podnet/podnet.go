package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route svcnet installs (rtm_protocol; "ip route"
// shows "proto 115"). No iproute2 rt_protos entry uses 115, so SyncNodeRoutes,
// GC and Cleanup find exactly svcnet's routes and touch nothing else.
const RouteProtocol netlink.RouteProtocol = 115

// Pod-side constants.
const (
	// PodGateway is every pod's next hop: a link-local address that no
	// interface needs to own. The host veth answers ARP for it by proxy
	// ARP, and the pod also gets a permanent neighbour entry for it, so pod
	// egress works even on a node without a default route (where proxy ARP
	// has no route to answer from).
	PodGateway = "169.254.1.1"
	// PodInterface is the pod side of the veth pair.
	PodInterface = "eth0"
	// hostPrefix starts every host-side veth name.
	hostPrefix = "svc"
)

// HostMAC is the MAC address of every host-side veth (as Calico does).
// A fixed address keeps the pod's permanent neighbour entry for PodGateway
// valid whatever veth the pod is attached to.
var HostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

// Config configures a Network.
type Config struct {
	PodCIDR   netip.Prefix // this node's podCIDR (from Node.spec.podCIDR); IPv4
	StateFile string       // IPAM persistence (JSON), survives agent restarts; "" keeps it in memory
	Log       *slog.Logger // nil: slog.Default()
	// MTU of both veth ends; 0 keeps the kernel default (1500). Set it to
	// the node's uplink MTU when that is smaller.
	MTU int
}

// Network is one node's pod network. Its methods are safe for concurrent
// use; netlink calls run in the calling thread's network namespace (the
// node's), so a test may drive a second node's Network from a thread that
// switched namespace.
type Network struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex // guards the fields below
	ipam *ipam
}

// New loads the IPAM state, applies the node sysctls forwarding needs and
// installs the "unreachable PodCIDR" route (see the package doc).
func New(cfg Config) (*Network, error) {
	if !cfg.PodCIDR.IsValid() || !cfg.PodCIDR.Addr().Is4() || cfg.PodCIDR.Bits() > 30 {
		return nil, fmt.Errorf("podnet: podCIDR %v: need an IPv4 prefix of /30 or larger", cfg.PodCIDR)
	}
	cfg.PodCIDR = cfg.PodCIDR.Masked()
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "podnet")
	i, dropped, err := loadIPAM(cfg.StateFile, cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	if len(dropped) > 0 {
		log.Warn("dropped IPAM allocations outside the podCIDR", "podCIDR", cfg.PodCIDR, "uids", dropped)
		if err := i.save(cfg.StateFile); err != nil {
			return nil, err
		}
	}
	n := &Network{cfg: cfg, log: log, ipam: i}
	if err := nodeSysctls(); err != nil {
		return nil, err
	}
	if err := n.ensureUnreachable(); err != nil {
		return nil, err
	}
	return n, nil
}

// ensureUnreachable installs the unreachable route for the podCIDR unless
// a foreign route for exactly the podCIDR exists (which is left alone).
func (n *Network) ensureUnreachable() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: netlink: %w", err)
	}
	defer h.Close()
	want := n.unreachableRoute()
	existing, err := listRoutes(h, &netlink.Route{Dst: want.Dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("podnet: %w", err)
	}
	for _, r := range existing {
		if r.Protocol != RouteProtocol {
			n.log.Warn("a foreign route covers the podCIDR; not installing the unreachable route", "route", r.String())
			return nil
		}
	}
	if err := h.RouteReplace(want); err != nil {
		return fmt.Errorf("podnet: unreachable route for %v: %w", n.cfg.PodCIDR, err)
	}
	return nil
}

// nodeSysctls sets what routing pods needs on the node:
//
//   - net.ipv4.ip_forward=1 and net.ipv4.conf.all.forwarding=1: every pod
//     is its own L3 hop behind a veth (no bridge), so the node routes all
//     pod traffic: pod↔pod on the node, pod↔other nodes' pods (host-gw),
//     pod↔outside. Proxy ARP on the host veths also needs forwarding.
//   - net.ipv4.conf.default.forwarding=1: veths created later start out
//     forwarding.
//   - net.ipv4.conf.all.rp_filter: lowered from 1 (strict) to 2 (loose),
//     left alone otherwise. With host-gw, a packet from another node's pod
//     arrives on whatever link that node sends it on, which need not be the
//     link our route back to its podCIDR uses on a multi-homed node; strict
//     reverse-path filtering would drop it silently. The kernel applies
//     max(all, dev), so "all" is the knob that matters.
func nodeSysctls() error {
	for _, s := range []struct{ name, value string }{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/forwarding", "1"},
		{"net/ipv4/conf/default/forwarding", "1"},
	} {
		if err := setSysctl(s.name, s.value); err != nil {
			return err
		}
	}
	if v, err := getSysctl("net/ipv4/conf/all/rp_filter"); err == nil && v == "1" {
		return setSysctl("net/ipv4/conf/all/rp_filter", "2")
	}
	return nil
}

// hostVethSysctls configures a host veth:
//
//   - proxy_arp=1: the veth answers the pod's ARP for PodGateway (and any
//     other off-link address) with its own MAC, so the pod needs no real
//     gateway address. proxy_delay=0: answer at once, not after the
//     default random delay of up to 0.8s.
//   - forwarding=1 (explicit, in case "default" was changed after New).
//   - disable_ipv6=1: svcnet pod networking is IPv4; this stops the veth
//     from sending router/neighbour solicitations into the pod.
func hostVethSysctls(dev string) error {
	for _, s := range []struct{ name, value string }{
		{"net/ipv4/conf/" + dev + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + dev + "/proxy_delay", "0"},
		{"net/ipv4/conf/" + dev + "/forwarding", "1"},
	} {
		if err := setSysctl(s.name, s.value); err != nil {
			return err
		}
	}
	if err := setSysctl("net/ipv6/conf/"+dev+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// getSysctl reads /proc/sys/<name> in the calling thread's namespace.
func getSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return "", fmt.Errorf("podnet: sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// setSysctl writes /proc/sys/<name> unless it already holds value (so a
// read-only /proc/sys that is already right is no error).
func setSysctl(name, value string) error {
	if cur, err := getSysctl(name); err == nil && cur == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("podnet: sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// HostVethName returns the host-side veth name of pod uid: "svc" and 11 hex
// digits of sha256(uid) (14 bytes, within IFNAMSIZ).
func HostVethName(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return hostPrefix + hex.EncodeToString(sum[:])[:11]
}

// isHostVethName reports whether name has the form HostVethName returns.
func isHostVethName(name string) bool {
	if len(name) != len(hostPrefix)+11 || !strings.HasPrefix(name, hostPrefix) {
		return false
	}
	for _, c := range name[len(hostPrefix):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Allocate returns uid's pod IP, allocating the next free one if uid has
// none. The allocation is persisted before Allocate returns.
func (n *Network) Allocate(uid string) (netip.Addr, error) {
	if uid == "" {
		return netip.Addr{}, errors.New("podnet: allocate: empty uid")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.ipam.byUID[uid]; ok {
		return a, nil
	}
	a, ok := n.ipam.next()
	if !ok {
		return netip.Addr{}, fmt.Errorf("podnet: allocate %s: podCIDR %v is full", uid, n.cfg.PodCIDR)
	}
	next := n.ipam.clone()
	next.set(uid, a)
	next.last = a
	if err := next.save(n.cfg.StateFile); err != nil {
		return netip.Addr{}, err
	}
	n.ipam = next
	n.log.Debug("allocated pod IP", "uid", uid, "ip", a)
	return a, nil
}

// Release frees uid's pod IP (no error if it has none).
func (n *Network) Release(uid string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.releaseLocked(uid)
}

func (n *Network) releaseLocked(uids ...string) error {
	next := n.ipam.clone()
	changed := false
	for _, uid := range uids {
		if _, ok := next.byUID[uid]; ok {
			next.remove(uid)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := next.save(n.cfg.StateFile); err != nil {
		return err
	}
	n.ipam = next
	return nil
}

// Lookup returns uid's pod IP, if it has one.
func (n *Network) Lookup(uid string) (netip.Addr, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.ipam.byUID[uid]
	return a, ok
}

// PodCIDR returns the node's pod range.
func (n *Network) PodCIDR() netip.Prefix { return n.cfg.PodCIDR }

// Allocated returns a copy of every allocation, by pod UID.
func (n *Network) Allocated() map[string]netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := make(map[string]netip.Addr, len(n.ipam.byUID))
	for uid, a := range n.ipam.byUID {
		m[uid] = a
	}
	return m
}

// ipNet converts a prefix for netlink.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// unreachableRoute is "unreachable PodCIDR proto svcnet": addresses of the
// podCIDR that belong to no pod (yet, or any more) fail fast with ICMP
// unreachable instead of following the default route, where host-gw
// nodes would bounce them between each other. Each pod's /32 is more
// specific and wins.
func (n *Network) unreachableRoute() *netlink.Route {
	return &netlink.Route{Dst: ipNet(n.cfg.PodCIDR), Type: unix.RTN_UNREACHABLE, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
}

// Attach connects the pod network namespace at netnsPath (for example
// /proc/<pid>/ns/net) to the node with ip. It is idempotent: a correct
// attachment is re-asserted, a stale one (the veth's peer is in another
// namespace) is replaced.
func (n *Network) Attach(ctx context.Context, uid, netnsPath string, ip netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !ip.Is4() || !n.cfg.PodCIDR.Contains(ip) {
		return fmt.Errorf("podnet: attach %s: %v is not in podCIDR %v", uid, ip, n.cfg.PodCIDR)
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("podnet: attach %s: opening netns %s: %w", uid, netnsPath, err)
	}
	defer ns.Close()
	// Never treat the node's own namespace as a pod's: its eth0 would be
	// taken for a stale pod interface.
	if self, err := netns.Get(); err == nil {
		same := self.Equal(ns)
		self.Close()
		if same {
			return fmt.Errorf("podnet: attach %s: %s is the node's own network namespace", uid, netnsPath)
		}
	}
	hh, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: attach %s: netlink: %w", uid, err)
	}
	defer hh.Close()
	ph, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("podnet: attach %s: netlink in %s: %w", uid, netnsPath, err)
	}
	defer ph.Close()

	name := HostVethName(uid)
	host, pod, err := n.ensureVeth(hh, ph, ns, name)
	if err != nil {
		return fmt.Errorf("podnet: attach %s: %w", uid, err)
	}
	if err := configurePod(ph, pod, ip); err != nil {
		return fmt.Errorf("podnet: attach %s: pod side: %w", uid, err)
	}
	if err := configureHost(hh, host, uid, ip); err != nil {
		return fmt.Errorf("podnet: attach %s: node side: %w", uid, err)
	}
	n.log.Debug("attached pod", "uid", uid, "ip", ip, "veth", name, "netns", netnsPath)
	return nil
}

// ensureVeth returns the host and pod ends of uid's veth pair, creating
// the pair (or replacing a stale one) as needed.
func (n *Network) ensureVeth(hh, ph *netlink.Handle, ns netns.NsHandle, name string) (host, pod netlink.Link, err error) {
	host, err = hh.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return nil, nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	pod, perr := ph.LinkByName(PodInterface)
	if perr != nil && !isNotFound(perr) {
		return nil, nil, fmt.Errorf("looking up %s in the pod: %w", PodInterface, perr)
	}
	if host != nil && pod != nil && pairOf(host, pod) {
		return host, pod, nil
	}
	if host != nil {
		// A veth of this pod whose peer is not this namespace's eth0: the
		// sandbox was recreated. Deleting one end deletes both.
		n.log.Info("replacing stale pod veth", "veth", name)
		if err := hh.LinkDel(host); err != nil && !isNotFound(err) {
			return nil, nil, fmt.Errorf("deleting stale %s: %w", name, err)
		}
	}
	if pod != nil {
		if pod.Type() != "veth" {
			return nil, nil, fmt.Errorf("pod already has a %s of type %s", PodInterface, pod.Type())
		}
		if err := ph.LinkDel(pod); err != nil && !isNotFound(err) {
			return nil, nil, fmt.Errorf("deleting stale %s in the pod: %w", PodInterface, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, HardwareAddr: HostMAC, MTU: n.cfg.MTU},
		PeerName:      PodInterface,
		PeerNamespace: netlink.NsFd(int(ns)),
		PeerMTU:       uint32(n.cfg.MTU),
	}
	if err := hh.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("creating veth %s: %w", name, err)
	}
	if host, err = hh.LinkByName(name); err != nil {
		return nil, nil, fmt.Errorf("looking up new %s: %w", name, err)
	}
	if pod, err = ph.LinkByName(PodInterface); err != nil {
		return nil, nil, fmt.Errorf("looking up new %s in the pod: %w", PodInterface, err)
	}
	return host, pod, nil
}

// pairOf reports whether host and pod are the two ends of one veth: each
// one's IFLA_LINK is the other's index ("eth0@if12" in ip link).
func pairOf(host, pod netlink.Link) bool {
	return host.Type() == "veth" && pod.Type() == "veth" &&
		host.Attrs().ParentIndex == pod.Attrs().Index &&
		pod.Attrs().ParentIndex == host.Attrs().Index
}

// configurePod sets the pod side: lo and eth0 up, ip/32 as eth0's only
// IPv4 address, "PodGateway dev eth0 scope link", "default via
// PodGateway" and a permanent neighbour entry PodGateway → HostMAC.
func configurePod(ph *netlink.Handle, eth0 netlink.Link, ip netip.Addr) error {
	if lo, err := ph.LinkByName("lo"); err == nil {
		if err := ph.LinkSetUp(lo); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
	}
	want := netip.PrefixFrom(ip, 32)
	addrs, err := ph.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("listing addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		p, ok := netipPrefix(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if err := ph.AddrDel(eth0, &a); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing old address %v: %w", a.IPNet, err)
		}
	}
	if !have {
		if err := ph.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(want)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %v: %w", want, err)
		}
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("%s up: %w", PodInterface, err)
	}
	gw := net.ParseIP(PodGateway).To4()
	idx := eth0.Attrs().Index
	if err := ph.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: HostMAC}); err != nil {
		return fmt.Errorf("neighbour %s: %w", PodGateway, err)
	}
	if err := ph.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route to %s: %w", PodGateway, err)
	}
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if err := ph.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: def, Gw: gw, Src: ip.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// configureHost sets the node side: alias = uid (GC reads it), sysctls,
// link up, and "ip/32 dev <veth> scope link proto svcnet"; svcnet routes
// on the veth to other addresses (an earlier IP) are removed.
func configureHost(hh *netlink.Handle, host netlink.Link, uid string, ip netip.Addr) error {
	name := host.Attrs().Name
	if host.Attrs().Alias != uid {
		if err := hh.LinkSetAlias(host, uid); err != nil {
			return fmt.Errorf("alias: %w", err)
		}
	}
	if err := hostVethSysctls(name); err != nil {
		return err
	}
	if err := hh.LinkSetUp(host); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	// The gateway address on the node side too, with scope host so that
	// it is never chosen as a source (node → pod traffic keeps the node's
	// address, masquerade never picks it): traffic from the pod then arrives
	// on an interface that has an address, which REDIRECT needs (the
	// userspace proxy mode redirects a pod's ClusterIP traffic to the
	// incoming interface's first address); proxy ARP alone leaves it
	// addressless and such packets are dropped.
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(netip.MustParseAddr(PodGateway), 32)), Scope: int(netlink.SCOPE_HOST)}
	if err := hh.AddrReplace(host, gw); err != nil {
		return fmt.Errorf("%s address %s: %w", name, PodGateway, err)
	}
	want := netip.PrefixFrom(ip, 32)
	routes, err := listRoutes(hh, &netlink.Route{LinkIndex: host.Attrs().Index, Protocol: RouteProtocol}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if p, ok := netipPrefix(r.Dst); ok && p == want {
			continue
		}
		if err := hh.RouteDel(&r); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing old route %v: %w", r.Dst, err)
		}
	}
	route := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(want), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
	if err := hh.RouteReplace(route); err != nil {
		return fmt.Errorf("route %v dev %s: %w", want, name, err)
	}
	return nil
}

// Detach removes uid's host veth (which takes the pod's eth0 and the /32
// route with it) and any svcnet route left for uid's IP. It is idempotent
// and does not release the IP.
func (n *Network) Detach(ctx context.Context, uid string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hh, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: detach %s: netlink: %w", uid, err)
	}
	defer hh.Close()
	name := HostVethName(uid)
	if l, err := hh.LinkByName(name); err == nil {
		if err := hh.LinkDel(l); err != nil && !isNotFound(err) {
			return fmt.Errorf("podnet: detach %s: deleting %s: %w", uid, name, err)
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("podnet: detach %s: looking up %s: %w", uid, name, err)
	}
	n.mu.Lock()
	ip, ok := n.ipam.byUID[uid]
	n.mu.Unlock()
	if !ok {
		return nil
	}
	routes, err := listRoutes(hh, &netlink.Route{Dst: ipNet(netip.PrefixFrom(ip, 32)), Protocol: RouteProtocol}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("podnet: detach %s: %w", uid, err)
	}
	for _, r := range routes {
		if err := hh.RouteDel(&r); err != nil && !isNotFound(err) {
			return fmt.Errorf("podnet: detach %s: route %v: %w", uid, r.Dst, err)
		}
	}
	n.log.Debug("detached pod", "uid", uid, "veth", name)
	return nil
}

// listRoutes lists main-table IPv4 routes matching filter, retrying a dump
// the kernel interrupted.
func listRoutes(h *netlink.Handle, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var err error
	for range 5 {
		var rs []netlink.Route
		rs, err = h.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
		if err == nil {
			return rs, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("listing routes: %w", err)
}

// listLinks lists the links, retrying a dump the kernel interrupted.
func listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var ls []netlink.Link
		ls, err = h.LinkList()
		if err == nil {
			return ls, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("listing links: %w", err)
}

// netipPrefix converts a netlink destination (nil means default).
func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// isNotFound reports a missing link, address, route or neighbour.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL)
}
