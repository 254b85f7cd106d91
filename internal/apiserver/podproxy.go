package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/storage"
)

// pods/log and pods/exec are served by the node agent running the pod
// (internal/agent/kubeletserver, the kubelet's port 10250 API), as
// kube-apiserver serves them: the pod gives the container and the node, the
// Node gives the agent's address (status.addresses, InternalIP first, and
// status.daemonEndpoints.kubeletEndpoint.port), and the request is proxied
// over TLS with the apiserver-kubelet-client certificate
// (Config.KubeletClientCert). The agent's self-signed serving certificate is
// not verified, as kube-apiserver does without
// --kubelet-certificate-authority.
//
// Logs are a plain GET whose body is copied through (flushed per write when
// following). Exec is an upgrade (WebSocket v5.channel.k8s.io or SPDY)
// proxied byte for byte by apimachinery's UpgradeAwareHandler: the agent
// speaks both protocols itself, so no WebSocket-to-SPDY translation is
// needed here. pods/attach and pods/portforward answer 400: process pods
// have no attachable console and port-forward is not implemented.

// defaultKubeletPort is used when a Node does not publish its port.
const defaultKubeletPort = 10250

// kubeletAddressTypes is the order in which a Node's addresses are tried
// (kubeadm's --kubelet-preferred-address-types).
var kubeletAddressTypes = []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeHostName}

var (
	podsLogResource = schema.GroupResource{Resource: "pods/log"}
	nodesResource   = schema.GroupResource{Resource: "nodes"}
)

// newKubeletTransport is the transport to node agents: client certificate,
// agent certificate not verified, no HTTP proxy from the environment, and
// HTTP/1.1 only (SPDY and WebSocket upgrades need it).
func newKubeletTransport(cert *tls.Certificate) *http.Transport {
	if cert == nil {
		return nil
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext: dialer.DialContext,
		TLSClientConfig: &tls.Config{
			Certificates:       []tls.Certificate{*cert},
			InsecureSkipVerify: true, //nolint:gosec // as kube-apiserver without --kubelet-certificate-authority
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{"http/1.1"},
		},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
	}
}

// kubeletLocation is where a pod's node agent listens.
type kubeletLocation struct {
	node string
	host string // host:port
}

// podForStreaming reads the pod named by rq and picks the container, with
// kube-apiserver's errors.
func (s *Server) podForStreaming(rq *request, container string) (*corev1.Pod, string, error) {
	obj, _, err := s.getObject(rq, rq.info.name)
	if err != nil {
		return nil, "", err
	}
	pod := obj.(*corev1.Pod)
	container, err = chooseContainer(pod, container)
	if err != nil {
		return nil, "", err
	}
	return pod, container, nil
}

// chooseContainer returns the named container, or the only one when none
// is named (upstream's validateContainer).
func chooseContainer(pod *corev1.Pod, container string) (string, error) {
	var names []string
	for _, c := range pod.Spec.InitContainers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		names = append(names, c.Name)
	}
	if container == "" {
		switch len(pod.Spec.Containers) {
		case 1:
			return pod.Spec.Containers[0].Name, nil
		case 0:
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s", pod.Name))
		default:
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %s", pod.Name, names))
		}
	}
	for _, n := range names {
		if n == container {
			return container, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, pod.Name))
}

// kubeletFor finds the agent of node name.
func (s *Server) kubeletFor(ctx context.Context, name string) (kubeletLocation, error) {
	res := s.byGR[nodesResource]
	if res == nil {
		return kubeletLocation{}, errors.New("nodes are not served by this API server")
	}
	kv, err := s.store.Get(ctx, res.key("", name))
	if err != nil {
		if storage.IsNotFound(err) {
			return kubeletLocation{}, apierrors.NewNotFound(nodesResource, name)
		}
		return kubeletLocation{}, err
	}
	obj, err := s.decodeKV(res, kv)
	if err != nil {
		return kubeletLocation{}, err
	}
	node := obj.(*corev1.Node)
	port := int(node.Status.DaemonEndpoints.KubeletEndpoint.Port)
	if port <= 0 {
		port = defaultKubeletPort
	}
	for _, t := range kubeletAddressTypes {
		for _, a := range node.Status.Addresses {
			if a.Type == t && a.Address != "" {
				return kubeletLocation{node: name, host: net.JoinHostPort(a.Address, strconv.Itoa(port))}, nil
			}
		}
	}
	return kubeletLocation{}, fmt.Errorf("node %q has no address to reach its agent at (preferred address types %v; known addresses: %v)",
		name, kubeletAddressTypes, node.Status.Addresses)
}

// handleLog serves GET pods/<name>/log.
func (s *Server) handleLog(rq *request) {
	opts, err := parsePodLogOptions(rq.r.URL.Query())
	if err != nil {
		rq.writeError(err)
		return
	}
	if errs := validatePodLogOptions(opts); len(errs) > 0 {
		rq.writeError(apierrors.NewInvalid(schema.GroupKind{Kind: "PodLogOptions"}, rq.info.name, errs))
		return
	}
	pod, container, err := s.podForStreaming(rq, opts.Container)
	if err != nil {
		rq.writeError(err)
		return
	}
	if pod.Spec.NodeName == "" {
		// kube-apiserver has no location then and answers with no content.
		rq.w.WriteHeader(http.StatusNoContent)
		return
	}
	loc, err := s.kubeletFor(rq.ctx, pod.Spec.NodeName)
	if err != nil {
		rq.writeError(err)
		return
	}
	if s.kubeletTransport == nil {
		rq.writeError(errNoKubeletClient)
		return
	}
	q := url.Values{}
	setTrue := func(k string, v bool) {
		if v {
			q.Set(k, "true")
		}
	}
	setTrue("follow", opts.Follow)
	setTrue("previous", opts.Previous)
	setTrue("timestamps", opts.Timestamps)
	setInt := func(k string, v *int64) {
		if v != nil {
			q.Set(k, strconv.FormatInt(*v, 10))
		}
	}
	setInt("sinceSeconds", opts.SinceSeconds)
	setInt("tailLines", opts.TailLines)
	setInt("limitBytes", opts.LimitBytes)
	if opts.SinceTime != nil {
		q.Set("sinceTime", opts.SinceTime.Format(time.RFC3339))
	}
	if opts.Stream != nil {
		q.Set("stream", *opts.Stream)
	}
	u := url.URL{Scheme: "https", Host: loc.host, Path: "/containerLogs/" + pod.Namespace + "/" + pod.Name + "/" + container, RawQuery: q.Encode()}

	req, err := http.NewRequestWithContext(rq.ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		rq.writeError(err)
		return
	}
	client := &http.Client{
		Transport:     s.kubeletTransport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("redirects forbidden") },
	}
	resp, err := client.Do(req)
	if err != nil {
		rq.writeError(kubeletUnreachable(loc, err))
		return
	}
	defer resp.Body.Close()
	if err := checkKubeletResponse(resp, podsLogResource, pod.Name); err != nil {
		rq.writeError(err)
		return
	}
	rq.w.Header().Set("Content-Type", "text/plain")
	rq.w.WriteHeader(http.StatusOK)
	var dst io.Writer = rq.w
	if f, ok := rq.w.(http.Flusher); ok && opts.Follow {
		dst = flushingWriter{w: rq.w, f: f}
	}
	if _, err := io.Copy(dst, resp.Body); err != nil && rq.ctx.Err() == nil {
		s.log.Debug("pod log stream ended", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// handleExec serves pods/<name>/exec (GET for WebSocket, POST for SPDY).
func (s *Server) handleExec(rq *request) {
	q := rq.r.URL.Query()
	opts := corev1.PodExecOptions{
		Container: q.Get("container"),
		Command:   q["command"],
		Stdin:     queryBool(q, "stdin"),
		Stdout:    queryBool(q, "stdout"),
		Stderr:    queryBool(q, "stderr"),
		TTY:       queryBool(q, "tty"),
	}
	if len(opts.Command) == 0 {
		rq.writeError(apierrors.NewBadRequest("you must specify a command"))
		return
	}
	if !opts.Stdin && !opts.Stdout && !opts.Stderr {
		rq.writeError(apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr"))
		return
	}
	pod, container, err := s.podForStreaming(rq, opts.Container)
	if err != nil {
		rq.writeError(err)
		return
	}
	if pod.Spec.NodeName == "" {
		rq.writeError(apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name)))
		return
	}
	loc, err := s.kubeletFor(rq.ctx, pod.Spec.NodeName)
	if err != nil {
		rq.writeError(err)
		return
	}
	if s.kubeletTransport == nil {
		rq.writeError(errNoKubeletClient)
		return
	}
	kq := url.Values{}
	for _, p := range []struct {
		name string
		on   bool
	}{{"input", opts.Stdin}, {"output", opts.Stdout}, {"error", opts.Stderr}, {"tty", opts.TTY}} {
		if p.on {
			kq.Set(p.name, "1")
		}
	}
	kq["command"] = opts.Command
	u := &url.URL{Scheme: "https", Host: loc.host, Path: "/exec/" + pod.Namespace + "/" + pod.Name + "/" + container, RawQuery: kq.Encode()}
	h := proxy.NewUpgradeAwareHandler(u, s.kubeletTransport, false, true, upgradeResponder{rq: rq, loc: loc})
	h.RejectForwardingRedirects = true
	h.ServeHTTP(rq.w, rq.r)
}

var errNoKubeletClient = apierrors.NewServiceUnavailable(
	"this API server has no kubelet client certificate configured, so it cannot reach node agents for pods/log and pods/exec")

// upgradeResponder reports proxy failures (agent unreachable) as Status.
type upgradeResponder struct {
	rq  *request
	loc kubeletLocation
}

func (r upgradeResponder) Error(_ http.ResponseWriter, _ *http.Request, err error) {
	r.rq.writeError(kubeletUnreachable(r.loc, err))
}

// kubeletUnreachable is the 500 for a node agent that could not be reached.
func kubeletUnreachable(loc kubeletLocation, err error) error {
	return apierrors.NewInternalError(fmt.Errorf("error talking to the agent of node %q at %s: %w", loc.node, loc.host, err))
}

// checkKubeletResponse turns a non-2xx answer of the agent into a Status
// (kube-apiserver's GenericHttpResponseChecker).
func checkKubeletResponse(resp *http.Response, gr schema.GroupResource, name string) error {
	if resp.StatusCode >= http.StatusOK && resp.StatusCode <= http.StatusPartialContent {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 50000))
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	text := strings.TrimSpace(string(body))
	switch resp.StatusCode {
	case http.StatusInternalServerError:
		return apierrors.NewInternalError(errors.New(text))
	case http.StatusBadRequest:
		return apierrors.NewBadRequest(text)
	}
	return apierrors.NewGenericServerResponse(resp.StatusCode, "", gr, name, text, 0, false)
}

// parsePodLogOptions decodes PodLogOptions from query parameters.
func parsePodLogOptions(q url.Values) (*corev1.PodLogOptions, error) {
	opts := &corev1.PodLogOptions{
		Container:                    q.Get("container"),
		Follow:                       queryBool(q, "follow"),
		Previous:                     queryBool(q, "previous"),
		Timestamps:                   queryBool(q, "timestamps"),
		InsecureSkipTLSVerifyBackend: queryBool(q, "insecureSkipTLSVerifyBackend"),
	}
	for _, p := range []struct {
		name string
		dst  **int64
	}{{"sinceSeconds", &opts.SinceSeconds}, {"tailLines", &opts.TailLines}, {"limitBytes", &opts.LimitBytes}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("%s: %v", p.name, err))
		}
		*p.dst = &n
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("sinceTime: %v", err))
		}
		opts.SinceTime = &metav1.Time{Time: t}
	}
	if v := q.Get("stream"); v != "" {
		opts.Stream = &v
	}
	return opts, nil
}

// validatePodLogOptions has the rules of upstream's ValidatePodLogOptions.
func validatePodLogOptions(o *corev1.PodLogOptions) field.ErrorList {
	var errs field.ErrorList
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, field.Invalid(field.NewPath("tailLines"), *o.TailLines, "must be greater than or equal to 0"))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("limitBytes"), *o.LimitBytes, "must be greater than 0"))
	}
	switch {
	case o.SinceSeconds != nil && o.SinceTime != nil:
		errs = append(errs, field.Forbidden(field.NewPath(""), "at most one of `sinceTime` or `sinceSeconds` may be specified"))
	case o.SinceSeconds != nil && *o.SinceSeconds < 1:
		errs = append(errs, field.Invalid(field.NewPath("sinceSeconds"), *o.SinceSeconds, "must be greater than 0"))
	}
	if o.Stream != nil {
		switch *o.Stream {
		case corev1.LogStreamAll, corev1.LogStreamStdout, corev1.LogStreamStderr:
		default:
			errs = append(errs, field.NotSupported(field.NewPath("stream"), *o.Stream,
				[]string{corev1.LogStreamAll, corev1.LogStreamStdout, corev1.LogStreamStderr}))
		}
	}
	return errs
}

// flushingWriter flushes after every write (followed logs).
type flushingWriter struct {
	w io.Writer
	f http.Flusher
}

func (fw flushingWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	fw.f.Flush()
	return n, err
}
