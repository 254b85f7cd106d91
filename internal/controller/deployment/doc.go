// Package deployment is the Deployment controller: it rolls a
// Deployment's pod template out through ReplicaSets, following
// kube-controller-manager's pkg/controller/deployment (v1.37) closely
// enough that kubectl (rollout status, rollout history, scale, describe)
// sees what it sees against a real cluster.
//
// # ReplicaSets and names
//
// Each distinct pod template gets one ReplicaSet named
// "<deployment>-<pod-template-hash>". The hash is upstream's ComputeHash
// (FNV-32a over the template's deep-printed value plus status.collisionCount,
// encoded with rand.SafeEncodeString), so a Deployment gets the same
// ReplicaSet name here as on a real cluster, e.g. service-env-77bd9f74d4;
// its pods are then "<rs>-<5 chars>" (see package replicaset). The hash is
// also added as the pod-template-hash label to the ReplicaSet's selector
// and template, which keeps the revisions' pods apart. A name taken by a
// foreign ReplicaSet bumps status.collisionCount and the hash changes.
//
// The Deployment owns its ReplicaSets through a controller ownerReference;
// orphaned ReplicaSets matching the selector are adopted and owned ones that
// stop matching are released, as the upstream ControllerRefManager does.
//
// # Sync
//
// Informer events (Deployments, their ReplicaSets, and pod deletions for
// Recreate) feed a rate-limited queue of Deployment keys. One sync:
//
//   - paused, or a scaling event (an active ReplicaSet's desired-replicas
//     annotation differs from spec.replicas): resize the ReplicaSets
//     proportionally (largest first, the remainder to the largest) without
//     rolling;
//   - RollingUpdate: create the new ReplicaSet if needed; grow it while the
//     total stays within replicas+maxSurge; otherwise shrink old ones,
//     first their unavailable pods, then available ones while the
//     available total stays at least replicas-maxUnavailable (maxSurge
//     rounds up, maxUnavailable down, both 0 means maxUnavailable 1);
//   - Recreate: scale old ReplicaSets to 0, wait until none of their pods
//     is left running, then create/scale the new one;
//   - when the rollout is complete, delete the oldest fully scaled-down
//     ReplicaSets beyond spec.revisionHistoryLimit.
//
// # Revisions and status
//
// The new ReplicaSet gets deployment.kubernetes.io/revision = max old
// revision + 1 (a ReplicaSet brought back by a rollback moves to the new
// number and keeps its old ones in revision-history); the Deployment
// carries the new ReplicaSet's revision. ReplicaSets also carry
// desired-replicas and max-replicas, used to detect scaling events and to
// scale proportionally. Other Deployment annotations are copied to the
// new ReplicaSet.
//
// Status is summed from the ReplicaSets' status: replicas, updatedReplicas
// (the new ReplicaSet), readyReplicas, availableReplicas,
// unavailableReplicas, terminatingReplicas, and observedGeneration — the
// fields `kubectl rollout status` compares. Conditions follow upstream:
// Available (MinimumReplicasAvailable / MinimumReplicasUnavailable);
// Progressing (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
// NewReplicaSetAvailable when complete, ProgressDeadlineExceeded after
// progressDeadlineSeconds without progress, DeploymentPaused /
// DeploymentResumed); ReplicaFailure mirrored from the ReplicaSets. A
// stuck rollout is requeued for the moment its deadline passes.
//
// Events: ScalingReplicaSet ("Scaled up replica set X from 0 to 3"),
// ReplicaSetCreateError, ProgressDeadlineExceeded, SelectingAll.
//
// Not done: the deprecated rollbackTo annotation (apps/v1 clients such as
// kubectl rollout undo patch the template, which needs nothing here), and
// metrics.
package deployment
