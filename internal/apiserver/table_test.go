package apiserver

import (
	"context"
	"io"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectl get's Accept header.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

func getWithAccept(t *testing.T, env *testEnv, path, accept string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, env.srv.URL+path, nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

func TestTable(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	if _, err := env.cs.CoreV1().Services("default").Create(ctx, webService("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cs.CoreV1().ConfigMaps("other").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Labels: map[string]string{"l": "v"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		path       string
		columns    []string
		cells      []interface{}
		wantObject string // kind of the row object
	}{
		{"service list with its columns", "/api/v1/namespaces/default/services", []string{"Name", "Type", "Cluster-IP", "Age", "Selector"},
			[]interface{}{"web", "ClusterIP", "10.0.0.1"}, "PartialObjectMetadata"},
		{"single object", "/api/v1/namespaces/default/services/web", []string{"Name", "Type", "Cluster-IP", "Age", "Selector"},
			[]interface{}{"web", "ClusterIP", "10.0.0.1"}, "PartialObjectMetadata"},
		{"kind without a table: NAME and AGE, all namespaces", "/api/v1/configmaps", []string{"Name", "Age"},
			[]interface{}{"cm"}, "PartialObjectMetadata"},
		{"includeObject=Object", "/api/v1/namespaces/default/services?includeObject=Object", []string{"Name", "Type", "Cluster-IP", "Age", "Selector"},
			[]interface{}{"web"}, "Service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ct, body := getWithAccept(t, env, tc.path, tableAccept)
			if code != http.StatusOK || ct != "application/json" {
				t.Fatalf("status %d content-type %q: %s", code, ct, body)
			}
			table := &metav1.Table{}
			decodeRaw(t, env, body, table)
			if table.Kind != "Table" || table.APIVersion != "meta.k8s.io/v1" {
				t.Errorf("got %s %s", table.APIVersion, table.Kind)
			}
			var cols []string
			for _, c := range table.ColumnDefinitions {
				cols = append(cols, c.Name)
			}
			if len(cols) != len(tc.columns) {
				t.Fatalf("columns %v, want %v", cols, tc.columns)
			}
			for i := range cols {
				if cols[i] != tc.columns[i] {
					t.Errorf("columns %v, want %v", cols, tc.columns)
				}
			}
			if len(table.Rows) != 1 {
				t.Fatalf("rows %+v", table.Rows)
			}
			row := table.Rows[0]
			for i, want := range tc.cells {
				if row.Cells[i] != want {
					t.Errorf("cell %d = %v, want %v", i, row.Cells[i], want)
				}
			}
			if row.Cells[len(tc.columns)-1] == "" {
				t.Errorf("empty last cell in %v", row.Cells)
			}
			obj := map[string]interface{}{}
			decodeJSON(t, row.Object.Raw, &obj)
			if obj["kind"] != tc.wantObject {
				t.Errorf("row object kind %v, want %s", obj["kind"], tc.wantObject)
			}
			md, _ := obj["metadata"].(map[string]interface{})
			if md["name"] != tc.cells[0] || md["namespace"] == nil {
				t.Errorf("row object metadata %v", md)
			}
		})
	}

	t.Run("protobuf first in Accept falls back to the JSON Table", func(t *testing.T) {
		code, ct, _ := getWithAccept(t, env, "/api/v1/configmaps", "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,"+tableAccept)
		if code != http.StatusOK || ct != "application/json" {
			t.Errorf("status %d content-type %q", code, ct)
		}
	})
	t.Run("metadata-only list", func(t *testing.T) {
		code, _, body := getWithAccept(t, env, "/api/v1/configmaps", "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
		list := &metav1.PartialObjectMetadataList{}
		decodeRaw(t, env, body, list)
		if code != http.StatusOK || len(list.Items) != 1 || list.Items[0].Labels["l"] != "v" || list.ResourceVersion == "" {
			t.Errorf("status %d list %+v", code, list)
		}
	})
	t.Run("unacceptable", func(t *testing.T) {
		code, _, _ := getWithAccept(t, env, "/api/v1/configmaps", "text/html")
		if code != http.StatusNotAcceptable {
			t.Errorf("status %d, want 406", code)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		code, ct, body := getWithAccept(t, env, "/api/v1/namespaces/other/configmaps/cm", "application/yaml")
		if code != http.StatusOK || ct != "application/yaml" || !containsLine(string(body), "kind: ConfigMap") {
			t.Errorf("status %d %q:\n%s", code, ct, body)
		}
	})
}

func TestTableWatch(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	next := rawWatchAccept(t, env, "/api/v1/namespaces/default/services?watch=1", tableAccept)
	for _, n := range []string{"a", "b"} {
		if _, err := env.cs.CoreV1().Services("default").Create(ctx, webService(n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"a", "b"} {
		typ, obj := next()
		if typ != "ADDED" || obj["kind"] != "Table" {
			t.Fatalf("event %s %v", typ, obj)
		}
		cols, _ := obj["columnDefinitions"].([]interface{})
		if hasCols := len(cols) > 0; hasCols != (i == 0) {
			t.Errorf("event %d: columnDefinitions present=%v, want only on the first", i, hasCols)
		}
		rows := obj["rows"].([]interface{})
		if cells := rows[0].(map[string]interface{})["cells"].([]interface{}); cells[0] != n {
			t.Errorf("event %d row %v", i, cells)
		}
	}
}
