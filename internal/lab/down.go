package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DownConfig configures `lab down`.
type DownConfig struct {
	DataDir string
	Out     io.Writer
}

// Down stops every process of the lab and removes its routes, links and
// namespaces. It works without lab.json too (a failed up): then it goes by
// the fixed name prefixes. Errors are collected; everything possible is
// removed.
func Down(ctx context.Context, cfg DownConfig) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	s, serr := LoadState(dataDir)
	if serr != nil {
		s = &State{DataDir: dataDir, Bridge: Bridge}
	}
	var errs []error

	// Agents first (SIGTERM: each stops its pods and removes their
	// network), in parallel; then the server.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, n := range s.Nodes {
		if !alive(n.AgentPID, dataMarker(dataDir)) {
			continue
		}
		fmt.Fprintf(cfg.Out, "[svcnet lab] stopping agent %s (pid %d)\n", n.Name, n.AgentPID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stopPID(n.AgentPID, dataMarker(dataDir), stopTimeout); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if alive(s.ServerPID, dataMarker(dataDir)) {
		fmt.Fprintf(cfg.Out, "[svcnet lab] stopping API server (pid %d)\n", s.ServerPID)
		if err := stopPID(s.ServerPID, dataMarker(dataDir), stopTimeout); err != nil {
			errs = append(errs, err)
		}
	}

	// Whatever is still running in a node namespace or from the data dir.
	names := labNetNS()
	inodes := map[uint64]bool{}
	for _, name := range names {
		if ino := netnsInode(name); ino != 0 {
			inodes[ino] = true
		}
	}
	for range 3 {
		left := leftovers(dataDir, inodes)
		if len(left) == 0 {
			break
		}
		for _, p := range left {
			fmt.Fprintf(cfg.Out, "[svcnet lab] killing leftover process %d: %s\n", p.pid, p.cmdline)
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Routes (they go with the bridge, but a route someone re-pointed
	// elsewhere is removed explicitly), links, namespaces.
	for _, r := range s.Routes {
		dst, _, _ := strings.Cut(r, " ")
		_ = exec.CommandContext(ctx, "ip", "route", "del", dst, "dev", s.Bridge).Run()
	}
	for _, link := range hostLabLinks() {
		fmt.Fprintf(cfg.Out, "[svcnet lab] deleting link %s\n", link)
		if err := ip(ctx, "link", "del", link); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	for _, name := range names {
		fmt.Fprintf(cfg.Out, "[svcnet lab] deleting netns %s\n", name)
		if err := ip(ctx, "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	if serr == nil {
		if err := os.Remove(statePath(dataDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	_ = os.RemoveAll(filepath.Join(dataDir, "run"))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "[svcnet lab] down: no namespace, link, route or process of the lab is left (data and logs kept in %s)\n", dataDir)
	return nil
}
