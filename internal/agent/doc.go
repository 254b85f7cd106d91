// Package agent is svcnet's node agent: the kubelet role for process pods.
//
// One Agent serves one Node. It registers the Node object (addresses,
// capacity, Ready condition, kubelet endpoint), renews the node's Lease in
// kube-node-lease, and runs the pods the scheduler binds to it:
//
//	informers (pods on this node, nodes, services)
//	    │ pod UID
//	    ▼
//	workqueue ──► syncPod(uid) ──► podnet   (IP from the podCIDR, veth, routes)
//	    ▲              │       └─► runtime  (sandbox namespaces, container processes)
//	    │              ▼
//	    │         pod status (phase, conditions, containerStatuses) ──► API server
//	    └── container exits (runtime.Events) and probe results (probe.Worker)
//
// syncPod is level-triggered and idempotent: it compares the Pod object with
// what the runtime reports and closes the gap (create the sandbox, start or
// restart containers with back-off, stop them on deletion), then writes the
// status. Every decision is taken again on the next sync, so a restarted
// agent converges from whatever it finds: runtime.New adopts the sandboxes
// and containers still running, podnet keeps each pod's IP in its state file,
// and pods deleted while the agent was down are cleaned up on the first pass.
//
// The blocks live in sub-packages: podnet (routed pod networking, IPAM,
// host-gw routes), runtime (sandbox + shim processes, logs, exec), probe
// (readiness/liveness/startup probes) and kubeletserver (the /containerLogs
// and /exec endpoints the API server proxies kubectl logs/exec to).
package agent
