package agnhost

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Pause is the pause command: it prints "Paused" and "Signals registered"
// (the caller must have subscribed signals to sigs already), blocks until a
// signal arrives, prints `exiting because of signal "<name>"` and returns
// upstream's exit code: 1 for SIGINT, 2 for SIGTERM, 0 otherwise (a closed
// channel also returns 0).
//
// Upstream also writes the message to TERMINATION_MESSAGE_PATH, defaulting
// to /dev/termination-log; process pods share the host's /dev, so the
// message is written only when terminationMessagePath is not empty.
func Pause(stdout io.Writer, sigs <-chan os.Signal, terminationMessagePath string) int {
	fmt.Fprintln(stdout, "Paused")
	fmt.Fprintln(stdout, "Signals registered")
	sig, ok := <-sigs
	if !ok {
		return 0
	}
	msg := fmt.Sprintf("exiting because of signal %q\n", sig)
	if terminationMessagePath != "" {
		_ = os.WriteFile(terminationMessagePath, []byte(msg), 0o644)
	}
	io.WriteString(stdout, msg)
	switch sig {
	case syscall.SIGINT:
		return 1
	case syscall.SIGTERM:
		return 2
	}
	return 0
}
