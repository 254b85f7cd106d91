package agent

import (
	"context"
	"fmt"
	"io"

	v1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/svcnet/svcnet/internal/agent/kubeletserver"
	"github.com/svcnet/svcnet/internal/agent/runtime"
)

// provider serves the kubelet port's logs and exec from the agent's pods.
type provider struct{ a *Agent }

var _ kubeletserver.Provider = provider{}

func (p provider) PodUID(namespace, name string) (string, bool) {
	if p.a.podLister == nil {
		return "", false
	}
	pod, err := p.a.podLister.Pods(namespace).Get(name)
	if err != nil {
		return "", false
	}
	return string(pod.UID), true
}

func (p provider) Logs(ctx context.Context, uid, container string, opts *v1.PodLogOptions, w io.Writer) error {
	return p.a.rt.Logs(ctx, uid, container, opts, w)
}

func (p provider) Exec(ctx context.Context, uid, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if _, ok := p.a.rt.ContainerStatus(uid, container); !ok {
		return fmt.Errorf("container %q not found in pod %s", container, uid)
	}
	var rs chan runtime.TerminalSize
	if resize != nil {
		rs = make(chan runtime.TerminalSize, 1)
		go func() {
			defer close(rs)
			for {
				select {
				case <-ctx.Done():
					return
				case s, ok := <-resize:
					if !ok {
						return
					}
					select {
					case rs <- runtime.TerminalSize{Width: s.Width, Height: s.Height}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	return p.a.rt.Exec(ctx, uid, container, cmd, stdin, stdout, stderr, tty, rs)
}
