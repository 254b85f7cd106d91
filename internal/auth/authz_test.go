package auth

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

func TestNodeAuthorizer(t *testing.T) {
	admin := &User{Name: "admin", Groups: []string{GroupMasters, GroupAuthenticated}}
	join := &User{Name: JoinUser, Groups: []string{GroupNodes, GroupAuthenticated}}
	n1 := &User{Name: "system:node:n1", Groups: []string{GroupNodes, GroupAuthenticated}}
	alice := &User{Name: "alice", Groups: []string{GroupAuthenticated}}
	anon := Anonymous()

	res := func(u *User, verb, group, resource, sub, ns, name string) Attributes {
		return Attributes{User: u, Verb: verb, APIGroup: group, Resource: resource, Subresource: sub, Namespace: ns, Name: name}
	}
	path := func(u *User, verb, p string) Attributes { return Attributes{User: u, Verb: verb, Path: p} }

	tests := []struct {
		name  string
		attrs Attributes
		allow bool
		// wantMsg, when set, is the full 403 Status message.
		wantMsg string
	}{
		{name: "admin creates services", attrs: res(admin, "create", "", "services", "", "default", ""), allow: true},
		{name: "admin deletes namespaces", attrs: res(admin, "delete", "", "namespaces", "", "", "x"), allow: true},
		{name: "admin any path", attrs: path(admin, "post", "/anything"), allow: true},

		{name: "node lists services", attrs: res(join, "list", "", "services", "", "", ""), allow: true},
		{name: "node watches endpointslices", attrs: res(join, "watch", "discovery.k8s.io", "endpointslices", "", "", ""), allow: true},
		{name: "node gets pod", attrs: res(join, "get", "", "pods", "", "default", "p"), allow: true},
		{name: "node creates service", attrs: res(join, "create", "", "services", "", "default", ""),
			wantMsg: `services is forbidden: User "system:nodes:join" cannot create resource "services" in API group "" in the namespace "default"`},
		{name: "node deletes service", attrs: res(join, "delete", "", "services", "", "default", "web"),
			wantMsg: `services "web" is forbidden: User "system:nodes:join" cannot delete resource "services" in API group "" in the namespace "default"`},
		{name: "node patches service", attrs: res(n1, "patch", "", "services", "", "default", "web")},
		{name: "node updates service status", attrs: res(join, "update", "", "services", "status", "default", "web"),
			wantMsg: `services "web" is forbidden: User "system:nodes:join" cannot update resource "services/status" in API group "" in the namespace "default"`},
		{name: "node creates deployment", attrs: res(join, "create", "apps", "deployments", "", "default", ""),
			wantMsg: `deployments.apps is forbidden: User "system:nodes:join" cannot create resource "deployments" in API group "apps" in the namespace "default"`},
		{name: "node creates pod", attrs: res(join, "create", "", "pods", "", "default", "")},
		{name: "node reads pod log", attrs: res(join, "get", "", "pods", "log", "default", "p"),
			wantMsg: `pods "p" is forbidden: User "system:nodes:join" cannot get resource "pods/log" in API group "" in the namespace "default"`},
		{name: "node websocket exec", attrs: res(n1, "get", "", "pods", "exec", "default", "p")},
		{name: "node spdy exec", attrs: res(n1, "create", "", "pods", "exec", "default", "p")},
		{name: "node attach", attrs: res(n1, "get", "", "pods", "attach", "default", "p")},
		{name: "admin reads pod log", attrs: res(admin, "get", "", "pods", "log", "default", "p"), allow: true},
		{name: "admin execs", attrs: res(admin, "create", "", "pods", "exec", "default", "p"), allow: true},
		{name: "user reads pod log", attrs: res(alice, "get", "", "pods", "log", "default", "p")},
		{name: "node deletes collection of pods", attrs: res(join, "deletecollection", "", "pods", "", "default", "")},
		{name: "node writes endpoints", attrs: res(join, "update", "", "endpoints", "", "default", "web")},

		{name: "join creates node", attrs: res(join, "create", "", "nodes", "", "", ""), allow: true},
		{name: "join updates node status", attrs: res(join, "update", "", "nodes", "status", "", "n7"), allow: true},
		{name: "join patches node status", attrs: res(join, "patch", "", "nodes", "status", "", "n7"), allow: true},
		{name: "join deletes node", attrs: res(join, "delete", "", "nodes", "", "", "n7"), allow: true},
		{name: "node deletecollection nodes", attrs: res(join, "deletecollection", "", "nodes", "", "", "")},
		{name: "n1 updates own node status", attrs: res(n1, "update", "", "nodes", "status", "", "n1"), allow: true},
		{name: "n1 updates other node status", attrs: res(n1, "update", "", "nodes", "status", "", "n2"),
			wantMsg: `nodes "n2" is forbidden: User "system:node:n1" cannot update resource "nodes/status" in API group "" at the cluster scope: node "n1" may only write its own Node object`},
		{name: "join renews lease", attrs: res(join, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n7"), allow: true},
		{name: "join creates lease", attrs: res(join, "create", "coordination.k8s.io", "leases", "", "kube-node-lease", ""), allow: true},
		{name: "n1 renews own lease", attrs: res(n1, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n1"), allow: true},
		{name: "n1 renews other lease", attrs: res(n1, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n2")},
		{name: "node lease elsewhere", attrs: res(join, "update", "coordination.k8s.io", "leases", "", "kube-system", "x"),
			wantMsg: `leases.coordination.k8s.io "x" is forbidden: User "system:nodes:join" cannot update resource "leases" in API group "coordination.k8s.io" in the namespace "kube-system"`},
		{name: "node updates pod status", attrs: res(join, "update", "", "pods", "status", "default", "p"), allow: true},
		{name: "node patches pod status", attrs: res(n1, "patch", "", "pods", "status", "default", "p"), allow: true},
		{name: "node updates pod spec", attrs: res(join, "update", "", "pods", "", "default", "p")},
		{name: "node deletes pod", attrs: res(join, "delete", "", "pods", "", "default", "p"), allow: true},
		{name: "node creates core event", attrs: res(join, "create", "", "events", "", "default", ""), allow: true},
		{name: "node patches events.k8s.io event", attrs: res(join, "patch", "events.k8s.io", "events", "", "default", "e"), allow: true},
		{name: "node deletes event", attrs: res(join, "delete", "", "events", "", "default", "e")},
		{name: "node discovery", attrs: path(join, "get", "/apis/apps/v1"), allow: true},

		{name: "user discovery", attrs: path(alice, "get", "/api/v1"), allow: true},
		{name: "user openapi", attrs: path(alice, "get", "/openapi/v3/api/v1"), allow: true},
		{name: "user post to discovery path", attrs: path(alice, "post", "/api")},
		{name: "user apix prefix is not /api", attrs: path(alice, "get", "/apix")},
		{name: "user lists services", attrs: res(alice, "list", "", "services", "", "default", ""),
			wantMsg: `services is forbidden: User "alice" cannot list resource "services" in API group "" in the namespace "default"`},
		{name: "user lists nodes", attrs: res(alice, "list", "", "nodes", "", "", ""),
			wantMsg: `nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope`},

		{name: "anonymous healthz", attrs: path(anon, "get", "/healthz"), allow: true},
		{name: "anonymous version", attrs: path(anon, "get", "/version"), allow: true},
		{name: "anonymous discovery", attrs: path(anon, "get", "/api"),
			wantMsg: `forbidden: User "system:anonymous" cannot get path "/api"`},
		{name: "anonymous services", attrs: res(anon, "list", "", "services", "", "", "")},
		{name: "no user", attrs: Attributes{Verb: "get", Path: "/healthz"}},
	}
	var az NodeAuthorizer
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := az.Authorize(context.Background(), tt.attrs)
			if tt.allow {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed, want denied")
			}
			if !IsForbidden(err) {
				t.Errorf("error %T is not a ForbiddenError", err)
			}
			st := ForbiddenStatus(tt.attrs, err)
			if !apierrors.IsForbidden(st) || st.Status().Code != 403 {
				t.Errorf("status = %+v, want 403 Forbidden", st.Status())
			}
			if tt.wantMsg != "" && st.Error() != tt.wantMsg {
				t.Errorf("message:\n got %s\nwant %s", st.Error(), tt.wantMsg)
			}
		})
	}
}
