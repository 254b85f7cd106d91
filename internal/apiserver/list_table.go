package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// JSON encoding of Tables (what `kubectl get` asks for, page after page).
//
// A Table row carries its object in a runtime.RawExtension, whose
// MarshalJSON calls json.Marshal on the object; encoding/json then scans
// and compacts that output again, and does the same one level down for
// every metav1.Time and FieldsV1 inside it. In profiles of a paged 10k
// Service Table LIST, JSON encoding was half the handler, two thirds of it
// that re-compaction and most of the rest reflection over ObjectMeta.
//
// encodeTableJSON writes the Table itself: the envelope, each row's cells,
// and each row's PartialObjectMetadata (what kubectl asks for) field by
// field in ObjectMeta's declaration order with its omitempty/omitzero
// rules; FieldsV1 is compacted and HTML-escaped once, as encoding/json
// does (and remembered for the next object with the same managedFields). Anything else (column definitions, list metadata, cells that are
// not strings, integers, booleans or null, strings that need escaping,
// whole objects) goes through encoding/json as it would inside the Table.
// The result is byte for byte what the JSON serializer writes for the
// metav1.Table (TestTableJSONSameBytes compares them).

// encodeTableJSON writes t as the JSON serializer would, with apiVersion
// and kind as the codec sets them.
func encodeTableJSON(w io.Writer, t *metav1.Table, apiVersion, kind string) error {
	b := make([]byte, 0, 256+len(t.Rows)*768)
	b = append(b, `{"kind":`...)
	b = appendJSONString(b, kind)
	b = append(b, `,"apiVersion":`...)
	b = appendJSONString(b, apiVersion)
	// TypeMeta's fields are omitempty; the codec always sets both.
	if kind == "" || apiVersion == "" {
		return fmt.Errorf("apiserver: table encoding without kind")
	}
	var err error
	b = append(b, `,"metadata":`...)
	if b, err = appendMarshal(b, &t.ListMeta); err != nil {
		return err
	}
	b = append(b, `,"columnDefinitions":`...)
	if b, err = appendMarshal(b, t.ColumnDefinitions); err != nil {
		return err
	}
	b = append(b, `,"rows":`...)
	if t.Rows == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range t.Rows {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendTableRow(b, &t.Rows[i]); err != nil {
				return err
			}
		}
		b = append(b, ']')
	}
	b = append(b, "}\n"...)
	_, err = w.Write(b)
	return err
}

// appendTableRow writes one metav1.TableRow.
func appendTableRow(b []byte, r *metav1.TableRow) ([]byte, error) {
	var err error
	b = append(b, `{"cells":`...)
	if r.Cells == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, c := range r.Cells {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendCell(b, c); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if len(r.Conditions) > 0 {
		b = append(b, `,"conditions":`...)
		if b, err = appendMarshal(b, r.Conditions); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"object":`...)
	if p, ok := r.Object.Object.(*metav1.PartialObjectMetadata); ok && r.Object.Raw == nil && p != nil {
		b, err = appendPartialObjectMetadata(b, p)
	} else {
		b, err = appendMarshal(b, r.Object)
	}
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendCell writes a cell value as encoding/json does inside an
// []interface{}.
func appendCell(b []byte, c interface{}) ([]byte, error) {
	switch v := c.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendJSONString(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	}
	return appendMarshal(b, c)
}

// jsonObject writes the members of one JSON object in order, as
// encoding/json does for a struct: a comma between members, omitempty
// strings left out.
type jsonObject struct {
	b     []byte
	first bool
}

func openObject(b []byte) *jsonObject { return &jsonObject{b: append(b, '{'), first: true} }

// field writes the separator and "name": of the next member.
func (o *jsonObject) field(name string) {
	if !o.first {
		o.b = append(o.b, ',')
	}
	o.first = false
	o.b = append(o.b, '"')
	o.b = append(o.b, name...)
	o.b = append(o.b, '"', ':')
}

// str writes an omitempty string member.
func (o *jsonObject) str(name, v string) {
	if v != "" {
		o.field(name)
		o.b = appendJSONString(o.b, v)
	}
}

func (o *jsonObject) close() []byte { return append(o.b, '}') }

// appendPartialObjectMetadata writes p as encoding/json does.
func appendPartialObjectMetadata(b []byte, p *metav1.PartialObjectMetadata) ([]byte, error) {
	top := openObject(b)
	top.str("kind", p.Kind)
	top.str("apiVersion", p.APIVersion)
	top.field("metadata")
	o := openObject(top.b)
	m := &p.ObjectMeta
	o.str("name", m.Name)
	o.str("generateName", m.GenerateName)
	o.str("namespace", m.Namespace)
	o.str("selfLink", m.SelfLink)
	o.str("uid", string(m.UID))
	o.str("resourceVersion", m.ResourceVersion)
	if m.Generation != 0 {
		o.field("generation")
		o.b = strconv.AppendInt(o.b, m.Generation, 10)
	}
	if !m.CreationTimestamp.IsZero() {
		o.field("creationTimestamp")
		o.b = appendTime(o.b, m.CreationTimestamp)
	}
	if m.DeletionTimestamp != nil {
		o.field("deletionTimestamp")
		o.b = appendTime(o.b, *m.DeletionTimestamp)
	}
	if m.DeletionGracePeriodSeconds != nil {
		o.field("deletionGracePeriodSeconds")
		o.b = strconv.AppendInt(o.b, *m.DeletionGracePeriodSeconds, 10)
	}
	if len(m.Labels) > 0 {
		o.field("labels")
		o.b = appendStringMap(o.b, m.Labels)
	}
	if len(m.Annotations) > 0 {
		o.field("annotations")
		o.b = appendStringMap(o.b, m.Annotations)
	}
	var err error
	if len(m.OwnerReferences) > 0 {
		o.field("ownerReferences")
		if o.b, err = appendMarshal(o.b, m.OwnerReferences); err != nil {
			return nil, err
		}
	}
	if len(m.Finalizers) > 0 {
		o.field("finalizers")
		o.b = append(o.b, '[')
		for i, f := range m.Finalizers {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = appendJSONString(o.b, f)
		}
		o.b = append(o.b, ']')
	}
	if len(m.ManagedFields) > 0 {
		o.field("managedFields")
		o.b = append(o.b, '[')
		for i := range m.ManagedFields {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			if o.b, err = appendManagedFieldsEntry(o.b, &m.ManagedFields[i]); err != nil {
				return nil, err
			}
		}
		o.b = append(o.b, ']')
	}
	return append(o.close(), '}'), nil
}

// appendManagedFieldsEntry writes e as encoding/json does.
func appendManagedFieldsEntry(b []byte, e *metav1.ManagedFieldsEntry) ([]byte, error) {
	o := openObject(b)
	o.str("manager", e.Manager)
	o.str("operation", string(e.Operation))
	o.str("apiVersion", e.APIVersion)
	if e.Time != nil {
		o.field("time")
		o.b = appendTime(o.b, *e.Time)
	}
	o.str("fieldsType", e.FieldsType)
	if e.FieldsV1 != nil {
		o.field("fieldsV1")
		raw, err := e.FieldsV1.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out, err := compactFields(raw)
		if err != nil {
			return nil, err
		}
		o.b = append(o.b, out...)
	}
	o.str("subresource", e.Subresource)
	return o.close(), nil
}

// compacted remembers compactJSON's result for recent FieldsV1 values: the
// objects of one kind written by one manager mostly carry the same
// managedFields, and compacting them was most of the remaining encoding
// time. The function is pure, so the memo changes no output.
var compacted = struct {
	sync.Mutex
	m map[string][]byte
}{m: map[string][]byte{}}

const (
	compactedMaxEntries = 4096
	compactedMaxLen     = 4096
)

// compactFields returns what encoding/json writes for a Marshaler's
// output raw: raw compacted, with <, >, &, U+2028 and U+2029 escaped.
func compactFields(raw []byte) ([]byte, error) {
	if len(raw) > compactedMaxLen {
		return compactJSON(raw)
	}
	compacted.Lock()
	out, ok := compacted.m[string(raw)]
	compacted.Unlock()
	if ok {
		return out, nil
	}
	out, err := compactJSON(raw)
	if err != nil {
		return nil, err
	}
	compacted.Lock()
	if len(compacted.m) >= compactedMaxEntries {
		clear(compacted.m)
	}
	compacted.m[string(raw)] = out
	compacted.Unlock()
	return out, nil
}

func compactJSON(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	for _, c := range buf.Bytes() {
		if c == '<' || c == '>' || c == '&' || c == 0xe2 {
			var esc bytes.Buffer
			json.HTMLEscape(&esc, buf.Bytes())
			return esc.Bytes(), nil
		}
	}
	return buf.Bytes(), nil
}

// appendTime writes metav1.Time's MarshalJSON output.
func appendTime(b []byte, t metav1.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339)
	return append(b, '"')
}

// appendStringMap writes a map[string]string with sorted keys.
func appendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// appendJSONString writes s quoted. Printable ASCII other than ", \, <, >
// and & is written as is; anything else is left to encoding/json's string
// encoding (HTML-escaping, as the serializer's encoder does).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			out, err := json.Marshal(s) // a string always marshals
			if err != nil {
				panic(err)
			}
			return append(b, out...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendMarshal writes v as encoding/json writes it nested in a larger
// value (json.Marshal escapes HTML as the serializer's encoder does).
func appendMarshal(b []byte, v interface{}) ([]byte, error) {
	out, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, out...), nil
}

// tableEncodeKind returns the apiVersion and kind the codec writes for a
// Table (its first registered kind), false when the scheme does not know it.
func (s *Server) tableEncodeKind(t *metav1.Table) (string, string, bool) {
	gvks, _, err := s.scheme.ObjectKinds(t)
	if err != nil || len(gvks) == 0 {
		return "", "", false
	}
	return gvks[0].GroupVersion().String(), gvks[0].Kind, true
}
