// Package registry describes the kinds svcnet serves and how each behaves.
//
// The apiserver (internal/apiserver) is generic: routing, codecs, storage,
// list/watch, patch and delete are the same for every kind. What differs per
// kind lives in a Kind value built by a package under internal/registry/<kind>:
// its names for discovery, its Strategy (defaults, validation, what a write may
// change), its table columns for kubectl get, its field-selector fields, and
// optional hooks (Allocator) that add storage ops to a write.
//
// Objects handled here are always the versioned Go types from k8s.io/api
// (svcnet has no internal hub version).
package registry

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/storage"
)

// Kind is everything the apiserver needs to serve one resource.
type Kind struct {
	// Resource is the group, version and plural resource name ("services").
	Resource schema.GroupVersionResource
	// Kind is the object kind ("Service"); the list kind is Kind+"List".
	Kind         string
	SingularName string
	ShortNames   []string
	Categories   []string
	Namespaced   bool

	// New and NewList return empty objects of the kind and its list.
	New     func() runtime.Object
	NewList func() runtime.Object

	Strategy Strategy

	// Status is true when the kind has a /status subresource: writes to the
	// main resource keep the stored status, writes to /status keep everything
	// but status (and metadata labels/annotations per upstream).
	Status bool
	// Scale, when non-nil, serves the /scale subresource (autoscaling/v1 Scale).
	Scale *ScaleAccess

	// Table builds the rows of `kubectl get` for objects of this kind. The
	// apiserver adds the row objects (PartialObjectMetadata or the full object).
	// Nil means NAME and AGE only.
	Table *TableConvertor

	// Fields returns the field-selector fields of obj beyond metadata.name and
	// metadata.namespace, which the apiserver always supports. Nil means none.
	Fields func(obj runtime.Object) fields.Set

	// Allocator, when non-nil, assigns cluster-wide unique values (ClusterIPs,
	// NodePorts) as part of the write. See Allocator.
	Allocator Allocator
}

// GroupVersionKind returns the kind's GVK.
func (k *Kind) GroupVersionKind() schema.GroupVersionKind {
	return k.Resource.GroupVersion().WithKind(k.Kind)
}

// Strategy is the per-kind write logic, modelled on the upstream registry's
// RESTCreateStrategy / RESTUpdateStrategy. All methods get versioned objects.
type Strategy interface {
	// PrepareForCreate clears fields a client may not set on create (status for
	// kinds with a status subresource) and sets derived fields (generation).
	PrepareForCreate(ctx context.Context, obj runtime.Object)
	// Default applies the API defaults (SetDefaults_<Kind>). Called on create
	// and update after decoding, before validation.
	Default(obj runtime.Object)
	// Validate returns the problems with a new object.
	Validate(ctx context.Context, obj runtime.Object) field.ErrorList
	// PrepareForUpdate copies what the client may not change from old (status
	// on the main resource, allocated values omitted by the client) and bumps
	// generation when the spec changed.
	PrepareForUpdate(ctx context.Context, obj, old runtime.Object)
	// ValidateUpdate returns the problems with changing old into obj.
	ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList
	// AllowCreateOnUpdate reports whether PUT of a missing object creates it.
	AllowCreateOnUpdate() bool
}

// StatusStrategy is the write logic for the /status subresource. Kinds with
// Status=true whose Strategy does not implement it get the generic behaviour:
// only .status is taken from the request.
type StatusStrategy interface {
	PrepareForStatusUpdate(ctx context.Context, obj, old runtime.Object)
	ValidateStatusUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList
}

// ScaleAccess reads and writes replicas for the /scale subresource.
type ScaleAccess struct {
	// Get returns spec.replicas, status.replicas and the status selector string.
	Get func(obj runtime.Object) (specReplicas, statusReplicas int32, selector string)
	// Set writes spec.replicas.
	Set func(obj runtime.Object, replicas int32)
}

// TableConvertor describes a kind's `kubectl get` columns.
type TableConvertor struct {
	// Columns are the column definitions; priority 1 columns show with -o wide.
	Columns []metav1.TableColumnDefinition
	// Cells returns one row's cells, in column order, for obj.
	Cells func(obj runtime.Object) []interface{}
}

// Allocator assigns cluster-wide unique values to an object as part of the
// same storage transaction that writes the object. The apiserver calls it on
// a fresh copy of the object before every write attempt:
//
//	for {
//	    obj := decoded.DeepCopyObject()
//	    ops, err := alloc.Allocate(ctx, obj, old)        // may mutate obj
//	    err = store.Txn(ctx, append(ops, writeOf(obj))...)
//	    if pe, ok := storage.AsPrecondition(err); ok && pe.Key is not the object's key {
//	        if err := alloc.Conflict(obj, pe.Key); err != nil { return err } // e.g. 422 already allocated
//	        continue                                       // value taken meanwhile: pick again
//	    }
//	}
//
// and, when an object is finally removed from storage, adds Release(obj) to
// the delete transaction.
type Allocator interface {
	// Allocate assigns values to obj (old is nil on create) and returns the
	// storage ops that record them (create the new allocation keys, delete the
	// keys old held and obj no longer does).
	Allocate(ctx context.Context, obj, old runtime.Object) ([]storage.Op, error)
	// Conflict is told that key was taken by someone else during the write. It
	// returns the error to give the client (a value the client asked for is
	// already allocated) or nil to retry with a new pick.
	Conflict(obj runtime.Object, key string) error
	// Release returns the ops deleting obj's allocation keys.
	Release(obj runtime.Object) []storage.Op
}
