package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ServiceHealth runs one HTTP server per healthCheckNodePort of an
// externalTrafficPolicy Local Service. Load balancers probe it to learn
// whether this node has local endpoints: 200 with the count when it has,
// 503 when it has none (kube-proxy's reply format).
type ServiceHealth struct {
	// BindAddrs are the addresses to listen on ("" = all, the default);
	// tests use 127.0.0.1.
	BindAddrs []string
	// Healthy, when set, is consulted too: an unhealthy proxy answers 503.
	Healthy func() bool
	Log     *slog.Logger

	mu      sync.Mutex // guards the fields below
	servers map[int32]*hcServer
}

type hcServer struct {
	svc       types.NamespacedName
	listeners []net.Listener
	srv       *http.Server
	local     int // guarded by ServiceHealth.mu
}

type hcReply struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// Sync starts and stops servers to match st: one per HealthCheckNodePort,
// answering with the Service's local ready endpoint count. Errors opening
// ports are returned (joined) after the other ports were handled.
func (h *ServiceHealth) Sync(st *State) error {
	want := map[int32]types.NamespacedName{}
	localEps := map[types.NamespacedName]map[Endpoint]bool{}
	for n, sp := range st.Services {
		if sp.HealthCheckNodePort == 0 {
			continue
		}
		want[sp.HealthCheckNodePort] = n.NamespacedName
		set := localEps[n.NamespacedName]
		if set == nil {
			set = map[Endpoint]bool{}
			localEps[n.NamespacedName] = set
		}
		for _, e := range st.Endpoints[n] {
			if e.IsLocal && e.Ready {
				set[Endpoint{IP: e.IP}] = true // count pods, not ports
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.servers == nil {
		h.servers = map[int32]*hcServer{}
	}
	for port, s := range h.servers {
		if nn, ok := want[port]; !ok || nn != s.svc {
			_ = s.srv.Close()
			delete(h.servers, port)
		}
	}
	var errs []error
	for port, nn := range want {
		if s, ok := h.servers[port]; ok {
			s.local = len(localEps[nn])
			continue
		}
		s, err := h.startLocked(port, nn)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.local = len(localEps[nn])
		h.servers[port] = s
	}
	return errors.Join(errs...)
}

func (h *ServiceHealth) startLocked(port int32, nn types.NamespacedName) (*hcServer, error) {
	s := &hcServer{svc: nn}
	addrs := h.BindAddrs
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(int(port))))
		if err != nil {
			for _, l := range s.listeners {
				_ = l.Close()
			}
			return nil, fmt.Errorf("proxy: healthCheckNodePort %d for %s: %w", port, nn, err)
		}
		s.listeners = append(s.listeners, l)
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		n := s.local
		h.mu.Unlock()
		healthy := h.Healthy == nil || h.Healthy()
		var r hcReply
		r.Service.Namespace, r.Service.Name = nn.Namespace, nn.Name
		r.LocalEndpoints, r.ServiceProxyHealthy = n, healthy
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if n == 0 || !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		} else {
			w.WriteHeader(http.StatusOK)
		}
		_ = json.NewEncoder(w).Encode(r)
	})}
	for _, l := range s.listeners {
		go func() {
			if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && h.Log != nil {
				h.Log.Error("healthCheckNodePort server", "port", port, "err", err)
			}
		}()
	}
	return s, nil
}

// Ports returns the ports currently served (for tests and listings).
func (h *ServiceHealth) Ports() []int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int32, 0, len(h.servers))
	for p := range h.servers {
		out = append(out, p)
	}
	return out
}

// Close stops every server.
func (h *ServiceHealth) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, s := range h.servers {
		_ = s.srv.Close()
		delete(h.servers, p)
	}
}
