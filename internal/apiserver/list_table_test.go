package apiserver

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// richService sets every ObjectMeta field, with characters encoding/json
// escapes.
func richService(name string) *corev1.Service {
	grace := int64(30)
	ctrl := true
	del := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	svc := webService(name)
	svc.Namespace = "default"
	svc.GenerateName = "gen-"
	svc.UID = "0b6a1f0e-1111-2222-3333-444455556666"
	svc.ResourceVersion = "42"
	svc.Generation = 3
	svc.CreationTimestamp = metav1.NewTime(time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC))
	svc.DeletionTimestamp = &del
	svc.DeletionGracePeriodSeconds = &grace
	svc.Labels = map[string]string{"z": "1", "a": "<b>&amp;", "é": "ü\u2028"}
	svc.Annotations = map[string]string{"note": "x > y && \"quoted\"\n\ttab", "empty": ""}
	svc.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "d", UID: "u", Controller: &ctrl}}
	svc.Finalizers = []string{"f/1", "f/2"}
	svc.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
		Time: &svc.CreationTimestamp, FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{".":{},"f:a":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{}}}}`)},
	}}
	svc.Spec.ClusterIP = "10.96.0.10"
	return svc
}

// TestTableJSONSameBytes checks that the fast Table encoder writes exactly
// what the JSON serializer writes for the same metav1.Table.
func TestTableJSONSameBytes(t *testing.T) {
	env := newTestEnv(t)
	s := env.s
	res := s.byGR[corev1.Resource("services")]
	remaining := int64(7)
	list := &corev1.ServiceList{
		ListMeta: metav1.ListMeta{ResourceVersion: "99", Continue: "tok<en>", RemainingItemCount: &remaining},
		Items:    []corev1.Service{*richService("a"), *webService("b"), *richService("c<&>")},
	}
	if v, k, ok := s.tableEncodeKind(&metav1.Table{}); !ok || v != "meta.k8s.io/v1" || k != "Table" {
		t.Fatalf("tableEncodeKind = %q %q %v: the fast path would not be taken", v, k, ok)
	}
	for _, tc := range []struct {
		name      string
		obj       runtime.Object
		isList    bool
		include   metav1.IncludeObjectPolicy
		noHeaders bool
		edit      func(*metav1.Table)
	}{
		{name: "list metadata", obj: list, isList: true, include: metav1.IncludeMetadata},
		{name: "list object", obj: list, isList: true, include: metav1.IncludeObject},
		{name: "list none", obj: list, isList: true, include: metav1.IncludeNone},
		{name: "one object no headers", obj: richService("x"), include: metav1.IncludeMetadata, noHeaders: true},
		{name: "empty list", obj: &corev1.ServiceList{}, isList: true, include: metav1.IncludeMetadata},
		{name: "odd cells and conditions", obj: list, isList: true, include: metav1.IncludeMetadata, edit: func(tb *metav1.Table) {
			tb.Rows[0].Cells = []interface{}{"ü<>&", int64(-3), 1.5, true, nil, []string{"a"}, map[string]interface{}{"k": 1}}
			tb.Rows[0].Conditions = []metav1.TableRowCondition{{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: "r", Message: "m<"}}
			tb.Rows[1].Cells = nil
			tb.Rows[2].Object = runtime.RawExtension{Raw: []byte(`{"kind":"X", "spaced" : [1, 2]}`)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := s.toTable(res, tc.obj.DeepCopyObject(), tc.isList, metav1.TableOptions{IncludeObject: tc.include}, tc.noHeaders)
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(tb)
			}
			got, want := encodeTableBothWays(t, s, tb)
			if !bytes.Equal(got, want) {
				t.Errorf("fast Table JSON differs\n got %s\nwant %s", got, want)
			}
			if !bytes.Contains(want, []byte(`"kind":"Table","apiVersion":"meta.k8s.io/v1"`)) {
				t.Errorf("serializer output has no Table kind: %s", want)
			}
		})
	}
}

// TestTableJSONSameBytesRandom compares the fast and the serializer's
// encoding over random metadata (empty and set fields, nil and zero
// pointers, strings that need escaping, odd cells).
func TestTableJSONSameBytesRandom(t *testing.T) {
	env := newTestEnv(t)
	s := env.s
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "0", "-", "/", ".", " ", "\"", "\\", "<", ">", "&", "\n", "\t", "\x01", "\x7f", "é", "\u2028", "\u2029", "\xff", "日本"}
	str := func() string {
		if rng.IntN(4) == 0 {
			return ""
		}
		var sb strings.Builder
		for range rng.IntN(12) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return sb.String()
	}
	strMap := func() map[string]string {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return map[string]string{}
		}
		m := map[string]string{}
		for range 1 + rng.IntN(5) {
			m[str()] = str()
		}
		return m
	}
	tm := func() *metav1.Time {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return &metav1.Time{}
		}
		v := metav1.NewTime(time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("x", 3600)))
		return &v
	}
	i64 := func() *int64 {
		if rng.IntN(2) == 0 {
			return nil
		}
		v := rng.Int64N(1000) - 500
		return &v
	}
	fieldsJSON := []string{`{"f:metadata":{}}`, "{ \"f:a\" : { } ,\n\"f:<b>\":{}}", `{"k:{\"x\":\"&\u2028\"}":{}}`}
	var rows []metav1.TableRow
	for range 300 {
		m := metav1.ObjectMeta{
			Name: str(), GenerateName: str(), Namespace: str(), SelfLink: str(),
			UID: types.UID(str()), ResourceVersion: str(), Generation: rng.Int64N(3) - 1,
			DeletionTimestamp: tm(), DeletionGracePeriodSeconds: i64(),
			Labels: strMap(), Annotations: strMap(),
		}
		if ct := tm(); ct != nil {
			m.CreationTimestamp = *ct
		}
		for range rng.IntN(3) {
			ctrl := rng.IntN(2) == 0
			m.OwnerReferences = append(m.OwnerReferences, metav1.OwnerReference{APIVersion: str(), Kind: str(), Name: str(), UID: types.UID(str()), Controller: &ctrl})
		}
		for range rng.IntN(3) {
			m.Finalizers = append(m.Finalizers, str())
		}
		for range rng.IntN(3) {
			e := metav1.ManagedFieldsEntry{Manager: str(), Operation: metav1.ManagedFieldsOperationType(str()), APIVersion: str(), Time: tm(), FieldsType: str(), Subresource: str()}
			if rng.IntN(3) > 0 {
				e.FieldsV1 = &metav1.FieldsV1{Raw: []byte(fieldsJSON[rng.IntN(len(fieldsJSON))])}
			}
			m.ManagedFields = append(m.ManagedFields, e)
		}
		p := &metav1.PartialObjectMetadata{ObjectMeta: m}
		if rng.IntN(5) > 0 {
			p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
		}
		cells := []interface{}{str(), int64(rng.IntN(100)), int32(-4), 7, rng.IntN(2) == 0, nil, 2.5, []string{str()}}
		rows = append(rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: p}})
	}
	tb := &metav1.Table{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, ColumnDefinitions: defaultColumns, Rows: rows}
	if g, w := encodeTableBothWays(t, s, tb); !bytes.Equal(g, w) {
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		t.Errorf("fast Table JSON differs at byte %d\n got …%s\nwant …%s", i, g[max(0, i-80):min(len(g), i+80)], w[max(0, i-80):min(len(w), i+80)])
	}
}

// encodeTableBothWays returns tb as JSON from the server's fast encoder and
// from the serializer it replaces.
func encodeTableBothWays(t *testing.T, s *Server, tb *metav1.Table) (fast, serializer []byte) {
	t.Helper()
	var want, got bytes.Buffer
	if err := s.encoderFor(tb, s.jsonInfo.Serializer).Encode(tb, &want); err != nil {
		t.Fatal(err)
	}
	if err := s.encode(tb, s.jsonInfo, &got); err != nil {
		t.Fatal(err)
	}
	return got.Bytes(), want.Bytes()
}
