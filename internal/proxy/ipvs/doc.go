// Package ipvs is the ipvs proxy backend: it programs a proxy.State into
// the kernel's IP Virtual Server through netlink (github.com/moby/ipvs),
// with the same model as upstream kube-proxy's ipvs mode (k/k
// pkg/proxy/ipvs).
//
// # Virtual servers
//
// Every proxy.ServicePort becomes, per IP family it has a ClusterIP of:
//
//   - one virtual server per ClusterIP (the family's first), ExternalIP and
//     LoadBalancer ingress IP, on the Service port;
//   - one per NodePort address on the NodePort: the node IPs, or the local
//     addresses inside NodePortAddresses; never loopback.
//
// Real servers are the endpoints proxy.CategorizeEndpoints gives the
// entry's traffic policy (internal for the ClusterIP, external for the
// others), all "Masq" (NAT) with weight 1; terminating endpoints of the
// same pool that are not in use get weight 0, so their connections go on
// while new ones avoid them. The scheduler is the Service's
// svcnet.io/lb-algorithm annotation, else the configured ipvs.scheduler,
// else rr (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh; an unknown
// annotation is logged and ignored). sessionAffinity ClientIP is IPVS
// persistence (flag persistent, timeout = timeoutSeconds, netmask /32 or
// /128). The ipvs.tcpTimeout, tcpFinTimeout and udpTimeout are set once
// per process (IPVS_CMD_SET_CONFIG).
//
// The ClusterIPs, ExternalIPs and LoadBalancer IPs are put on a dummy
// interface, kube-ipvs0, so the kernel takes their packets as local and
// IPVS (LOCAL_IN hook) catches them. ARP for them is suppressed: dummy
// links are NOARP, and net.ipv4.conf.all.arp_ignore=1 / arp_announce=2
// keep the node from answering or announcing them on its other links (as
// upstream's strictARP). The backend also sets net.ipv4.vs.conntrack=1
// (nftables can then masquerade IPVS connections), expire_nodest_conn=1,
// expire_quiescent_template=1 and ip_forward=1.
//
// # What IPVS cannot do: table svcnet-ipvs
//
// One nftables table per family ("ip svcnet-ipvs", "ip6 svcnet-ipvs"):
//
//	nat-prerouting, nat-output → mark-for-masquerade: mark 0x4000 on
//	    ClusterIP traffic from outside the cluster CIDRs (or all of it with
//	    MasqueradeAll), external entries and NodePorts of Cluster-policy
//	    services
//	nat-postrouting: masquerade marked packets and hairpin connections
//	    (an endpoint reaching itself through a service)
//	filter-input (runs before IPVS's LOCAL_IN hook, so it sees the
//	    virtual address): loadBalancerSourceRanges (firewall-* chains), no
//	    endpoints → reject (TCP reset, ICMP port unreachable) or drop (ETP/
//	    ITP Local with endpoints elsewhere only), unused ports of service
//	    addresses → reject
//	filter-forward, filter-output: drop new connections to addresses of
//	    the service CIDRs that no Service has
//
// A full sync recreates the table in one transaction; a partial sync
// writes one transaction of only the element and firewall chain changes
// (none when nothing changed).
//
// # Syncs
//
// A partial sync looks only at the services in State.Changed (and added
// or removed ones); of those, only the virtual servers whose computed plan
// differs from the one last written are read from the kernel (GetService,
// GetDestinations) and changed: a one-service change costs O(size of that
// service), in netlink calls and in the nftables delta alike (table
// elements are reference-counted per service, as two service ports can
// need the same one); only the kube-ipvs0 address check is an in-memory
// pass over all services. A full sync (first, State.Full, node IP change,
// after an error) lists all virtual servers at once (GetServices),
// compares everything with the kernel, repairs what differs, and deletes
// virtual servers nobody wants whose address is on kube-ipvs0 or is a node
// IP (virtual servers on other addresses belong to someone else and stay).
//
// A removed TCP or SCTP real server with connections is kept with weight
// 0 and deleted by a later sync once IPVS counts no connection (graceful
// drain, as upstream); a UDP one is deleted at once (expire_nodest_conn
// moves its flows at their next packet).
//
// Cleanup deletes every IPVS virtual server (svcnet owns IPVS on its
// nodes, as kube-proxy does), kube-ipvs0 and the tables; CleanupSystem
// (`svcnet proxy cleanup`, starting in another mode) does so only when
// kube-ipvs0 exists, and otherwise just removes the tables.
//
// Session affinity is IPVS persistence, so it has IPVS's semantics: the
// persistence template outlives the timeout while any connection it
// placed is still in IPVS's table, and a closed TCP connection stays there
// in TIME_WAIT for two minutes (a fixed kernel timeout). Affinity thus
// ends timeoutSeconds after the client's last connection has left the
// table, not timeoutSeconds after its last packet (as upstream's ipvs
// mode).
//
// # Kernel
//
// NewSystem refuses to start when the kernel has no IPVS (no
// /proc/net/ip_vs, /sys/module/ip_vs, and modprobe ip_vs fails) or no
// dummy interfaces, naming the module (ErrNoIPVS). Handle is the netlink
// API the backend uses; *github.com/moby/ipvs.Handle implements it and
// FakeHandle is the in-memory one the unit tests run against. Link (the
// dummy interface) and the nftables interfaces have fakes too
// (FakeLink, knftables.Fake). ListTable reads a Handle into the
// `svcnet proxy list` table, so the kernel's view renders exactly as
// `ipvsadm -Ln`.
package ipvs
