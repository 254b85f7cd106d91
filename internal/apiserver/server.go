package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"

	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/storage"
)

// Server is the API server's HTTP handler. New returns it as an
// http.Handler; Run adds the background work (namespace cleanup).
type Server struct {
	cfg   Config
	store storage.Interface
	log   *slog.Logger

	scheme        *runtime.Scheme
	codecs        serializer.CodecFactory
	jsonInfo      runtime.SerializerInfo
	protobufInfo  runtime.SerializerInfo
	typeConverter managedfields.TypeConverter

	// resources maps "group/version/resource" to what serves it.
	resources map[string]*resource
	// byGR maps a group/resource to its resource (any version).
	byGR map[schema.GroupResource]*resource

	// bookmarkInterval is how often a watch that allows bookmarks gets one
	// when nothing else happens.
	bookmarkInterval time.Duration

	// nsKick wakes the namespace cleaner (one-slot channel); nsRunning is
	// true while Run is active.
	nsKick    chan struct{}
	nsRunning atomic.Bool

	// nsCache answers the namespace check of creates while Run is active.
	nsCache nsCache

	// kubeletTransport reaches node agents for pods/log and pods/exec
	// (nil without Config.KubeletClientCert).
	kubeletTransport *http.Transport
}

var _ http.Handler = (*Server)(nil)

// New builds the API server handler for cfg. The returned handler is a
// *Server; call its Run method to have deleted namespaces emptied in the
// background (without Run, each namespace deletion cleans up in its own
// goroutine).
func New(cfg Config) (http.Handler, error) {
	return newServer(cfg)
}

func newServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("apiserver: Config.Store is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := getCodecs()
	if c.err != nil {
		return nil, c.err
	}
	s := &Server{
		cfg:              cfg,
		store:            cfg.Store,
		log:              logger.With("component", "apiserver"),
		scheme:           c.scheme,
		codecs:           c.codecs,
		jsonInfo:         c.jsonInfo,
		protobufInfo:     c.protobufInfo,
		typeConverter:    c.typeConverter,
		resources:        map[string]*resource{},
		byGR:             map[schema.GroupResource]*resource{},
		bookmarkInterval: time.Minute,
		nsKick:           make(chan struct{}, 1),
		kubeletTransport: newKubeletTransport(cfg.KubeletClientCert),
	}
	for _, k := range cfg.Kinds {
		r, err := s.newResource(k)
		if err != nil {
			return nil, err
		}
		id := k.Resource.Group + "/" + k.Resource.Version + "/" + k.Resource.Resource
		if _, dup := s.resources[id]; dup {
			return nil, fmt.Errorf("apiserver: kind %s registered twice", k.Resource)
		}
		s.resources[id] = r
		s.byGR[k.Resource.GroupResource()] = r
	}
	return s, nil
}

// codecSet is the read-only scheme, codecs and SSA type converter every
// Server shares (building the type converter parses the whole built-in
// schema, which is too slow to repeat per server).
type codecSet struct {
	scheme        *runtime.Scheme
	codecs        serializer.CodecFactory
	jsonInfo      runtime.SerializerInfo
	protobufInfo  runtime.SerializerInfo
	typeConverter managedfields.TypeConverter
	err           error
}

var getCodecs = sync.OnceValue(func() codecSet {
	c := codecSet{scheme: newScheme()}
	c.codecs = serializer.NewCodecFactory(c.scheme)
	for _, info := range c.codecs.SupportedMediaTypes() {
		switch info.MediaType {
		case mediaJSON:
			c.jsonInfo = info
		case mediaProtobuf:
			c.protobufInfo = info
		}
	}
	if c.jsonInfo.Serializer == nil || c.protobufInfo.Serializer == nil {
		c.err = errors.New("apiserver: codec factory lacks JSON or protobuf")
		return c
	}
	c.typeConverter = newTypeConverter(c.scheme)
	return c
})

// Run does the server's background work until ctx ends: it finishes the
// deletion of Terminating namespaces (also those left by a previous process).
func (s *Server) Run(ctx context.Context) {
	s.nsRunning.Store(true)
	defer s.nsRunning.Store(false)
	var wg sync.WaitGroup
	wg.Go(func() { s.runNamespaceCache(ctx) })
	s.runNamespaceCleaner(ctx)
	wg.Wait()
}

// request is one API request being served.
type request struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	info *requestInfo
	res  *resource
	// namespace is the object namespace ("" for cluster-scoped kinds).
	namespace string
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{s: s, w: w, r: r, ctx: r.Context(), info: parseRequestInfo(r)}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			rq.writeError(apierrors.NewInternalError(fmt.Errorf("panic: %v", p)))
		}
	}()
	if err := s.authorize(rq); err != nil {
		rq.writeError(err)
		return
	}
	if !rq.info.isResource {
		s.serveNonResource(rq)
		return
	}
	s.serveResource(rq)
}

// authorize asks cfg.Authorizer about the request.
func (s *Server) authorize(rq *request) error {
	if s.cfg.Authorizer == nil {
		return nil
	}
	info := rq.info
	user := auth.UserFrom(rq.ctx)
	a := auth.Attributes{User: user, Verb: info.verb}
	if info.isResource {
		a.APIGroup, a.Resource, a.Subresource = info.group, info.resource, info.subresource
		a.Namespace, a.Name = info.namespace, info.name
	} else {
		a.Path = info.path
	}
	err := s.cfg.Authorizer.Authorize(rq.ctx, a)
	if err == nil && isPodConnect(info) && info.verb != "create" {
		// A WebSocket exec is a GET, but running a command is a write:
		// kube-apiserver also requires "create" on pods/exec, attach and
		// portforward (AuthorizePodWebsocketUpgradeCreatePermission).
		a.Verb = "create"
		err = s.cfg.Authorizer.Authorize(rq.ctx, a)
		info = &requestInfo{isResource: true, verb: "create", group: info.group, resource: info.resource,
			subresource: info.subresource, namespace: info.namespace, name: info.name}
	}
	if err == nil {
		return nil
	}
	userName := ""
	if user != nil {
		userName = user.Name
	}
	var msg string
	if info.isResource {
		resource := info.resource
		if info.subresource != "" {
			resource += "/" + info.subresource
		}
		msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q", userName, info.verb, resource, info.group)
		if info.namespace != "" {
			msg += fmt.Sprintf(" in the namespace %q", info.namespace)
		} else {
			msg += " at the cluster scope"
		}
	} else {
		msg = fmt.Sprintf("User %q cannot %s path %q", userName, info.verb, info.path)
	}
	if reason := err.Error(); reason != "" {
		msg += ": " + reason
	}
	gr := schema.GroupResource{Group: info.group, Resource: info.resource}
	return apierrors.NewForbidden(gr, info.name, errors.New(msg))
}

// serveResource dispatches a parsed resource request.
func (s *Server) serveResource(rq *request) {
	info := rq.info
	res := s.resources[info.group+"/"+info.version+"/"+info.resource]
	if res == nil {
		rq.writeError(notFoundError())
		return
	}
	rq.res = res
	if res.kind.Namespaced {
		rq.namespace = info.namespace
		if rq.namespace == "" && info.verb != "list" && info.verb != "watch" {
			rq.writeError(notFoundError())
			return
		}
	} else if info.namespace != "" && !(info.resource == "namespaces" && info.namespace == info.name) {
		rq.writeError(notFoundError())
		return
	}

	gr := res.groupResource()
	notAllowed := func() { rq.writeError(apierrors.NewMethodNotSupported(gr, info.verb)) }
	switch info.verb {
	case "create", "update", "patch":
		growStack() // see stack.go
	}
	if info.subresource != "" {
		s.serveSubresource(rq, notAllowed)
		return
	}
	switch info.verb {
	case "get":
		s.handleGet(rq)
	case "list":
		s.handleList(rq)
	case "watch":
		s.handleWatch(rq)
	case "create":
		if info.nameFromPath {
			notAllowed()
			return
		}
		s.handleCreate(rq)
	case "update":
		s.handleUpdate(rq, subMain)
	case "patch":
		s.handlePatch(rq, subMain)
	case "delete":
		s.handleDelete(rq)
	case "deletecollection":
		if rq.namespace == "" && res.kind.Namespaced {
			notAllowed()
			return
		}
		s.handleDeleteCollection(rq)
	default:
		notAllowed()
	}
}

// serveSubresource dispatches /status, /scale and the pod subresources.
func (s *Server) serveSubresource(rq *request, notAllowed func()) {
	info, res := rq.info, rq.res
	switch {
	case info.subresource == "status" && res.kind.Status:
		switch info.verb {
		case "get":
			s.handleGet(rq)
		case "update":
			s.handleUpdate(rq, subStatus)
		case "patch":
			s.handlePatch(rq, subStatus)
		default:
			notAllowed()
		}
	case info.subresource == "scale" && res.kind.Scale != nil:
		switch info.verb {
		case "get":
			s.handleGetScale(rq)
		case "update":
			s.handleUpdateScale(rq)
		case "patch":
			s.handlePatchScale(rq)
		default:
			notAllowed()
		}
	case isCorePods(res) && info.subresource == "log":
		if info.verb != "get" {
			notAllowed()
			return
		}
		s.handleLog(rq)
	case isCorePods(res) && info.subresource == "binding":
		if info.verb != "create" {
			notAllowed()
			return
		}
		s.handleBinding(rq)
	case isCorePods(res) && info.subresource == "exec":
		if info.verb != "get" && info.verb != "create" {
			notAllowed()
			return
		}
		s.handleExec(rq)
	case isCorePods(res) && (info.subresource == "attach" || info.subresource == "portforward"):
		rq.writeError(apierrors.NewBadRequest(fmt.Sprintf(
			"pods/%s is not supported by svcnet: its pods are processes without an attachable console, and port-forwarding is not implemented; use pods/exec", info.subresource)))
	default:
		rq.writeError(notFoundError())
	}
}

// serveNonResource serves /version, health checks, OpenAPI and discovery.
func (s *Server) serveNonResource(rq *request) {
	p := rq.r.URL.Path
	switch {
	case p == "/version" || p == "/version/":
		s.serveVersion(rq)
	case p == "/healthz" || p == "/livez" || p == "/readyz" ||
		strings.HasPrefix(p, "/healthz/") || strings.HasPrefix(p, "/livez/") || strings.HasPrefix(p, "/readyz/"):
		s.serveHealth(rq)
	case p == "/openapi" || strings.HasPrefix(p, "/openapi/"):
		if s.cfg.OpenAPI == nil {
			rq.writeError(notFoundError())
			return
		}
		s.cfg.OpenAPI.ServeHTTP(rq.w, rq.r)
	case s.cfg.Profiling && (p == "/debug/pprof" || strings.HasPrefix(p, "/debug/pprof/")):
		servePprof(rq.w, rq.r)
	case isDiscoveryPath(p):
		if s.cfg.Discovery == nil {
			rq.writeError(notFoundError())
			return
		}
		s.cfg.Discovery.ServeHTTP(rq.w, rq.r)
	default:
		rq.writeError(notFoundError())
	}
}

// isDiscoveryPath reports whether p is /api, /api/<v>, /apis, /apis/<g> or
// /apis/<g>/<v>.
func isDiscoveryPath(p string) bool {
	parts := splitPath(p)
	switch {
	case len(parts) == 0:
		return false
	case parts[0] == "api":
		return len(parts) <= 2
	case parts[0] == "apis":
		return len(parts) <= 3
	}
	return false
}

func isCorePods(r *resource) bool {
	return r.gvr.Group == "" && r.gvr.Resource == "pods"
}

// isPodConnect reports whether info is a pods/exec, attach or portforward
// request (kube-apiserver's connect subresources that run something).
func isPodConnect(info *requestInfo) bool {
	return info.isResource && info.group == "" && info.resource == "pods" &&
		(info.subresource == "exec" || info.subresource == "attach" || info.subresource == "portforward")
}

func isCoreNamespaces(r *resource) bool {
	return r.gvr.Group == "" && r.gvr.Resource == "namespaces"
}

func isCoreServices(r *resource) bool {
	return r.gvr.Group == "" && r.gvr.Resource == "services"
}
