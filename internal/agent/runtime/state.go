package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// On-disk layout under Config.RootDir:
//
//	pods/<uid>/pod.json                      podRecord (written by the runtime)
//	pods/<uid>/sandbox.log                   the sandbox process's stderr
//	pods/<uid>/etc/{resolv.conf,hosts}       bind-mounted over /etc/... in the pod
//	pods/<uid>/tmp/                          bind-mounted over /tmp in the pod
//	pods/<uid>/volumes/<name>/               emptyDir volumes (VolumeDir)
//	pods/<uid>/containers/<name>/<n>.spec.json   shimSpec of attempt n (runtime)
//	pods/<uid>/containers/<name>/<n>.state.json  startRecord of attempt n (shim)
//	pods/<uid>/containers/<name>/<n>.exit.json   exitRecord of attempt n (shim)
//	pods/<uid>/containers/<name>/<n>.log         CRI-format log of attempt n (shim)
//	pods/<uid>/containers/<name>/shim.log        the shims' own stderr
//
// Every JSON file is written to a temporary name and renamed, so a reader
// (a restarted agent) sees either nothing or a whole record.

// procIdentity names one process for its whole life: the pid plus its start
// time (clock ticks since boot, /proc/<pid>/stat field 22). A pid recycled by
// another process has another start time, so it is never mistaken for ours.
type procIdentity struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// podRecord is pods/<uid>/pod.json.
type podRecord struct {
	UID         string       `json:"uid"`
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	Hostname    string       `json:"hostname"`
	HostNetwork bool         `json:"hostNetwork"`
	Sandbox     procIdentity `json:"sandbox"`
}

// shimSpec is <n>.spec.json: everything the shim needs to run attempt n.
type shimSpec struct {
	Attempt    int          `json:"attempt"`
	NSEnter    string       `json:"nsenter"`
	Sandbox    procIdentity `json:"sandbox"`
	HostNet    bool         `json:"hostNetwork"`
	Argv       []string     `json:"argv"`
	Env        []string     `json:"env"`
	WorkingDir string       `json:"workingDir"`
	Mounts     []Mount      `json:"mounts,omitempty"`
	LogPath    string       `json:"logPath"`
	StatePath  string       `json:"statePath"`
	ExitPath   string       `json:"exitPath"`
}

// startRecord is <n>.state.json, written by the shim once the container
// process runs.
type startRecord struct {
	Shim      procIdentity `json:"shim"`
	Container procIdentity `json:"container"`
	StartedAt time.Time    `json:"startedAt"`
}

// exitRecord is <n>.exit.json: how attempt n ended.
type exitRecord struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message,omitempty"`
}

// writeJSON atomically replaces path with v encoded as JSON.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("runtime: encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("runtime: %w", err)
	}
	return nil
}

// readJSON decodes path into v. A missing file returns an error satisfying
// errors.Is(err, os.ErrNotExist).
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("runtime: decode %s: %w", path, err)
	}
	return nil
}

// procStartTime returns field 22 of /proc/<pid>/stat, and whether the
// process exists and is not a zombie.
func procStartTime(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// or parentheses: the fields after it start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, false
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, false
	}
	return st, true
}

// identify returns the identity of a running process.
func identify(pid int) (procIdentity, error) {
	st, ok := procStartTime(pid)
	if !ok {
		return procIdentity{}, fmt.Errorf("runtime: process %d is gone", pid)
	}
	return procIdentity{PID: pid, StartTime: st}, nil
}

// alive reports whether the process p names still runs (same pid, same start
// time, not a zombie).
func (p procIdentity) alive() bool {
	st, ok := procStartTime(p.PID)
	return ok && st == p.StartTime
}

// signal sends sig to p if it is still the same process.
func (p procIdentity) signal(sig unix.Signal) error {
	if !p.alive() {
		return nil
	}
	if err := unix.Kill(p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("runtime: signal %d to %d: %w", sig, p.PID, err)
	}
	return nil
}

// signalGroup sends sig to p's process group (containers run in their own
// group, led by the container process), if p is still the same process, or
// if p is gone but its group still has members. The group id is p's pid.
func (p procIdentity) signalGroup(sig unix.Signal) error {
	if p.PID <= 0 {
		return nil
	}
	if st, ok := procStartTime(p.PID); ok && st != p.StartTime {
		// The pid was recycled by another process: the old group is gone
		// (a pid is not reused while a group of that id exists).
		return nil
	}
	if err := unix.Kill(-p.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("runtime: signal %d to group %d: %w", sig, p.PID, err)
	}
	return nil
}

// validName reports whether s is safe as one path component.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && len(s) <= 253
}

// attemptFile is the path of one attempt's file of a container.
func attemptFile(dir string, attempt int, suffix string) string {
	return filepath.Join(dir, strconv.Itoa(attempt)+suffix)
}
