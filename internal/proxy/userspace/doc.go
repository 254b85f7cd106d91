// Package userspace is the userspace proxy backend (`svcnet proxy --mode
// userspace`): an L4 proxy inside the agent. A small nftables table per IP
// family ("ip svcnet-userspace", "ip6 svcnet-userspace", through
// sigs.k8s.io/knftables) redirects service traffic to a local listener per
// service port; the listener picks an endpoint with a load-balancing
// algorithm, connects to it, and copies bytes both ways.
//
// # Rules
//
//	nat-prerouting, nat-output (dstnat): jump redirects
//	redirects:
//	    meta l4proto tcp redirect to : ip daddr . meta l4proto . th dport map @service-ips
//	    ip daddr @nodeport-ips meta l4proto tcp redirect to : meta l4proto . th dport map @service-nodeports
//	    (and the same for udp)
//	filter-input/forward/output: ct state new → service-endpoints-check,
//	    nodeport-endpoints-check (input), cluster-ips-check (forward, output)
//	filter-prerouting-pre-dnat, filter-output-pre-dnat (dstnat-10):
//	    loadBalancerSourceRanges: LB IP tuples in @firewall-ips whose
//	    source is not in @firewall-allow are dropped
//
// service-ips maps ClusterIP, ExternalIP and LoadBalancer IP tuples to a
// listener port, service-nodeports maps NodePorts (on @nodeport-ips: the
// node IPs, or the addresses inside --nodeport-addresses; never loopback).
// REDIRECT rewrites the destination to the primary address of the incoming
// interface (loopback for local clients) and the listener's port; the
// listener binds the unspecified address. Services without usable
// endpoints are not redirected: they are in no-endpoint-services /
// no-endpoint-nodeports with "goto reject-chain" (TCP reset, ICMP port
// unreachable) when they have no endpoint at all, or "drop" when endpoints
// exist but none is usable under a Local policy here, exactly as the
// nftables backend. A mangle-prerouting chain is added for transparent
// proxying (below). A full sync (the first, a periodic one, or when the
// service CIDRs or NodePort addresses changed) rewrites the whole table in
// one transaction (it holds only map elements, a few per service), skipped
// when nothing changed; a partial sync plans only the changed service ports
// and adds and deletes just the elements they changed, counting the owners
// of shared keys (see sync.go). An endpoint change at 10k Services costs
// ~50 µs instead of the ~100 ms of re-planning every service.
//
// # Listeners
//
// Two listeners per service port: one for the ClusterIPs, one for the
// external entry points (NodePort, ExternalIPs, LoadBalancer IPs), since
// the traffic policies may give them different endpoints
// (proxy.CategorizeEndpoints) and transparency differs. A listener keeps its port for
// the life of the service; Sync opens new listeners before the rules point
// at them and closes old ones after the rules stop. Closing a listener
// (service deleted, Cleanup on a mode switch) does not cut connections
// already proxied.
//
// TCP: the accepted connection is spliced to the endpoint with io.Copy
// between two *net.TCPConn, which Go implements with splice(2) (zero-copy
// through a pipe); a clean EOF is passed on as a half-close.
//
// UDP: one session per client address (a connected socket to the chosen
// endpoint and a relay goroutine); replies leave from the address the
// client's datagrams arrived at (IP_PKTINFO) so the redirect's conntrack
// entry maps them back to the VIP. Sessions end after UDPIdleTimeout, when
// their endpoint leaves the service (so clients move at the next
// datagram), or on ICMP port unreachable from the endpoint.
//
// # Load balancing
//
// Per agent (Config.Algorithm) and per Service (annotation
// svcnet.io/lb-algorithm, carried as proxy.ServicePort.LBAlgorithm):
// round-robin (default), least-connections (fewest open connections or UDP
// sessions; ties in turn), random, source-hash (rendezvous hashing over
// client IP and endpoint: a consistent hash, adding an endpoint moves only
// the clients it wins). The balancer returns a full order of endpoints: a
// connect failure (refused, timeout) tries the next one transparently —
// the client's connection is already accepted, it only sees a slower
// answer — and ejects the failing endpoint for EjectBackoff, doubling per
// consecutive failure up to EjectBackoffMax. Ejected endpoints are tried
// last, never skipped, so a service whose endpoints all failed recovers at
// once. sessionAffinity ClientIP puts the client's last endpoint first if
// it was used within the timeout (refreshed at each new connection, as the
// nftables affinity sets).
//
// # Client address (transparent proxying)
//
// With Config.Transparent, the connection to the endpoint binds the
// client's address (IP_TRANSPARENT), so the endpoint sees the real client,
// exactly where the nftables mode would not masquerade: ClusterIP traffic
// from the cluster CIDRs and external traffic of externalTrafficPolicy
// Local services. Replies addressed to the client are marked in
// mangle-prerouting ("socket transparent 1") and routed to the local
// stack by a policy rule (fwmark 0x100000 → table 7723: local default dev
// lo; see transparent.go). Hairpin and loopback clients, external traffic
// of Cluster-policy services and off-cluster clients of ClusterIPs
// connect from the node's address, which is what masquerading gives in
// the other modes. When the kernel refuses (no nft socket expression, no
// CAP_NET_ADMIN) the backend logs it and always uses the node's address.
//
// # Network namespaces
//
// The backend serves the network namespace of the thread that called New:
// listeners and connections to endpoints are created there even from other
// goroutines (tests run one backend per node namespace).
//
// # Cleanup and mode switches
//
// Cleanup deletes the table, the listeners and the policy route, but not
// the connections and UDP sessions already proxied. Those need conntrack to
// keep translating their REDIRECT (the kernel unhooks conntrack and NAT when
// no rule in the namespace uses them) and, when transparent, their return
// path: while any is open the table keeps only an empty nat chain with a
// conntrack rule and the mangle chain, and the policy route stays; all are
// removed within a second of the last one ending, unless a Sync took the
// backend back.
//
// # Differences from the nftables mode
//
// The packet-flow table (flow_test.go) shows them:
//   - SCTP services are not proxied (Go has no SCTP sockets); their
//     ClusterIP traffic is rejected by cluster-ips-check.
//   - Pods and the node reaching an external entry point of an ETP Local
//     service are not short-circuited to the cluster policy: they get the
//     local endpoints (the external listener's).
//   - Without Transparent, every endpoint sees the node's address.
//   - A listener binds the unspecified address, so a client can also reach
//     a listener port directly on any node address, as with the upstream
//     userspace proxy.
//   - Every connection costs two sockets and two goroutines on the node,
//     and the bytes cross the agent (spliced, not copied to user space):
//     throughput is bounded by the agent's CPU.
//   - A UDP datagram sent to an endpoint that answers with ICMP port
//     unreachable is lost (the next one goes to another endpoint); a TCP
//     connect failure is retried transparently.
package userspace
