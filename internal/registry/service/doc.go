// Package service is the registry of the core/v1 Service kind: its defaults,
// validation, update rules, `kubectl get` columns, field selectors, and the
// allocation of ClusterIPs and NodePorts.
//
// # Strategy
//
// The write path follows kube-apiserver v1.37 (pkg/registry/core/service):
//
//   - Default is SetDefaults_Service.
//   - PrepareForCreate clears status and fills clusterIPs from clusterIP.
//   - PrepareForUpdate keeps the stored status, copies allocated values the
//     client left out from the stored object (patchAllocatedValues, so that
//     re-submitting a manifest without clusterIP works), keeps clusterIP and
//     clusterIPs in step, and clears fields a type change makes meaningless
//     (dropTypeDependentFields).
//   - Validate and ValidateUpdate are upstream's ValidateService rules, ported
//     to the v1 types with upstream's field paths and messages (checked
//     against kube-apiserver itself: see testdata/invalid_services.yaml). One
//     rule is left to the allocator: upstream requires healthCheckNodePort
//     when type is LoadBalancer and externalTrafficPolicy Local, but always
//     allocates it before validating, so no client can see that error; here
//     validation may run before allocation, so it does not require it.
//
// # Allocation
//
// Every ClusterIP and NodePort (healthCheckNodePort included) a Service holds
// is an etcd key, written in the same transaction as the Service:
//
//	/registry/allocations/clusterips/<ip>     {"namespace":…,"name":…,"uid":…}
//	/registry/allocations/nodeports/<port>    {"namespace":…,"name":…,"uid":…}
//
// The transaction creates the keys of values the Service newly holds with a
// must-not-exist precondition and deletes the keys of values it gave up, so
// etcd itself guarantees that no two Services ever hold the same value, even
// with several API server processes on one etcd, and a crash can never leave
// a Service without its keys or the reverse.
//
// Picking a free value does not read etcd. Allocations keeps an in-memory
// mirror of the keys (one internal/allocator bitmap per range), filled by a
// list and then kept current by a watch of the allocation prefix (Run). The
// mirror is only a hint: a value taken by another process the mirror has not
// heard of yet makes the transaction fail its precondition, Conflict marks the
// value taken, and the apiserver retries with a new pick. A value the client
// asked for (clusterIP: 10.97.1.1, nodePort: 30002) is never judged by the
// mirror, only by the precondition, so deleting a Service and re-creating it
// with the same IP works at once; when the precondition fails, Conflict
// returns upstream's 422 "provided IP is already allocated".
//
// Values this process picked or was asked for are reserved in the mirror until
// the watch reports their key, so concurrent writes in one process do not pick
// the same value. A write whose transaction fails on an allocation key gives
// all its reservations back in Conflict (the transaction wrote nothing); one
// that fails otherwise (validation, a 409 on the object, dry run) leaves them
// to expire after 30s.
//
// The apiserver calls, per write: Default, PrepareForCreate/PrepareForUpdate,
// Validate/ValidateUpdate, then Allocate and the transaction in a retry loop
// (Validate may also run after Allocate, as upstream does). /status writes
// keep the spec, so Allocate returns no ops for them.
//
// Repair, run at server start, reconciles the keys with the stored Services:
// it creates missing keys, deletes keys no Service holds, and logs values held
// by several Services.
package service
