package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vishvananda/netlink"
)

// LoadBalancer IP announcement (L2, like MetalLB's layer-2 mode): each
// LoadBalancer ingress IP is answered for by exactly one node, which holds
// it as a /32 address on the interface with its node IP, so the node
// answers ARP for it on the segment. The proxy's rules then treat the
// traffic as they treat any LB IP. The announcing node is the first (by
// name) Ready node, or, for externalTrafficPolicy Local, the first Ready
// node with a ready endpoint of the service, so Local traffic lands where
// it can be served.

// lbLabelSuffix marks the addresses the announcer adds (label
// "<iface>:lb"), so they are found again after a restart.
const lbLabelSuffix = ":lb"

func (a *Agent) kickLB() {
	select {
	case a.lbKick <- struct{}{}:
	default:
	}
}

// announceLoop reconciles the announced addresses on every change, and
// every 30 s in case an address was removed behind its back.
func (a *Agent) announceLoop(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		if err := a.announceOnce(); err != nil {
			a.log.Warn("announce LoadBalancer IPs", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.lbKick:
		case <-tick.C:
		}
	}
}

// wantedLBIPs returns the LoadBalancer IPs this node must announce.
func (a *Agent) wantedLBIPs() []netip.Addr {
	nodes, err := a.nodeLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	ready := map[string]bool{}
	var readyNames []string
	for _, n := range nodes {
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
				ready[n.Name] = true
				readyNames = append(readyNames, n.Name)
			}
		}
	}
	slices.Sort(readyNames)
	svcs, err := a.svcLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, s := range svcs {
		if s.Spec.Type != v1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		if _, skip := s.Labels["service.kubernetes.io/service-proxy-name"]; skip {
			continue
		}
		candidates := readyNames
		if s.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
			candidates = a.nodesWithEndpoints(s, ready)
		}
		if len(candidates) == 0 || candidates[0] != a.cfg.NodeName {
			continue
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(ing.IP); err == nil && ip.Is4() == a.cfg.NodeIP.Is4() {
				out = append(out, ip)
			}
		}
	}
	return out
}

// nodesWithEndpoints lists, sorted, the Ready nodes with a ready endpoint
// of s.
func (a *Agent) nodesWithEndpoints(s *v1.Service, ready map[string]bool) []string {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: s.Name})
	slices_, err := a.sliceLister.EndpointSlices(s.Namespace).List(sel)
	if err != nil {
		return nil
	}
	var out []string
	for _, sl := range slices_ {
		for _, e := range sl.Endpoints {
			if e.NodeName != nil && ready[*e.NodeName] && (e.Conditions.Ready == nil || *e.Conditions.Ready) && !slices.Contains(out, *e.NodeName) {
				out = append(out, *e.NodeName)
			}
		}
	}
	slices.Sort(out)
	return out
}

// announceOnce makes the node's interface hold exactly the wanted LB IPs.
func (a *Agent) announceOnce() error {
	link, err := linkWithAddr(a.cfg.NodeIP)
	if err != nil {
		return err
	}
	label := link.Attrs().Name + lbLabelSuffix
	if len(label) > 15 {
		label = "" // IFNAMSIZ: unlabelled, recognised by the wanted set only
	}
	want := a.wantedLBIPs()
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	var errs []error
	for _, ad := range have {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || ad.Label == "" || ad.Label != label {
			continue
		}
		if !slices.Contains(want, ip.Unmap()) {
			if err := netlink.AddrDel(link, &ad); err != nil {
				errs = append(errs, err)
			} else {
				a.log.Info("stopped announcing LoadBalancer IP", "ip", ip)
			}
		}
	}
	for _, ip := range want {
		if slices.ContainsFunc(have, func(ad netlink.Addr) bool { x, _ := netip.AddrFromSlice(ad.IP); return x.Unmap() == ip }) {
			continue
		}
		bits := ip.BitLen()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Label: label}
		if err := netlink.AddrAdd(link, addr); err != nil {
			errs = append(errs, err)
			continue
		}
		a.log.Info("announcing LoadBalancer IP", "ip", ip, "dev", link.Attrs().Name)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// withdrawLBIPs removes every address the announcer added.
func (a *Agent) withdrawLBIPs() error {
	link, err := linkWithAddr(a.cfg.NodeIP)
	if err != nil {
		return err
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ad := range have {
		if ad.Label != "" && ad.Label == link.Attrs().Name+lbLabelSuffix {
			if err := netlink.AddrDel(link, &ad); err != nil {
				return err
			}
		}
	}
	return nil
}

// linkWithAddr returns the interface holding ip.
func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if x, ok := netip.AddrFromSlice(ad.IP); ok && x.Unmap() == ip {
				return l, nil
			}
		}
	}
	return nil, errNoNodeIPLink(ip)
}

type errNoNodeIPLink netip.Addr

func (e errNoNodeIPLink) Error() string {
	return "no interface holds the node IP " + netip.Addr(e).String()
}
