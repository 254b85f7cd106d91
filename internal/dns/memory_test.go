package dns

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKB reads RssFile of this process.
func rssFileKB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestExeMappings checks which mappings of the test binary would be
// released: read-only ones without private pages, never the writable data.
func TestExeMappings(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	maps, err := exeMappings(exe)
	if err != nil {
		t.Fatal(err)
	}
	var releasable, writable int
	for _, m := range maps {
		if m.end <= m.start {
			t.Fatalf("bad range %x-%x", m.start, m.end)
		}
		if m.writable {
			writable++
		} else if m.anonymous == 0 {
			releasable++
		}
	}
	if releasable == 0 || writable == 0 {
		t.Fatalf("mappings of %s: %d releasable, %d writable; want both (%+v)", exe, releasable, writable, maps)
	}
}

// TestReleaseStartupPages drops the test binary's read-only pages from the
// process and checks that RssFile went down and the code still runs.
func TestReleaseStartupPages(t *testing.T) {
	before := rssFileKB(t)
	n, err := releaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if n <= 0 || after >= before {
		t.Fatalf("released %d bytes of mappings; RssFile %d kB → %d kB, want lower", n, before, after)
	}
	// Code and read-only data fault back in from the page cache.
	x := buildIndex(RecordConfig{Zone: "cluster.local", TTL: 5}, fixture(), 1)
	if len(x.names) == 0 {
		t.Fatal("empty index after releasing pages")
	}
}

func TestIsRangeField(t *testing.T) {
	for s, want := range map[string]bool{"00400000-01977000": true, "7ffd1-7ffd2": true, "Rss:": false, "-1": false, "12-": false, "0x1-2": false} {
		if got := isRangeField(s); got != want {
			t.Errorf("isRangeField(%q) = %v, want %v", s, got, want)
		}
	}
}
