package agnhost

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPauseChannel(t *testing.T) {
	tests := []struct {
		sig      os.Signal
		wantCode int
		wantMsg  string
	}{
		{syscall.SIGINT, 1, `exiting because of signal "interrupt"`},
		{syscall.SIGTERM, 2, `exiting because of signal "terminated"`},
		{syscall.SIGHUP, 0, `exiting because of signal "hangup"`},
	}
	for _, tc := range tests {
		var out strings.Builder
		path := filepath.Join(t.TempDir(), "termination-log")
		sigs := make(chan os.Signal, 1)
		sigs <- tc.sig
		if code := Pause(&out, sigs, path); code != tc.wantCode {
			t.Errorf("%v: exit code %d, want %d", tc.sig, code, tc.wantCode)
		}
		want := "Paused\nSignals registered\n" + tc.wantMsg + "\n"
		if out.String() != want {
			t.Errorf("%v: stdout %q, want %q", tc.sig, out.String(), want)
		}
		if data, err := os.ReadFile(path); err != nil || string(data) != tc.wantMsg+"\n" {
			t.Errorf("%v: termination message %q, %v", tc.sig, data, err)
		}
	}
}

// TestPauseSignal runs pause in a child process (this test binary, see
// TestMain) and delivers a real signal to it.
func TestPauseSignal(t *testing.T) {
	tests := []struct {
		sig      syscall.Signal
		wantCode int
		wantMsg  string
	}{
		{syscall.SIGTERM, 2, `exiting because of signal "terminated"`},
		{syscall.SIGINT, 1, `exiting because of signal "interrupt"`},
	}
	for _, tc := range tests {
		t.Run(tc.sig.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "termination-log")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "AGNHOST_TEST_PAUSE=1", "TERMINATION_MESSAGE_PATH="+path)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			var lines []string
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if sc.Text() == "Signals registered" {
					// The handler is installed: signal now.
					if err := cmd.Process.Signal(tc.sig); err != nil {
						t.Fatal(err)
					}
				}
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.wantCode {
				t.Fatalf("exit: %v, want code %d (stdout %q)", err, tc.wantCode, lines)
			}
			if want := []string{"Paused", "Signals registered", tc.wantMsg}; strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Errorf("stdout %q, want %q", lines, want)
			}
			if data, err := os.ReadFile(path); err != nil || string(data) != tc.wantMsg+"\n" {
				t.Errorf("termination message %q, %v", data, err)
			}
		})
	}
}

func TestPauseNoTerminationPath(t *testing.T) {
	var out strings.Builder
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	if code := Pause(&out, sigs, ""); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
}
