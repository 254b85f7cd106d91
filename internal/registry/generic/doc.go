// Package generic holds the pieces every per-kind registry package shares.
//
// A kind's Strategy (registry.Strategy) is a small type that embeds Base and
// overrides only what differs from the common behaviour:
//
//   - Base validates metadata with apimachinery's ValidateObjectMeta and
//     ValidateObjectMetaUpdate (plus the core rule that a finalizer name
//     without a "/" must be a standard one), using the kind's name rule
//     (DNS-1123 subdomain unless the kind says otherwise).
//   - Base.PrepareForUpdate keeps metadata.generation from the stored object:
//     a client can never set it. Kinds that track generation call
//     InitGeneration on create and UpdateGeneration on update, which bumps it
//     when the spec changed (the signal `kubectl rollout status` and the
//     controllers' observedGeneration rely on).
//   - Kinds with a /status subresource reset status on create (ResetStatus),
//     copy the stored status on main-resource writes, and implement
//     registry.StatusStrategy to copy everything but status on /status writes.
//
// The table helpers (Age, Column, NameColumn, AgeColumn, ContainerCells,
// ListWithMore) reproduce the formatting of kube-apiserver's printers so
// `kubectl get` looks the same against svcnet as against a real cluster.
//
// podspec.go carries the PodSpec defaults (SetDefaults_PodSpec and friends)
// and a pragmatic subset of ValidatePodSpec, shared by pods, deployments and
// replicasets. Error paths and messages follow upstream so kubectl prints the
// same lines; checks for features svcnet does not run (volumes other than
// their names, security contexts, resource claims …) are left out.
package generic
