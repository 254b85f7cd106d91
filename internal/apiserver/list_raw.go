package apiserver

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcnet/svcnet/internal/storage"
)

// Protobuf LIST without decoding. Objects are stored in the same protobuf
// form a protobuf LIST returns, minus metadata.resourceVersion, so an
// unfiltered protobuf LIST (what informers and controllers do) can be built
// by splicing the stored bytes: each item is the stored object's bytes
// followed by a second metadata field holding only resourceVersion, which
// protobuf parsers merge into the first (the protobuf rule for a message
// field that occurs twice). Decoding 10k stored Services into Go structs and
// encoding them again was most of a protobuf LIST's CPU in profiles.
//
// Anything unusual (a value not in the expected envelope, a list type whose
// protobuf field numbers can't be read) falls back to the decoding path.

// rawListLayout is what the splicing needs to know about a kind's list type.
type rawListLayout struct {
	// itemsField and metaField are the protobuf field numbers of the
	// list's Items and of the item's ObjectMeta.
	itemsField, metaField uint64
}

// objectMetaRVField is ObjectMeta.resourceVersion's protobuf field number.
const objectMetaRVField = 6

// listMetaField is the field number of every list's ListMeta.
const listMetaField = 1

// rawLayoutFor reads the field numbers from the list type's protobuf tags.
func rawLayoutFor(res *resource) (rawListLayout, bool) {
	lt := reflect.TypeOf(res.kind.NewList())
	if lt.Kind() != reflect.Pointer || lt.Elem().Kind() != reflect.Struct {
		return rawListLayout{}, false
	}
	items, ok := lt.Elem().FieldByName("Items")
	if !ok || items.Type.Kind() != reflect.Slice || items.Type.Elem().Kind() != reflect.Struct {
		return rawListLayout{}, false
	}
	lm, ok := lt.Elem().FieldByName("ListMeta")
	if !ok || protobufField(lm.Tag) != listMetaField {
		return rawListLayout{}, false
	}
	om, ok := items.Type.Elem().FieldByName("ObjectMeta")
	if !ok || om.Type != reflect.TypeFor[metav1.ObjectMeta]() {
		return rawListLayout{}, false
	}
	l := rawListLayout{itemsField: protobufField(items.Tag), metaField: protobufField(om.Tag)}
	return l, l.itemsField != 0 && l.metaField != 0
}

// protobufField returns the field number of a `protobuf:"bytes,N,..."` tag (0 if none).
func protobufField(tag reflect.StructTag) uint64 {
	parts := strings.Split(tag.Get("protobuf"), ",")
	if len(parts) < 2 || parts[0] != "bytes" {
		return 0
	}
	n, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return 0
	}
	return n
}

// rawList is a LIST already encoded as a protobuf response body.
type rawList struct {
	runtime.Object // never used; makes rawList pass as a list result
	data           []byte
}

// rawListBuilder accumulates the items of a protobuf LIST body.
type rawListBuilder struct {
	res    *resource
	layout rawListLayout
	items  []byte
	meta   []byte // scratch for one item's extra metadata field
}

func appendBytesField(b []byte, field uint64, v []byte) []byte {
	b = binary.AppendUvarint(b, field<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// add appends kv's stored object with its resourceVersion; false means the
// value is not in the expected form (use the decoding path instead).
func (b *rawListBuilder) add(kv *storage.KV) bool {
	if !bytes.HasPrefix(kv.Value, protobufMagic) {
		return false
	}
	var unk runtime.Unknown
	if err := unk.Unmarshal(kv.Value[len(protobufMagic):]); err != nil ||
		unk.Kind != b.res.gvk.Kind || unk.APIVersion != b.res.gvk.GroupVersion().String() ||
		(unk.ContentEncoding != "" && unk.ContentEncoding != "identity") {
		return false
	}
	rv := strconv.AppendInt(nil, kv.ModRevision, 10)
	b.meta = appendBytesField(b.meta[:0], objectMetaRVField, rv)
	extra := binary.AppendUvarint(nil, b.layout.metaField<<3|2)
	extra = binary.AppendUvarint(extra, uint64(len(b.meta)))
	b.items = binary.AppendUvarint(b.items, b.layout.itemsField<<3|2)
	b.items = binary.AppendUvarint(b.items, uint64(len(unk.Raw)+len(extra)+len(b.meta)))
	b.items = append(b.items, unk.Raw...)
	b.items = append(b.items, extra...)
	b.items = append(b.items, b.meta...)
	return true
}

// finish returns the whole response body: the protobuf envelope around the
// list with its ListMeta first.
func (b *rawListBuilder) finish(rev int64, cont string, remaining *int64) (*rawList, error) {
	lm := metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10), Continue: cont, RemainingItemCount: remaining}
	lmData, err := lm.Marshal()
	if err != nil {
		return nil, err
	}
	raw := appendBytesField(make([]byte, 0, len(lmData)+len(b.items)+16), listMetaField, lmData)
	raw = append(raw, b.items...)
	unk := runtime.Unknown{
		TypeMeta: runtime.TypeMeta{APIVersion: b.res.listGVK.GroupVersion().String(), Kind: b.res.listGVK.Kind},
		Raw:      raw,
	}
	data, err := unk.Marshal()
	if err != nil {
		return nil, err
	}
	return &rawList{data: append(append(make([]byte, 0, len(protobufMagic)+len(data)), protobufMagic...), data...)}, nil
}

// newRawListBuilder returns a builder when rq's LIST can be spliced: a
// protobuf object response, no selector, a list type with readable field
// numbers.
func (s *Server) newRawListBuilder(rq *request, res *resource, pred predicate) *rawListBuilder {
	if !pred.empty() || rq.r.Method == http.MethodHead {
		return nil
	}
	target, err := s.negotiate(rq.r, shapeList)
	if err != nil || target.as != asObject || target.info.MediaType != mediaProtobuf {
		return nil
	}
	layout, ok := res.rawLayout, res.rawLayoutOK
	if !ok {
		return nil
	}
	return &rawListBuilder{res: res, layout: layout}
}

// writeRawList writes a spliced protobuf LIST.
func (rq *request) writeRawList(l *rawList) {
	h := rq.w.Header()
	h.Set("Content-Type", mediaProtobuf)
	h.Set("X-Content-Type-Options", "nosniff")
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(l.data)
}
