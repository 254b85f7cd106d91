package proxy

import "context"

// Backend programs a State into one dataplane (nftables, iptables, ipvs …).
// The core calls it from a single goroutine; implementations need no locking
// for Sync/Cleanup against each other.
type Backend interface {
	// Sync makes the dataplane match state. It must be idempotent and should
	// apply the whole change atomically (one transaction). On error the core
	// retries with state.Full set.
	Sync(ctx context.Context, state *State) error
	// Cleanup removes everything this backend ever installed. It succeeds
	// when there is nothing to remove.
	Cleanup(ctx context.Context) error
	// Name is the proxy mode ("nftables", …), served on /proxyMode.
	Name() string
}

// SyncStats is optionally implemented by a Backend to report what its last
// successful Sync did, for metrics.
type SyncStats interface {
	// LastSyncStats returns whether the last Sync was partial and how many
	// rules (nftables rules, iptables rules, ipvs entries …) the dataplane
	// holds after it.
	LastSyncStats() (partial bool, rules int)
}

// UsesClusterEndpoints reports whether any traffic to sp is routed with
// Cluster policy (to any endpoint in the cluster).
func (sp *ServicePort) UsesClusterEndpoints() bool {
	return !sp.InternalPolicyLocal || (sp.ExternallyAccessible() && !sp.ExternalPolicyLocal)
}

// UsesLocalEndpoints reports whether any traffic to sp is routed with Local
// policy (to endpoints on this node only).
func (sp *ServicePort) UsesLocalEndpoints() bool {
	return sp.InternalPolicyLocal || (sp.ExternallyAccessible() && sp.ExternalPolicyLocal)
}

// CategorizeEndpoints splits eps the way kube-proxy does:
//
//   - cluster: endpoints usable by Cluster-policy traffic (nil if the service
//     never uses Cluster policy): the ready ones, or, when none is ready
//     anywhere, the serving-terminating ones.
//   - local: endpoints usable by Local-policy traffic (nil if the service
//     never uses Local policy): local ready ones, else local
//     serving-terminating ones.
//   - all: union of cluster and local (every endpoint this node may DNAT to).
//   - hasAny: whether the service has usable endpoints anywhere in the
//     cluster (may be true while local is empty).
//
// Topology hints and trafficDistribution are not applied (all ready
// endpoints are used).
func CategorizeEndpoints(eps []Endpoint, sp *ServicePort) (cluster, local, all []Endpoint, hasAny bool) {
	if len(eps) == 0 {
		return nil, nil, nil, false
	}
	if sp.UsesClusterEndpoints() {
		cluster = filterEndpoints(eps, func(e Endpoint) bool { return e.Ready })
		if len(cluster) == 0 {
			cluster = filterEndpoints(eps, func(e Endpoint) bool { return e.Serving && e.Terminating })
		}
		hasAny = len(cluster) > 0
	}
	if !sp.UsesLocalEndpoints() {
		return cluster, nil, cluster, hasAny
	}
	var localReady, localTerm bool
	for _, e := range eps {
		switch {
		case e.Ready:
			hasAny = true
			localReady = localReady || e.IsLocal
		case e.Serving && e.Terminating:
			hasAny = true
			localTerm = localTerm || e.IsLocal
		}
	}
	usingTerminating := false
	switch {
	case localReady:
		local = filterEndpoints(eps, func(e Endpoint) bool { return e.IsLocal && e.Ready })
	case localTerm:
		usingTerminating = true
		local = filterEndpoints(eps, func(e Endpoint) bool { return e.IsLocal && e.Serving && e.Terminating })
	}
	if !sp.UsesClusterEndpoints() {
		return nil, local, local, hasAny
	}
	if !usingTerminating {
		// cluster holds every ready endpoint, a superset of local.
		return cluster, local, cluster, hasAny
	}
	seen := make(map[Endpoint]bool, len(cluster)+len(local))
	for _, list := range [][]Endpoint{cluster, local} {
		for _, e := range list {
			if !seen[e] {
				seen[e] = true
				all = append(all, e)
			}
		}
	}
	return cluster, local, all, hasAny
}

func filterEndpoints(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	var out []Endpoint
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
