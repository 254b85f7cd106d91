// Package core builds the registry.Kind values of the core/v1 kinds svcnet
// serves besides Services: namespaces, pods, nodes, endpoints, configmaps
// and events.
//
// Each kind follows its kube-apiserver counterpart (pkg/registry/core/<kind>
// and pkg/apis/core/v1 defaults and validation) in what clients can observe:
// the defaults a created object comes back with, the status a create starts
// from, which writes bump metadata.generation, the 422 causes (field path and
// message) for the mistakes people make, the `kubectl get` columns, and the
// field-selector fields.
//
// Deliberate differences, all in the direction of letting svcnet's own
// components work without upstream machinery svcnet does not have:
//   - Pods: an update may set spec.nodeName once (from "" to a node), which
//     is how svcnet's scheduler binds pods; upstream needs pods/binding.
//   - Namespaces: spec.finalizers ["kubernetes"] is added on create and
//     kept on updates as upstream does; deleting a namespace (Terminating,
//     emptying it, dropping the finalizer) is the apiserver's job.
//   - Validation covers the common mistakes, not every upstream rule (see
//     generic.ValidatePodSpec).
package core
