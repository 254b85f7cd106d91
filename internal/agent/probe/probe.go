package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Result is a probe's outcome.
type Result int

// Results. Unknown is a startup probe's initial result.
const (
	Unknown Result = iota
	Success
	Failure
)

func (r Result) String() string {
	switch r {
	case Success:
		return "Success"
	case Failure:
		return "Failure"
	default:
		return "Unknown"
	}
}

// UserAgent is sent by HTTP and gRPC probes (the kubelet's is
// "kube-probe/<major>.<minor>").
const UserAgent = "kube-probe/1.37"

// maxOutput bounds the response body or command output kept as a probe's
// message (upstream's 10KB).
const maxOutput = 10 << 10

// Target is what a probe runs against.
type Target struct {
	PodIP netip.Addr
	Ports []corev1.ContainerPort // the container's ports, for named ports
	// Exec runs cmd in the container and returns its exit code and
	// combined output; err is only for a command that could not be run.
	// It must stop the command when ctx ends.
	Exec func(ctx context.Context, cmd []string) (exitCode int, output []byte, err error)
}

// Upstream's defaults for unset probe fields.
const (
	defaultTimeoutSeconds   = 1
	defaultPeriodSeconds    = 10
	defaultSuccessThreshold = 1
	defaultFailureThreshold = 3
)

// withDefaults returns a copy of p with zero timing fields defaulted.
func withDefaults(p *corev1.Probe) *corev1.Probe {
	c := p.DeepCopy()
	if c.TimeoutSeconds <= 0 {
		c.TimeoutSeconds = defaultTimeoutSeconds
	}
	if c.PeriodSeconds <= 0 {
		c.PeriodSeconds = defaultPeriodSeconds
	}
	if c.SuccessThreshold <= 0 {
		c.SuccessThreshold = defaultSuccessThreshold
	}
	if c.FailureThreshold <= 0 {
		c.FailureThreshold = defaultFailureThreshold
	}
	if c.InitialDelaySeconds < 0 {
		c.InitialDelaySeconds = 0
	}
	return c
}

// Do runs one probe. A nil probe succeeds. The error is set (with result
// Unknown) when the probe could not be run at all; a probe that ran and
// failed is Failure with a message and no error.
func Do(ctx context.Context, p *corev1.Probe, t Target) (Result, string, error) {
	if p == nil {
		return Success, "", nil
	}
	timeout := time.Duration(withDefaults(p).TimeoutSeconds) * time.Second
	switch {
	case p.Exec != nil:
		return doExec(ctx, p.Exec.Command, t, timeout)
	case p.HTTPGet != nil:
		return doHTTP(ctx, p.HTTPGet, t, timeout)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, t.Ports)
		if err != nil {
			return Unknown, "", err
		}
		host, err := hostOf(p.TCPSocket.Host, t)
		if err != nil {
			return Unknown, "", err
		}
		return doTCP(ctx, net.JoinHostPort(host, strconv.Itoa(port)), timeout)
	case p.GRPC != nil:
		host, err := hostOf("", t)
		if err != nil {
			return Unknown, "", err
		}
		service := ""
		if p.GRPC.Service != nil {
			service = *p.GRPC.Service
		}
		return doGRPC(ctx, net.JoinHostPort(host, strconv.Itoa(int(p.GRPC.Port))), service, timeout)
	default:
		return Unknown, "", errors.New("probe: missing probe handler")
	}
}

// resolvePort resolves a probe's port: a number, or the name of one of the
// container's ports (whatever its protocol, as upstream).
func resolvePort(port intstr.IntOrString, ports []corev1.ContainerPort) (int, error) {
	n := -1
	switch port.Type {
	case intstr.Int:
		n = port.IntValue()
	case intstr.String:
		found := false
		for _, p := range ports {
			if p.Name == port.StrVal {
				n, found = int(p.ContainerPort), true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("probe: port %q not found", port.StrVal)
		}
	}
	if n <= 0 || n >= 65536 {
		return 0, fmt.Errorf("probe: invalid port number: %v", n)
	}
	return n, nil
}

// hostOf returns host, or the pod IP when host is empty.
func hostOf(host string, t Target) (string, error) {
	if host != "" {
		return host, nil
	}
	if !t.PodIP.IsValid() {
		return "", errors.New("probe: pod has no IP")
	}
	return t.PodIP.String(), nil
}

// dialer is upstream's probe dialer: SO_LINGER 1s, so probe connections
// do not pile up in TIME_WAIT.
func dialer() *net.Dialer {
	return &net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 1})
			})
		},
	}
}

func doExec(ctx context.Context, cmd []string, t Target, timeout time.Duration) (Result, string, error) {
	if t.Exec == nil {
		return Unknown, "", errors.New("probe: exec probes are not supported for this container")
	}
	if len(cmd) == 0 {
		return Unknown, "", errors.New("probe: exec probe without a command")
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, out, err := t.Exec(cctx, cmd)
	if len(out) > maxOutput {
		out = out[:maxOutput]
	}
	if ctx.Err() != nil {
		return Unknown, "", ctx.Err()
	}
	if cctx.Err() != nil {
		return Failure, fmt.Sprintf("command %q timed out", strings.Join(cmd, " ")), nil
	}
	if err != nil {
		return Unknown, "", fmt.Errorf("probe: exec %q: %w", strings.Join(cmd, " "), err)
	}
	if code != 0 {
		return Failure, string(out), nil
	}
	return Success, string(out), nil
}

func doHTTP(ctx context.Context, g *corev1.HTTPGetAction, t Target, timeout time.Duration) (Result, string, error) {
	port, err := resolvePort(g.Port, t.Ports)
	if err != nil {
		return Unknown, "", err
	}
	host, err := hostOf(g.Host, t)
	if err != nil {
		return Unknown, "", err
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	u, err := url.Parse(g.Path)
	if err != nil {
		u = &url.URL{Path: g.Path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Unknown, "", fmt.Errorf("probe: %w", err)
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", UserAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	} else if req.Header.Get("Accept") == "" {
		req.Header.Del("Accept")
	}
	req.Host = req.Header.Get("Host")
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes do not verify, as upstream
		DisableKeepAlives:  true,
		DisableCompression: true,
		Proxy:              nil,
		DialContext:        dialer().DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Unknown, "", ctx.Err()
		}
		return Failure, err.Error(), nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOutput))
	if err != nil && ctx.Err() == nil {
		return Failure, err.Error(), nil
	}
	if resp.StatusCode >= http.StatusOK && resp.StatusCode < http.StatusBadRequest {
		if resp.StatusCode >= http.StatusMultipleChoices {
			return Success, "Probe terminated redirects, Response body: " + string(body), nil
		}
		return Success, string(body), nil
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode), nil
}

func doTCP(ctx context.Context, addr string, timeout time.Duration) (Result, string, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dialer().DialContext(cctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return Unknown, "", ctx.Err()
		}
		return Failure, err.Error(), nil
	}
	_ = c.Close()
	return Success, "", nil
}

func doGRPC(ctx context.Context, addr, service string, timeout time.Duration) (Result, string, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithUserAgent(UserAgent),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return dialer().DialContext(ctx, "tcp", a)
		}),
	)
	if err != nil {
		return Failure, fmt.Sprintf("error: failed to connect service at %q: %+v", addr, err), nil
	}
	defer conn.Close()
	resp, err := grpchealth.NewHealthClient(conn).Check(cctx, &grpchealth.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		if ctx.Err() != nil {
			return Unknown, "", ctx.Err()
		}
		switch status.Code(err) {
		case codes.Unimplemented:
			return Failure, "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): " + status.Convert(err).Message(), nil
		case codes.DeadlineExceeded:
			return Failure, fmt.Sprintf("timeout: failed to connect service %q or health rpc did not complete within %v", addr, timeout), nil
		}
		return Failure, fmt.Sprintf("error: health rpc probe failed: %+v", err), nil
	}
	if resp.GetStatus() != grpchealth.HealthCheckResponse_SERVING {
		return Failure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus().String()), nil
	}
	return Success, "service healthy", nil
}
