package generic

import (
	"context"
	"fmt"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
)

// Base implements registry.Strategy with the behaviour every kind shares.
// Kinds embed it and override the methods they need; an override usually
// calls the Base method first and appends its own checks.
//
// Default must be idempotent. Kube-apiserver defaults while decoding, before
// PrepareForCreate/PrepareForUpdate; svcnet's apiserver may call Default
// after them. Strategies whose Prepare methods look at defaulted fields
// (spec comparisons for generation, the pod QoS class) therefore call their
// own Default first, so the result does not depend on the caller's order.
type Base struct {
	// Namespaced says whether objects of the kind live in a namespace
	// (metadata.namespace required) or are cluster-scoped (forbidden).
	Namespaced bool
	// ValidateName checks metadata.name; nil means DNS-1123 subdomain.
	ValidateName apivalidation.ValidateNameFunc
	// CreateOnUpdate is AllowCreateOnUpdate's answer.
	CreateOnUpdate bool
}

var _ registry.Strategy = Base{}

// Default does nothing; kinds with API defaults override it.
func (Base) Default(runtime.Object) {}

// PrepareForCreate does nothing; kinds that reset status or track
// generation override it.
func (Base) PrepareForCreate(context.Context, runtime.Object) {}

// PrepareForUpdate keeps the stored generation: clients may not set it.
func (Base) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	Meta(obj).Generation = Meta(old).Generation
}

// Validate checks the object's metadata.
func (b Base) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	return b.ValidateMeta(obj)
}

// ValidateUpdate checks the new metadata and what an update may not change.
func (b Base) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return append(b.ValidateMeta(obj), ValidateObjectMetaUpdate(Meta(obj), Meta(old))...)
}

// AllowCreateOnUpdate reports b.CreateOnUpdate.
func (b Base) AllowCreateOnUpdate() bool { return b.CreateOnUpdate }

// ValidateMeta checks obj's metadata with the kind's scope and name rule.
func (b Base) ValidateMeta(obj runtime.Object) field.ErrorList {
	nameFn := b.ValidateName
	if nameFn == nil {
		nameFn = apivalidation.NameIsDNSSubdomain
	}
	return ValidateObjectMeta(Meta(obj), b.Namespaced, nameFn)
}

// Meta returns the ObjectMeta of a k8s.io/api object. It panics for types
// without one, which would be a programming error in a registry package.
func Meta(obj runtime.Object) *metav1.ObjectMeta {
	a, ok := obj.(metav1.ObjectMetaAccessor)
	if !ok {
		panic(fmt.Sprintf("generic: %T has no ObjectMeta", obj))
	}
	m, ok := a.GetObjectMeta().(*metav1.ObjectMeta)
	if !ok {
		panic(fmt.Sprintf("generic: %T has no *ObjectMeta", obj))
	}
	return m
}

var metadataPath = field.NewPath("metadata")

// standardFinalizers are the finalizer names that need no domain prefix.
var standardFinalizers = map[string]bool{
	"kubernetes":                     true,
	metav1.FinalizerOrphanDependents: true,
	metav1.FinalizerDeleteDependents: true,
}

// ValidateObjectMeta validates metadata on create (field path "metadata"):
// apimachinery's checks plus core's rule for unqualified finalizer names.
func ValidateObjectMeta(meta *metav1.ObjectMeta, namespaced bool, nameFn apivalidation.ValidateNameFunc) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(meta, namespaced, nameFn, metadataPath)
	return append(errs, validateFinalizerNames(meta.Finalizers)...)
}

// ValidateObjectMetaUpdate validates what an update may change in metadata.
//
// apimachinery also demands a resourceVersion on every update. kube-apiserver
// never lets that error reach a client: for unconditional updates (no
// resourceVersion sent) its store fills in the stored one before validating.
// svcnet's apiserver decides about preconditions itself, so the error is
// dropped here instead of depending on the caller to fill the field.
func ValidateObjectMetaUpdate(newMeta, oldMeta *metav1.ObjectMeta) field.ErrorList {
	var errs field.ErrorList
	rvPath := metadataPath.Child("resourceVersion").String()
	for _, e := range apivalidation.ValidateObjectMetaUpdate(newMeta, oldMeta, metadataPath) {
		if e.Field == rvPath && newMeta.ResourceVersion == "" {
			continue
		}
		errs = append(errs, e)
	}
	return append(errs, validateFinalizerNames(newMeta.Finalizers)...)
}

// IsStandardFinalizerName reports whether f is one of the finalizer names
// that need no domain prefix ("kubernetes", "orphan", "foregroundDeletion").
func IsStandardFinalizerName(f string) bool { return standardFinalizers[f] }

func validateFinalizerNames(finalizers []string) field.ErrorList {
	var errs field.ErrorList
	for i, f := range finalizers {
		if !strings.Contains(f, "/") && !IsStandardFinalizerName(f) {
			errs = append(errs, field.Invalid(metadataPath.Child("finalizers").Index(i), f,
				"name is neither a standard finalizer name nor is it fully qualified"))
		}
	}
	return errs
}

// InitGeneration sets the generation of a new object to 1.
func InitGeneration(obj runtime.Object) { Meta(obj).Generation = 1 }

// UpdateGeneration sets obj's generation to old's, plus one when changed.
func UpdateGeneration(obj, old runtime.Object, changed bool) {
	m := Meta(obj)
	m.Generation = Meta(old).Generation
	if changed {
		m.Generation++
	}
}

// Changed reports whether a and b differ semantically (resource.Quantity
// and metav1.Time compare by value). Pass the specs of two objects.
func Changed(a, b any) bool { return !apiequality.Semantic.DeepEqual(a, b) }

// ResetStatus clears a status struct; used on create for kinds with a
// /status subresource (clients may not set status on create).
func ResetStatus[T any](status *T) {
	var zero T
	*status = zero
}

// ValidateImmutable returns "field is immutable" at path when the values
// differ semantically.
func ValidateImmutable(newVal, oldVal any, path *field.Path) field.ErrorList {
	return apivalidation.ValidateImmutableField(newVal, oldVal, path)
}
