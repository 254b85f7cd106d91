package service

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
)

// Strategy is the Service write logic (upstream svcStrategy plus the parts of
// the Service REST storage that are not allocation). It also implements
// registry.StatusStrategy for /status.
type Strategy struct{}

var (
	_ registry.Strategy       = Strategy{}
	_ registry.StatusStrategy = Strategy{}
)

// Default applies SetDefaults_Service.
func (Strategy) Default(obj runtime.Object) {
	if svc, ok := obj.(*v1.Service); ok {
		setDefaults(svc)
	}
}

// PrepareForCreate clears status and fills clusterIPs from clusterIP for
// clients that only set the singular field.
func (Strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return
	}
	svc.Status = v1.ServiceStatus{}
	normalizeClusterIPs(svc, nil)
}

// PrepareForUpdate keeps the stored status, restores allocated values the
// client left out, syncs clusterIP and clusterIPs, and clears what a type
// change makes meaningless. Upstream does the middle two in the storage's
// BeginUpdate hook and the last in the strategy; the order is the same. The
// rules read defaulted fields (upstream defaults on decode), so obj is
// defaulted first; Default is idempotent.
func (Strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	svc, ok1 := obj.(*v1.Service)
	oldSvc, ok2 := old.(*v1.Service)
	if !ok1 || !ok2 {
		return
	}
	setDefaults(svc)
	svc.Status = oldSvc.Status
	patchAllocatedValues(svc, oldSvc)
	normalizeClusterIPs(svc, oldSvc)
	dropTypeDependentFields(svc, oldSvc)
}

// Validate returns the problems with a new Service.
func (Strategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return field.ErrorList{field.InternalError(nil, errNotService(obj))}
	}
	return ValidateCreate(svc)
}

// ValidateUpdate returns the problems with changing old into obj.
func (Strategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	svc, ok1 := obj.(*v1.Service)
	oldSvc, ok2 := old.(*v1.Service)
	if !ok1 || !ok2 {
		return field.ErrorList{field.InternalError(nil, errNotService(obj))}
	}
	return ValidateUpdate(svc, oldSvc)
}

// AllowCreateOnUpdate is true for Services: PUT creates a missing Service.
func (Strategy) AllowCreateOnUpdate() bool { return true }

// PrepareForStatusUpdate keeps everything but status from the stored object.
func (Strategy) PrepareForStatusUpdate(_ context.Context, obj, old runtime.Object) {
	svc, ok1 := obj.(*v1.Service)
	oldSvc, ok2 := old.(*v1.Service)
	if !ok1 || !ok2 {
		return
	}
	svc.Spec = oldSvc.Spec
}

// ValidateStatusUpdate validates a /status write (the load balancer ingress).
func (Strategy) ValidateStatusUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	svc, ok1 := obj.(*v1.Service)
	oldSvc, ok2 := old.(*v1.Service)
	if !ok1 || !ok2 {
		return field.ErrorList{field.InternalError(nil, errNotService(obj))}
	}
	return ValidateStatusUpdate(svc, oldSvc)
}
