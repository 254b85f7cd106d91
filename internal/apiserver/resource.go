package apiserver

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// resource is one served registry.Kind with everything derived from it.
type resource struct {
	kind    *registry.Kind
	gvr     schema.GroupVersionResource
	gvk     schema.GroupVersionKind
	listGVK schema.GroupVersionKind
	// prefix is the storage prefix of every object of the kind.
	prefix string
	// fieldLabels are the field-selector labels Kind.Fields provides.
	fieldLabels map[string]bool

	// Field managers for writes to the main resource and to subresources.
	fieldManager       *managedfields.FieldManager
	statusFieldManager *managedfields.FieldManager // nil unless Kind.Status
	scaleFieldManager  *managedfields.FieldManager // nil unless Kind.Scale

	// storageEncoder writes the protobuf form kept in storage.
	storageEncoder runtime.Encoder
	// jsonEncoder writes the versioned JSON form patches are applied to.
	jsonEncoder runtime.Encoder

	// rawLayout says how to splice stored objects into a protobuf LIST
	// (list_raw.go); rawLayoutOK is false when the list type does not allow it.
	rawLayout   rawListLayout
	rawLayoutOK bool
}

func (s *Server) newResource(k *registry.Kind) (*resource, error) {
	if k.New == nil || k.NewList == nil || k.Strategy == nil {
		return nil, fmt.Errorf("apiserver: kind %s: New, NewList and Strategy are required", k.Resource)
	}
	gvk := k.GroupVersionKind()
	group := k.Resource.Group
	if group == "" {
		group = "core"
	}
	r := &resource{
		kind:           k,
		gvr:            k.Resource,
		gvk:            gvk,
		listGVK:        gvk.GroupVersion().WithKind(k.Kind + "List"),
		prefix:         KeyPrefix + group + "/" + k.Resource.Resource + "/",
		fieldLabels:    map[string]bool{},
		storageEncoder: s.codecs.EncoderForVersion(s.protobufInfo.Serializer, gvk.GroupVersion()),
		jsonEncoder:    s.codecs.EncoderForVersion(s.jsonInfo.Serializer, gvk.GroupVersion()),
	}
	if k.Fields != nil {
		labels, err := fieldLabelsOf(k)
		if err != nil {
			return nil, err
		}
		r.fieldLabels = labels
	}
	r.rawLayout, r.rawLayoutOK = rawLayoutFor(r)
	if !s.scheme.Recognizes(gvk) {
		return nil, fmt.Errorf("apiserver: kind %s is not in the client-go scheme", gvk)
	}

	var err error
	statusPath := fieldpath.MakePathOrDie("status")
	specPath := fieldpath.MakePathOrDie("spec")
	version := fieldpath.APIVersion(gvk.GroupVersion().String())
	var mainReset map[fieldpath.APIVersion]fieldpath.Filter
	if k.Status {
		mainReset = map[fieldpath.APIVersion]fieldpath.Filter{
			version: fieldpath.NewExcludeSetFilter(fieldpath.NewSet(statusPath)),
		}
	}
	if r.fieldManager, err = s.newFieldManager(gvk, "", mainReset); err != nil {
		return nil, err
	}
	if k.Status {
		reset := map[fieldpath.APIVersion]fieldpath.Filter{
			version: fieldpath.NewExcludeSetFilter(fieldpath.NewSet(specPath)),
		}
		if r.statusFieldManager, err = s.newFieldManager(gvk, "status", reset); err != nil {
			return nil, err
		}
	}
	if k.Scale != nil {
		if r.scaleFieldManager, err = s.newFieldManager(gvk, "scale", nil); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// fieldLabelsOf returns the field-selector labels a kind supports: the keys
// Kind.Fields returns for an empty object (so Fields must return every label
// it supports for any object).
func fieldLabelsOf(k *registry.Kind) (labels map[string]bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("apiserver: kind %s: Fields panics on an empty object: %v", k.Resource, p)
		}
	}()
	labels = map[string]bool{}
	for label := range k.Fields(k.New()) {
		labels[label] = true
	}
	return labels, nil
}

// newFieldManager builds the field manager of one kind (or subresource).
// Like kube-apiserver's, it converts objects with the unsafe converter: an
// object already in the kind's version is used as it is (only its TypeMeta
// set) instead of deep-copied, twice per write. The objects it gets are the
// request's own (a decoded body, a fresh New(), a private copy of the
// stored object), never shared ones.
func (s *Server) newFieldManager(gvk schema.GroupVersionKind, subresource string, reset map[fieldpath.APIVersion]fieldpath.Filter) (*managedfields.FieldManager, error) {
	fm, err := managedfields.NewDefaultFieldManager(s.typeConverter, runtime.UnsafeObjectConvertor(s.scheme), s.scheme, s.scheme, gvk, gvk.GroupVersion(), subresource, reset)
	if err != nil {
		return nil, fmt.Errorf("apiserver: field manager for %s: %w", gvk, err)
	}
	return fm, nil
}

// key is the storage key of one object.
func (r *resource) key(namespace, name string) string {
	if r.kind.Namespaced {
		return r.prefix + namespace + "/" + name
	}
	return r.prefix + name
}

// listPrefix is the storage prefix of a list (namespace "" = all).
func (r *resource) listPrefix(namespace string) string {
	if r.kind.Namespaced && namespace != "" {
		return r.prefix + namespace + "/"
	}
	return r.prefix
}

func (r *resource) groupResource() schema.GroupResource { return r.gvr.GroupResource() }

// encodeForStorage returns obj's stored form: protobuf without
// metadata.resourceVersion (the revision is the resourceVersion).
func (r *resource) encodeForStorage(obj runtime.Object) ([]byte, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	defer m.SetResourceVersion(rv)
	var buf bytes.Buffer
	if err := r.storageEncoder.Encode(obj, &buf); err != nil {
		return nil, fmt.Errorf("apiserver: encode %s: %w", r.gvk.Kind, err)
	}
	return buf.Bytes(), nil
}

// decode reads a stored value and sets its resourceVersion to rev.
func (s *Server) decode(r *resource, value []byte, rev int64) (runtime.Object, error) {
	obj := r.kind.New()
	out, _, err := s.protobufInfo.Serializer.Decode(value, nil, obj)
	if err != nil {
		return nil, fmt.Errorf("apiserver: decode stored %s: %w", r.gvk.Kind, err)
	}
	if err := setRV(out, rev); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Server) decodeKV(r *resource, kv *storage.KV) (runtime.Object, error) {
	return s.decode(r, kv.Value, kv.ModRevision)
}

func setRV(obj runtime.Object, rev int64) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	if rev == 0 {
		m.SetResourceVersion("")
	} else {
		m.SetResourceVersion(strconv.FormatInt(rev, 10))
	}
	return nil
}

// fieldSet returns the field-selector fields of obj.
func (r *resource) fieldSet(obj runtime.Object) fields.Set {
	set := fields.Set{}
	if r.kind.Fields != nil {
		for k, v := range r.kind.Fields(obj) {
			set[k] = v
		}
	}
	if m, err := meta.Accessor(obj); err == nil {
		set["metadata.name"] = m.GetName()
		if r.kind.Namespaced {
			set["metadata.namespace"] = m.GetNamespace()
		}
	}
	return set
}

// predicate selects objects by labels and fields.
type predicate struct {
	label labels.Selector
	field fields.Selector
}

func (p predicate) empty() bool {
	return (p.label == nil || p.label.Empty()) && (p.field == nil || p.field.Empty())
}

func (p predicate) matches(r *resource, obj runtime.Object) bool {
	if p.label != nil && !p.label.Empty() {
		m, err := meta.Accessor(obj)
		if err != nil || !p.label.Matches(labels.Set(m.GetLabels())) {
			return false
		}
	}
	if p.field != nil && !p.field.Empty() && !p.field.Matches(r.fieldSet(obj)) {
		return false
	}
	return true
}

// statusField returns the addressable Status field of a typed object, or an
// invalid value when the type has none.
func statusField(obj runtime.Object) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return reflect.Value{}
	}
	return v.Elem().FieldByName("Status")
}

// copyStatus sets dst's .status to a copy of src's.
func copyStatus(dst, src runtime.Object) {
	d, s := statusField(dst), statusField(src)
	if !d.IsValid() || !s.IsValid() || d.Type() != s.Type() {
		return
	}
	// Round-trip through DeepCopyObject so dst does not share memory with src.
	c := statusField(src.DeepCopyObject())
	d.Set(c)
}

// ensureTypeMeta stamps obj with its kind, for objects embedded where no
// encoder sets apiVersion/kind (Table rows).
func ensureTypeMeta(obj runtime.Object, gvk schema.GroupVersionKind) {
	obj.GetObjectKind().SetGroupVersionKind(gvk)
}

// objectMeta is a shortcut for meta.Accessor on objects known to have metadata.
func objectMeta(obj runtime.Object) metav1.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		panic(fmt.Sprintf("apiserver: %T has no ObjectMeta: %v", obj, err))
	}
	return m
}
