package apiserver

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// servePprof serves /debug/pprof/ as kube-apiserver does with --profiling:
// the index, the named runtime profiles, and the cmdline, CPU profile,
// symbol and trace endpoints of net/http/pprof. The caller has checked the
// path and authorized the request.
func servePprof(w http.ResponseWriter, r *http.Request) {
	switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		if r.URL.Path == "/debug/pprof" {
			http.Redirect(w, r, "/debug/pprof/", http.StatusMovedPermanently)
			return
		}
		pprof.Index(w, r)
	}
}
