package apiserver

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRawProtobufList checks that a spliced protobuf LIST decodes to the
// same items as the decoding path (JSON), resourceVersions included, whole
// and paged.
func TestRawProtobufList(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	res := env.s.byGR[corev1.Resource("services")]
	if !res.rawLayoutOK || res.rawLayout.itemsField != 2 || res.rawLayout.metaField != 1 {
		t.Fatalf("services raw layout = %+v ok=%v, want items 2, metadata 1", res.rawLayout, res.rawLayoutOK)
	}
	for i := 0; i < 5; i++ {
		svc := webService(fmt.Sprintf("raw%d", i))
		svc.Labels = map[string]string{"i": fmt.Sprint(i)}
		svc.Annotations = map[string]string{"note": "x"}
		if _, err := env.cs.CoreV1().Services("other").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// One more write so the items' resourceVersions differ from the list's.
	if _, err := env.cs.CoreV1().ConfigMaps("other").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bump"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts metav1.ListOptions
	}{
		{"whole", metav1.ListOptions{}},
		{"paged", metav1.ListOptions{Limit: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pb, err := env.cs.CoreV1().Services("other").List(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			js, err := env.csJSON.CoreV1().Services("other").List(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(pb.Items) == 0 || pb.Items[0].ResourceVersion == "" {
				t.Fatalf("protobuf items without resourceVersion: %+v", pb.Items)
			}
			if pb.ResourceVersion != js.ResourceVersion || (pb.Continue == "") != (js.Continue == "") {
				t.Errorf("list meta: protobuf %+v, JSON %+v", pb.ListMeta, js.ListMeta)
			}
			if !reflect.DeepEqual(pb.RemainingItemCount, js.RemainingItemCount) {
				t.Errorf("remainingItemCount: protobuf %v, JSON %v", pb.RemainingItemCount, js.RemainingItemCount)
			}
			for i := range pb.Items {
				pb.Items[i].TypeMeta = metav1.TypeMeta{}
			}
			for i := range js.Items {
				js.Items[i].TypeMeta = metav1.TypeMeta{}
			}
			if !reflect.DeepEqual(pb.Items, js.Items) {
				t.Errorf("items differ:\nprotobuf %+v\nJSON     %+v", pb.Items, js.Items)
			}
		})
	}
}
