package apiserver

import (
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/fields"
)

// requestInfo is a request path parsed the way kube-apiserver's
// RequestInfoFactory does it.
type requestInfo struct {
	// isResource is false for /version, /healthz, discovery documents…
	isResource bool
	path       string
	// verb is the Kubernetes verb (get, list, watch, create, update, patch,
	// delete, deletecollection) or, for non-resource requests, the lowercased
	// HTTP method.
	verb string

	apiPrefix   string // "api" or "apis"
	group       string
	version     string
	namespace   string
	resource    string
	subresource string
	// name is the object name from the path. For list and watch it may also
	// come from a metadata.name field selector (nameFromPath is then false).
	name         string
	nameFromPath bool
	// legacyWatch is set for the deprecated /watch/ path form.
	legacyWatch bool
}

// namespaceSubresources are the subresources of a Namespace object, which
// would otherwise be read as "a resource inside the namespace".
var namespaceSubresources = map[string]bool{"status": true, "finalize": true}

// parseRequestInfo parses r's path.
func parseRequestInfo(r *http.Request) *requestInfo {
	info := &requestInfo{path: r.URL.Path, verb: strings.ToLower(r.Method)}
	parts := splitPath(r.URL.Path)
	if len(parts) == 0 {
		return info
	}
	switch parts[0] {
	case "api":
		if len(parts) < 3 {
			return info // /api, /api/v1: discovery
		}
		info.apiPrefix, info.version = "api", parts[1]
		parts = parts[2:]
	case "apis":
		if len(parts) < 4 {
			return info // /apis, /apis/g, /apis/g/v: discovery
		}
		info.apiPrefix, info.group, info.version = "apis", parts[1], parts[2]
		parts = parts[3:]
	default:
		return info
	}
	info.isResource = true

	switch r.Method {
	case http.MethodPost:
		info.verb = "create"
	case http.MethodGet, http.MethodHead:
		info.verb = "get"
	case http.MethodPut:
		info.verb = "update"
	case http.MethodPatch:
		info.verb = "patch"
	case http.MethodDelete:
		info.verb = "delete"
	default:
		info.verb = ""
	}
	if parts[0] == "watch" {
		info.legacyWatch = true
		info.verb = "watch"
		parts = parts[1:]
		if len(parts) == 0 {
			info.isResource = false
			return info
		}
	}

	if parts[0] == "namespaces" && len(parts) > 1 {
		info.namespace = parts[1]
		if len(parts) > 2 && !namespaceSubresources[parts[2]] {
			parts = parts[2:]
		}
	}
	switch {
	case len(parts) >= 3:
		info.subresource = parts[2]
		fallthrough
	case len(parts) == 2:
		info.name = parts[1]
		info.nameFromPath = true
		fallthrough
	default:
		info.resource = parts[0]
	}
	if len(parts) > 3 {
		// resource/name/subresource/more: nothing serves deeper paths.
		info.subresource += "/" + strings.Join(parts[3:], "/")
	}

	if info.name == "" {
		switch info.verb {
		case "get":
			info.verb = "list"
			if queryBool(r.URL.Query(), "watch") {
				info.verb = "watch"
			}
		case "delete":
			info.verb = "deletecollection"
		}
		if info.verb == "list" || info.verb == "watch" {
			if sel, err := fields.ParseSelector(r.URL.Query().Get("fieldSelector")); err == nil {
				if name, ok := sel.RequiresExactMatch("metadata.name"); ok && len(content.IsPathSegmentName(name)) == 0 {
					info.name = name
				}
			}
		}
	} else if info.legacyWatch {
		info.verb = "watch"
	}
	return info
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// queryBool parses a boolean query parameter the way the parameter codec
// does: present and neither "0" nor "false" means true.
func queryBool(q url.Values, key string) bool {
	vs := q[key]
	if len(vs) == 0 {
		return false
	}
	return vs[0] != "0" && !strings.EqualFold(vs[0], "false")
}
