package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	goruntime "runtime"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/version"
)

// defaultVersion is served by /version when Config.Version is empty.
const defaultVersion = "v1.37.2-svcnet"

// serveVersion serves /version as version.Info JSON.
func (s *Server) serveVersion(rq *request) {
	if rq.r.Method != http.MethodGet && rq.r.Method != http.MethodHead {
		rq.w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	v := s.cfg.Version
	if v == "" {
		v = defaultVersion
	}
	info := version.Info{
		GitVersion:   v,
		GitTreeState: "clean",
		GoVersion:    goruntime.Version(),
		Compiler:     goruntime.Compiler,
		Platform:     goruntime.GOOS + "/" + goruntime.GOARCH,
	}
	info.Major, info.Minor = majorMinor(v)
	body, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.w.Header().Set("Content-Type", "application/json")
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(body)
}

// majorMinor extracts "1" and "37" from "v1.37.2-svcnet".
func majorMinor(v string) (string, string) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	return parts[0], minor
}

// healthCheck is one named check of /healthz, /livez or /readyz.
type healthCheck struct {
	name string
	fn   func(ctx context.Context) error
}

// checks returns the checks of an endpoint: livez only pings; healthz and
// readyz also need etcd, and readyz Config.Ready.
func (s *Server) checks(endpoint string) []healthCheck {
	ping := healthCheck{"ping", func(context.Context) error { return nil }}
	etcd := healthCheck{"etcd", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := s.store.CurrentRevision(ctx)
		return err
	}}
	switch endpoint {
	case "livez":
		return []healthCheck{ping}
	case "readyz":
		out := []healthCheck{ping, etcd}
		if s.cfg.Ready != nil {
			out = append(out, healthCheck{"ready", func(context.Context) error { return s.cfg.Ready() }})
		}
		return out
	}
	return []healthCheck{ping, etcd}
}

// serveHealth serves /healthz, /livez, /readyz (?verbose lists the checks)
// and /<endpoint>/<check> for one check, with kube-apiserver's output.
func (s *Server) serveHealth(rq *request) {
	parts := splitPath(rq.r.URL.Path)
	endpoint := parts[0]
	checks := s.checks(endpoint)
	if len(parts) == 2 {
		var one []healthCheck
		for _, c := range checks {
			if c.name == parts[1] {
				one = append(one, c)
			}
		}
		if len(one) == 0 {
			rq.writeError(notFoundError())
			return
		}
		checks = one
	} else if len(parts) > 2 {
		rq.writeError(notFoundError())
		return
	}
	_, verbose := rq.r.URL.Query()["verbose"]
	var out strings.Builder
	failed := false
	for _, c := range checks {
		if err := c.fn(rq.ctx); err != nil {
			failed = true
			fmt.Fprintf(&out, "[-]%s failed: reason withheld\n", c.name)
			s.log.Warn("health check failed", "endpoint", endpoint, "check", c.name, "err", err)
		} else {
			fmt.Fprintf(&out, "[+]%s ok\n", c.name)
		}
	}
	rq.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rq.w.Header().Set("X-Content-Type-Options", "nosniff")
	if failed {
		code := http.StatusInternalServerError
		if endpoint == "readyz" {
			code = http.StatusServiceUnavailable
		}
		rq.w.WriteHeader(code)
		fmt.Fprintf(rq.w, "%s%s check failed\n", out.String(), endpoint)
		return
	}
	rq.w.WriteHeader(http.StatusOK)
	if verbose {
		fmt.Fprintf(rq.w, "%s%s check passed\n", out.String(), endpoint)
		return
	}
	fmt.Fprint(rq.w, "ok")
}
