// Package nftables is the nftables proxy backend: it programs a proxy.State
// into one table per IP family ("ip svcnet" and "ip6 svcnet") through
// sigs.k8s.io/knftables, with the same structure as upstream kube-proxy's
// nftables mode (k/k pkg/proxy/nftables).
//
// # Hooks
//
//	filter-prerouting-pre-dnat, filter-output-pre-dnat (dstnat-10):
//	    ct state new jump firewall-check  (loadBalancerSourceRanges, before DNAT)
//	filter-input / filter-forward / filter-output (filter):
//	    [forward: ct state invalid drop, unless TCPBeLiberal]
//	    ct state new jump nodeport-endpoints-check (input)
//	    ct state new jump service-endpoints-check  (no endpoints → reject/drop)
//	    ct state new jump cluster-ips-check        (forward, output)
//	nat-prerouting / nat-output (dstnat): jump services
//	nat-postrouting (srcnat): jump masquerading
//
// # Dispatch
//
// The services chain does one lookup per packet:
//
//	ip daddr . meta l4proto . th dport vmap @service-ips
//	ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
//
// service-ips holds ClusterIP, ExternalIP and LoadBalancer IP keys. In the
// common case a destination needs no chain of its own: its element says
// "goto pick-N" (N = its number of endpoints), and the shared chain pick-N
// has one rule,
//
//	dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @endpoint-slots :
//	    ip daddr . meta l4proto . th dport map @endpoint-ports
//
// (pick-1 is one lookup instead: "dnat ip to ip daddr . meta l4proto . th
// dport map @single-endpoint", whose value is the endpoint's "address .
// port".) endpoint-slots maps "destination . proto . port . slot" to the endpoint
// address of each slot 0…N-1, endpoint-ports the destination to the
// endpoints' port. Each endpoint gets exactly 1/N of new connections. A
// ClusterIP gets slots for the endpoints of its internal policy (all ready
// endpoints, or the local ones with internalTrafficPolicy Local); external
// destinations of a Cluster-policy service go through external-* (which
// masquerades) and then pick-N, with slots of their own, including one set
// per node address for the NodePort. So an endpoint that moves is a
// map-element change only, which the kernel applies without re-validating
// the table's chains, and which the backend sends itself over netlink
// (netlink.go) instead of starting nft.
//
// The per-service chains remain for what slots cannot express: session
// affinity, externalTrafficPolicy Local (external-* short-circuits pod and
// node-local clients to the cluster endpoints, others get the local ones),
// and endpoints that listen on different ports. NodePorts answer only on
// @nodeport-ips: the node IPs (or the local addresses inside
// --nodeport-addresses), never loopback. There the policy chain
// (service-* for Cluster, local-* for Local) picks an endpoint with a
// cascade, as iptables' statistic rules (rule i of N matches with
// probability 1/(N-i); dnat ends the chain):
//
//	numgen random mod 3 0 meta l4proto tcp dnat to 10.244.1.2:8080
//	numgen random mod 2 0 meta l4proto tcp dnat to 10.244.2.2:8080
//	meta l4proto tcp dnat to 10.244.0.5:8080
//
// Upstream uses one anonymous "numgen random mod N map { … }" per service;
// with nft 1.0.6 that makes a 10k-service load ~3× slower (the kernel names
// anonymous sets by scanning all sets of the table). With sessionAffinity
// ClientIP, first "ip saddr @affinity-X goto endpoint-X" for every
// endpoint, then "numgen random mod N vmap { … goto endpoint-X }"; the
// endpoint chain records the client in its dynamic affinity set (timeout =
// timeoutSeconds) and DNATs.
//
// Services without usable endpoints are in no-endpoint-services /
// no-endpoint-nodeports with "goto reject-chain" (TCP reset, ICMP port
// unreachable otherwise) when they have no endpoint anywhere, and "drop"
// when they have endpoints but none usable under a Local policy on this
// node. cluster-ips-check rejects unused ports of allocated ClusterIPs and
// drops traffic to unallocated addresses of the service CIDRs.
//
// Masquerading sets mark 0x4000 (external traffic to Cluster-policy
// services, off-cluster sources to ClusterIPs, everything with
// MasqueradeAll); masquerading does "masquerade fully-random" for marked
// packets and for @hairpin-connections (a local endpoint reaching itself).
//
// # Syncs
//
// Every Sync is one transaction: through knftables (the nft binary), or,
// for a partial sync that only adds and deletes map/set elements, one
// netlink batch on a lasting connection (no process start, and no wait
// for the RCU grace period the kernel takes when an nftables socket that
// deleted elements is closed). The backend keeps, per service
// port, the inputs of the plan it wrote (the ServicePort and its endpoints;
// the plan — chains with their rules, affinity sets, map elements, pick-N
// chains used — is re-rendered when needed) and a reference-counted record
// of all map/set elements. A
// partial sync renders only the services listed in State.Changed (plus
// added or removed ones), rewrites the chains of those whose plan differs,
// and emits only the element deltas: a one-service change costs O(size of
// that service), independent of the number of services. A full sync (first
// sync, State.Full, node IP change, or after any error) rewrites everything
// and deletes per-service chains and sets found in the kernel that no plan
// uses. The very first sync of a process deletes and recreates the table in
// the same transaction.
//
// Stale chains are flushed and deleted in the same transaction as the map
// elements that pointed at them; this needs a kernel ≥ 6.2 (older kernels
// notice map references late, which is why upstream delays the delete).
//
// After a successful sync, UDP services whose reachable endpoints changed
// get their stale conntrack flows deleted (package conntrack).
package nftables
