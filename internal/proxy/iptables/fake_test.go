package iptables

import (
	"context"
	"strings"
	"testing"
)

// TestFakeSemantics checks the iptables-restore --noflush behaviour the
// backend relies on, as the kernel test observes it with the real
// binaries: chain lines create or flush, COMMIT is atomic and refuses
// dangling jumps and deleting a chain still referenced or not empty.
func TestFakeSemantics(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	must := func(p string) {
		t.Helper()
		if err := f.Restore(ctx, []byte(p)); err != nil {
			t.Fatalf("restore %q: %v", p, err)
		}
	}
	must("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j RETURN\n-I PREROUTING 1 -j A\nCOMMIT\n")
	// A chain line flushes; other chains keep their rules.
	must("*nat\n:A - [0:0]\n-A A -d 10.0.0.1/32 -j B\nCOMMIT\n")
	save, err := f.Save(ctx, "nat")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-A A -d 10.0.0.1/32 -j B\n", "-A B -j RETURN\n", "-A PREROUTING -j A\n"} {
		if !strings.Contains(string(save), want) {
			t.Errorf("save lacks %q:\n%s", want, save)
		}
	}
	if strings.Contains(string(save), "-A A -j B\n") {
		t.Errorf("chain line did not flush A:\n%s", save)
	}

	for _, bad := range []struct{ name, payload string }{
		{"jump to a missing chain", "*nat\n:C - [0:0]\n-A C -j NOPE\nCOMMIT\n"},
		{"delete a referenced chain", "*nat\n:B - [0:0]\n-X B\nCOMMIT\n"},
		{"delete a non-empty chain", "*nat\n-X B\nCOMMIT\n"},
		{"append to a missing chain", "*nat\n-A NOPE -j ACCEPT\nCOMMIT\n"},
		{"delete a missing rule", "*nat\n-D PREROUTING -j B\nCOMMIT\n"},
		{"no COMMIT", "*nat\n:C - [0:0]\n"},
	} {
		before := f.Dump()
		if err := f.Restore(ctx, []byte(bad.payload)); err == nil {
			t.Errorf("%s: accepted", bad.name)
		}
		if f.Dump() != before {
			t.Errorf("%s: a failed restore changed the tables", bad.name)
		}
	}
	// Flush and delete in one transaction works even while referenced by
	// a chain flushed in the same transaction.
	must("*nat\n:A - [0:0]\n:B - [0:0]\n-X B\n-D PREROUTING -j A\n-X A\nCOMMIT\n")
	if got := f.Rules(); got != 0 {
		t.Errorf("%d rules left, want 0:\n%s", got, f.Dump())
	}
}
