// Package list builds the `svcnet proxy list` view: an `ipvsadm -Ln`-style
// table of every virtual service the node proxy programs and its real
// servers, whatever the proxy mode.
//
// # Where the view comes from
//
// The table is derived from the API, not read back from the dataplane, and
// through the proxy's own code path, so it shows exactly what the proxy
// programs: Services (without service.kubernetes.io/service-proxy-name) and
// EndpointSlices (without service.kubernetes.io/headless) go through
// proxy.Tracker (proxy.ServicePorts, proxy.MergeEndpoints) into a
// proxy.State, and FromState turns every proxy.ServicePort into virtual
// services:
//
//   - one per ClusterIP, ExternalIP and LoadBalancer ingress IP, on the
//     Service port;
//   - one per NodePort address, on the NodePort: the node IPs (--node-ip
//     and the Node object's InternalIP/ExternalIP addresses), or, when
//     nodePortAddresses is configured, the local addresses inside it;
//     never loopback — the same rule as the backends.
//
// The real servers of a virtual service are the endpoints the proxy sends
// new connections to (proxy.CategorizeEndpoints): Cluster-policy entry
// points get the cluster endpoints, internalTrafficPolicy Local ClusterIPs
// and externalTrafficPolicy Local external entry points the local ones;
// the serving-terminating fallback applies. Only endpoints of the virtual
// service's IP family are listed (except in userspace mode, whose balancer
// dials either family; it has no SCTP, so SCTP services are not listed
// there). Every real server is "Masq" with weight 1.
//
// # Scheduler column
//
// The scheduler names what the mode really does: "random" for nftables
// (numgen random) and iptables (statistic mode random), the userspace
// balancer's algorithm for userspace (rr, lc, random, sh; the Service's
// svcnet.io/lb-algorithm annotation or the configured default), and the
// ipvs scheduler for ipvs (annotation, configured scheduler, else rr).
// sessionAffinity ClientIP adds "persistent N" (N = timeoutSeconds), as
// ipvsadm prints IPVS persistence.
//
// # Connection counts
//
// ActiveConn and InActConn come from the kernel conntrack table (netlink),
// counted as IPVS counts connections: a flow belongs to the virtual service
// its original destination is, and to the real server its reply source is
// (the DNAT target); TCP flows in state ESTABLISHED are active, every other
// flow (other TCP states, UDP, SCTP — whose state netlink does not expose)
// inactive. A DNAT target that still has flows but is no longer a real
// server (endpoint removed or not ready) is listed with weight 0, as IPVS
// keeps a removed real server with weight 0 while its connections drain.
// (In nftables mode a weight-0 row can also be a live endpoint: pods and
// the node reaching an externalTrafficPolicy Local entry point are sent to
// any endpoint, not only the local ones the table lists.)
// In userspace mode flows end at the proxy's own listener, not at an
// endpoint, so the counts are not available (CountsSupported).
//
// # Layout
//
// Render prints ipvsadm's `-Ln` layout byte for byte: the version and two
// title lines, "%s  %s %s" service lines (protocol, address:port,
// scheduler, flags) and "  -> %-28s %-7s %-6d %-10u %-10u" real-server
// lines (so lines end in padding spaces, as ipvsadm's do). Order is
// ipvsadm's: services by address family, protocol number, address and
// port; real servers by address and port — with ipvsadm's comparison quirk
// kept: addresses are compared by the 32-bit signed difference of their
// values, so 172.17.0.1 and 192.168.0.2 sort before 10.96.0.1, as in real
// ipvsadm output.
package list
