// Package version holds the version strings svcnet reports: the Kubernetes
// API version it is compatible with (in /version, Node kubeletVersion) and
// its own.
package version

// KubernetesVersion is the upstream release svcnet follows, with svcnet as
// build metadata, as k3s does ("v1.37.2+k3s1").
const KubernetesVersion = "v1.37.2+svcnet"

// Version is svcnet's own version.
const Version = "0.1.0"
