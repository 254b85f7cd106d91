package kubeletserver

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serveLogs serves GET /containerLogs/{ns}/{pod}/{container}, as the
// kubelet's getContainerLogs: the options are v1.PodLogOptions query
// parameters (plus the legacy "tail"), the body is the log as text/plain,
// flushed after every write so that follow streams.
func (s *Server) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if msg := validateLogOptions(opts); msg != "" {
		http.Error(w, msg, http.StatusUnprocessableEntity)
		return
	}
	uid, ok := s.cfg.Provider.PodUID(ns, pod)
	if !ok {
		http.Error(w, fmt.Sprintf("pod %q does not exist", pod), http.StatusNotFound)
		return
	}
	fw := &flushWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		fw.f = f
	}
	w.Header().Set("Content-Type", "text/plain")
	err = s.cfg.Provider.Logs(r.Context(), uid, container, opts, fw)
	switch {
	case err == nil:
	case fw.written():
		// The status line is gone: all that is left is to end the body.
		s.log.Debug("log stream ended with error", "pod", ns+"/"+pod, "container", container, "err", err)
	case errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

// parseLogOptions decodes the query into PodLogOptions, with the
// parameter conversions of kube's generated url.Values converters (a bool
// is true when present and neither "0" nor "false").
func parseLogOptions(r *http.Request) (*corev1.PodLogOptions, error) {
	q := r.URL.Query()
	// Backwards compatibility for "tail", as the kubelet has it.
	if tail := q.Get("tail"); tail != "" && tail != "all" && q.Get("tailLines") == "" {
		q.Set("tailLines", tail)
	}
	opts := &corev1.PodLogOptions{
		Container:  q.Get("container"),
		Follow:     queryBool(q, "follow"),
		Previous:   queryBool(q, "previous"),
		Timestamps: queryBool(q, "timestamps"),
	}
	var err error
	if opts.SinceSeconds, err = queryInt(q, "sinceSeconds"); err != nil {
		return nil, err
	}
	if opts.TailLines, err = queryInt(q, "tailLines"); err != nil {
		return nil, err
	}
	if opts.LimitBytes, err = queryInt(q, "limitBytes"); err != nil {
		return nil, err
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, fmt.Errorf("unable to decode query: sinceTime: %w", err)
		}
		opts.SinceTime = &metav1.Time{Time: t}
	}
	if v := q.Get("stream"); v != "" {
		opts.Stream = &v
	}
	return opts, nil
}

func queryBool(q url.Values, key string) bool {
	vs, ok := q[key]
	if !ok {
		return false
	}
	return len(vs) == 0 || (vs[0] != "0" && !strings.EqualFold(vs[0], "false"))
}

func queryInt(q url.Values, key string) (*int64, error) {
	v := q.Get(key)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("unable to decode query: %s: %w", key, err)
	}
	return &n, nil
}

// validateLogOptions checks the rules of upstream's ValidatePodLogOptions;
// it returns "" when opts is valid.
func validateLogOptions(opts *corev1.PodLogOptions) string {
	switch {
	case opts.TailLines != nil && *opts.TailLines < 0:
		return "tailLines: Invalid value: must be greater than or equal to 0"
	case opts.LimitBytes != nil && *opts.LimitBytes < 1:
		return "limitBytes: Invalid value: must be greater than 0"
	case opts.SinceSeconds != nil && opts.SinceTime != nil:
		return "at most one of `sinceTime` or `sinceSeconds` may be specified"
	case opts.SinceSeconds != nil && *opts.SinceSeconds < 1:
		return "sinceSeconds: Invalid value: must be greater than 0"
	case opts.Stream != nil && *opts.Stream != corev1.LogStreamAll:
		// The CRI log reader here serves both streams together only.
		return fmt.Sprintf("stream: Unsupported value: %q: supported values: %q", *opts.Stream, corev1.LogStreamAll)
	}
	return ""
}

// flushWriter flushes the response after every write and remembers
// whether anything was written. It is safe for concurrent writers.
type flushWriter struct {
	w http.ResponseWriter
	f http.Flusher

	mu    sync.Mutex // guards the field below and serializes writes
	wrote bool
}

func (fw *flushWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.wrote = true
	n, err := fw.w.Write(p)
	if fw.f != nil {
		fw.f.Flush()
	}
	return n, err
}

func (fw *flushWriter) written() bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.wrote
}
