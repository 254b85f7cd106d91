package openapi

import (
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Model names of the meta types operations refer to.
const (
	statusModel        = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
	deleteOptionsModel = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
	patchModel         = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
	watchEventModel    = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"
	resourceListModel  = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"
	scaleModel         = "io.k8s.api.autoscaling.v1.Scale"
)

// Media types the server answers with, and the bodies PATCH accepts. CBOR,
// which kube-apiserver also lists, is not served by svcnet.
var (
	objectMedia = []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}
	streamMedia = []string{
		"application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
		"application/json;stream=watch", "application/vnd.kubernetes.protobuf;stream=watch",
	}
	patchMedia = []string{
		"application/json-patch+json", "application/merge-patch+json",
		"application/strategic-merge-patch+json", "application/apply-patch+yaml",
	}
)

// param is one operation parameter.
func param(name, in, typ, desc string) map[string]any {
	p := map[string]any{"name": name, "in": in, "description": desc, "schema": map[string]any{"type": typ}}
	if in == "path" {
		p["required"] = true
	}
	return p
}

// Parameters, with short descriptions of what svcnet does with them.
var (
	pNamespace = param("namespace", "path", "string", "object name and auth scope, such as for teams and projects")
	pPretty    = param("pretty", "query", "string", "If 'true', then the output is pretty printed.")

	pDryRun          = param("dryRun", "query", "string", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed")
	pFieldManager    = param("fieldManager", "query", "string", "fieldManager is a name associated with the actor or entity that is making these changes. It is required for apply requests (application/apply-patch).")
	pFieldValidation = param("fieldValidation", "query", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict: fail the request with a BadRequest error.")
	pForce           = param("force", "query", "boolean", "Force is going to \"force\" Apply requests: the user re-acquires fields owned by other managers. Must be unset for non-apply patch requests.")

	pGracePeriod       = param("gracePeriodSeconds", "query", "integer", "The duration in seconds before the object should be deleted. Zero means delete immediately.")
	pOrphanDependents  = param("orphanDependents", "query", "boolean", "Deprecated: please use the PropagationPolicy.")
	pPropagationPolicy = param("propagationPolicy", "query", "string", "Whether and how garbage collection will be performed: 'Orphan', 'Background' or 'Foreground'.")
	pIgnoreReadErrors  = param("ignoreStoreReadErrorWithClusterBreakingPotential", "query", "boolean", "if set to true, deletes an object that cannot be read from storage.")

	listParams = []any{
		param("allowWatchBookmarks", "query", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
		param("continue", "query", "string", "The continue option should be set when retrieving more results from the server."),
		param("fieldSelector", "query", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
		param("labelSelector", "query", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
		param("limit", "query", "integer", "limit is a maximum number of responses to return for a list call."),
		param("resourceVersion", "query", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
		param("resourceVersionMatch", "query", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
		param("sendInitialEvents", "query", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`: the stream begins with synthetic ADDED events for the current state, followed by a BOOKMARK annotated \"k8s.io/initial-events-end\"."),
		param("timeoutSeconds", "query", "integer", "Timeout for the list/watch call."),
		param("watch", "query", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
	}
	logParams = []any{
		param("container", "query", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
		param("follow", "query", "boolean", "Follow the log stream of the pod."),
		param("insecureSkipTLSVerifyBackend", "query", "boolean", "Do not verify the serving certificate of the backend."),
		param("limitBytes", "query", "integer", "If set, the number of bytes to read from the server before terminating the log output."),
		param("previous", "query", "boolean", "Return previous terminated container logs."),
		param("sinceSeconds", "query", "integer", "A relative time in seconds before the current time from which to show logs."),
		param("stream", "query", "string", "Specify which container log stream to return to the client: All, Stdout or Stderr."),
		param("tailLines", "query", "integer", "If set, the number of lines from the end of the logs to show."),
		param("timestamps", "query", "boolean", "If true, add an RFC3339 timestamp at the beginning of every line of log output."),
	}
)

// kindPaths describes the paths of one served kind.
type kindPaths struct {
	gvk        schema.GroupVersionKind
	resource   string
	namespaced bool
	status     bool
	scale      bool
	log        bool // pods/log
	collection bool // DELETE on the collection (deletecollection)
	// deleteReturnsObject: DELETE answers with the object, not a Status.
	deleteReturnsObject bool
	model               string
	listModel           string
}

// opNames returns the operationId pieces kube-apiserver uses: "CoreV1",
// "AppsV1", "DiscoveryV1" … and the tag "core_v1", "discovery_v1" ….
func opNames(gv schema.GroupVersion) (prefix, tag string) {
	g := gv.Group
	if g == "" {
		g = "core"
	}
	g = strings.TrimSuffix(g, ".k8s.io")
	parts := strings.Split(g, ".")
	for i, p := range parts {
		parts[i] = upperFirst(p)
	}
	camel := strings.Join(parts, "")
	return camel + upperFirst(gv.Version), lowerFirst(camel) + "_" + gv.Version
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// content maps each media type to a schema.
func content(media []string, schema map[string]any) map[string]any {
	c := make(map[string]any, len(media))
	for _, m := range media {
		c[m] = map[string]any{"schema": schema}
	}
	return c
}

// responses builds the responses object: code → description, all with the
// same body schema.
func responses(media []string, schema map[string]any, codes ...string) map[string]any {
	r := map[string]any{"401": map[string]any{"description": "Unauthorized"}}
	for _, c := range codes {
		desc := map[string]string{"200": "OK", "201": "Created", "202": "Accepted"}[c]
		r[c] = map[string]any{"description": desc, "content": content(media, schema)}
	}
	return r
}

// operation is one path operation tagged for kind gvk.
type operation struct {
	prefix, tag string
	gvk         schema.GroupVersionKind
}

func (o operation) build(action, id, desc string, params []any, body map[string]any, resp map[string]any) map[string]any {
	op := map[string]any{
		"description":                     desc,
		"operationId":                     id,
		"responses":                       resp,
		"tags":                            []string{o.tag},
		"x-kubernetes-action":             action,
		"x-kubernetes-group-version-kind": map[string]string{"group": o.gvk.Group, "version": o.gvk.Version, "kind": o.gvk.Kind},
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if body != nil {
		op["requestBody"] = body
	}
	return op
}

// addKindPaths adds the paths of k to paths and returns the models they use.
func addKindPaths(paths map[string]any, k kindPaths) []string {
	gv := k.gvk.GroupVersion()
	prefix, tag := opNames(gv)
	root := "/apis/" + gv.Group + "/" + gv.Version
	if gv.Group == "" {
		root = "/api/" + gv.Version
	}
	scope, ns := "", ""
	var scopeParams []any
	if k.namespaced {
		scope, ns = "/namespaces/{namespace}", "Namespaced"
		scopeParams = []any{pNamespace}
	}
	kind := k.gvk.Kind
	op := operation{prefix: prefix, tag: tag, gvk: k.gvk}
	obj, list := ref(k.model), ref(k.listModel)
	nameParam := param("name", "path", "string", "name of the "+kind)
	writeBody := func(s map[string]any) map[string]any {
		return map[string]any{"required": true, "content": content([]string{"*/*"}, s)}
	}
	patchBody := map[string]any{"required": true, "content": content(patchMedia, ref(patchModel))}
	deleteBody := map[string]any{"content": content([]string{"*/*"}, ref(deleteOptionsModel))}
	createParams := []any{pDryRun, pFieldManager, pFieldValidation}
	patchParams := []any{pDryRun, pFieldManager, pFieldValidation, pForce}
	deleteParams := []any{pDryRun, pGracePeriod, pIgnoreReadErrors, pOrphanDependents, pPropagationPolicy}

	// Collection: list, create, deletecollection.
	coll := map[string]any{
		"parameters": append(append([]any{}, scopeParams...), pPretty),
		"get": op.build("list", "list"+prefix+ns+kind, "list or watch objects of kind "+kind,
			listParams, nil, responses(streamMedia, list, "200")),
		"post": op.build("post", "create"+prefix+ns+kind, "create a "+kind,
			createParams, writeBody(obj), responses(objectMedia, obj, "200", "201", "202")),
	}
	if k.collection {
		// The list parameters except allowWatchBookmarks and watch, plus
		// the delete ones.
		params := append(append([]any{}, listParams[1:len(listParams)-1]...), deleteParams...)
		coll["delete"] = op.build("deletecollection", "delete"+prefix+"Collection"+ns+kind, "delete collection of "+kind,
			params,
			deleteBody, responses(objectMedia, ref(statusModel), "200"))
	}
	paths[root+scope+"/"+k.resource] = coll

	// Item: read, replace, patch, delete. DELETE answers with a Status,
	// except for the kinds kube-apiserver returns the deleted object for.
	deleted := ref(statusModel)
	if k.deleteReturnsObject {
		deleted = obj
	}
	itemParams := append(append([]any{nameParam}, scopeParams...), pPretty)
	paths[root+scope+"/"+k.resource+"/{name}"] = map[string]any{
		"parameters": itemParams,
		"get":        op.build("get", "read"+prefix+ns+kind, "read the specified "+kind, nil, nil, responses(objectMedia, obj, "200")),
		"put": op.build("put", "replace"+prefix+ns+kind, "replace the specified "+kind,
			createParams, writeBody(obj), responses(objectMedia, obj, "200", "201")),
		"patch": op.build("patch", "patch"+prefix+ns+kind, "partially update the specified "+kind,
			patchParams, patchBody, responses(objectMedia, obj, "200", "201")),
		"delete": op.build("delete", "delete"+prefix+ns+kind, "delete a "+kind,
			deleteParams, deleteBody, responses(objectMedia, deleted, "200", "202")),
	}

	// Subresources.
	subresource := func(sub, suffix, model string, subGVK schema.GroupVersionKind) {
		o := op
		o.gvk = subGVK
		s := ref(model)
		paths[root+scope+"/"+k.resource+"/{name}/"+sub] = map[string]any{
			"parameters": itemParams,
			"get": o.build("get", "read"+prefix+ns+kind+suffix, "read "+sub+" of the specified "+kind,
				nil, nil, responses(objectMedia, s, "200")),
			"put": o.build("put", "replace"+prefix+ns+kind+suffix, "replace "+sub+" of the specified "+kind,
				createParams, writeBody(s), responses(objectMedia, s, "200", "201")),
			"patch": o.build("patch", "patch"+prefix+ns+kind+suffix, "partially update "+sub+" of the specified "+kind,
				patchParams, patchBody, responses(objectMedia, s, "200", "201")),
		}
	}
	models := []string{k.model, k.listModel, statusModel, deleteOptionsModel, patchModel, watchEventModel}
	if k.status {
		subresource("status", "Status", k.model, k.gvk)
	}
	if k.scale {
		subresource("scale", "Scale", scaleModel, schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"})
		models = append(models, scaleModel)
	}
	if k.log {
		paths[root+scope+"/"+k.resource+"/{name}/log"] = map[string]any{
			"parameters": append(append([]any{}, logParams...), itemParams...),
			"get": op.build("get", "read"+prefix+ns+kind+"Log", "read log of the specified "+kind, nil, nil,
				responses([]string{"text/plain", "application/json", "application/yaml", "application/vnd.kubernetes.protobuf"},
					map[string]any{"type": "string"}, "200")),
		}
	}

	// All-namespaces list, and the deprecated watch paths.
	watchEvent := ref(watchEventModel)
	watchPath := root + "/watch" + scope + "/" + k.resource
	allParams := append(append([]any{}, listParams...), pPretty)
	if k.namespaced {
		paths[root+"/"+k.resource] = map[string]any{
			"parameters": allParams,
			"get": op.build("list", "list"+prefix+kind+"ForAllNamespaces", "list or watch objects of kind "+kind,
				nil, nil, responses(streamMedia, list, "200")),
		}
		paths[root+"/watch/"+k.resource] = map[string]any{
			"parameters": allParams,
			"get": op.build("watchlist", "watch"+prefix+kind+"ListForAllNamespaces",
				"watch individual changes to a list of "+kind+". deprecated: use the 'watch' parameter with a list operation instead.",
				nil, nil, responses(streamMedia, watchEvent, "200")),
		}
	}
	paths[watchPath] = map[string]any{
		"parameters": append(append([]any{}, allParams...), scopeParams...),
		"get": op.build("watchlist", "watch"+prefix+ns+kind+"List",
			"watch individual changes to a list of "+kind+". deprecated: use the 'watch' parameter with a list operation instead.",
			nil, nil, responses(streamMedia, watchEvent, "200")),
	}
	paths[watchPath+"/{name}"] = map[string]any{
		"parameters": append(append([]any{nameParam}, allParams...), scopeParams...),
		"get": op.build("watch", "watch"+prefix+ns+kind,
			"watch changes to an object of kind "+kind+". deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter.",
			nil, nil, responses(streamMedia, watchEvent, "200")),
	}
	return models
}

// addResourcesPath adds "<root>/" (the group-version's APIResourceList).
func addResourcesPath(paths map[string]any, gv schema.GroupVersion) {
	prefix, tag := opNames(gv)
	root := "/apis/" + gv.Group + "/" + gv.Version + "/"
	if gv.Group == "" {
		root = "/api/" + gv.Version + "/"
	}
	paths[root] = map[string]any{
		"get": map[string]any{
			"description": "get available resources",
			"operationId": "get" + prefix + "APIResources",
			"responses":   responses(objectMedia, ref(resourceListModel), "200"),
			"tags":        []string{tag},
		},
	}
}
