// Package podnet is the node's pod network: routed, calico-style, no bridge.
//
// Every pod gets one IPv4 address from the node's podCIDR (IPAM: Allocate,
// Release; persisted as JSON in Config.StateFile, written atomically before
// Allocate returns, so a restarted agent gives a pod the same address). The
// allocator continues after the last address it handed out, so a released
// address is not reused at once; it never hands out the network address,
// the first host address (.1) or the broadcast address.
//
// Attach joins a pod network namespace (normally /proc/<sandboxpid>/ns/net)
// to the node with a veth pair:
//
//	node                                   pod netns
//	svc<11 hex of sha256(uid)>  <──veth──>  eth0  ip/32
//	  mac ee:ee:ee:ee:ee:ee                   169.254.1.1 dev eth0 scope link
//	  alias <uid>, proxy_arp=1                default via 169.254.1.1 src ip
//	route ip/32 dev svc… scope link           neigh 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee permanent
//	  proto 115 (RouteProtocol)
//
// Every pod is its own L3 hop, so all its traffic crosses the node's
// routing and netfilter (kube-proxy rules, conntrack). The pod's gateway
// 169.254.1.1 belongs to no interface: the host veth answers ARP for it by
// proxy ARP, and the pod also has a permanent neighbour entry for it with
// the fixed host-veth MAC, which keeps pod egress working on a node with no
// default route (where proxy ARP would not answer). The node resolves the
// pod's MAC by ordinary ARP on the veth. The host veth's alias is the pod
// UID, so GC can tell which pod a veth belongs to after an agent restart.
//
// Between nodes the network is host-gw: SyncNodeRoutes keeps "PodCIDR via
// NodeIP" for every other node (the nodes must share an L2 segment or have
// routes to each other's node IPs). New also installs "unreachable PodCIDR"
// for the node's own range, so an address of no pod fails fast instead of
// following the default route. Every route svcnet installs carries route
// protocol 115 (RouteProtocol): SyncNodeRoutes and Cleanup change only
// those, never anyone else's routes.
//
// New sets the node sysctls routing needs (see nodeSysctls) and Attach the
// per-veth ones (see hostVethSysctls). All netlink and /proc/sys calls act
// in the calling thread's network namespace, which for the agent is the
// node's; tests drive a second node by calling from a thread switched into
// another namespace.
//
// Attach, Detach, SyncNodeRoutes, GC and Cleanup are idempotent: the agent
// can repeat them after a crash at any point. Calls for different pods may
// run concurrently; the caller serializes Attach and Detach of one pod.
package podnet
