package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
)

// LinkName is the dummy interface holding the service IPs, as upstream.
const LinkName = "kube-ipvs0"

// Link manages the dummy interface that holds the virtual server
// addresses (so the kernel takes packets to them as local, where IPVS's
// LOCAL_IN hook catches them).
type Link interface {
	// Ensure creates the interface when it is missing and sets it up.
	Ensure() error
	// Addrs lists its addresses (none when the interface is missing).
	Addrs() ([]netip.Addr, error)
	AddAddr(a netip.Addr) error
	DelAddr(a netip.Addr) error
	// Delete removes the interface; nil when it does not exist.
	Delete() error
}

// NetlinkLink is the Link of the current network namespace.
type NetlinkLink struct{}

func (NetlinkLink) get() (netlink.Link, error) {
	l, err := netlink.LinkByName(LinkName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("ipvs: find %s: %w", LinkName, err)
	}
	return l, nil
}

// Ensure implements Link.
func (n NetlinkLink) Ensure() error {
	l, err := n.get()
	if err != nil {
		return err
	}
	if l == nil {
		d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: LinkName}}
		if err := netlink.LinkAdd(d); err != nil {
			return fmt.Errorf("ipvs: create dummy interface %s (module dummy): %w", LinkName, err)
		}
		if l, err = n.get(); err != nil || l == nil {
			return fmt.Errorf("ipvs: %s vanished after creation: %v", LinkName, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("ipvs: set %s up: %w", LinkName, err)
		}
	}
	return nil
}

// Addrs implements Link.
func (n NetlinkLink) Addrs() ([]netip.Addr, error) {
	l, err := n.get()
	if err != nil || l == nil {
		return nil, err
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("ipvs: list addresses of %s: %w", LinkName, err)
	}
	var out []netip.Addr
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ip = ip.Unmap()
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, ip)
		}
	}
	return out, nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// AddAddr implements Link.
func (n NetlinkLink) AddAddr(a netip.Addr) error {
	l, err := n.get()
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("ipvs: %s does not exist", LinkName)
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: hostNet(a)}); err != nil {
		return fmt.Errorf("ipvs: add %s to %s: %w", a, LinkName, err)
	}
	return nil
}

// DelAddr implements Link.
func (n NetlinkLink) DelAddr(a netip.Addr) error {
	l, err := n.get()
	if err != nil || l == nil {
		return err
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: hostNet(a)}); err != nil {
		return fmt.Errorf("ipvs: delete %s from %s: %w", a, LinkName, err)
	}
	return nil
}

// Delete implements Link.
func (n NetlinkLink) Delete() error {
	l, err := n.get()
	if err != nil || l == nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("ipvs: delete %s: %w", LinkName, err)
	}
	return nil
}

// FakeLink is an in-memory Link that records its changes in Ops.
type FakeLink struct {
	mu     sync.Mutex
	exists bool
	addrs  []netip.Addr
	Ops    []string
}

// Ensure implements Link.
func (f *FakeLink) Ensure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists {
		f.exists = true
		f.Ops = append(f.Ops, "create "+LinkName)
	}
	return nil
}

// Addrs implements Link.
func (f *FakeLink) Addrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), nil
}

// AddAddr implements Link.
func (f *FakeLink) AddAddr(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists {
		return fmt.Errorf("fake link: %s does not exist", LinkName)
	}
	if !slices.Contains(f.addrs, a) {
		f.addrs = append(f.addrs, a)
		f.Ops = append(f.Ops, "add "+a.String())
	}
	return nil
}

// DelAddr implements Link.
func (f *FakeLink) DelAddr(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.addrs, a)
	if i < 0 {
		return fmt.Errorf("fake link: %s has no address %s", LinkName, a)
	}
	f.addrs = slices.Delete(f.addrs, i, i+1)
	f.Ops = append(f.Ops, "del "+a.String())
	return nil
}

// Delete implements Link.
func (f *FakeLink) Delete() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exists {
		f.Ops = append(f.Ops, "delete "+LinkName)
	}
	f.exists, f.addrs = false, nil
	return nil
}

// Sysctls the mode sets (upstream kube-proxy's ipvs mode does the same):
// conntrack for IPVS connections (so nftables can masquerade them), drop
// connections whose real server is gone, forwarding, and strict ARP so
// that the node does not answer ARP for the service IPs on kube-ipvs0.
var sysctls = []struct{ name, value string }{
	{"net/ipv4/vs/conntrack", "1"},
	{"net/ipv4/vs/expire_nodest_conn", "1"},
	{"net/ipv4/vs/expire_quiescent_template", "1"},
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv4/conf/all/arp_ignore", "1"},
	{"net/ipv4/conf/all/arp_announce", "2"},
}

// WriteSysctl writes value to /proc/sys/name (name with slashes).
func WriteSysctl(name, value string) error {
	p := filepath.Join("/proc/sys", name)
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("ipvs: sysctl %s=%s: %w", strings.ReplaceAll(name, "/", "."), value, err)
	}
	return nil
}
