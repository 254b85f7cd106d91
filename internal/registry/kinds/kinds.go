// Package kinds lists every kind svcnet serves, in one place, so the
// server's wiring is a single call:
//
//	cfg.Kinds = kinds.All(serviceKind)
//
// The Service kind is passed in because it carries the ClusterIP and
// NodePort allocators, which need configuration (CIDRs, port range, the
// store) that the other kinds do not.
package kinds

import (
	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/apps"
	"github.com/svcnet/svcnet/internal/registry/coordination"
	"github.com/svcnet/svcnet/internal/registry/core"
	"github.com/svcnet/svcnet/internal/registry/discovery"
	"github.com/svcnet/svcnet/internal/registry/networking"
)

// All returns the kinds in a stable order: core/v1 first (as in upstream
// discovery), then discovery.k8s.io, apps, coordination.k8s.io and networking.k8s.io. service
// is placed among the core kinds; nil leaves it out.
func All(service *registry.Kind) []*registry.Kind {
	ks := []*registry.Kind{
		core.Namespaces(),
		core.Pods(),
	}
	if service != nil {
		ks = append(ks, service)
	}
	return append(ks,
		core.Endpoints(),
		core.Nodes(),
		core.ConfigMaps(),
		core.Events(),
		discovery.EndpointSlices(),
		apps.Deployments(),
		apps.ReplicaSets(),
		coordination.Leases(),
		networking.ServiceCIDRs(),
	)
}
