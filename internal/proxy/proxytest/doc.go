// Package proxytest holds what every proxy backend is tested with.
//
// # Packet-flow table
//
// Cases ({source, destination, protocol, port} → "DNAT ip:port[,ip:port…]"
// | "REJECT" | "DROP" | "" (not handled), masquerade yes/no) over one
// backend-neutral proxy.State (StandardState, the topology in fixture.go).
// A backend test programs StandardState into the backend's fake, wraps the
// fake in the backend's Tracer and calls Run(t, tracer, StandardCases()).
// Random endpoint choice makes a result a set of Paths; session affinity is
// expressed with Case.After and a StatefulTracer. The nftables tracer
// (NFTTracer) interprets the rules of a knftables.Fake hook by hook; the
// iptables tracer (IPTTracer) does the same for iptables-save text (from
// the iptables backend's Fake or from the kernel); the ipvs and userspace
// backends bring their own Tracer and reuse the table unchanged.
//
// # Network-namespace harness
//
// Main (the TestMain body) re-executes the test binary as root under
// "unshare --net --mount", so all traffic stays in a private network
// namespace. Inside it, a Lab builds nodes and pods as network namespaces
// joined by veth pairs with routed /32s (no bridge), and StartServer runs
// backend servers (the test binary again) that answer HTTP and UDP with
// their name and the client address they saw. Cluster is the standard
// two-node lab with an outside client; node-a is the sandbox's own
// namespace, so a backend under test programs it directly.
//
// RunRealTraffic is the real-traffic matrix over that lab (round-robin,
// affinity and its expiry, hairpin, NodePorts on every node, ExternalIP
// and LB IP, refusal without endpoints, ETP Local with its health check
// port, UDP moving after an endpoint change) that every proxy mode runs
// unchanged with its own backend constructor.
package proxytest
