package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Health tracks sync progress for /healthz and /livez, with kube-proxy's
// semantics: the proxy is unhealthy when a change has been waiting for
// longer than Timeout (2 × syncPeriod) without a successful sync; /healthz
// additionally fails while the Node is being deleted.
type Health struct {
	// Timeout is how long a queued change may wait for a sync.
	Timeout time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time

	mu           sync.Mutex // guards the fields below
	lastUpdated  time.Time
	oldestQueued time.Time
	nodeDeleting bool
}

// NewHealth returns a Health with the given timeout.
func NewHealth(timeout time.Duration) *Health {
	return &Health{Timeout: timeout, Now: time.Now}
}

// Queued records that a change is waiting for a sync.
func (h *Health) Queued() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.oldestQueued.IsZero() {
		h.oldestQueued = h.Now()
	}
}

// Updated records a successful sync covering every queued change.
func (h *Health) Updated() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastUpdated = h.Now()
	h.oldestQueued = time.Time{}
}

// SetNodeDeleting records whether this node is being deleted.
func (h *Health) SetNodeDeleting(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeDeleting = v
}

// Healthy reports the /livez condition and the last successful sync.
func (h *Health) Healthy() (ok bool, lastUpdated, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now = h.Now()
	ok = h.oldestQueued.IsZero() || now.Sub(h.oldestQueued) <= h.Timeout
	return ok, h.lastUpdated, now
}

type healthReply struct {
	LastUpdated  string `json:"lastUpdated"`
	CurrentTime  string `json:"currentTime"`
	NodeEligible *bool  `json:"nodeEligible,omitempty"`
}

func (h *Health) serve(w http.ResponseWriter, withNode bool, counter func(code string)) {
	ok, last, now := h.Healthy()
	reply := healthReply{LastUpdated: last.UTC().Format(time.RFC3339Nano), CurrentTime: now.UTC().Format(time.RFC3339Nano)}
	if withNode {
		h.mu.Lock()
		eligible := !h.nodeDeleting
		h.mu.Unlock()
		reply.NodeEligible = &eligible
		ok = ok && eligible
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	counter(strconv.Itoa(code))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(reply)
}

// HealthzHandler serves /healthz and /livez (the :10256 server).
func HealthzHandler(h *Health, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		h.serve(w, true, func(c string) { m.Healthz.WithLabelValues(c).Inc() })
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		h.serve(w, false, func(c string) { m.Livez.WithLabelValues(c).Inc() })
	})
	return mux
}

// MetricsHandler serves /metrics and /proxyMode (the :10249 server); mode
// is asked at each request, so a live mode switch shows at once.
func MetricsHandler(m *Metrics, mode func() string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, mode())
	})
	return mux
}
