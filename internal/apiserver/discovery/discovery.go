// Package discovery serves the legacy (unaggregated) Kubernetes discovery
// documents for the kinds svcnet serves:
//
//	GET /api             APIVersions{versions:["v1"]}
//	GET /api/v1          APIResourceList of the core group
//	GET /apis            APIGroupList, each group with its preferredVersion
//	GET /apis/<g>        APIGroup
//	GET /apis/<g>/<v>    APIResourceList of that group-version
//
// Every document is computed once from the []*registry.Kind given to
// NewHandler and kept as encoded bytes (JSON, and protobuf for clients that
// ask for application/vnd.kubernetes.protobuf first), so a request costs a
// map lookup and a write.
//
// Aggregated discovery (apidiscovery.k8s.io/v2) is deliberately not served.
// client-go asks for it with
//
//	Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json
//
// and chooses its parser from the response Content-Type: a plain
// "application/json" answer makes it parse the legacy APIGroupList and fetch
// each group-version document (client-go discovery/discovery_client.go). So
// Accept clauses carrying as=/g= parameters are skipped during negotiation.
//
// Resource entries follow kube-apiserver 1.37 (api/discovery/*.json in the
// kubernetes repository): the main resource with its verbs, short names,
// categories and storageVersionHash; "<res>/status" (get, patch, update) for
// kinds with a status subresource; "<res>/scale" (group autoscaling, version
// v1, kind Scale) for kinds with Scale access, which is how `kubectl scale`
// and client-go's scale client find the Scale kind; and "pods/log" (get) for
// core pods. Two upstream quirks are kept: namespaces have no
// deletecollection verb, and core documents carry no apiVersion field.
//
// Unknown paths below /api and /apis get a 404 Status.
package discovery

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"

	"github.com/svcnet/svcnet/internal/registry"
)

// Verbs of a main resource, in the order upstream lists them.
var (
	allVerbs       = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	namespaceVerbs = metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
	subVerbs       = metav1.Verbs{"get", "patch", "update"}
	logVerbs       = metav1.Verbs{"get"}
)

// groupOrder is kube-apiserver's /apis group order for the groups svcnet may
// serve. Clients give earlier groups priority when a resource name exists in
// several groups (events: core before events.k8s.io); groups not listed here
// follow in name order.
var groupOrder = []string{
	"apps", "events.k8s.io", "autoscaling", "batch", "networking.k8s.io",
	"policy", "rbac.authorization.k8s.io", "storage.k8s.io",
	"coordination.k8s.io", "node.k8s.io", "discovery.k8s.io",
}

// Handler serves the discovery documents. It is immutable after NewHandler.
type Handler struct {
	apiVersions metav1.APIVersions
	docs        map[string]*document // by URL path without trailing slash
}

var _ http.Handler = (*Handler)(nil)

// NewHandler builds the discovery documents for kinds. Kinds of the same
// group-version are listed together; a group with several versions prefers
// the highest by Kubernetes version ordering (v1 > v1beta1 > v1alpha1).
func NewHandler(kinds []*registry.Kind) http.Handler {
	h := &Handler{
		apiVersions: metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		},
		docs: make(map[string]*document),
	}

	byGV := map[schema.GroupVersion][]metav1.APIResource{}
	versionsOf := map[string][]string{} // group -> versions
	for _, k := range kinds {
		gv := k.Resource.GroupVersion()
		if _, seen := byGV[gv]; !seen {
			versionsOf[gv.Group] = append(versionsOf[gv.Group], gv.Version)
		}
		byGV[gv] = append(byGV[gv], resourcesOf(k)...)
	}

	for gv, resources := range byGV {
		slices.SortStableFunc(resources, func(a, b metav1.APIResource) int { return strings.Compare(a.Name, b.Name) })
		list := &metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: gv.String(),
			APIResources: resources,
		}
		p := "/apis/" + gv.Group + "/" + gv.Version
		if gv.Group == "" {
			// kube-apiserver sends the core list without apiVersion.
			list.APIVersion = ""
			p = "/api/" + gv.Version
		}
		h.docs[p] = newDocument(list)
	}

	groupList := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, g := range sortedGroups(versionsOf) {
		versions := versionsOf[g]
		slices.SortFunc(versions, func(a, b string) int { return -version.CompareKubeAwareVersionStrings(a, b) })
		if g == "" {
			h.apiVersions.Versions = versions
			continue
		}
		group := metav1.APIGroup{Name: g}
		for _, v := range versions {
			group.Versions = append(group.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v})
		}
		group.PreferredVersion = group.Versions[0]
		groupList.Groups = append(groupList.Groups, group)

		doc := group
		doc.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
		h.docs["/apis/"+g] = newDocument(&doc)
	}
	if groupList.Groups == nil {
		groupList.Groups = []metav1.APIGroup{}
	}
	h.docs["/apis"] = newDocument(groupList)
	if h.apiVersions.Versions == nil {
		h.apiVersions.Versions = []string{}
	}
	return h
}

// Handles reports whether path is one of the discovery paths this package
// answers (possibly with 404): "/api", "/api/<v>", "/apis", "/apis/<g>" and
// "/apis/<g>/<v>", with or without a trailing slash. A router can use it to
// send these paths here and the longer resource paths elsewhere.
func Handles(path string) bool {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	switch segs[0] {
	case "api":
		return len(segs) <= 2
	case "apis":
		return len(segs) <= 3
	}
	return false
}

// ServeHTTP answers GET and HEAD for the discovery paths.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatus(w, r, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"the server does not allow this method on the requested resource")
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/api" {
		v := h.apiVersions
		// Upstream fills in the address clients should use; the address this
		// client used is the closest equivalent svcnet knows.
		v.ServerAddressByClientCIDRs = []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}
		writeDocument(w, r, newDocument(&v))
		return
	}
	doc, ok := h.docs[p]
	if !ok {
		writeStatus(w, r, http.StatusNotFound, metav1.StatusReasonNotFound,
			"the server could not find the requested resource")
		return
	}
	writeDocument(w, r, doc)
}

// resourcesOf returns the discovery entries of one kind: the resource itself
// and its subresources.
func resourcesOf(k *registry.Kind) []metav1.APIResource {
	gvk := k.GroupVersionKind()
	verbs := allVerbs
	if gvk.Group == "" && k.Resource.Resource == "namespaces" {
		verbs = namespaceVerbs
	}
	main := metav1.APIResource{
		Name:               k.Resource.Resource,
		SingularName:       k.SingularName,
		Namespaced:         k.Namespaced,
		Kind:               k.Kind,
		Verbs:              verbs,
		ShortNames:         k.ShortNames,
		Categories:         k.Categories,
		StorageVersionHash: StorageVersionHash(gvk),
	}
	if main.SingularName == "" {
		main.SingularName = strings.ToLower(k.Kind)
	}
	out := []metav1.APIResource{main}
	sub := func(name string, verbs metav1.Verbs) metav1.APIResource {
		return metav1.APIResource{
			Name:       k.Resource.Resource + "/" + name,
			Namespaced: k.Namespaced,
			Kind:       k.Kind,
			Verbs:      verbs,
		}
	}
	if gvk.Group == "" && k.Resource.Resource == "pods" {
		out = append(out, sub("log", logVerbs))
	}
	if k.Scale != nil {
		s := sub("scale", subVerbs)
		s.Group, s.Version, s.Kind = "autoscaling", "v1", "Scale"
		out = append(out, s)
	}
	if k.Status {
		out = append(out, sub("status", subVerbs))
	}
	return out
}

// StorageVersionHash is kube-apiserver's opaque storage version hash of a
// kind: the first 8 bytes of sha256("<group>/<version>/<kind>"), base64.
func StorageVersionHash(gvk schema.GroupVersionKind) string {
	sum := sha256.Sum256([]byte(gvk.Group + "/" + gvk.Version + "/" + gvk.Kind))
	return base64.StdEncoding.EncodeToString(sum[:8])
}

// sortedGroups orders group names: core first, then groupOrder, then the
// rest by name.
func sortedGroups(versionsOf map[string][]string) []string {
	rank := func(g string) int {
		if g == "" {
			return -1
		}
		if i := slices.Index(groupOrder, g); i >= 0 {
			return i
		}
		return len(groupOrder)
	}
	groups := make([]string, 0, len(versionsOf))
	for g := range versionsOf {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return groups
}
