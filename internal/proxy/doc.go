// Package proxy is the backend-neutral core of svcnet's node proxy (the
// kube-proxy role).
//
// Data flow:
//
//	informers (Services without service.kubernetes.io/service-proxy-name,
//	EndpointSlices without service.kubernetes.io/headless, this Node)
//	    → Tracker (per-Service ports, slices, dirty set with change times)
//	    → Runner (coalescing: one-slot trigger channel, burst spacing,
//	      periodic and failure-driven full resyncs with backoff)
//	    → Tracker.Snapshot → *State (immutable desired state + Changed hint)
//	    → Backend.Sync (one atomic dataplane transaction; nftables, …)
//	    → metrics, /healthz progress, healthCheckNodePort servers.
//
// State (state.go) is the contract every backend programs: services keyed
// by ServicePortName with their endpoints; CategorizeEndpoints applies the
// traffic policies and the serving-terminating fallback the same way for
// all backends. Backends are idempotent: the same State may come twice, and
// a State with Full set must be written from scratch.
//
// Proxier wires it together for `svcnet proxy`: :10256 /healthz (503 when a
// change waited more than 2 × syncPeriod, or the Node is being deleted) and
// /livez, :10249 /metrics (kube-proxy metric names) and /proxyMode, and one
// HTTP server per healthCheckNodePort of externalTrafficPolicy Local
// Services (200 with the local endpoint count, 503 when none).
// Configuration is a KubeProxyConfiguration (config.go) from a file or from
// ConfigMap kube-system/kube-proxy key config.conf.
package proxy
