// Package endpointslice is the EndpointSlice controller: for every Service
// with a selector it keeps EndpointSlices (labelled kubernetes.io/service-name
// and endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io,
// owned by the Service) listing one endpoint per selected pod that has an IP.
//
// It is kube-controller-manager's controller (KK pkg/controller/endpointslice)
// rebuilt on the published reconciler library k8s.io/endpointslice, which
// computes the desired endpoints (conditions ready/serving/terminating,
// hostname, nodeName, zone, targetRef, ports resolved per pod so a named
// targetPort that maps to different numbers gives one slice per port set),
// packs them at most MaxEndpointsPerSlice per slice with minimal churn, and
// writes the creates/updates/deletes. This package owns the loop around it:
//
//	pod event ──► podQueue ──(services selecting old/new labels)──┐
//	Service event ────────────────────────────────────────────────┼─► serviceQueue ─► syncService ─► Reconciler
//	EndpointSlice event (not one we wrote, per the tracker) ──────┘
//
// syncService reads only informer caches. The library's EndpointSliceTracker
// remembers the generation of every slice this controller wrote; a sync that
// sees an older generation in the cache (or a slice it deleted) gives up with
// a stale-cache error and retries once the informer has caught up, so a slow
// watch never makes it write from outdated state (no duplicate slices, no
// lost updates). A slice someone else changes or deletes does not match the
// tracker and re-queues its Service, which recreates or repairs it.
//
// Differences from upstream, each deliberate:
//
//   - Pods and Services are matched through the selectorindex informer
//     indexes instead of listing the whole namespace (10k Services × 10 pods
//     per namespace stays linear).
//   - When a Service is deleted, loses its selector or becomes ExternalName,
//     this controller deletes its managed slices itself rather than leaving
//     that to the garbage collector (slices still carry the controller
//     ownerReference, so a garbage collector finds them too). At start it
//     also queues the Service of every managed slice, so slices of Services
//     deleted while it was down are removed.
//   - Managed slices of the Service's name that the Service does not own
//     (left by an earlier Service of that name) are deleted before the
//     reconciler runs: the library keeps such a slice when it is empty and
//     the Service has no endpoints (its placeholder comparison ignores
//     ownerReferences), relying on the garbage collector.
//   - A deleted managed slice the tracker does not know (a restarted
//     controller has tracked none) also re-queues its Service.
//   - A stale-cache retry waits 5 ms doubling to 1 s instead of the 1 s base
//     of the error backoff: the informer is normally a millisecond behind,
//     and pod-Ready → slice latency is one of our acceptance numbers.
package endpointslice
