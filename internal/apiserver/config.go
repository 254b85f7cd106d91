package apiserver

import (
	"crypto/tls"
	"log/slog"
	"net/http"

	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// Config wires an API server. The server's HTTP handler is built by New(cfg).
type Config struct {
	Store  storage.Interface
	Kinds  []*registry.Kind
	Logger *slog.Logger

	// Authorizer, when non-nil, is asked about every request. Authentication
	// happens before the handler (see auth.Middleware): the user is in the
	// request context (auth.UserFrom).
	Authorizer auth.Authorizer

	// OpenAPI, when non-nil, serves /openapi/v3 and everything below it.
	OpenAPI http.Handler

	// Discovery, when non-nil, serves the discovery documents: GET /api,
	// /api/<version>, /apis, /apis/<group> and /apis/<group>/<version>.
	// Without it those paths answer 404.
	Discovery http.Handler

	// Version is returned by /version (GitVersion like "v1.37.2-svcnet").
	Version string

	// Ready, when non-nil, is consulted by /readyz (nil error = ready).
	Ready func() error

	// Profiling serves Go's profiles under /debug/pprof/ (kube-apiserver's
	// --profiling). Only authorized users reach them: with the node
	// authorizer, the admin (system:masters).
	Profiling bool

	// KubeletClientCert is the client certificate presented to node agents
	// when pods/log and pods/exec are proxied to them (kube-apiserver's
	// --kubelet-client-certificate and --kubelet-client-key). Without it
	// those subresources answer 503.
	KubeletClientCert *tls.Certificate
}

// Key layout in storage: KeyPrefix + "<group or 'core'>/<resource>/<namespace>/<name>"
// for namespaced kinds, and without the namespace segment for cluster-scoped ones.
const KeyPrefix = "/registry/"
