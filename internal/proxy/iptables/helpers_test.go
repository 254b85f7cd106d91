package iptables_test

import (
	"os"
	"strings"
	"testing"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestMain runs the package's tests inside a private network namespace when
// root (see proxytest.Main); the kernel tests skip otherwise.
func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

func joinLines(ls []string) string { return strings.Join(ls, "\n") }
