// Package kubeletfake is a fake kubeletserver.Provider for tests of the
// agent's streaming server and of the API server's pods/log and pods/exec
// proxy: canned logs and a tiny command language instead of processes.
package kubeletfake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/svcnet/svcnet/internal/agent/kubeletserver"
)

// Provider is a kubeletserver.Provider with canned logs and a tiny command
// language. Set its fields before use; it is safe for concurrent calls.
//
// Logs: the container's lines, tailLines honoured; with follow, further
// lines come from Follow until it is closed or ctx ends. An unknown
// container is an error wrapping kubeletserver.ErrNotFound.
//
// Exec commands:
//
//	echo ARGS…      ARGS joined by spaces, and a newline, on stdout
//	cat             stdin copied to stdout until stdin ends
//	stderr TEXT     TEXT on stderr
//	exit N          exits with code N
//	whoami          "<uid>/<container> tty=<bool>" on stdout
//	size            the first terminal size from the resize channel
type Provider struct {
	// Pods maps "namespace/name" to the pod's UID.
	Pods map[string]string
	// Lines maps "uid/container" to the container's log lines; a
	// container exists when it has an entry.
	Lines map[string][]string
	// Follow feeds followed logs (nil: a follow ends after Lines).
	Follow chan string

	mu    sync.Mutex // guards the field below
	execs [][]string
}

var _ kubeletserver.Provider = (*Provider)(nil)

// Execs returns the commands Exec was called with.
func (f *Provider) Execs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.execs...)
}

// PodUID implements kubeletserver.Provider.
func (f *Provider) PodUID(namespace, name string) (string, bool) {
	uid, ok := f.Pods[namespace+"/"+name]
	return uid, ok
}

// Logs implements kubeletserver.Provider.
func (f *Provider) Logs(ctx context.Context, uid, container string, opts *corev1.PodLogOptions, w io.Writer) error {
	lines, ok := f.Lines[uid+"/"+container]
	if !ok {
		return fmt.Errorf("container %q in pod %s: %w", container, uid, kubeletserver.ErrNotFound)
	}
	if opts.TailLines != nil && int(*opts.TailLines) < len(lines) {
		lines = lines[len(lines)-int(*opts.TailLines):]
	}
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	if !opts.Follow || f.Follow == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-f.Follow:
			if !ok {
				return nil
			}
			if _, err := io.WriteString(w, l+"\n"); err != nil {
				return err
			}
		}
	}
}

// Exec implements kubeletserver.Provider.
func (f *Provider) Exec(ctx context.Context, uid, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan remotecommand.TerminalSize) error {
	f.mu.Lock()
	f.execs = append(f.execs, cmd)
	f.mu.Unlock()
	if _, ok := f.Lines[uid+"/"+container]; !ok {
		return fmt.Errorf("container %q: %w", container, kubeletserver.ErrNotFound)
	}
	out := func(w io.Writer, s string) error {
		if w == nil {
			return errors.New("stream not requested")
		}
		_, err := io.WriteString(w, s)
		return err
	}
	switch cmd[0] {
	case "echo":
		return out(stdout, strings.Join(cmd[1:], " ")+"\n")
	case "cat":
		if stdin == nil || stdout == nil {
			return errors.New("cat needs stdin and stdout")
		}
		_, err := io.Copy(stdout, stdin)
		return err
	case "stderr":
		return out(stderr, strings.Join(cmd[1:], " ")+"\n")
	case "exit":
		code, err := strconv.Atoi(cmd[1])
		if err != nil {
			return err
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("exit status %d", code), Code: code}
	case "whoami":
		return out(stdout, fmt.Sprintf("%s/%s tty=%v\n", uid, container, tty))
	case "size":
		select {
		case sz, ok := <-resize:
			if !ok {
				return errors.New("resize channel closed")
			}
			return out(stdout, fmt.Sprintf("%dx%d\n", sz.Width, sz.Height))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("unknown command %q", cmd[0])
}
