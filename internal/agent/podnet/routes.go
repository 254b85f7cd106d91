package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NodeRoute is another node's pod range and the address to reach it by.
type NodeRoute struct {
	Name    string
	PodCIDR netip.Prefix
	NodeIP  netip.Addr
}

// desiredNodeRoutes is the pure core of SyncNodeRoutes: destination →
// gateway for every usable route, skipping (and reporting) routes with no
// IPv4 podCIDR or node IP, this node's own podCIDR (or one overlapping
// it), and later duplicates of a destination.
func desiredNodeRoutes(own netip.Prefix, routes []NodeRoute) (map[netip.Prefix]netip.Addr, []string) {
	want := map[netip.Prefix]netip.Addr{}
	var skipped []string
	for _, r := range routes {
		p := r.PodCIDR.Masked()
		switch {
		case !r.PodCIDR.IsValid() || !r.PodCIDR.Addr().Is4():
			skipped = append(skipped, fmt.Sprintf("%s: no IPv4 podCIDR", r.Name))
		case !r.NodeIP.IsValid() || !r.NodeIP.Unmap().Is4():
			skipped = append(skipped, fmt.Sprintf("%s: no IPv4 node IP", r.Name))
		case p.Overlaps(own):
			if p != own {
				skipped = append(skipped, fmt.Sprintf("%s: podCIDR %v overlaps this node's %v", r.Name, p, own))
			}
		default:
			if _, dup := want[p]; dup {
				skipped = append(skipped, fmt.Sprintf("%s: podCIDR %v listed twice", r.Name, p))
				continue
			}
			want[p] = r.NodeIP.Unmap()
		}
	}
	return want, skipped
}

// SyncNodeRoutes makes the node's host-gw routes exactly "PodCIDR via
// NodeIP proto svcnet" for every other node in routes: missing ones are
// added, changed ones replaced, svcnet routes of nodes no longer listed
// removed. Routes of other protocols are never touched; a foreign route
// with the same destination wins and the node's route is skipped. Errors
// for single routes (an unreachable NodeIP) are joined; the rest is still
// applied.
func (n *Network) SyncNodeRoutes(ctx context.Context, routes []NodeRoute) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want, skipped := desiredNodeRoutes(n.cfg.PodCIDR, routes)
	for _, s := range skipped {
		n.log.Warn("skipping node route", "reason", s)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: node routes: netlink: %w", err)
	}
	defer h.Close()
	all, err := listRoutes(h, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("podnet: node routes: %w", err)
	}
	var errs []error
	have := map[netip.Prefix]netip.Addr{}
	foreign := map[netip.Prefix]bool{}
	for _, r := range all {
		dst, ok := netipPrefix(r.Dst)
		if !ok {
			continue
		}
		if r.Protocol != RouteProtocol {
			foreign[dst] = true
			continue
		}
		if r.Gw == nil || r.Type != unix.RTN_UNICAST {
			continue // a pod /32 or the unreachable podCIDR route
		}
		gw, _ := netip.AddrFromSlice(r.Gw)
		if w, ok := want[dst]; ok && w == gw.Unmap() {
			have[dst] = w
			continue
		}
		if err := h.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("removing route %v via %v: %w", dst, gw, err))
			continue
		}
		n.log.Info("removed node route", "podCIDR", dst, "via", gw)
	}
	dsts := make([]netip.Prefix, 0, len(want))
	for p := range want {
		dsts = append(dsts, p)
	}
	sort.Slice(dsts, func(i, j int) bool { return dsts[i].String() < dsts[j].String() })
	for _, dst := range dsts {
		gw := want[dst]
		if _, ok := have[dst]; ok {
			continue
		}
		if foreign[dst] {
			n.log.Warn("not replacing a foreign route", "podCIDR", dst, "via", gw)
			continue
		}
		r := &netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice(), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %v via %v: %w", dst, gw, err))
			continue
		}
		n.log.Info("added node route", "podCIDR", dst, "via", gw)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("podnet: node routes: %w", err)
	}
	return nil
}

// hostVeths returns the node's svcnet veths.
func hostVeths(h *netlink.Handle) ([]netlink.Link, error) {
	links, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Type() == "veth" && isHostVethName(l.Attrs().Name) {
			out = append(out, l)
		}
	}
	return out, nil
}

// GC removes the veths of pods keep rejects (a veth's alias is its pod
// UID; a svcnet veth without one is removed too) and releases their IPAM
// allocations. Call it after adoption, with keep true for every pod the
// node still runs or is about to start.
func (n *Network) GC(ctx context.Context, keep func(uid string) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: gc: netlink: %w", err)
	}
	defer h.Close()
	veths, err := hostVeths(h)
	if err != nil {
		return fmt.Errorf("podnet: gc: %w", err)
	}
	var errs []error
	for _, l := range veths {
		uid := l.Attrs().Alias
		if uid != "" && HostVethName(uid) == l.Attrs().Name && keep(uid) {
			continue
		}
		if err := h.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", l.Attrs().Name, err))
			continue
		}
		n.log.Info("removed veth of an unknown pod", "veth", l.Attrs().Name, "uid", uid)
	}
	// keep runs without n.mu held: it may call back into n.
	var gone []string
	for uid := range n.Allocated() {
		if !keep(uid) {
			gone = append(gone, uid)
		}
	}
	if len(gone) > 0 {
		n.mu.Lock()
		err := n.releaseLocked(gone...)
		n.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("released IPs of unknown pods", "uids", gone)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("podnet: gc: %w", err)
	}
	return nil
}

// Cleanup removes every svcnet veth and every svcnet route of the node
// (pod /32s, node routes, the unreachable podCIDR route). The IPAM state is
// kept; Release or GC empty it.
func (n *Network) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("podnet: cleanup: netlink: %w", err)
	}
	defer h.Close()
	var errs []error
	veths, err := hostVeths(h)
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range veths {
		if err := h.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", l.Attrs().Name, err))
		}
	}
	routes, err := listRoutes(h, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range routes {
		if err := h.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting route %v: %w", r.Dst, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("podnet: cleanup: %w", err)
	}
	return nil
}
