package apiserver

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcnet/svcnet/internal/storage"
)

// listBuilder decodes stored objects straight into the Items slice of a
// list object (one allocation for all items, no copy into the list
// afterwards as meta.SetList would do). Profiles of a 10k-Service LIST
// showed SetList's per-item copy at ~20% of the handler and per-object
// allocation a large part of the rest. Lists whose Items is not a slice of
// structs fall back to decoding each object and meta.SetList.
type listBuilder struct {
	s    *Server
	res  *resource
	list runtime.Object
	// items is the addressable Items field (fast path), and n how many of
	// its leading elements are kept.
	items reflect.Value
	slice reflect.Value
	n     int
	// objs collects the objects on the fallback path.
	objs []runtime.Object
}

func (s *Server) newListBuilder(res *resource, capacity int) *listBuilder {
	b := &listBuilder{s: s, res: res, list: res.kind.NewList()}
	v := reflect.ValueOf(b.list)
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		f := v.Elem().FieldByName("Items")
		if f.IsValid() && f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct &&
			reflect.PointerTo(f.Type().Elem()).Implements(reflect.TypeFor[runtime.Object]()) {
			b.items = f
			b.slice = reflect.MakeSlice(f.Type(), 0, capacity)
		}
	}
	return b
}

// add decodes kv and keeps it when pred matches.
func (b *listBuilder) add(kv *storage.KV, pred predicate) (bool, error) {
	if !b.items.IsValid() {
		obj, err := b.s.decodeKV(b.res, kv)
		if err != nil {
			return false, err
		}
		if !pred.matches(b.res, obj) {
			return false, nil
		}
		b.objs = append(b.objs, obj)
		return true, nil
	}
	if b.slice.Len() == b.n {
		b.slice = reflect.Append(b.slice, reflect.Zero(b.slice.Type().Elem()))
	}
	slot := b.slice.Index(b.n)
	obj := slot.Addr().Interface().(runtime.Object)
	if err := b.s.decodeInto(b.res, kv.Value, kv.ModRevision, obj); err != nil {
		return false, err
	}
	if !pred.matches(b.res, obj) {
		slot.SetZero()
		return false, nil
	}
	b.n++
	return true, nil
}

// finish returns the list with its resourceVersion set to rev.
func (b *listBuilder) finish(rev int64) (runtime.Object, meta.List, error) {
	if b.items.IsValid() {
		b.items.Set(b.slice.Slice(0, b.n))
	} else if err := meta.SetList(b.list, b.objs); err != nil {
		return nil, nil, err
	}
	lm, err := meta.ListAccessor(b.list)
	if err != nil {
		return nil, nil, err
	}
	lm.SetResourceVersion(strconv.FormatInt(rev, 10))
	return b.list, lm, nil
}

// protobufMagic starts every protobuf-encoded Kubernetes object.
var protobufMagic = []byte{0x6b, 0x38, 0x73, 0x00}

// unmarshaler is what gogo-generated API types implement.
type unmarshaler interface {
	Unmarshal(data []byte) error
}

// decodeInto decodes a stored value into the zero object into and sets its
// resourceVersion to rev. Values in the stored protobuf envelope whose kind
// is the resource's are unmarshalled directly (skipping the serializer's
// type lookups); anything else goes through the serializer.
func (s *Server) decodeInto(r *resource, value []byte, rev int64, into runtime.Object) error {
	u, ok := into.(unmarshaler)
	if ok && bytes.HasPrefix(value, protobufMagic) {
		var unk runtime.Unknown
		if err := unk.Unmarshal(value[len(protobufMagic):]); err == nil &&
			unk.Kind == r.gvk.Kind && unk.APIVersion == r.gvk.GroupVersion().String() &&
			(unk.ContentEncoding == "" || unk.ContentEncoding == "identity") {
			if err := u.Unmarshal(unk.Raw); err != nil {
				return fmt.Errorf("apiserver: decode stored %s: %w", r.gvk.Kind, err)
			}
			into.GetObjectKind().SetGroupVersionKind(r.gvk)
			return setRV(into, rev)
		}
	}
	out, _, err := s.protobufInfo.Serializer.Decode(value, nil, into)
	if err != nil {
		return fmt.Errorf("apiserver: decode stored %s: %w", r.gvk.Kind, err)
	}
	if out != into {
		return fmt.Errorf("apiserver: decode stored %s: got %T", r.gvk.Kind, out)
	}
	return setRV(into, rev)
}
