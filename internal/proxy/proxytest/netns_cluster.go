package proxytest

import (
	"net/netip"
	"testing"
)

// Addresses of the Cluster lab. Node-a is the sandbox's own namespace, so
// a backend under test programs it directly (nft, conntrack) with no
// namespace switching.
const (
	NodeAIP2 = "192.168.1.2" // node-a's address on the link to node-b
	NodeBIP  = "192.168.1.3"
	// UplinkIP is the dead end node-a's default route points at (see
	// Cluster).
	UplinkIP = "192.168.255.1"
	nodeAWan = "192.168.255.2"
)

// Cluster is a two-node lab plus an outside client:
//
//	ext (ExternalIP 203.0.113.5) ──ext0── node-a (NodeIP 192.168.0.2,
//	                                       NodeAIP2 192.168.1.2, pods 10.244.1.0/24)
//	                                         │ nodeb0
//	                                       node-b (NodeBIP 192.168.1.3, pods 10.244.2.0/24)
//
// node-a's default route points at "uplink" (UplinkIP), a namespace that
// does not forward: like a real node, node-a routes every destination
// (so service traffic reaches the forward and output hooks), and whatever
// the rules do not catch dies there, inside the sandbox.
//
// ext and node-b route everything through node-a, so traffic to service
// addresses (ClusterIPs, external and LoadBalancer IPs) from anywhere
// reaches node-a's rules.
type Cluster struct {
	*Lab
	NodeA, NodeB, Ext, Uplink *NetNS
}

// NewCluster builds the lab; the test is skipped outside the sandbox.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	l := NewLab(t)
	c := &Cluster{Lab: l, NodeA: l.Root()}
	c.NodeB = l.NewNetNS("node-b")
	c.Ext = l.NewNetNS("ext")
	c.Uplink = l.NewNetNS("uplink")
	l.EnableForwarding(c.NodeA)
	l.EnableForwarding(c.NodeB)
	a1, a2 := netip.MustParseAddr(NodeIP), netip.MustParseAddr(NodeAIP2)
	b, ext := netip.MustParseAddr(NodeBIP), netip.MustParseAddr(ExternalIP)
	l.Link(c.NodeA, "ext0", a1, c.Ext, "eth0", ext)
	l.Route(c.Ext, "default", a1)
	l.Link(c.NodeA, "nodeb0", a2, c.NodeB, "eth0", b)
	l.Route(c.NodeA, "10.244.2.0/24", b)
	l.Route(c.NodeB, "default", a2)
	up := netip.MustParseAddr(UplinkIP)
	l.Link(c.NodeA, "uplink0", netip.MustParseAddr(nodeAWan), c.Uplink, "eth0", up)
	l.Route(c.NodeA, "default", up)
	return c
}

// NodeAIPs returns node-a's addresses.
func (c *Cluster) NodeAIPs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr(NodeIP), netip.MustParseAddr(NodeAIP2)}
}

// AddPod adds a pod with address ip on node (NodeA or NodeB); ip must be in
// that node's pod range.
func (c *Cluster) AddPod(node *NetNS, name, ip string) *NetNS {
	c.t.Helper()
	return c.Lab.AddPod(node, name, netip.MustParseAddr(ip))
}
