package podnet

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsable(t *testing.T) {
	p := netip.MustParsePrefix("10.244.1.0/24")
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.244.1.0", false},   // network
		{"10.244.1.1", false},   // first host, reserved
		{"10.244.1.2", true},    // first pod address
		{"10.244.1.254", true},  // last pod address
		{"10.244.1.255", false}, // broadcast
		{"10.244.2.2", false},   // outside
	} {
		if got := usable(p, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("usable(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if got := lastAddr(netip.MustParsePrefix("10.244.0.0/16")); got != netip.MustParseAddr("10.244.255.255") {
		t.Errorf("lastAddr(/16) = %v", got)
	}
}

func TestIPAMNext(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix string
		last   string
		used   []string
		want   string // "" means full
	}{
		{"empty starts at .2", "10.244.1.0/24", "", nil, "10.244.1.2"},
		{"continues after last", "10.244.1.0/24", "10.244.1.7", nil, "10.244.1.8"},
		{"skips used", "10.244.1.0/24", "10.244.1.7", []string{"10.244.1.8", "10.244.1.9"}, "10.244.1.10"},
		{"wraps past broadcast", "10.244.1.0/24", "10.244.1.254", nil, "10.244.1.2"},
		{"wraps to a freed address", "10.244.1.0/29", "10.244.1.6", []string{"10.244.1.2", "10.244.1.4", "10.244.1.5", "10.244.1.6"}, "10.244.1.3"},
		{"full", "10.244.1.0/29", "10.244.1.3", []string{"10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"}, ""},
		{"/30 has one address", "10.244.1.0/30", "", nil, "10.244.1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := newIPAM(netip.MustParsePrefix(tc.prefix))
			if tc.last != "" {
				i.last = netip.MustParseAddr(tc.last)
			}
			for k, u := range tc.used {
				i.set("uid"+string(rune('a'+k)), netip.MustParseAddr(u))
			}
			got, ok := i.next()
			if tc.want == "" {
				if ok {
					t.Fatalf("next() = %v, want full", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tc.want) {
				t.Fatalf("next() = %v, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

func TestIPAMSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "ipam.json")
	p := netip.MustParsePrefix("10.244.1.0/24")
	i := newIPAM(p)
	i.set("a", netip.MustParseAddr("10.244.1.2"))
	i.set("b", netip.MustParseAddr("10.244.1.3"))
	i.last = netip.MustParseAddr("10.244.1.3")
	if err := i.save(path); err != nil {
		t.Fatal(err)
	}
	got, dropped, err := loadIPAM(path, p)
	if err != nil || len(dropped) != 0 {
		t.Fatalf("load: %v, dropped %v", err, dropped)
	}
	if got.byUID["a"] != netip.MustParseAddr("10.244.1.2") || got.byUID["b"] != netip.MustParseAddr("10.244.1.3") || got.last != i.last {
		t.Fatalf("loaded %+v, want %+v", got.state(), i.state())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// A changed podCIDR drops what no longer fits; garbage and
	// duplicates are dropped too.
	data := `{"podCIDR":"10.244.1.0/24","last":"10.244.1.9","allocations":{"a":"10.244.1.2","b":"10.244.9.3","c":"nonsense","d":"10.244.1.2","e":"10.244.1.255"}}`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, dropped, err = loadIPAM(path, p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(dropped, ",") != "b,c,d,e" || len(got.byUID) != 1 || got.byUID["a"] != netip.MustParseAddr("10.244.1.2") {
		t.Fatalf("dropped %v, kept %v", dropped, got.byUID)
	}

	// A missing file is an empty IPAM; a corrupt one an error.
	if got, _, err := loadIPAM(filepath.Join(dir, "none.json"), p); err != nil || len(got.byUID) != 0 {
		t.Fatalf("missing file: %v %v", got, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadIPAM(path, p); err == nil {
		t.Fatal("corrupt file loaded without error")
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("4f1c2a8e-0000-4000-8000-000000000001")
	b := HostVethName("4f1c2a8e-0000-4000-8000-000000000002")
	if len(a) != 14 || !strings.HasPrefix(a, "svc") || !isHostVethName(a) {
		t.Fatalf("HostVethName = %q", a)
	}
	if a == b {
		t.Fatalf("two uids share %q", a)
	}
	if a != HostVethName("4f1c2a8e-0000-4000-8000-000000000001") {
		t.Fatal("HostVethName is not stable")
	}
	for _, n := range []string{"svc", "svc0123456789", "svc0123456789ab", "svcXYZ45678901", "eth0", "abc0123456789a"} {
		if isHostVethName(n) {
			t.Errorf("isHostVethName(%q) = true", n)
		}
	}
}

func TestDesiredNodeRoutes(t *testing.T) {
	own := netip.MustParsePrefix("10.244.1.0/24")
	routes := []NodeRoute{
		{"self", own, netip.MustParseAddr("192.168.1.2")},
		{"b", netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddr("192.168.1.3")},
		{"c", netip.MustParsePrefix("10.244.3.7/24"), netip.MustParseAddr("::ffff:192.168.1.4")},
		{"no-cidr", netip.Prefix{}, netip.MustParseAddr("192.168.1.5")},
		{"no-ip", netip.MustParsePrefix("10.244.5.0/24"), netip.Addr{}},
		{"v6", netip.MustParsePrefix("fd00::/64"), netip.MustParseAddr("192.168.1.6")},
		{"overlap", netip.MustParsePrefix("10.244.0.0/16"), netip.MustParseAddr("192.168.1.7")},
		{"dup", netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddr("192.168.1.8")},
	}
	want, skipped := desiredNodeRoutes(own, routes)
	if len(want) != 2 || want[netip.MustParsePrefix("10.244.2.0/24")] != netip.MustParseAddr("192.168.1.3") ||
		want[netip.MustParsePrefix("10.244.3.0/24")] != netip.MustParseAddr("192.168.1.4") {
		t.Errorf("want = %v", want)
	}
	if len(skipped) != 5 {
		t.Errorf("skipped = %q, want 5 (self is silently skipped)", skipped)
	}
}
