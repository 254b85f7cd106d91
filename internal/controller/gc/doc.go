// Package gc is the garbage collector: when every owner named in an
// object's metadata.ownerReferences is gone, the object is deleted, so
// `kubectl delete deployment` leaves no ReplicaSets or pods behind. It is a
// compact version of kube-controller-manager's pkg/controller/garbagecollector.
//
// # Design
//
// At start the collector asks discovery for the preferred version of every
// resource that supports list, watch and delete (minus events, as upstream)
// and runs one metadata-only informer per resource (PartialObjectMetadata,
// so pods cost their metadata, not their spec). The informers feed an
// ownership graph keyed by uid, holding each object's owner references and
// the reverse owner → dependents edges.
//
// Work items are uids in a rate-limited queue:
//
//   - An object is queued when it appears or changes with an owner the
//     graph does not hold. That covers dependents created after their owner
//     was deleted, and owners the collector does not watch.
//   - When an object is deleted its uid is remembered as gone (a bounded
//     LRU; uids are never reused) and its dependents are queued.
//
// Processing an object classifies each owner reference: present if the
// graph holds the owner (in a compatible namespace); absent if its uid is
// known gone, or a live GET of the owner (resolved through a discovery
// RESTMapper) returns NotFound or another uid. If all owners are absent the
// object is deleted with propagationPolicy=Background and a uid
// precondition; if only some are, the dangling references are removed with
// a merge patch conditioned on resourceVersion. An owner whose kind cannot
// be resolved counts as present: the collector never deletes on a guess.
// Workers start only after every informer has synced, so at start the
// graph answers almost every question without a GET.
//
// # Propagation policies
//
// svcnet's API server treats Foreground and Orphan deletes as Background
// (it never adds finalizers on delete), so in practice every cascade here is
// Background: the owner disappears at once and its dependents follow. An
// object that does carry the standard finalizers while being deleted is
// still handled: "orphan" removes the owner reference from every dependent
// and then the finalizer; "foregroundDeletion" deletes the dependents and
// removes the finalizer once none is left. blockOwnerDeletion is not
// enforced.
//
// Not done: rediscovery of resources added after start (svcnet serves a
// fixed set of kinds), metrics, and the debugging graph dump.
package gc
