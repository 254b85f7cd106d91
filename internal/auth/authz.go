package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// NodeLeaseNamespace holds the nodes' heartbeat Leases.
const NodeLeaseNamespace = "kube-node-lease"

// readVerbs are the verbs a node may use on every resource.
var readVerbs = []string{"get", "list", "watch"}

// podStreamingSubresources are the pod subresources that reach into a
// pod's containers; nodes may not use them.
var podStreamingSubresources = map[string]bool{"log": true, "exec": true, "attach": true, "portforward": true}

// writeVerbs are the verbs a node may use on its own objects.
var writeVerbs = []string{"create", "update", "patch", "delete"}

// ForbiddenError is an authorization denial.
//
// Its Error text is only the Reason, often empty: the apiserver builds
// upstream's message, `User "x" cannot create resource "services" in API
// group "" in the namespace "default"`, from the request and appends
// ": <Error()>" when that is not empty. Message returns the whole text and
// ForbiddenStatus the 403 Status kube-apiserver sends.
type ForbiddenError struct {
	Attributes Attributes
	// Reason, when set, explains the denial beyond the plain message.
	Reason string
}

func (e *ForbiddenError) Error() string { return e.Reason }

// Message returns upstream's forbidden message for the request, with the
// reason appended after a colon when there is one.
func (e *ForbiddenError) Message() string {
	a := e.Attributes
	name := ""
	if a.User != nil {
		name = a.User.Name
	}
	var msg string
	switch {
	case a.Resource == "":
		msg = fmt.Sprintf("User %q cannot %s path %q", name, a.Verb, a.Path)
	case a.Namespace != "":
		msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q in the namespace %q", name, a.Verb, resourceOf(a), a.APIGroup, a.Namespace)
	default:
		msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q at the cluster scope", name, a.Verb, resourceOf(a), a.APIGroup)
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

func resourceOf(a Attributes) string {
	if a.Subresource != "" {
		return a.Resource + "/" + a.Subresource
	}
	return a.Resource
}

// IsForbidden reports whether err is (or wraps) a ForbiddenError.
func IsForbidden(err error) bool {
	var fe *ForbiddenError
	return errors.As(err, &fe)
}

// ForbiddenStatus turns an authorization error for request a into the 403
// Status error kube-apiserver returns, e.g. `services is forbidden: User
// "system:nodes:join" cannot create resource "services" in API group "" in
// the namespace "default"`.
func ForbiddenStatus(a Attributes, err error) *apierrors.StatusError {
	fe := &ForbiddenError{Attributes: a}
	if !errors.As(err, &fe) {
		fe = &ForbiddenError{Attributes: a, Reason: err.Error()}
	}
	gr := schema.GroupResource{Group: a.APIGroup, Resource: a.Resource}
	return apierrors.NewForbidden(gr, a.Name, errors.New(fe.Message()))
}

// NodeAuthorizer is svcnet's authorizer. It implements, as fixed rules, the
// parts of upstream's RBAC bootstrap roles and node authorizer that svcnet's
// users need:
//
//   - system:masters may do everything;
//   - everyone may GET the public paths (/healthz, /livez, /readyz,
//     /version), and every authenticated user may GET the discovery and
//     OpenAPI paths (/api, /apis, /openapi and below), like upstream's
//     system:public-info-viewer and system:discovery roles;
//   - system:nodes may get, list and watch every resource, and may write
//     only what a node agent writes: Nodes and nodes/status, Leases in
//     kube-node-lease, pods/status, Events, the kube-system/kube-dns-<node>
//     EndpointSlices (node-local DNS), and pod deletion (the agent
//     completes graceful deletion). A "system:node:<name>" user is limited
//     to its own Node and Lease by name; the shared join user (JoinUser)
//     may write any Node and node Lease, because one token serves every
//     agent. Pod status writes are not checked against the pod's node
//     (that needs the pod; upstream does it in the node authorizer's graph).
//     Nodes may not use pods/log, exec, attach or portforward at all (in
//     upstream's system:node role neither): those reach into pods, and a
//     node's "get" would otherwise allow a WebSocket exec.
//   - everything else is denied with a ForbiddenError.
type NodeAuthorizer struct{}

var _ Authorizer = NodeAuthorizer{}

// Authorize implements Authorizer.
func (NodeAuthorizer) Authorize(_ context.Context, a Attributes) error {
	u := a.User
	if u == nil {
		return &ForbiddenError{Attributes: a, Reason: "no user"}
	}
	if slices.Contains(u.Groups, GroupMasters) {
		return nil
	}
	if a.Resource == "" {
		if nonResourceAllowed(u, a) {
			return nil
		}
		return &ForbiddenError{Attributes: a}
	}
	if slices.Contains(u.Groups, GroupNodes) {
		if a.APIGroup == "" && a.Resource == "pods" && podStreamingSubresources[a.Subresource] {
			return &ForbiddenError{Attributes: a}
		}
		if slices.Contains(readVerbs, a.Verb) {
			return nil
		}
		if reason, ok := nodeWriteAllowed(u, a); ok {
			return nil
		} else if reason != "" {
			return &ForbiddenError{Attributes: a, Reason: reason}
		}
	}
	return &ForbiddenError{Attributes: a}
}

func nonResourceAllowed(u *User, a Attributes) bool {
	if a.Verb != "get" && a.Verb != "head" {
		return false
	}
	if IsPublicPath(a.Path) {
		return true
	}
	if u.Name == AnonymousUser || slices.Contains(u.Groups, GroupUnauthenticated) {
		return false
	}
	for _, p := range []string{"/api", "/apis", "/openapi"} {
		if a.Path == p || strings.HasPrefix(a.Path, p+"/") {
			return true
		}
	}
	return false
}

// nodeWriteAllowed decides a node's write. A non-empty reason explains a
// denial that a plain forbidden message would not (a node writing another
// node's object).
// NodeDNSSlicePrefix prefixes the name of the EndpointSlice in kube-system
// through which a node agent publishes its DNS listener for Service kube-dns.
const NodeDNSSlicePrefix = "kube-dns-"

const metav1NamespaceSystem = "kube-system"

func nodeWriteAllowed(u *User, a Attributes) (reason string, ok bool) {
	nodeName, perNode := strings.CutPrefix(u.Name, NodeUserPrefix)
	switch {
	case a.APIGroup == "" && a.Resource == "nodes" && (a.Subresource == "" || a.Subresource == "status"):
		if !slices.Contains(writeVerbs, a.Verb) {
			return "", false
		}
		if perNode && a.Name != "" && a.Name != nodeName {
			return fmt.Sprintf("node %q may only write its own Node object", nodeName), false
		}
		return "", true

	case a.APIGroup == "coordination.k8s.io" && a.Resource == "leases" && a.Subresource == "":
		if a.Namespace != NodeLeaseNamespace || !slices.Contains(writeVerbs, a.Verb) {
			return "", false
		}
		if perNode && a.Name != "" && a.Name != nodeName {
			return fmt.Sprintf("node %q may only write its own Lease", nodeName), false
		}
		return "", true

	case a.APIGroup == "" && a.Resource == "pods" && a.Subresource == "status":
		return "", a.Verb == "update" || a.Verb == "patch"

	case a.APIGroup == "" && a.Resource == "pods" && a.Subresource == "":
		return "", a.Verb == "delete"

	case a.APIGroup == "discovery.k8s.io" && a.Resource == "endpointslices" && a.Subresource == "":
		// Each agent publishes its node-local DNS listener as the
		// EndpointSlice kube-system/kube-dns-<node> of the kube-dns Service.
		if a.Namespace != metav1NamespaceSystem || !slices.Contains(writeVerbs, a.Verb) {
			return "", false
		}
		if a.Name != "" && !strings.HasPrefix(a.Name, NodeDNSSlicePrefix) {
			return "nodes may only write the kube-dns-<node> EndpointSlices", false
		}
		if perNode && a.Name != "" && a.Name != NodeDNSSlicePrefix+nodeName {
			return fmt.Sprintf("node %q may only write its own EndpointSlice %s%s", nodeName, NodeDNSSlicePrefix, nodeName), false
		}
		return "", true

	case (a.APIGroup == "" || a.APIGroup == "events.k8s.io") && a.Resource == "events" && a.Subresource == "":
		return "", a.Verb == "create" || a.Verb == "update" || a.Verb == "patch"
	}
	return "", false
}
