package kubeletserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// The remotecommand v5 protocol: WebSocket with the CLOSE signal.
const (
	protocolV5 = "v5.channel.k8s.io"

	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
	chanError  = 3
	chanResize = 4

	// statusWriteDeadline bounds writing the final status.
	statusWriteDeadline = 10 * time.Second
)

// serveExec serves /exec/{ns}/{pod}[/{uid}]/{container}?command=…, as the
// kubelet's getExec, but running the command itself (through the Provider)
// instead of redirecting to a container runtime's streaming server.
func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command: exec needs at least one command parameter", http.StatusBadRequest)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	uid, ok := s.cfg.Provider.PodUID(ns, pod)
	if !ok || (r.PathValue("uid") != "" && r.PathValue("uid") != uid) {
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return
	}
	s.log.Debug("exec", "pod", ns+"/"+pod, "container", container, "command", cmd,
		"stdin", opts.Stdin, "tty", opts.TTY, "websocket", wsstream.IsWebSocketRequest(r))
	if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		s.serveExecV5(w, r, uid, container, cmd, opts)
		return
	}
	remotecommand.ServeExec(w, r, executor{s.cfg.Provider}, pod, uid, container, cmd, opts,
		streamIdleTimeout, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// executor adapts a Provider to cri-streaming's Executor.
type executor struct{ p Provider }

func (e executor) ExecInContainer(ctx context.Context, _, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errOut != nil {
		stderr = errOut
	}
	err := e.p.Exec(ctx, uid, container, cmd, in, stdout, stderr, tty, resize)
	// ServeExec recognizes an exit code only on an unwrapped ExitError.
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr
	}
	return err
}

// serveExecV5 serves an exec over WebSocket v5.channel.k8s.io: channels 0-2
// are stdin/stdout/stderr, 3 carries the final metav1.Status, 4 the
// terminal sizes as JSON, and a message {255, n} closes channel n (stdin).
func (s *Server) serveExecV5(w http.ResponseWriter, r *http.Request, uid, container string, cmd []string, opts *remotecommand.Options) {
	channels := []wsstream.ChannelType{
		chanStdin:  wsstream.IgnoreChannel,
		chanStdout: wsstream.IgnoreChannel,
		chanStderr: wsstream.IgnoreChannel,
		chanError:  wsstream.WriteChannel,
		chanResize: wsstream.ReadChannel,
	}
	if opts.Stdin {
		channels[chanStdin] = wsstream.ReadChannel
	}
	if opts.Stdout {
		channels[chanStdout] = wsstream.WriteChannel
	}
	if opts.Stderr {
		channels[chanStderr] = wsstream.WriteChannel
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		protocolV5: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(streamIdleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		s.log.Info("exec: websocket upgrade failed", "err", err)
		return
	}
	defer conn.Close()

	// An empty message on the lowest writable channel tells the client the
	// streams are ready (as the kubelet and kube-apiserver do).
	first := chanError
	switch {
	case opts.Stdout:
		first = chanStdout
	case opts.Stderr:
		first = chanStderr
	}
	if _, err := streams[first].Write(nil); err != nil {
		s.log.Info("exec: websocket write failed", "err", err)
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var (
		stdin          io.Reader
		stdout, stderr io.Writer
		resize         chan remotecommand.TerminalSize
	)
	if opts.Stdin {
		stdin = streams[chanStdin]
	}
	if opts.Stdout {
		stdout = streams[chanStdout]
	}
	if opts.Stderr {
		stderr = streams[chanStderr]
	}
	if opts.TTY {
		resize = make(chan remotecommand.TerminalSize)
		go readResizes(ctx, streams[chanResize], resize)
	}
	err = s.cfg.Provider.Exec(ctx, uid, container, cmd, stdin, stdout, stderr, opts.TTY, resize)
	body, mErr := json.Marshal(execStatus(err))
	if mErr != nil {
		s.log.Error("exec: encode status", "err", mErr)
		return
	}
	conn.SetWriteDeadline(statusWriteDeadline)
	if _, err := streams[chanError].Write(body); err != nil {
		s.log.Debug("exec: write status", "err", err)
	}
}

// readResizes decodes terminal sizes from the resize channel until it ends,
// then closes out.
func readResizes(ctx context.Context, in io.Reader, out chan<- remotecommand.TerminalSize) {
	defer close(out)
	dec := json.NewDecoder(in)
	for {
		var size remotecommand.TerminalSize
		if err := dec.Decode(&size); err != nil {
			return
		}
		select {
		case out <- size:
		case <-ctx.Done():
			return
		}
	}
}

// execStatus is the metav1.Status that ends an exec stream: Success, a
// NonZeroExitCode failure carrying the exit code, or an internal error.
func execStatus(err error) *metav1.Status {
	if err == nil {
		return &metav1.Status{Status: metav1.StatusSuccess}
	}
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) && exitErr.Exited() {
		return &metav1.Status{
			Status:  metav1.StatusFailure,
			Reason:  remotecommand.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", exitErr),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{
				Type:    remotecommand.ExitCodeCauseType,
				Message: strconv.Itoa(exitErr.ExitStatus()),
			}}},
		}
	}
	return &metav1.Status{
		Status:  metav1.StatusFailure,
		Reason:  metav1.StatusReasonInternalError,
		Code:    http.StatusInternalServerError,
		Message: fmt.Sprintf("Internal error occurred: error executing command in container: %v", err),
	}
}
