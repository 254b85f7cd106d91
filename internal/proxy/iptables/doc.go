// Package iptables is the iptables proxy backend: it programs a
// proxy.State with iptables-restore / ip6tables-restore payloads in
// upstream kube-proxy's chain structure (k/k pkg/proxy/iptables), one
// Backend per IP family.
//
// # Chains
//
//	filter INPUT   → KUBE-PROXY-FIREWALL (ct NEW), KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES (ct NEW)
//	filter FORWARD → KUBE-PROXY-FIREWALL, KUBE-FORWARD, KUBE-SERVICES, KUBE-EXTERNAL-SERVICES
//	filter OUTPUT  → KUBE-PROXY-FIREWALL, KUBE-SERVICES
//	nat PREROUTING, OUTPUT → KUBE-SERVICES;  nat POSTROUTING → KUBE-POSTROUTING
//
// nat KUBE-SERVICES sends each ClusterIP port to the internal policy chain
// (KUBE-SVC-* for Cluster, KUBE-SVL-* for internalTrafficPolicy Local),
// each ExternalIP and LoadBalancer IP port to KUBE-EXT-* (through KUBE-FW-*
// when loadBalancerSourceRanges are set), and the node's NodePort
// addresses to KUBE-NODEPORTS, whose ports go to KUBE-EXT-*. KUBE-EXT-*
// masquerades (Cluster policy) or short-circuits pod and node traffic (ETP
// Local) before the policy chain. A policy chain picks a KUBE-SEP-* chain
// per endpoint with the statistic cascade (rule i of N matches with
// probability 1/(N-i)); with sessionAffinity ClientIP it first tries
// "-m recent --rcheck --seconds T --reap" per endpoint, and KUBE-SEP-*
// records the client with "-m recent --set" before its DNAT. KUBE-SEP-*
// also marks hairpin traffic (an endpoint reaching itself) for
// masquerading; KUBE-MARK-MASQ sets mark 0x4000 and KUBE-POSTROUTING
// masquerades marked packets (--random-fully).
//
// filter KUBE-SERVICES rejects ClusterIP ports without endpoints anywhere
// (REJECT, icmp port unreachable: a TCP client sees "connection refused")
// and drops those with endpoints but none usable under a Local policy; it
// also rejects unused ports of allocated ClusterIPs and drops unallocated
// addresses of the service CIDRs, as the nftables backend.
// KUBE-EXTERNAL-SERVICES does the same for ExternalIPs, LoadBalancer IPs
// and NodePorts; KUBE-PROXY-FIREWALL drops LoadBalancer traffic that
// KUBE-FW-* did not let through (it was not DNATed); KUBE-FORWARD drops
// conntrack-INVALID packets (unless TCPBeLiberal) and accepts marked and
// established traffic; filter KUBE-NODEPORTS accepts healthCheckNodePorts.
//
// Differences from upstream: NodePorts answer on the node IPs only (as
// the nftables backend), not on every local address type; and every
// address-keyed top-level chain is a prefix tree (KUBE-DST-*, see
// dispatch.go) instead of a linear list, so a connection that is not to a
// Service evaluates a few dozen rules whatever the number of services,
// without ipset.
//
// # Syncs
//
// Every Sync is one "iptables-restore --noflush" run: per table, chain
// lines ("-" policy; they create or flush), "-A" rules, "-X" deletions,
// COMMIT (atomic per table). The backend keeps, per service port, the
// plan it wrote and, per top-level chain, its tree. A partial sync renders
// only the services in State.Changed (plus added or removed ones),
// rewrites those of their chains whose rules changed, rebuilds a
// top-level chain only if a changed service's entries in it changed (an
// endpoint change touches none), and writes only the tree chains that
// differ, so a one-endpoint change is a payload of a few lines whatever
// the number of services (the nft-based iptables-restore is slow on large
// payloads). A full sync (first sync, State.Full, node IP change, after a
// failure) writes every chain, reads iptables-save to delete leftover
// svcnet chains and to insert missing jumps from the built-in chains.
//
// After a successful sync, UDP services whose reachable endpoints changed
// get their stale conntrack flows deleted (package conntrack).
//
// # Variants
//
// Exec drives iptables-nft-* or iptables-legacy-* binaries; DetectVariant
// chooses as the upstream iptables-wrapper does (the variant already
// holding rules, else what "iptables -V" reports). NewSystem builds the
// IPv4 and IPv6 backends for the detected variant. Fake interprets
// payloads in memory for tests; proxytest.IPTTracer evaluates the
// resulting iptables-save text for the shared packet-flow table.
package iptables
