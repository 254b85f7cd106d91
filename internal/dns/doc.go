// Package dns is svcnet's cluster DNS: the Kubernetes DNS-Based Service
// Discovery specification 1.1.0 with the CoreDNS kubernetes plugin's
// behaviour where the spec is silent, plus forwarding of every other name to
// upstream resolvers through a bounded cache. It is built on
// github.com/miekg/dns.
//
// # Data flow
//
// Informers for Services and EndpointSlices (and Pods, only with
// `pods verified`) store compact objects: their transform (trimObject,
// compact.go) turns each decoded object into a small struct holding only
// what DNS reads, IPs parsed and namespaces interned, so a full
// corev1.Service is garbage as soon as it is decoded. The initial list
// arrives as a WatchList stream (client-go's default), one object at a
// time; without WatchList the reflector's paged LIST is used. Informer
// handlers only poke a one-slot channel; ONE goroutine (Watch) applies the
// changed Services to its copy-on-write indexState (state.go) and publishes
// an immutable index with an atomic.Pointer. Bursts of events coalesce into
// one publish. Readers never lock.
//
// The index maps the lower-case wire form of every existing name to an
// entry holding one precomputed answer per record type: the packed bytes
// of the answer, authority and additional sections, where an RR owned by
// the query name starts with a compression pointer to the question (offset
// 12). A response is therefore the request's header and question (the
// client's spelling kept), the precomputed bytes and an OPT record: no
// allocation. The shared NXDOMAIN and NODATA answers carry the zone SOA.
//
// # Memory
//
// Memory follows what is served: per Service, the compact informer object
// (~250 bytes) and its names in the index (~1.3 KB for a ClusterIP Service
// with a named port: the Service name, _port._proto name and PTR, each
// with its wire key and packed answers). Measured with 10000 Services
// (1000 headless × 3 endpoints, 35000 names; BenchmarkBuildIndex10k):
// index and owner state 13 MB, compact objects 3.4 MB (before: 22 MB and
// 9 MB). A standalone `svcnet dns` (Config.OwnProcess) also sets GOGC to
// 50 unless GOGC is set (the answer path allocates nothing, so this costs
// little CPU) and, after start and after the first sync, drops the
// binary's file pages that only package initialisers touched (memory.go):
// bench/dns measures about 65 MB RSS at 10000 Services, of which about 18
// MB are pages of the binary (was 148 MB).
//
// # Serving
//
// UDP uses one SO_REUSEPORT socket per CPU with two reader goroutines each.
// The fast path (Server.fast) parses the question itself and answers
// cluster names, NXDOMAIN under the zone and forward-cache hits in place.
// Everything else (forwarding, ExternalName chasing, insecure pod names,
// answers too big for the client's buffer, malformed or unusual requests)
// goes to the slow path (Server.slow), which unpacks with miekg/dns on a
// goroutine of its own, bounded at 1000 (REFUSED above, as CoreDNS's
// forward max_concurrent). Answers too big for the client's UDP buffer
// (512 without EDNS0) are truncated with TC set so the client retries over
// TCP; TCP is served on the same address.
//
// # Records (see the table test in records_test.go)
//
//   - dns-version.<zone> TXT "1.1.0" (TTL 28800);
//   - <svc>.<ns>.svc.<zone> A/AAAA: ClusterIPs; headless: every ready
//     endpoint address, NXDOMAIN when there is none (spec 1.0.1);
//   - <host>.<svc>.<ns>.svc.<zone>: host is the endpoint hostname (pods with
//     hostname+subdomain, set by the EndpointSlice controller) or the dashed
//     IP; served for ClusterIP Services too, as CoreDNS does;
//   - _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV for named ports (ClusterIP:
//     target the Service; headless: one per endpoint and port) with the
//     addresses in the additional section; SRV on the Service name itself
//     lists every port (CoreDNS's partial SRV);
//   - PTR for ClusterIPs and ready endpoint IPs, in-addr.arpa and ip6.arpa;
//     unknown reverse names are forwarded (CoreDNS "fallthrough in-addr.arpa
//     ip6.arpa");
//   - ExternalName: CNAME, then the target resolved in the same answer (the
//     cluster index, the cache or the upstreams), TC passed on; an IP as
//     ExternalName gives NXDOMAIN; no SRV;
//   - a-b-c-d.<ns>.pod.<zone> with pods insecure (IP from the name) or
//     verified (a Pod with that IP exists in that namespace);
//   - an existing name asked for another type is NODATA with the SOA; the
//     apex, svc.<zone>, pod.<zone> and <ns>.svc.<zone> (a namespace with at
//     least one Service) exist; everything else in the zone is NXDOMAIN,
//     authoritative, with the SOA (MINIMUM = TTL).
//
// Before the informers have synced, cluster names get SERVFAIL (never a
// wrong NXDOMAIN). Cluster names are never cached: a new Service is
// answered as soon as its build is published.
//
// # Forwarding
//
// Other names go to the longest matching stub domain's resolvers, else the
// default upstreams (--upstream, or the nameservers of /etc/resolv.conf),
// over UDP with a TCP retry on truncation, through a sharded cache of packed
// answers (positive: min answer TTL ≤ 3600 s; negative: the SOA's ≤ 1800 s;
// bounded entry count). Loop protection is CoreDNS's loop plugin: the
// server queries itself for a random HINFO name; seeing it come back more
// than twice means the upstreams forward to us, and Run returns ErrLoop.
package dns
