// Package openapi serves the OpenAPI v3 documents of the kinds svcnet serves:
//
//	GET /openapi/v3                 {"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=…"},…}}
//	GET /openapi/v3/api/v1          the core group-version's document
//	GET /openapi/v3/apis/<g>/<v>    one document per group-version
//
// kubectl needs these documents: `create`, `apply`, `replace` and `edit`
// check that a kind's PATCH operation lists the fieldValidation query
// parameter before relying on server-side validation (cli-runtime
// pkg/resource/query_param_verifier_v3.go), client-side `apply` computes its
// strategic merge patch from the x-kubernetes-patch-* extensions, and
// `explain` renders the schemas. /openapi/v2 is not served; kubectl only
// falls back to it when v3 is missing.
//
// # Generation
//
// The documents are generated once, in NewHandler, by reflecting over the
// k8s.io/api Go types of the given kinds (no upstream JSON is embedded):
//
//   - components.schemas are keyed by the types' OpenAPIModelName
//     ("io.k8s.api.core.v1.Service"), derived from the package path when a
//     type has none. Properties come from json tags; fields without omitempty
//     are required; ",inline" and untagged embedded structs are flattened;
//     descriptions come from the generated SwaggerDoc methods.
//   - Types that marshal themselves say so through OpenAPISchemaType,
//     OpenAPISchemaFormat and OpenAPIV3OneOfTypes (metav1.Time → string
//     date-time; intstr.IntOrString and resource.Quantity → oneOf, marked
//     x-kubernetes-int-or-string); []byte is a base64 string, maps are
//     additionalProperties, and RawExtension/FieldsV1 come out as objects.
//   - patchStrategy/patchMergeKey struct tags become
//     x-kubernetes-patch-strategy/-merge-key. The +listType, +listMapKey and
//     +mapType markers are comments, invisible to reflection, so they and the
//     field defaults are read from client-go's structured-merge-diff schema of
//     the built-in types (the one applyconfigurations.NewTypeConverter uses
//     for server-side apply). The documents therefore agree with server-side
//     apply, e.g. Service ports are a map list keyed by port and protocol.
//   - Paths follow kube-apiserver: collection (list, create,
//     deletecollection), item (read, replace, patch, delete), /status,
//     /scale (autoscaling/v1 Scale), pods/log, the all-namespaces list and
//     the deprecated watch paths, each operation tagged with
//     x-kubernetes-action and x-kubernetes-group-version-kind. Write
//     operations list dryRun, fieldManager and fieldValidation; PATCH also
//     force, and accepts json-patch, merge-patch, strategic-merge-patch and
//     apply-patch+yaml bodies.
//
// Enum values (+enum markers) and the long upstream parameter descriptions
// are not reproduced.
//
// # Serving
//
// Each document's JSON is kept as bytes with its SHA-512 (upper-case hex) as
// ETag; the index points at "?hash=<etag>" URLs. A request with the current
// hash gets "Cache-Control: public, immutable"; a stale hash is redirected
// (301) to the current URL, as kube-openapi's handler does. JSON is what
// client-go asks for; the gnostic protobuf form
// (application/com.github.proto-openapi.spec.v3@v1.0+protobuf) is built on
// first request.
package openapi

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/munnerz/goautoneg"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/kube-openapi/pkg/handler3"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"

	"github.com/svcnet/svcnet/internal/registry"
)

const (
	mediaJSON          = "application/json"
	mediaProtobuf      = "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"
	subtypeProtobuf    = "com.github.proto-openapi.spec.v3.v1.0+protobuf"
	subtypeProtobufOld = "com.github.proto-openapi.spec.v3@v1.0+protobuf"
)

// Handler serves the generated documents. It is immutable after NewHandler
// except for the lazily built protobuf forms.
type Handler struct {
	modTime time.Time
	index   *document
	docs    map[string]*document // by "api/v1", "apis/apps/v1" …
}

var _ http.Handler = (*Handler)(nil)

// document is one served document.
type document struct {
	json []byte
	etag string // SHA-512 of json, upper-case hex

	protoOnce sync.Once
	proto     []byte
	protoErr  error
}

func newDocument(b []byte) *document {
	sum := sha512.Sum512(b)
	return &document{json: b, etag: strings.ToUpper(hex.EncodeToString(sum[:]))}
}

// NewHandler generates the OpenAPI v3 documents of kinds. Every kind needs
// New and NewList returning pointers to its k8s.io/api object and list
// structs.
func NewHandler(kinds []*registry.Kind) (http.Handler, error) {
	smd, err := builtinSMDSchema()
	if err != nil {
		return nil, err
	}
	docs, err := generate(kinds, smd)
	if err != nil {
		return nil, err
	}
	h := &Handler{modTime: time.Now(), docs: map[string]*document{}}
	index := struct {
		Paths map[string]handler3.OpenAPIV3DiscoveryGroupVersion `json:"paths"`
	}{Paths: map[string]handler3.OpenAPIV3DiscoveryGroupVersion{}}
	for p, b := range docs {
		d := newDocument(b)
		h.docs[p] = d
		index.Paths[p] = handler3.OpenAPIV3DiscoveryGroupVersion{ServerRelativeURL: serverRelativeURL(p, d.etag)}
	}
	b, err := json.Marshal(index)
	if err != nil {
		return nil, fmt.Errorf("openapi: encoding index: %w", err)
	}
	h.index = newDocument(b)
	return h, nil
}

func serverRelativeURL(gvPath, etag string) string {
	return "/openapi/v3/" + gvPath + "?" + url.Values{"hash": {etag}}.Encode()
}

// builtinSMDSchema returns client-go's structured-merge-diff schema of the
// built-in types. Parsing it is the bulk of NewHandler's cost; it is parsed
// once per process and shared with server-side apply's type converter.
func builtinSMDSchema() (*smdschema.Schema, error) {
	tc := applyconfigurations.NewTypeConverter(scheme.Scheme)
	tv, err := tc.ObjectToTyped(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}})
	if err != nil {
		return nil, fmt.Errorf("openapi: loading the built-in structured-merge-diff schema: %w", err)
	}
	return tv.Schema(), nil
}

// generate returns the JSON document of each group-version, keyed by its
// index path ("api/v1", "apis/apps/v1").
func generate(kinds []*registry.Kind, smd *smdschema.Schema) (map[string][]byte, error) {
	g := newSchemaGen(smd)

	type kindTypes struct {
		k          *registry.Kind
		obj, list  reflect.Type
		model, lst string
	}
	var all []kindTypes
	servedGVs := map[schema.GroupVersion]bool{{Version: "v1"}: true}
	for _, k := range kinds {
		if k.New == nil || k.NewList == nil {
			return nil, fmt.Errorf("openapi: kind %s: New and NewList are required", k.GroupVersionKind())
		}
		kt := kindTypes{k: k, obj: reflect.TypeOf(k.New()), list: reflect.TypeOf(k.NewList())}
		for _, t := range []reflect.Type{kt.obj, kt.list} {
			if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
				return nil, fmt.Errorf("openapi: kind %s: %v is not a pointer to a struct", k.GroupVersionKind(), t)
			}
		}
		kt.obj, kt.list = kt.obj.Elem(), kt.list.Elem()
		kt.model, kt.lst = modelName(kt.obj), modelName(kt.list)
		gvk := k.GroupVersionKind()
		g.gvks[kt.model] = append(g.gvks[kt.model], gvkExt(gvk))
		g.gvks[kt.lst] = append(g.gvks[kt.lst], gvkExt(gvk.GroupVersion().WithKind(k.Kind+"List")))
		servedGVs[gvk.GroupVersion()] = true
		all = append(all, kt)
	}
	gvs := make([]schema.GroupVersion, 0, len(servedGVs))
	for gv := range servedGVs {
		gvs = append(gvs, gv)
	}
	slices.SortFunc(gvs, func(a, b schema.GroupVersion) int { return strings.Compare(a.String(), b.String()) })
	for _, gv := range gvs {
		g.gvks[deleteOptionsModel] = append(g.gvks[deleteOptionsModel], gvkExt(gv.WithKind("DeleteOptions")))
		g.gvks[watchEventModel] = append(g.gvks[watchEventModel], gvkExt(gv.WithKind("WatchEvent")))
	}
	g.gvks[statusModel] = []map[string]string{gvkExt(schema.GroupVersionKind{Version: "v1", Kind: "Status"})}
	g.gvks[resourceListModel] = []map[string]string{gvkExt(schema.GroupVersionKind{Version: "v1", Kind: "APIResourceList"})}
	g.gvks[scaleModel] = []map[string]string{gvkExt(autoscalingv1.SchemeGroupVersion.WithKind("Scale"))}

	for _, t := range []reflect.Type{
		reflect.TypeFor[metav1.Status](), reflect.TypeFor[metav1.DeleteOptions](), reflect.TypeFor[metav1.Patch](),
		reflect.TypeFor[metav1.WatchEvent](), reflect.TypeFor[metav1.APIResourceList](), reflect.TypeFor[autoscalingv1.Scale](),
	} {
		g.define(t)
	}
	pathsByGV := map[schema.GroupVersion]map[string]any{}
	rootsByGV := map[schema.GroupVersion][]string{}
	for _, kt := range all {
		g.define(kt.obj)
		g.define(kt.list)
		gv := kt.k.Resource.GroupVersion()
		paths := pathsByGV[gv]
		if paths == nil {
			paths = map[string]any{}
			pathsByGV[gv] = paths
			addResourcesPath(paths, gv)
			rootsByGV[gv] = []string{resourceListModel}
		}
		rootsByGV[gv] = append(rootsByGV[gv], addKindPaths(paths, kindPaths{
			gvk:        kt.k.GroupVersionKind(),
			resource:   kt.k.Resource.Resource,
			namespaced: kt.k.Namespaced,
			status:     kt.k.Status,
			scale:      kt.k.Scale != nil,
			log:        kt.k.Resource == corev1.SchemeGroupVersion.WithResource("pods"),
			// kube-apiserver has no deletecollection for namespaces.
			collection: kt.k.Resource != corev1.SchemeGroupVersion.WithResource("namespaces"),
			// As upstream, whose pod and service storage return the
			// deleted object.
			deleteReturnsObject: kt.k.Resource == corev1.SchemeGroupVersion.WithResource("pods") ||
				kt.k.Resource == corev1.SchemeGroupVersion.WithResource("services"),
			model:     kt.model,
			listModel: kt.lst,
		})...)
	}
	if err := g.encode(); err != nil {
		return nil, err
	}

	out := make(map[string][]byte, len(pathsByGV))
	for gv, paths := range pathsByGV {
		b, err := assemble(g, paths, g.closure(rootsByGV[gv]))
		if err != nil {
			return nil, fmt.Errorf("openapi: %s: %w", gv, err)
		}
		key := "apis/" + gv.Group + "/" + gv.Version
		if gv.Group == "" {
			key = "api/" + gv.Version
		}
		out[key] = b
	}
	return out, nil
}

func gvkExt(gvk schema.GroupVersionKind) map[string]string {
	return map[string]string{"group": gvk.Group, "version": gvk.Version, "kind": gvk.Kind}
}

// assemble writes one document. The schemas were encoded once and are
// spliced in; keys come out sorted, as encoding/json would write them.
func assemble(g *schemaGen, paths map[string]any, models []string) ([]byte, error) {
	pathsJSON, err := json.Marshal(paths)
	if err != nil {
		return nil, fmt.Errorf("encoding paths: %w", err)
	}
	size := len(pathsJSON) + 512
	for _, m := range models {
		size += len(m) + len(g.defs[m].json) + 4
	}
	var b bytes.Buffer
	b.Grow(size)
	b.WriteString(`{"components":{"schemas":{`)
	for i, m := range models {
		d := g.defs[m]
		if d == nil || d.json == nil {
			return nil, fmt.Errorf("schema %s referenced but not defined", m)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(m) // a string always encodes
		b.Write(name)
		b.WriteByte(':')
		b.Write(d.json)
	}
	b.WriteString(`},"securitySchemes":{"BearerToken":{"description":"Bearer Token authentication","in":"header","name":"authorization","type":"apiKey"}}},`)
	b.WriteString(`"info":{"title":"Kubernetes","version":"unversioned"},"openapi":"3.0.0","paths":`)
	b.Write(pathsJSON)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ServeHTTP answers GET and HEAD on /openapi/v3 and below.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"the server does not allow this method on the requested resource")
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/openapi/v3" {
		w.Header().Set("Content-Type", mediaJSON)
		w.Header().Set("Etag", strconv.Quote(h.index.etag))
		http.ServeContent(w, r, "", h.modTime, bytes.NewReader(h.index.json))
		return
	}
	gvPath, ok := strings.CutPrefix(p, "/openapi/v3/")
	doc := h.docs[gvPath]
	if !ok || doc == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}

	w.Header().Add("Vary", "Accept")
	body, media := negotiate(r.Header.Get("Accept"), doc)
	if media == "" {
		writeStatus(w, http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable,
			"only application/json and "+mediaProtobuf+" are served")
		return
	}
	if body == nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, doc.protoErr.Error())
		return
	}
	if hash := r.URL.Query().Get("hash"); hash != "" {
		if hash != doc.etag {
			http.Redirect(w, r, serverRelativeURL(gvPath, doc.etag), http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Cache-Control", "public, immutable")
		w.Header().Set("Expires", time.Now().AddDate(1, 0, 0).UTC().Format(http.TimeFormat))
	}
	w.Header().Set("Content-Type", media)
	w.Header().Set("Etag", strconv.Quote(doc.etag))
	http.ServeContent(w, r, "", h.modTime, bytes.NewReader(body))
}

// negotiate picks JSON or protobuf from the Accept header; media is "" when
// neither is acceptable, body nil when the protobuf form failed to build.
func negotiate(accept string, doc *document) (body []byte, media string) {
	if accept == "" {
		accept = "*/*"
	}
	for _, c := range goautoneg.ParseAccept(accept) {
		if c.Type != "application" && c.Type != "*" {
			continue
		}
		switch c.SubType {
		case "json", "*":
			return doc.json, mediaJSON
		case subtypeProtobuf, subtypeProtobufOld:
			doc.protoOnce.Do(func() {
				doc.proto, doc.protoErr = handler3.ToV3ProtoBinary(doc.json)
			})
			if doc.protoErr != nil {
				return nil, mediaProtobuf
			}
			return doc.proto, mediaProtobuf
		}
	}
	return nil, ""
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Details:  &metav1.StatusDetails{},
		Code:     int32(code),
	}
	body, _ := json.Marshal(&st) // a Status always encodes
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
