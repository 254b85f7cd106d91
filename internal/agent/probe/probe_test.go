package probe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	grpchealth "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// serverPort starts an HTTP server on 127.0.0.1 and returns its port.
func serverPort(t *testing.T, h http.Handler) int {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

// closedPort returns a port on 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func httpProbe(port intstr.IntOrString, path string, headers ...corev1.HTTPHeader) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: port, Path: path, HTTPHeaders: headers}}}
}

func TestHTTP(t *testing.T) {
	var seen *http.Request
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		seen = r
		_, _ = w.Write([]byte("fine"))
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad", http.StatusServiceUnavailable) })
	mux.HandleFunc("/redirect-local", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/redirect-away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	port := serverPort(t, mux)
	target := Target{PodIP: loopback, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		probe   *corev1.Probe
		want    Result
		msg     string // substring
		wantErr bool
	}{
		{"200", httpProbe(intstr.FromInt32(int32(port)), "/ok"), Success, "fine", false},
		{"named port", httpProbe(intstr.FromString("http"), "/ok"), Success, "fine", false},
		{"503", httpProbe(intstr.FromInt32(int32(port)), "/fail"), Failure, "HTTP probe failed with statuscode: 503", false},
		{"404", httpProbe(intstr.FromInt32(int32(port)), "/nope"), Failure, "statuscode: 404", false},
		{"local redirect followed", httpProbe(intstr.FromInt32(int32(port)), "/redirect-local"), Success, "fine", false},
		{"redirect to another host not followed", httpProbe(intstr.FromInt32(int32(port)), "/redirect-away"), Success, "Probe terminated redirects", false},
		{"timeout", httpProbe(intstr.FromInt32(int32(port)), "/slow"), Failure, "", false},
		{"refused", httpProbe(intstr.FromInt32(int32(closedPort(t))), "/"), Failure, "refused", false},
		{"unknown named port", httpProbe(intstr.FromString("metrics"), "/ok"), Unknown, "", true},
		{"bad port number", httpProbe(intstr.FromInt32(0), "/ok"), Unknown, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, msg, err := Do(ctx, tc.probe, target)
			if (err != nil) != tc.wantErr || got != tc.want || !strings.Contains(msg, tc.msg) {
				t.Fatalf("Do = %v, %q, %v; want %v, %q, error %v", got, msg, err, tc.want, tc.msg, tc.wantErr)
			}
		})
	}

	// Path with a query, headers, Host override, default headers.
	p := httpProbe(intstr.FromString("http"), "/ok?x=1",
		corev1.HTTPHeader{Name: "X-Custom", Value: "a"},
		corev1.HTTPHeader{Name: "X-Custom", Value: "b"},
		corev1.HTTPHeader{Name: "Host", Value: "example.test"})
	if got, _, err := Do(ctx, p, target); got != Success || err != nil {
		t.Fatalf("Do = %v, %v", got, err)
	}
	if seen.URL.RawQuery != "x=1" || strings.Join(seen.Header.Values("X-Custom"), ",") != "a,b" ||
		seen.Host != "example.test" || seen.UserAgent() != UserAgent || seen.Header.Get("Accept") != "*/*" {
		t.Errorf("request: query %q headers %v host %q", seen.URL.RawQuery, seen.Header, seen.Host)
	}
	// An explicit User-Agent wins; an empty Accept removes the header.
	p = httpProbe(intstr.FromString("http"), "/ok",
		corev1.HTTPHeader{Name: "User-Agent", Value: "mine"}, corev1.HTTPHeader{Name: "Accept", Value: ""})
	if got, _, err := Do(ctx, p, target); got != Success || err != nil {
		t.Fatalf("Do = %v, %v", got, err)
	}
	if _, ok := seen.Header["Accept"]; seen.UserAgent() != "mine" || ok {
		t.Errorf("headers: %v", seen.Header)
	}
}

func TestTCP(t *testing.T) {
	port := serverPort(t, http.NotFoundHandler())
	ports := []corev1.ContainerPort{{Name: "web", ContainerPort: int32(port)}}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		port    intstr.IntOrString
		host    string
		podIP   netip.Addr
		want    Result
		wantErr bool
	}{
		{"open", intstr.FromInt32(int32(port)), "", loopback, Success, false},
		{"named", intstr.FromString("web"), "", loopback, Success, false},
		{"explicit host", intstr.FromInt32(int32(port)), "127.0.0.1", netip.Addr{}, Success, false},
		{"closed", intstr.FromInt32(int32(closedPort(t))), "", loopback, Failure, false},
		{"no pod IP", intstr.FromInt32(int32(port)), "", netip.Addr{}, Unknown, true},
		{"unknown name", intstr.FromString("db"), "", loopback, Unknown, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: tc.port, Host: tc.host}}}
			got, msg, err := Do(ctx, p, Target{PodIP: tc.podIP, Ports: ports})
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("Do = %v, %q, %v; want %v (error %v)", got, msg, err, tc.want, tc.wantErr)
			}
		})
	}
}

// fakeExec runs nothing: it answers by the command's first word.
func fakeExec(ctx context.Context, cmd []string) (int, []byte, error) {
	switch cmd[0] {
	case "true":
		return 0, []byte("ok\n"), nil
	case "exit":
		code, _ := strconv.Atoi(cmd[1])
		return code, []byte("exited " + cmd[1]), nil
	case "hang":
		<-ctx.Done()
		return -1, nil, ctx.Err()
	default:
		return -1, nil, errors.New("no such container")
	}
}

func TestExec(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cmd     []string
		exec    func(context.Context, []string) (int, []byte, error)
		want    Result
		msg     string
		wantErr bool
	}{
		{"exit 0", []string{"true"}, fakeExec, Success, "ok", false},
		{"exit 1", []string{"exit", "1"}, fakeExec, Failure, "exited 1", false},
		{"exit 137", []string{"exit", "137"}, fakeExec, Failure, "exited 137", false},
		{"timeout", []string{"hang"}, fakeExec, Failure, "timed out", false},
		{"cannot run", []string{"gone"}, fakeExec, Unknown, "", true},
		{"no exec support", []string{"true"}, nil, Unknown, "", true},
		{"empty command", nil, fakeExec, Unknown, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: tc.cmd}}}
			got, msg, err := Do(ctx, p, Target{Exec: tc.exec})
			if got != tc.want || (err != nil) != tc.wantErr || !strings.Contains(msg, tc.msg) {
				t.Fatalf("Do = %v, %q, %v; want %v, %q (error %v)", got, msg, err, tc.want, tc.msg, tc.wantErr)
			}
		})
	}
}

func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", grpchealth.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", grpchealth.HealthCheckResponse_NOT_SERVING)
	grpchealth.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	db := "db"
	for _, tc := range []struct {
		name    string
		port    int32
		service *string
		want    Result
		msg     string
	}{
		{"serving", port, nil, Success, "service healthy"},
		{"not serving", port, &db, Failure, "NOT_SERVING"},
		{"nothing listening", int32(closedPort(t)), nil, Failure, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: tc.port, Service: tc.service}}}
			got, msg, err := Do(context.Background(), p, Target{PodIP: loopback})
			if err != nil || got != tc.want || !strings.Contains(msg, tc.msg) {
				t.Fatalf("Do = %v, %q, %v; want %v, %q", got, msg, err, tc.want, tc.msg)
			}
		})
	}
}

func TestDoEdges(t *testing.T) {
	if got, _, err := Do(context.Background(), nil, Target{}); got != Success || err != nil {
		t.Errorf("nil probe: %v, %v", got, err)
	}
	if got, _, err := Do(context.Background(), &corev1.Probe{}, Target{}); got != Unknown || err == nil {
		t.Errorf("probe without handler: %v, %v", got, err)
	}
	d := withDefaults(&corev1.Probe{})
	if d.TimeoutSeconds != 1 || d.PeriodSeconds != 10 || d.SuccessThreshold != 1 || d.FailureThreshold != 3 {
		t.Errorf("defaults: %+v", d)
	}
	for k, want := range map[Kind]Result{Readiness: Failure, Liveness: Success, Startup: Unknown} {
		if got := InitialResult(k); got != want {
			t.Errorf("InitialResult(%s) = %v, want %v", k, got, want)
		}
	}
}
