package dns

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// Process memory of a standalone `svcnet dns` (Config.OwnProcess).
//
// The svcnet binary links the API server, etcd and kubectl. Their package
// initialisers run at start whatever the subcommand, and the kernel maps the
// file pages they touch (plus fault-around neighbours, and on recent kernels
// whole large page-cache folios) into the process: tens of MB of RssFile
// that DNS never uses again (about 60 MB of the 160 MB binary when it is
// read from disk). releaseStartupPages drops the process's mappings of those
// pages when Run starts, and again once the first index is published (what
// the client start-up and the initial sync touched): MADV_DONTNEED on the
// binary's read-only, never-written mappings. The pages stay in the page
// cache, and whatever DNS executes or reads later is faulted back in from
// it, so RssFile then follows the code DNS really runs (about 15-20 MB). It
// changes no memory content: a mapping that holds privately written pages
// (the RELRO page, .data) is left alone.

// ownProcessGCPercent is the GC target of a standalone `svcnet dns` unless
// GOGC is set: the heap is almost all the long-lived record index and the
// informer stores, the answer path allocates nothing, so collecting at 50%
// growth instead of 100% costs little CPU (garbage comes from index
// publishes, informer events and forwarded queries) and keeps the heap, and
// what the scavenger leaves mapped, near the live size.
const ownProcessGCPercent = 50

// releaseStartupPages drops the page-table entries of the executable's
// read-only file mappings that hold no private (written) pages. It returns
// the bytes of mappings it released.
func releaseStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("dns: executable: %w", err)
	}
	maps, err := exeMappings(exe)
	if err != nil {
		return 0, err
	}
	var released int64
	for _, m := range maps {
		if m.writable || m.anonymous != 0 {
			continue // written pages must not be thrown away
		}
		if err := madviseDontneed(m.start, m.end); err != nil {
			return released, fmt.Errorf("dns: madvise %x-%x: %w", m.start, m.end, err)
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}

type mapping struct {
	start, end uintptr
	writable   bool
	anonymous  int64 // kB of private anonymous (copy-on-write) pages
}

// exeMappings lists the mappings of file exe from /proc/self/smaps.
func exeMappings(exe string) ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	defer f.Close()
	var out []mapping
	var cur *mapping
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if isRangeField(fields[0]) {
			cur = nil
			if len(fields) < 6 || strings.Join(fields[5:], " ") != exe {
				continue
			}
			lo, hi, _ := strings.Cut(fields[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			out = append(out, mapping{start: uintptr(start), end: uintptr(end), writable: strings.Contains(fields[1], "w")})
			cur = &out[len(out)-1]
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" && len(fields) >= 2 {
			cur.anonymous, _ = strconv.ParseInt(fields[1], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dns: reading smaps: %w", err)
	}
	return out, nil
}

// isRangeField reports the "start-end" first field of a mapping's header
// line in smaps (attribute lines start with "Name:").
func isRangeField(s string) bool {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok || lo == "" || hi == "" {
		return false
	}
	for _, c := range lo + hi {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func madviseDontneed(start, end uintptr) error {
	_, _, e := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_DONTNEED)
	if e != 0 {
		return e
	}
	return nil
}

// tuneOwnProcessGC applies ownProcessGCPercent when GOGC is not set.
func tuneOwnProcessGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(ownProcessGCPercent)
	}
}

// releaseMemory returns what the start-up and the initial list left behind:
// garbage heap to the OS, and (own process only) the binary's pages touched
// only by package initialisers.
func (s *Server) releaseMemory() {
	debug.FreeOSMemory() // a full GC, then the free pages go back
	if !s.cfg.OwnProcess {
		return
	}
	n, err := releaseStartupPages()
	if err != nil {
		s.log.Warn("could not release start-up pages", "err", err)
		return
	}
	s.log.Debug("released start-up pages of the binary", "mapped bytes", n)
}
