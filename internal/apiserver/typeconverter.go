package apiserver

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
	"sigs.k8s.io/structured-merge-diff/v6/value"
)

// newTypeConverter returns the type converter of the field managers: the
// schemas of client-go's applyconfigurations (the built-in kinds), with
// typed Go objects converted without a separate validation walk.
//
// The field manager converts the live and the new object of every write to
// typed values (ObjectToTyped) and then compares them. For a Go struct of
// a registered kind, ObjectToTyped's validation walk can only repeat what
// the struct's type already guarantees; apimachinery treats its failure on
// such objects as "[SHOULD NOT HAPPEN]" (FieldManager.UpdateNoErrors), and
// the comparison that follows checks every scalar and list key it visits
// anyway. The walk was a quarter of the field manager's CPU on a create
// (6% of the server's, see BenchmarkCreateRealService).
//
// Only conversions that allow duplicate list items skip the walk: those
// are the field manager's conversions of the live and new objects of an
// update and of the live object of an apply, where the walk can find
// nothing the comparison would not. Everything else keeps it: unstructured
// objects (a server-side apply configuration, whose errors the user sees)
// and strict conversions (a live object with duplicates must still fail
// them, as upstream's last-applied handling expects).
func newTypeConverter(scheme *runtime.Scheme) managedfields.TypeConverter {
	return &structTypeConverter{TypeConverter: applyconfigurations.NewTypeConverter(scheme)}
}

// structTypeConverter is a managedfields.TypeConverter that skips the
// validation walk for typed Go objects (see newTypeConverter).
type structTypeConverter struct {
	managedfields.TypeConverter
	// types holds, per kind, the schema and type ref of its typed values,
	// learnt from the kind's first (validated) conversion.
	types sync.Map // schema.GroupVersionKind → kindType
}

type kindType struct {
	schema *smdschema.Schema
	ref    smdschema.TypeRef
}

func (c *structTypeConverter) ObjectToTyped(obj runtime.Object, opts ...typed.ValidationOptions) (*typed.TypedValue, error) {
	if _, ok := obj.(*unstructured.Unstructured); ok || !slices.Contains(opts, typed.AllowDuplicates) {
		return c.TypeConverter.ObjectToTyped(obj, opts...)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	kt, ok := c.types.Load(gvk)
	if !ok {
		tv, err := c.TypeConverter.ObjectToTyped(obj, opts...)
		if err == nil {
			c.types.Store(gvk, kindType{schema: tv.Schema(), ref: tv.TypeRef()})
		}
		return tv, err
	}
	v, err := value.NewValueReflect(obj)
	if err != nil {
		return nil, err
	}
	t := kt.(kindType)
	//lint:ignore SA1019 deprecated as "validation is cheap now"; it is not (see newTypeConverter), and a typed Go object conforms by construction
	return typed.AsTypedUnvalidated(v, t.schema, t.ref), nil
}
