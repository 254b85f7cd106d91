// Package replicaset is the ReplicaSet controller: it keeps
// spec.replicas pods running for every ReplicaSet and reports what it sees
// in the ReplicaSet's status, following kube-controller-manager's
// pkg/controller/replicaset (v1.37).
//
// # Design
//
// Informers on ReplicaSets and Pods feed a rate-limited workqueue of
// ReplicaSet keys ("namespace/name"); workers run sync for one key at a
// time. sync is idempotent: it reads the ReplicaSet and its pods from the
// informer caches, claims pods (adopts orphans whose labels match the
// selector, releases owned pods that no longer match), creates or deletes
// the difference, and writes status.
//
// Pods are found through a pod indexer keyed by controller reference
// (namespace/Kind/name/uid, and plain namespace for orphans), as upstream
// does, so a sync costs O(pods of this ReplicaSet), not O(pods).
//
// # Expectations
//
// The informer cache lags behind the controller's own writes. Without a
// guard a second sync right after creating 3 pods would still see 0 and
// create 3 more. Like upstream's UIDTrackingControllerExpectations, the
// controller records how many creations and which deletions (by pod key)
// it is waiting to observe; manageReplicas runs only once the informer has
// delivered all of them (or after a 5 minute timeout, so a lost watch
// event cannot wedge a ReplicaSet). Status is still written on every sync.
//
// # Pod creation and deletion
//
// Pods are created from spec.template with generateName "<rs-name>-" (the
// API server appends 5 characters from the upstream rand.String alphabet),
// the template's labels, annotations and finalizers, and a controller
// ownerReference (controller=true, blockOwnerDeletion=true). Creations go
// out in slow-start batches (1, 2, 4, …) so a failing create (quota, a
// terminating namespace) costs one request rather than hundreds, and at
// most BurstReplicas per sync.
//
// When there are too many pods the ones deleted first are ranked as in
// upstream's ActivePodsWithRanks: unassigned before assigned, Pending
// before Unknown before Running, not ready before ready, lower
// controller.kubernetes.io/pod-deletion-cost first, pods on nodes that
// hold more pods of the same Deployment (sibling ReplicaSets) first, then
// more recently ready, more restarts, newer (both on a logarithmic time
// scale).
//
// # Status
//
// status.replicas counts active pods (not terminal, not being deleted),
// fullyLabeledReplicas those whose labels contain all template labels,
// readyReplicas those with Ready=True, availableReplicas those ready for
// at least minReadySeconds (the ReplicaSet is requeued for the moment the
// next pod becomes available), terminatingReplicas owned pods that are
// being deleted, observedGeneration the generation the status describes.
// A failed create or delete sets the ReplicaFailure condition
// (FailedCreate/FailedDelete), cleared by the next clean sync.
//
// Not done (differences from upstream): no consistency store for the
// informer caches (expectations cover the pod writes that matter), no
// metrics.
package replicaset
