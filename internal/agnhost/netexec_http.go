package agnhost

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// dialTimeout bounds each /dial try, as upstream's 5s client timeout and
// UDP/SCTP read deadline do.
const dialTimeout = 5 * time.Second

// handler routes netexec's HTTP endpoints; with HTTPOverride every request
// is served as a GET of that path instead.
func (n *Netexec) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", n.root)
	mux.HandleFunc("/clientip", n.clientIP)
	mux.HandleFunc("/serverport", n.serverPort)
	mux.HandleFunc("/header", n.header)
	mux.HandleFunc("/dial", n.dial)
	mux.HandleFunc("/echo", n.echo)
	mux.HandleFunc("/exit", n.exitEndpoint)
	mux.HandleFunc("/healthz", n.healthz)
	mux.HandleFunc("/readyz", n.readyz)
	mux.HandleFunc("/hostname", n.hostname)
	mux.HandleFunc("/hostName", n.hostname)
	mux.HandleFunc("/envvar", n.envvar)
	mux.HandleFunc("/redirect", n.redirect)
	mux.HandleFunc("/shell", n.shell)
	mux.HandleFunc("/upload", n.upload)
	mux.HandleFunc("/shutdown", n.shutdown)
	if n.cfg.HTTPOverride == "" {
		return mux
	}
	override := n.cfg.HTTPOverride
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, override, nil)
		if err != nil {
			http.Error(w, fmt.Sprintf("override request failed: %v", err), http.StatusInternalServerError)
			return
		}
		// Unlike upstream, keep who asked: /clientip and /header stay useful.
		req.RemoteAddr, req.Header, req.Host = r.RemoteAddr, r.Header, r.Host
		mux.ServeHTTP(w, req)
	})
}

func (n *Netexec) logRequest(r *http.Request) {
	n.log.Info("request", "method", r.Method, "uri", r.URL.RequestURI(), "client", r.RemoteAddr)
}

func (n *Netexec) root(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	fmt.Fprintf(w, "NOW: %v", time.Now())
}

func (n *Netexec) clientIP(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	fmt.Fprint(w, r.RemoteAddr)
}

func (n *Netexec) serverPort(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	fmt.Fprint(w, n.httpPort)
}

func (n *Netexec) hostname(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	fmt.Fprint(w, hostname())
}

func (n *Netexec) echo(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	msg, codeString := r.FormValue("msg"), r.FormValue("code")
	if codeString != "" {
		code, err := strconv.Atoi(codeString)
		if err != nil {
			fmt.Fprintf(w, "argument 'code' must be an integer or empty, got %q\n", codeString)
			return
		}
		w.WriteHeader(code)
	}
	fmt.Fprint(w, msg)
}

func (n *Netexec) header(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	if key := r.FormValue("key"); key != "" {
		fmt.Fprint(w, r.Header.Get(key))
		return
	}
	data, err := json.Marshal(r.Header)
	if err != nil {
		fmt.Fprintf(w, "error marshalling header, err: %v", err)
		return
	}
	w.Write(data)
}

// envvar serves ?var=NAME (upstream's parameter; ?key= is accepted too).
func (n *Netexec) envvar(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	name := r.FormValue("var")
	if name == "" {
		name = r.FormValue("key")
	}
	if name == "" {
		http.Error(w, "'var' query parameter is required", http.StatusBadRequest)
		return
	}
	val, ok := os.LookupEnv(name)
	if !ok {
		http.Error(w, fmt.Sprintf("env var %q is not set", name), http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, val)
}

func (n *Netexec) healthz(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	if n.ready.Load() {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusPreconditionFailed)
}

// readyz is 200 "ok" while a UDP or SCTP server runs, 412 before, and 503
// "shutting down" once SIGTERM arrived, so that a terminating pod leaves the
// ready endpoints while still serving.
func (n *Netexec) readyz(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	select {
	case <-n.terminating:
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("shutting down"))
	default:
		if n.ready.Load() {
			w.Write([]byte("ok"))
			return
		}
		w.WriteHeader(http.StatusPreconditionFailed)
	}
}

func (n *Netexec) redirect(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	location, codeString := r.FormValue("location"), r.FormValue("code")
	code := http.StatusFound
	if codeString != "" {
		var err error
		if code, err = strconv.Atoi(codeString); err != nil {
			fmt.Fprintf(w, "argument 'code' must be an integer or empty, got %q\n", codeString)
			return
		}
	}
	http.Redirect(w, r, location, code)
}

// exitEndpoint serves /exit?code=&timeout=&wait=: after wait, exit with code,
// letting connections finish for timeout; timeout 0 exits at once and, as
// upstream's os.Exit does, drops this request without an answer.
func (n *Netexec) exitEndpoint(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	waitString, timeoutString, codeString := r.FormValue("wait"), r.FormValue("timeout"), r.FormValue("code")
	timeout, err := time.ParseDuration(timeoutString)
	if err != nil && timeoutString != "" {
		fmt.Fprintf(w, "argument 'timeout' must be a valid golang duration or empty, got %q\n", timeoutString)
		return
	}
	wait, err := time.ParseDuration(waitString)
	if err != nil && waitString != "" {
		fmt.Fprintf(w, "argument 'wait' must be a valid golang duration or empty, got %q\n", waitString)
		return
	}
	code, err := strconv.Atoi(codeString)
	if err != nil && codeString != "" {
		fmt.Fprintf(w, "argument 'code' must be an integer [0-127] or empty, got %q\n", codeString)
		return
	}
	n.log.Info("exit requested", "wait", wait, "timeout", timeout, "code", code)
	if !sleepCtx(r.Context(), wait) {
		return
	}
	if timeout == 0 {
		dropConnection(w)
	}
	n.requestExit(exitRequest{code: code, grace: timeout})
}

// shutdown serves /shutdown: exit 0 at once.
func (n *Netexec) shutdown(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	dropConnection(w)
	n.requestExit(exitRequest{code: 0})
}

// dropConnection closes the client connection without a response, which
// is what a client of upstream sees when the process exits mid-request.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}

// shell serves /shell?shellCommand= (or ?cmd=): {"output","error"}, 200
// whatever the command did (upstream's help text promises 417; its code
// does not).
func (n *Netexec) shell(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	cmd := r.FormValue("shellCommand")
	if cmd == "" {
		cmd = r.FormValue("cmd")
	}
	out, err := exec.CommandContext(r.Context(), n.cfg.Shell, "-c", cmd).CombinedOutput()
	output := map[string]string{}
	if len(out) > 0 {
		output["output"] = string(out)
	}
	if err != nil {
		output["error"] = err.Error()
	}
	writeJSON(w, http.StatusOK, output)
}

// upload serves /upload: the multipart "file" is written to UploadDir.
func (n *Netexec) upload(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	fail := func(msg string, err error) {
		n.log.Warn(msg, "err", err)
		writeJSON(w, http.StatusOK, map[string]string{"error": msg})
	}
	file, _, err := r.FormFile("file")
	if err != nil {
		fail("Unable to upload file.", err)
		return
	}
	defer file.Close()
	f, err := os.CreateTemp(n.cfg.UploadDir, "upload")
	if err != nil {
		fail("Unable to open file for write", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, file); err != nil {
		fail("Unable to write file.", err)
		return
	}
	if err := os.Chmod(f.Name(), 0o700); err != nil {
		fail("Unable to chmod file.", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"output": f.Name()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("response could not be serialized. %v", err), http.StatusExpectationFailed)
		return
	}
	w.WriteHeader(code)
	w.Write(data)
}

// DialResult is /dial's JSON answer. Empty lists are left out.
type DialResult struct {
	Responses []string `json:"responses,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// dial serves /dial?request=&protocol=&host=&port=&tries=: tries requests
// from this server to host:port. HTTP GETs http://host:port/<request> and
// returns the body whatever the status; UDP and SCTP send request as a
// command and return the reply. Each try uses a new connection, so tries
// through a Service spread over its endpoints.
func (n *Netexec) dial(w http.ResponseWriter, r *http.Request) {
	n.logRequest(r)
	q := r.URL.Query()
	host, port, request, protocol, tryParam := q.Get("host"), q.Get("port"), q.Get("request"), q.Get("protocol"), q.Get("tries")
	tries := 1
	if tryParam != "" {
		var err error
		if tries, err = strconv.Atoi(tryParam); err != nil {
			http.Error(w, fmt.Sprintf("tries parameter is invalid. %v", err), http.StatusBadRequest)
			return
		}
	}
	if request == "" {
		http.Error(w, "request parameter not specified.", http.StatusBadRequest)
		return
	}
	hostPort := net.JoinHostPort(host, port)
	var (
		dialer func(ctx context.Context, request, addr string) (string, error)
		addr   string
	)
	switch strings.ToLower(protocol) {
	case "", "http":
		a, err := net.ResolveTCPAddr("tcp", hostPort)
		if err != nil {
			http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
			return
		}
		dialer, addr = dialHTTP, a.String()
	case "udp":
		a, err := net.ResolveUDPAddr("udp", hostPort)
		if err != nil {
			http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
			return
		}
		dialer, addr = dialUDP, a.String()
	case "sctp":
		a, err := net.ResolveTCPAddr("tcp", hostPort)
		if err != nil {
			http.Error(w, fmt.Sprintf("host and/or port param are invalid. %v", err), http.StatusBadRequest)
			return
		}
		dialer, addr = dialSCTPCommand, a.String()
	default:
		http.Error(w, fmt.Sprintf("unsupported protocol. %s", protocol), http.StatusBadRequest)
		return
	}
	var res DialResult
	for i := 0; i < tries && r.Context().Err() == nil; i++ {
		resp, err := dialer(r.Context(), request, addr)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		} else {
			res.Responses = append(res.Responses, resp)
		}
	}
	writeJSON(w, http.StatusOK, res)
}

func dialHTTP(ctx context.Context, request, addr string) (string, error) {
	client := &http.Client{
		// No proxy from the environment and no connection reuse: every try
		// is a new connection to addr.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		Timeout:   dialTimeout,
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/%s", addr, request), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return string(body), nil
}

func dialUDP(ctx context.Context, request, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", fmt.Errorf("udp dial failed. err:%w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(request)); err != nil {
		return "", fmt.Errorf("udp connection write failed. err:%w", err)
	}
	return readReply(ctx, conn, 2048, "udp")
}

func dialSCTPCommand(ctx context.Context, request, addr string) (string, error) {
	conn, err := dialSCTP(ctx, addr, dialTimeout)
	if err != nil {
		return "", fmt.Errorf("sctp dial failed. err:%w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(request)); err != nil {
		return "", fmt.Errorf("sctp connection write failed. err:%w", err)
	}
	return readReply(ctx, conn, 1024, "sctp")
}

// readReply reads one reply of up to size bytes within dialTimeout.
func readReply(ctx context.Context, conn net.Conn, size int, proto string) (string, error) {
	deadline := time.Now().Add(dialTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, size)
	count, err := conn.Read(buf)
	if err != nil || count == 0 {
		return "", fmt.Errorf("reading from %s connection failed. err:'%v'", proto, err)
	}
	return string(buf[:count]), nil
}
