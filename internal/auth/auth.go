// Package auth authenticates API requests (bearer token or client certificate)
// and authorizes them (admin: everything; node: what a node agent needs).
//
// This file holds the types shared with internal/apiserver: the authenticated
// User carried in the request context and the Attributes of a request that the
// Authorizer decides on.
package auth

import "context"

// User is an authenticated caller.
type User struct {
	Name   string
	Groups []string
}

// Well-known groups.
const (
	GroupMasters = "system:masters"
	GroupNodes   = "system:nodes"
	// NodeUserPrefix prefixes node user names: "system:node:<nodeName>".
	NodeUserPrefix = "system:node:"
)

type userKey struct{}

// WithUser returns ctx carrying u.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the user in ctx, or nil.
func UserFrom(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}

// Attributes describe one API request, as the apiserver parsed it.
type Attributes struct {
	User *User
	// Verb is the Kubernetes verb: get, list, watch, create, update, patch,
	// delete, deletecollection; for non-resource paths, the lowercased HTTP method.
	Verb string
	// Resource request fields; empty for non-resource requests (/version, /openapi…).
	APIGroup    string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	// Path is set for non-resource requests.
	Path string
}

// Authorizer decides whether a request may proceed. A non-nil error is a
// denial and its text is shown to the client in a 403 Status.
type Authorizer interface {
	Authorize(ctx context.Context, a Attributes) error
}
