package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// inMountNS runs fn on a fresh OS thread that has joined the mount
// namespace of process pid. The thread first unshares its filesystem
// attributes (setns into a mount namespace requires it) and is never
// returned to the Go scheduler: it exits with the goroutine, so no other
// goroutine ever runs in the pod's mount namespace.
//
// The main thread is never used: Go does not exit it when a locked
// goroutine ends (it would stay, wedged, in the pod's namespace, keeping it
// alive, and /proc/self would show the pod's mounts).
func inMountNS(pid int, fn func() error) error {
	errc := make(chan error, 1)
	var run func()
	run = func() {
		goruntime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// On the main thread: hold it, so that the next goroutine
			// cannot get it, and work there.
			done := make(chan struct{})
			go func() { defer close(done); run() }()
			<-done
			goruntime.UnlockOSThread()
			return
		}
		// No UnlockOSThread: the thread is discarded when the goroutine ends.
		errc <- joinMountNS(pid, fn)
	}
	go run()
	return <-errc
}

// joinMountNS makes the calling (locked) thread join the mount namespace
// of pid and runs fn there.
func joinMountNS(pid int, fn func() error) error {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mount namespace of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare CLONE_FS: %w", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("setns into the mount namespace of %d: %w", pid, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	return fn()
}

// startError is a container that cannot start: reported as a StartError
// status, not as a runtime failure.
type startError struct{ msg string }

func (e *startError) Error() string { return e.msg }

// prepare makes the pod's mount namespace ready for spec (its bind mounts
// and working directory) and resolves spec.Argv[0] there, through the PATH
// of spec.Env. Problems of the container spec are *startError.
func prepare(sandboxPID int, spec ContainerSpec) (argv0 string, err error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return "", &startError{"no command specified"}
	}
	// Detached copies of the sources, made in the node's mount namespace
	// (the sources may be hidden in the pod's, e.g. under its private /tmp).
	type tree struct {
		fd    int
		m     Mount
		isDir bool
		st    unix.Stat_t
	}
	var trees []tree
	defer func() {
		for _, t := range trees {
			unix.Close(t.fd)
		}
	}()
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Target) {
			return "", &startError{fmt.Sprintf("mount target %q is not an absolute path", m.Target)}
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return "", &startError{fmt.Sprintf("mount source %q: %v", m.Source, err)}
		}
		t := tree{fd: fd, m: m}
		trees = append(trees, t)
		if err := unix.Fstat(fd, &trees[len(trees)-1].st); err != nil {
			return "", fmt.Errorf("runtime: stat %s: %w", m.Source, err)
		}
		trees[len(trees)-1].isDir = trees[len(trees)-1].st.Mode&unix.S_IFMT == unix.S_IFDIR
		if m.ReadOnly {
			attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
				return "", fmt.Errorf("runtime: make %s read-only: %w", m.Source, err)
			}
		}
	}
	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	err = inMountNS(sandboxPID, func() error {
		for _, t := range trees {
			var st unix.Stat_t
			if err := unix.Stat(t.m.Target, &st); err == nil && st.Dev == t.st.Dev && st.Ino == t.st.Ino {
				continue // already mounted by an earlier start of the pod's containers
			}
			if err := makeTarget(t.m.Target, t.isDir); err != nil {
				return &startError{fmt.Sprintf("mount target %q: %v", t.m.Target, err)}
			}
			if err := unix.MoveMount(t.fd, "", unix.AT_FDCWD, t.m.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("runtime: mount %s on %s: %w", t.m.Source, t.m.Target, err)
			}
		}
		// Like runc, create a missing working directory.
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return &startError{fmt.Sprintf("working directory %q: %v", wd, err)}
		}
		p, err := lookPath(spec.Argv[0], wd, envPath(spec.Env))
		if err != nil {
			return &startError{err.Error()}
		}
		argv0 = p
		return nil
	})
	return argv0, err
}

// makeTarget creates a mount point: a directory, or an empty file for a
// file source.
func makeTarget(target string, dir bool) error {
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// defaultPath is the PATH of a container environment without one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func envPath(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

// lookPath resolves name like execvp with the given PATH; a name with a
// slash is taken relative to wd.
func lookPath(name, wd, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(wd, name)
		}
		if err := executable(name); err != nil {
			return "", fmt.Errorf("exec: %q: %w", name, err)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(wd, dir)
		}
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such file or directory")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	if st.Mode()&0o111 == 0 {
		return errors.New("permission denied")
	}
	return nil
}
