package openapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	openapi_v3 "github.com/google/gnostic-models/openapiv3"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/openapi"
	"k8s.io/client-go/openapi/cached"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"
	"k8s.io/kube-openapi/pkg/spec3"
	explainv2 "k8s.io/kubectl/pkg/explain/v2"

	"github.com/svcnet/svcnet/internal/registry"
)

// testServer serves the handler for testKinds and returns its config.
func testServer(t *testing.T) (*rest.Config, http.Handler) {
	t.Helper()
	h, err := NewHandler(testKinds())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}, h
}

// openAPIClient returns the OpenAPI v3 client kubectl builds (discovery's,
// wrapped in the memory cache).
func openAPIClient(t *testing.T, cfg *rest.Config) openapi.Client {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cached.NewClient(dc.OpenAPIV3())
}

func gvSpec(t *testing.T, root openapi3.Root, gv schema.GroupVersion) *spec3.OpenAPI {
	t.Helper()
	doc, err := root.GVSpec(gv)
	if err != nil {
		t.Fatalf("GVSpec(%s): %v", gv, err)
	}
	return doc
}

// TestOpenAPI3Root fetches every group-version through client-go's openapi3
// root and checks the kinds' schemas and paths are there.
func TestOpenAPI3Root(t *testing.T) {
	cfg, _ := testServer(t)
	root := openapi3.NewRoot(openAPIClient(t, cfg))
	gvs, err := root.GroupVersions()
	if err != nil {
		t.Fatal(err)
	}
	want := []schema.GroupVersion{
		appsv1.SchemeGroupVersion, coordinationv1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion,
		networkingv1.SchemeGroupVersion, corev1.SchemeGroupVersion,
	}
	if !slices.Equal(gvs, want) {
		t.Fatalf("GroupVersions = %v, want %v", gvs, want)
	}

	tests := []struct {
		gv     schema.GroupVersion
		models []string
		paths  []string
	}{
		{corev1.SchemeGroupVersion,
			[]string{"io.k8s.api.core.v1.Service", "io.k8s.api.core.v1.ServiceList", "io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Namespace",
				"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
				"io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity"},
			[]string{"/api/v1/", "/api/v1/namespaces/{namespace}/services", "/api/v1/namespaces/{namespace}/services/{name}",
				"/api/v1/namespaces/{namespace}/services/{name}/status", "/api/v1/services", "/api/v1/watch/namespaces/{namespace}/services",
				"/api/v1/namespaces/{namespace}/pods/{name}/log", "/api/v1/namespaces", "/api/v1/namespaces/{name}", "/api/v1/nodes/{name}/status"}},
		{appsv1.SchemeGroupVersion,
			[]string{"io.k8s.api.apps.v1.Deployment", "io.k8s.api.apps.v1.DeploymentList", "io.k8s.api.autoscaling.v1.Scale",
				"io.k8s.api.core.v1.PodTemplateSpec"},
			[]string{"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}/scale",
				"/apis/apps/v1/deployments"}},
		{discoveryv1.SchemeGroupVersion,
			[]string{"io.k8s.api.discovery.v1.EndpointSlice", "io.k8s.api.discovery.v1.EndpointPort"},
			[]string{"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}"}},
	}
	for _, tt := range tests {
		t.Run(tt.gv.String(), func(t *testing.T) {
			doc := gvSpec(t, root, tt.gv)
			for _, m := range tt.models {
				if doc.Components.Schemas[m] == nil {
					t.Errorf("no schema %s", m)
				}
			}
			for _, p := range tt.paths {
				if doc.Paths.Paths[p] == nil {
					t.Errorf("no path %s", p)
				}
			}
			// Every $ref resolves within the document.
			raw, _ := json.Marshal(doc)
			for _, m := range regexp.MustCompile(`"#/components/schemas/([^"]+)"`).FindAllStringSubmatch(string(raw), -1) {
				if doc.Components.Schemas[m[1]] == nil {
					t.Errorf("dangling $ref %s", m[1])
				}
			}
		})
	}
	// Only the core document carries core-only kinds.
	if gvSpec(t, root, appsv1.SchemeGroupVersion).Components.Schemas["io.k8s.api.core.v1.Service"] != nil {
		t.Errorf("apps/v1 document carries the Service schema")
	}
}

// TestQueryParamVerifier runs kubectl's check for server-side field
// validation (create/apply/replace/edit with --validate=strict).
func TestQueryParamVerifier(t *testing.T) {
	cfg, _ := testServer(t)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := resource.NewQueryParamVerifierV3(dyn, openAPIClient(t, cfg), resource.QueryParamFieldValidation)
	for _, gvk := range []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind("Service"),
		corev1.SchemeGroupVersion.WithKind("Namespace"),
		corev1.SchemeGroupVersion.WithKind("ConfigMap"),
		corev1.SchemeGroupVersion.WithKind("Pod"),
		appsv1.SchemeGroupVersion.WithKind("Deployment"),
		appsv1.SchemeGroupVersion.WithKind("ReplicaSet"),
		discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"),
		coordinationv1.SchemeGroupVersion.WithKind("Lease"),
		networkingv1.SchemeGroupVersion.WithKind("ServiceCIDR"),
		networkingv1.SchemeGroupVersion.WithKind("IPAddress"),
	} {
		if err := v.HasSupport(gvk); err != nil {
			t.Errorf("HasSupport(%s) = %v", gvk, err)
		}
	}
	// A kind the server does not serve is not supported (kubectl then
	// validates client-side).
	if err := v.HasSupport(appsv1.SchemeGroupVersion.WithKind("DaemonSet")); err == nil {
		t.Errorf("HasSupport(DaemonSet) = nil; DaemonSets are not served")
	}
}

// TestWriteOperations checks the parameters and bodies of every write.
func TestWriteOperations(t *testing.T) {
	cfg, _ := testServer(t)
	root := openapi3.NewRoot(openAPIClient(t, cfg))
	core := gvSpec(t, root, corev1.SchemeGroupVersion)
	apps := gvSpec(t, root, appsv1.SchemeGroupVersion)
	params := func(op *spec3.Operation) []string {
		var names []string
		for _, p := range op.Parameters {
			if p.In == "query" {
				names = append(names, p.Name)
			}
		}
		return names
	}
	gvk := func(op *spec3.Operation) string {
		var m map[string]string
		if err := op.Extensions.GetObject("x-kubernetes-group-version-kind", &m); err != nil {
			return err.Error()
		}
		return m["group"] + "/" + m["version"] + "/" + m["kind"]
	}
	tests := []struct {
		name    string
		op      *spec3.Operation
		action  string
		gvk     string
		params  []string
		content []string
	}{
		{"patch service", core.Paths.Paths["/api/v1/namespaces/{namespace}/services/{name}"].Patch, "patch", "/v1/Service",
			[]string{"dryRun", "fieldManager", "fieldValidation", "force"}, patchMedia},
		{"patch service status", core.Paths.Paths["/api/v1/namespaces/{namespace}/services/{name}/status"].Patch, "patch", "/v1/Service",
			[]string{"dryRun", "fieldManager", "fieldValidation", "force"}, patchMedia},
		{"put service", core.Paths.Paths["/api/v1/namespaces/{namespace}/services/{name}"].Put, "put", "/v1/Service",
			[]string{"dryRun", "fieldManager", "fieldValidation"}, []string{"*/*"}},
		{"post service", core.Paths.Paths["/api/v1/namespaces/{namespace}/services"].Post, "post", "/v1/Service",
			[]string{"dryRun", "fieldManager", "fieldValidation"}, []string{"*/*"}},
		{"post namespace", core.Paths.Paths["/api/v1/namespaces"].Post, "post", "/v1/Namespace",
			[]string{"dryRun", "fieldManager", "fieldValidation"}, []string{"*/*"}},
		{"patch deployment", apps.Paths.Paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"].Patch, "patch", "apps/v1/Deployment",
			[]string{"dryRun", "fieldManager", "fieldValidation", "force"}, patchMedia},
		{"patch deployment scale", apps.Paths.Paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"].Patch, "patch", "autoscaling/v1/Scale",
			[]string{"dryRun", "fieldManager", "fieldValidation", "force"}, patchMedia},
		{"delete service", core.Paths.Paths["/api/v1/namespaces/{namespace}/services/{name}"].Delete, "delete", "/v1/Service",
			[]string{"dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential", "orphanDependents", "propagationPolicy"}, []string{"*/*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.op == nil {
				t.Fatal("no such operation")
			}
			var action string
			_ = tt.op.Extensions.GetObject("x-kubernetes-action", &action)
			if action != tt.action || gvk(tt.op) != tt.gvk {
				t.Errorf("action %q gvk %q, want %q %q", action, gvk(tt.op), tt.action, tt.gvk)
			}
			if got := params(tt.op); !slices.Equal(got, tt.params) {
				t.Errorf("query parameters %v, want %v", got, tt.params)
			}
			var content []string
			for c := range tt.op.RequestBody.Content {
				content = append(content, c)
			}
			slices.Sort(content)
			want := slices.Sorted(slices.Values(tt.content))
			if !slices.Equal(content, want) {
				t.Errorf("request body types %v, want %v", content, want)
			}
		})
	}
	// No namespace deletecollection, as upstream.
	if core.Paths.Paths["/api/v1/namespaces"].Delete != nil {
		t.Errorf("namespaces have a deletecollection operation")
	}
	if core.Paths.Paths["/api/v1/namespaces/{namespace}/services"].Delete == nil {
		t.Errorf("services have no deletecollection operation")
	}
}

// patchMeta builds the strategic-merge-patch metadata for gvk exactly as
// kubectl's client-side apply does (kubectl pkg/cmd/apply/patcher.go):
// only if the kind's PATCH accepts strategic-merge-patch, from the schema
// whose x-kubernetes-group-version-kind lists gvk.
func patchMeta(t *testing.T, root openapi3.Root, gvk schema.GroupVersionKind) strategicpatch.PatchMetaFromOpenAPIV3 {
	t.Helper()
	doc := gvSpec(t, root, gvk.GroupVersion())
	supported := false
	for _, p := range doc.Paths.Paths {
		var m map[string]string
		if p.Patch == nil || p.Patch.Extensions.GetObject("x-kubernetes-group-version-kind", &m) != nil ||
			m["group"] != gvk.Group || m["version"] != gvk.Version || m["kind"] != gvk.Kind {
			continue
		}
		_, supported = p.Patch.RequestBody.Content["application/strategic-merge-patch+json"]
		break
	}
	if !supported {
		t.Fatalf("%s: PATCH does not accept strategic-merge-patch", gvk)
	}
	for _, s := range doc.Components.Schemas {
		var list []map[string]string
		if s.Extensions.GetObject("x-kubernetes-group-version-kind", &list) != nil {
			continue
		}
		for _, m := range list {
			if m["group"] == gvk.Group && m["version"] == gvk.Version && m["kind"] == gvk.Kind {
				return strategicpatch.PatchMetaFromOpenAPIV3{Schema: s, SchemaList: doc.Components.Schemas}
			}
		}
	}
	t.Fatalf("%s: no schema", gvk)
	return strategicpatch.PatchMetaFromOpenAPIV3{}
}

// TestClientSideApplyPatch computes kubectl apply's three-way strategic
// merge patch from the served schemas and checks it equals the one computed
// from the Go struct tags (kubectl's built-in fallback, and what the server
// applies).
func TestClientSideApplyPatch(t *testing.T) {
	cfg, _ := testServer(t)
	root := openapi3.NewRoot(openAPIClient(t, cfg))

	svcMeta := patchMeta(t, root, corev1.SchemeGroupVersion.WithKind("Service"))
	spec, _, err := svcMeta.LookupPatchMetadataForStruct("spec")
	if err != nil {
		t.Fatal(err)
	}
	_, ports, err := spec.LookupPatchMetadataForSlice("ports")
	if err != nil || ports.GetPatchMergeKey() != "port" || !slices.Equal(ports.GetPatchStrategies(), []string{"merge"}) {
		t.Errorf("spec.ports patch meta = %+v, %v; want merge on port", ports, err)
	}
	deployMeta := patchMeta(t, root, appsv1.SchemeGroupVersion.WithKind("Deployment"))
	l := strategicpatch.LookupPatchMeta(deployMeta)
	for _, f := range []string{"spec", "template", "spec"} {
		if l, _, err = l.LookupPatchMetadataForStruct(f); err != nil {
			t.Fatal(err)
		}
	}
	_, containers, err := l.LookupPatchMetadataForSlice("containers")
	if err != nil || containers.GetPatchMergeKey() != "name" {
		t.Errorf("containers patch meta = %+v, %v; want merge on name", containers, err)
	}

	tests := []struct {
		name                        string
		gvk                         schema.GroupVersionKind
		obj                         runtime.Object
		original, modified, current string
	}{
		{"service port added and selector changed", corev1.SchemeGroupVersion.WithKind("Service"), &corev1.Service{},
			`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","labels":{"a":"1"}},"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":8080}]}}`,
			`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","labels":{"b":"2"}},"spec":{"selector":{"app":"web2"},"ports":[{"name":"http","port":80,"targetPort":"http"},{"name":"https","port":443}]}}`,
			`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","labels":{"a":"1"}},"spec":{"clusterIP":"10.96.0.20","selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":8080,"protocol":"TCP","nodePort":30080}]}}`},
		{"service port removed", corev1.SchemeGroupVersion.WithKind("Service"), &corev1.Service{},
			`{"spec":{"ports":[{"port":80},{"port":443}]}}`,
			`{"spec":{"ports":[{"port":443}]}}`,
			`{"spec":{"clusterIP":"10.96.0.20","ports":[{"port":80,"protocol":"TCP"},{"port":443,"protocol":"TCP"}]}}`},
		{"deployment container image and env", appsv1.SchemeGroupVersion.WithKind("Deployment"), &appsv1.Deployment{},
			`{"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"a","image":"x:1","env":[{"name":"A","value":"1"}]},{"name":"b","image":"y:1"}]}}}}`,
			`{"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"a","image":"x:2","env":[{"name":"B","value":"2"}],"ports":[{"containerPort":80}]}]}}}}`,
			`{"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"a","image":"x:1","env":[{"name":"A","value":"1"}],"terminationMessagePath":"/dev/termination-log"},{"name":"b","image":"y:1"}],"volumes":[{"name":"v","emptyDir":{}}]}}}}`},
		{"endpointslice ports", discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), &discoveryv1.EndpointSlice{},
			`{"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}],"ports":[{"name":"http","port":80}]}`,
			`{"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.2"]}],"ports":[{"name":"http","port":8080}]}`,
			`{"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}`},
		{"configmap data", corev1.SchemeGroupVersion.WithKind("ConfigMap"), &corev1.ConfigMap{},
			`{"data":{"a":"1","b":"2"}}`, `{"data":{"a":"1","c":"3"}}`, `{"data":{"a":"1","b":"2","z":"9"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fromOpenAPI := patchMeta(t, root, tt.gvk)
			fromStruct, err := strategicpatch.NewPatchMetaFromStruct(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			got, err := strategicpatch.CreateThreeWayMergePatch([]byte(tt.original), []byte(tt.modified), []byte(tt.current), fromOpenAPI, true)
			if err != nil {
				t.Fatalf("patch from OpenAPI: %v", err)
			}
			want, err := strategicpatch.CreateThreeWayMergePatch([]byte(tt.original), []byte(tt.modified), []byte(tt.current), fromStruct, true)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got, want) {
				t.Errorf("patch from OpenAPI\n  %s\nfrom struct tags\n  %s", got, want)
			}
			// And the server's merge of it gives what apply meant.
			merged, err := strategicpatch.StrategicMergePatch([]byte(tt.current), got, tt.obj)
			if err != nil {
				t.Fatalf("applying %s: %v", got, err)
			}
			t.Logf("patch %s\nmerged %s", got, merged)
		})
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// TestExplain renders `kubectl explain` output with kubectl's v3 explainer.
func TestExplain(t *testing.T) {
	cfg, _ := testServer(t)
	client := openAPIClient(t, cfg)
	tests := []struct {
		gvr       schema.GroupVersionResource
		path      []string
		recursive bool
		want      []string
	}{
		{corev1.SchemeGroupVersion.WithResource("services"), []string{"spec", "sessionAffinity"}, false,
			[]string{"KIND:       Service", "VERSION:    v1", "FIELD: sessionAffinity <string>", "Supports \"ClientIP\" and \"None\""}},
		{corev1.SchemeGroupVersion.WithResource("services"), []string{"spec", "ports"}, false,
			[]string{"FIELD: ports <[]ServicePort>", "port\t<integer> -required-", "targetPort\t<IntOrString>"}},
		{corev1.SchemeGroupVersion.WithResource("services"), nil, false,
			[]string{"KIND:       Service", "metadata\t<ObjectMeta>", "spec\t<ServiceSpec>", "status\t<ServiceStatus>"}},
		{appsv1.SchemeGroupVersion.WithResource("deployments"), []string{"spec", "template", "spec", "containers", "ports"}, false,
			[]string{"GROUP:      apps", "FIELD: ports <[]ContainerPort>", "containerPort\t<integer> -required-"}},
		{discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), []string{"endpoints"}, true,
			[]string{"GROUP:      discovery.k8s.io", "addresses\t<[]string> -required-", "conditions\t<EndpointConditions>"}},
		{corev1.SchemeGroupVersion.WithResource("services"), nil, true, []string{"sessionAffinityConfig\t<SessionAffinityConfig>"}},
	}
	for _, tt := range tests {
		t.Run(tt.gvr.Resource+"."+strings.Join(tt.path, "."), func(t *testing.T) {
			var out bytes.Buffer
			if err := explainv2.PrintModelDescription(tt.path, &out, client, tt.gvr, tt.recursive, 0, "plaintext"); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	var out bytes.Buffer
	err := explainv2.PrintModelDescription([]string{"spec", "nope"}, &out, client, corev1.SchemeGroupVersion.WithResource("services"), false, 0, "plaintext")
	if err == nil || !strings.Contains(err.Error(), `field "nope" does not exist`) {
		t.Errorf("explain of a missing field: %v", err)
	}
}

// TestSchemas checks the generated form of the tricky Go types.
func TestSchemas(t *testing.T) {
	cfg, _ := testServer(t)
	core, err := openapi3.NewRoot(openAPIClient(t, cfg)).GVSpecAsMap(corev1.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	schemas := core["components"].(map[string]any)["schemas"].(map[string]any)
	get := func(path string) any {
		var cur any = schemas
		for _, p := range strings.Split(path, "/") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[p]
		}
		return cur
	}
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	tests := []struct{ path, want string }{
		{"io.k8s.api.core.v1.Service/x-kubernetes-group-version-kind", `[{"group":"","kind":"Service","version":"v1"}]`},
		{"io.k8s.api.core.v1.ServiceList/x-kubernetes-group-version-kind", `[{"group":"","kind":"ServiceList","version":"v1"}]`},
		{"io.k8s.api.core.v1.Service/properties/apiVersion/type", `"string"`},
		{"io.k8s.api.core.v1.Service/properties/spec/allOf", `[{"$ref":"#/components/schemas/io.k8s.api.core.v1.ServiceSpec"}]`},
		{"io.k8s.api.core.v1.Service/properties/spec/default", `{}`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/ports/x-kubernetes-list-type", `"map"`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/ports/x-kubernetes-list-map-keys", `["port","protocol"]`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/ports/x-kubernetes-patch-merge-key", `"port"`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/ports/x-kubernetes-patch-strategy", `"merge"`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/ports/items", `{"$ref":"#/components/schemas/io.k8s.api.core.v1.ServicePort"}`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/selector", `{"additionalProperties":{"type":"string"},"description":"Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/","type":"object","x-kubernetes-map-type":"atomic"}`},
		{"io.k8s.api.core.v1.ServiceSpec/properties/clusterIPs/x-kubernetes-list-type", `"atomic"`},
		{"io.k8s.api.core.v1.ServicePort/required", `["port"]`},
		{"io.k8s.api.core.v1.ServicePort/properties/protocol/default", `"TCP"`},
		{"io.k8s.api.core.v1.ServicePort/properties/port", `{"default":0,"description":"The port that will be exposed by this service.","format":"int32","type":"integer"}`},
		{"io.k8s.api.core.v1.ServicePort/properties/targetPort/allOf", `[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]`},
		{"io.k8s.apimachinery.pkg.util.intstr.IntOrString/format", `"int-or-string"`},
		{"io.k8s.apimachinery.pkg.util.intstr.IntOrString/oneOf", `[{"type":"integer"},{"type":"string"}]`},
		{"io.k8s.apimachinery.pkg.util.intstr.IntOrString/x-kubernetes-int-or-string", `true`},
		{"io.k8s.apimachinery.pkg.util.intstr.IntOrString/type", `null`},
		{"io.k8s.apimachinery.pkg.api.resource.Quantity/oneOf", `[{"type":"string"},{"type":"number"}]`},
		{"io.k8s.apimachinery.pkg.api.resource.Quantity/x-kubernetes-int-or-string", `true`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.Time/type", `"string"`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.Time/format", `"date-time"`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime/format", `"date-time"`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/properties/creationTimestamp/allOf", `[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Time"}]`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/properties/ownerReferences/x-kubernetes-list-map-keys", `["uid"]`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/properties/finalizers/x-kubernetes-list-type", `"set"`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/properties/labels/additionalProperties", `{"type":"string"}`},
		{"io.k8s.apimachinery.pkg.runtime.RawExtension/type", `"object"`},
		{"io.k8s.apimachinery.pkg.runtime.RawExtension/properties", `null`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1/type", `"object"`},
		{"io.k8s.api.core.v1.ConfigMap/properties/binaryData/additionalProperties", `{"format":"byte","type":"string"}`},
		{"io.k8s.api.core.v1.PodSpec/properties/containers/x-kubernetes-list-map-keys", `["name"]`},
		{"io.k8s.api.core.v1.PodSpec/properties/volumes/x-kubernetes-patch-strategy", `"merge,retainKeys"`},
		{"io.k8s.api.core.v1.PodSpec/properties/overhead/additionalProperties", `{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"}`},
		{"io.k8s.api.core.v1.Container/properties/ports/x-kubernetes-list-map-keys", `["containerPort","protocol"]`},
		{"io.k8s.api.core.v1.Volume/properties/configMap/allOf", `[{"$ref":"#/components/schemas/io.k8s.api.core.v1.ConfigMapVolumeSource"}]`},
		{"io.k8s.api.core.v1.LocalObjectReference/x-kubernetes-map-type", `"atomic"`},
		{"io.k8s.api.core.v1.SeccompProfile/x-kubernetes-unions", `[{"discriminator":"type","fields-to-discriminateBy":{"localhostProfile":"LocalhostProfile"}}]`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent/required", `["type","object"]`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.Status/x-kubernetes-group-version-kind", `[{"group":"","kind":"Status","version":"v1"}]`},
		{"io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta/properties/remainingItemCount", `{"description":"remainingItemCount is the number of subsequent items in the list which are not included in this list response. If the list request contained label or field selectors, then the number of remaining items is unknown and the field will be left unset and omitted during serialization. If the list is complete (either because it is not chunking or because this is the last chunk), then there are no more remaining items and this field will be left unset and omitted during serialization. Servers older than v1.15 do not set this field. The intended use of the remainingItemCount is *estimating* the size of a collection. Clients should not rely on the remainingItemCount to be set or to be exact.","format":"int64","type":"integer"}`},
		{"io.k8s.api.core.v1.ServiceList/properties/metadata/default", `{}`},
	}
	for _, tt := range tests {
		if got := js(get(tt.path)); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.path, got, tt.want)
		}
	}
}

// TestHTTP checks the index, hashes, caching headers and negotiation.
func TestHTTP(t *testing.T) {
	_, h := testServer(t)
	do := func(method, target, accept, ifNoneMatch string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := do("GET", "/openapi/v3", "application/json", "")
	var index struct {
		Paths map[string]struct {
			ServerRelativeURL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &index); err != nil || rec.Code != 200 {
		t.Fatalf("index: %d %v %s", rec.Code, err, rec.Body)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for p := range index.Paths {
			if !yield(p) {
				return
			}
		}
	}); !slices.Equal(got, []string{"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1", "apis/discovery.k8s.io/v1", "apis/networking.k8s.io/v1"}) {
		t.Errorf("index paths = %v", got)
	}
	u := index.Paths["api/v1"].ServerRelativeURL
	if !regexp.MustCompile(`^/openapi/v3/api/v1\?hash=[0-9A-F]{128}$`).MatchString(u) {
		t.Fatalf("serverRelativeURL = %q", u)
	}
	hash := strings.TrimPrefix(u, "/openapi/v3/api/v1?hash=")

	rec = do("GET", u, "application/json", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" ||
		rec.Header().Get("Cache-Control") != "public, immutable" || rec.Header().Get("Etag") != `"`+hash+`"` {
		t.Errorf("GET %s: %d %v", u, rec.Code, rec.Header())
	}
	if rec = do("GET", "/openapi/v3/api/v1", "", ""); rec.Code != 200 || rec.Header().Get("Cache-Control") != "" {
		t.Errorf("GET without hash: %d %v", rec.Code, rec.Header())
	}
	if rec = do("GET", u, "application/json", `"`+hash+`"`); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", rec.Code)
	}
	rec = do("GET", "/openapi/v3/api/v1?hash=0123", "application/json", "")
	if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != u {
		t.Errorf("stale hash: %d Location %q", rec.Code, rec.Header().Get("Location"))
	}

	for _, accept := range []string{"application/com.github.proto-openapi.spec.v3@v1.0+protobuf", "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"} {
		rec = do("GET", u, accept, "")
		var doc openapi_v3.Document
		if err := proto.Unmarshal(rec.Body.Bytes(), &doc); err != nil || rec.Header().Get("Content-Type") != mediaProtobuf {
			t.Fatalf("protobuf: %v %v", err, rec.Header())
		}
		if doc.Openapi != "3.0.0" || len(doc.Paths.Path) == 0 || len(doc.Components.Schemas.AdditionalProperties) == 0 {
			t.Errorf("protobuf document: openapi %q, %d paths", doc.Openapi, len(doc.Paths.Path))
		}
	}

	for _, tt := range []struct {
		method, target, accept string
		code                   int
	}{
		{"GET", "/openapi/v3/apis/batch/v1", "", 404},
		{"GET", "/openapi/v3/apis", "", 404},
		{"GET", "/openapi/v2", "", 404},
		{"GET", "/openapi/v3/api/v1", "text/html", 406},
		{"POST", "/openapi/v3/api/v1", "", 405},
	} {
		rec := do(tt.method, tt.target, tt.accept, "")
		var st struct {
			Kind string
			Code int
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &st)
		if rec.Code != tt.code || st.Kind != "Status" || st.Code != tt.code {
			t.Errorf("%s %s (Accept %q) = %d %s, want %d Status", tt.method, tt.target, tt.accept, rec.Code, rec.Body, tt.code)
		}
	}
}

// TestDeterministic: the same kinds give the same hashes, so clients'
// hash-keyed caches stay valid across server restarts.
func TestDeterministic(t *testing.T) {
	a, err := NewHandler(testKinds())
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewHandler(testKinds())
	if err != nil {
		t.Fatal(err)
	}
	if a.(*Handler).index.etag != b.(*Handler).index.etag {
		t.Errorf("index hash differs between two generations")
	}
}

// TestTypeConverter builds client-go's OpenAPI-based structured-merge-diff
// type converter from the served documents: a strict structural check of
// every schema (kube-openapi's schemaconv), and a typed Service round trip.
func TestTypeConverter(t *testing.T) {
	cfg, _ := testServer(t)
	tc, err := openapi.NewTypeConverter(openAPIClient(t, cfg), false)
	if err != nil {
		t.Fatalf("NewTypeConverter: %v", err)
	}
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80), "protocol": "TCP", "targetPort": "http"}}},
	}}
	tv, err := tc.ObjectToTyped(svc)
	if err != nil {
		t.Fatalf("ObjectToTyped: %v", err)
	}
	set, err := tv.ToFieldSet()
	if err != nil {
		t.Fatal(err)
	}
	if s := set.String(); !strings.Contains(s, `.spec.ports[port=80,protocol="TCP"].targetPort`) {
		t.Errorf("field set lacks the keyed port:\n%s", s)
	}
}

func TestNewHandlerErrors(t *testing.T) {
	noList := &registry.Kind{Resource: corev1.SchemeGroupVersion.WithResource("services"), Kind: "Service",
		New: func() runtime.Object { return &corev1.Service{} }}
	if _, err := NewHandler([]*registry.Kind{noList}); err == nil {
		t.Errorf("NewHandler accepted a kind without NewList")
	}
}

// BenchmarkGenerate measures building every document for testKinds (the
// structured-merge-diff schema is parsed once per process, before the
// timer; NewHandler pays it on first use).
func BenchmarkGenerate(b *testing.B) {
	smd, err := builtinSMDSchema()
	if err != nil {
		b.Fatal(err)
	}
	kinds := testKinds()
	for b.Loop() {
		if _, err := generate(kinds, smd); err != nil {
			b.Fatal(err)
		}
	}
}
