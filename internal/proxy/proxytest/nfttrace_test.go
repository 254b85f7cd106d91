package proxytest

import (
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// tracerRules is a small hand-written ruleset (not the backend's) that
// exercises the tracer's semantics: hook order and priorities, nat bindings,
// numgen choice points, verdict maps, dynamic sets, policies.
const tracerRules = `
add table ip t
add chain ip t pre-filter { type filter hook prerouting priority -110 ; }
add chain ip t pre-nat { type nat hook prerouting priority -100 ; }
add chain ip t pre-nat-late { type nat hook prerouting priority -50 ; }
add chain ip t out-nat { type nat hook output priority -100 ; }
add chain ip t fwd { type filter hook forward priority 0 ; }
add chain ip t in { type filter hook input priority 0 ; policy drop ; }
add chain ip t post-nat { type nat hook postrouting priority 100 ; }
add chain ip t dispatch
add chain ip t svc-a
add chain ip t ep-1
add chain ip t ep-2
add chain ip t fw
add set ip t aff-1 { type ipv4_addr ; flags dynamic,timeout ; timeout 10s ; }
add set ip t aff-2 { type ipv4_addr ; flags dynamic,timeout ; timeout 10s ; }
add set ip t blocked { type ipv4_addr ; flags interval ; }
add map ip t vips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip t pre-filter ct state new ip daddr 192.0.2.1 tcp dport 80 jump fw
add rule ip t pre-nat jump dispatch
add rule ip t pre-nat-late ip daddr 10.0.0.99 dnat to 10.1.0.99
add rule ip t out-nat jump dispatch
add rule ip t dispatch ip daddr . meta l4proto . th dport vmap @vips
add rule ip t dispatch ip daddr 10.0.0.3 meta l4proto udp dnat ip addr . port to numgen random mod 2 map { 0 : 10.1.0.5 . 53 , 1 : 10.1.0.6 . 5353 }
add rule ip t svc-a ip saddr @aff-1 goto ep-1
add rule ip t svc-a ip saddr @aff-2 goto ep-2
add rule ip t svc-a numgen random mod 2 vmap { 0 : goto ep-1 , 1 : goto ep-2 }
add rule ip t ep-1 ip saddr 10.1.0.1 mark set mark or 0x4000
add rule ip t ep-1 update @aff-1 { ip saddr }
add rule ip t ep-1 meta l4proto tcp dnat to 10.1.0.1:8080
add rule ip t ep-2 update @aff-2 { ip saddr }
add rule ip t ep-2 meta l4proto tcp dnat to 10.1.0.2
add rule ip t fw ip saddr @blocked drop
add rule ip t fwd ip daddr 10.1.0.66 reject with icmp type admin-prohibited
add rule ip t in tcp dport 22 accept
add rule ip t post-nat mark and 0x4000 != 0 mark set mark xor 0x4000 masquerade fully-random
add rule ip t post-nat ip saddr != { 10.1.0.0/16, 192.168.0.0/24 } ip daddr 10.1.0.0/16 masquerade
add element ip t blocked { 198.51.100.0/24 }
add element ip t vips { 10.0.0.1 . tcp . 80 : goto svc-a }
add element ip t vips { 192.0.2.1 . tcp . 80 : goto svc-a }
add element ip t vips { 10.0.0.2 . tcp . 80 : drop }
add element ip t vips { 10.0.0.99 . tcp . 80 : accept }
`

func newRulesTracer(t *testing.T) *NFTTracer {
	t.Helper()
	fake := knftables.NewFake("", "")
	if err := fake.ParseDump(tracerRules); err != nil {
		t.Fatal(err)
	}
	return NewNFTTracer([]netip.Addr{netip.MustParseAddr("192.168.0.2")}, fake)
}

func TestNFTTracer(t *testing.T) {
	Run(t, newRulesTracer(t), []Case{
		{Name: "numgen explores every endpoint; dnat without port keeps it", Src: "10.1.0.9", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:80"},
		{Name: "mark set on one path only masquerades", Src: "10.1.0.1", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:80", Masq: true},
		{Name: "source outside the ranges is masqueraded", Src: "203.0.113.1", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:80", Masq: true},
		{Name: "vmap drop", Src: "10.1.0.9", Dst: "10.0.0.2", Port: 80, Want: "DROP"},
		{Name: "vmap miss is not handled", Src: "10.1.0.9", Dst: "10.0.0.1", Port: 81, Want: ""},
		{Name: "numgen inside a dnat map", Src: "10.1.0.9", Dst: "10.0.0.3", Proto: "udp", Port: 53, Want: "DNAT 10.1.0.5:53,10.1.0.6:5353"},
		{Name: "protocol mismatch", Src: "10.1.0.9", Dst: "10.0.0.3", Proto: "tcp", Port: 53, Want: ""},
		{Name: "interval set in a filter before nat", Src: "198.51.100.7", Dst: "192.0.2.1", Port: 80, Want: "DROP"},
		{Name: "not in the interval set", Src: "203.0.113.1", Dst: "192.0.2.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:80", Masq: true},
		{Name: "accept in one nat chain leaves the binding to the next", Src: "10.1.0.9", Dst: "10.0.0.99", Port: 80, Want: "DNAT 10.1.0.99:80"},
		{Name: "reject in forward", Src: "10.1.0.9", Dst: "10.1.0.66", Port: 80, Want: "REJECT"},
		{Name: "input policy drop", Src: "10.1.0.9", Dst: "192.168.0.2", Port: 80, Want: "DROP"},
		{Name: "input accept", Src: "10.1.0.9", Dst: "192.168.0.2", Port: 22, Want: ""},
		{Name: "locally generated uses output", Src: "192.168.0.2", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:80"},
		{Name: "looped back to the node takes input", Src: "192.168.0.2", Dst: "192.168.0.2", Port: 80, Want: "DROP"},
		{Name: "affinity record pins the client", Src: "10.1.0.9", Dst: "10.0.0.1", Port: 80, After: "10.1.0.2:80", Want: "DNAT 10.1.0.2:80"},
	})
}

func TestNFTTracerResultString(t *testing.T) {
	tr := newRulesTracer(t)
	res, err := tr.Trace(netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.0.0.1"), "tcp", 80)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Paths) != 2 || !res.Paths[0].Masquerade || res.Paths[1].Masquerade {
		t.Errorf("want two paths, only the hairpin one masqueraded: %+v", res.Paths)
	}
	mixed := Result{Paths: []Path{{Verdict: Drop}, {Verdict: DNAT, Endpoint: netip.MustParseAddrPort("10.1.0.1:80")}}}
	if got, want := mixed.String(), "DNAT 10.1.0.1:80 | DROP"; got != want {
		t.Errorf("mixed result: got %q want %q", got, want)
	}
}

func TestNFTTracerRejectsUnknownSyntax(t *testing.T) {
	for _, rule := range []string{
		"limit rate 10/second accept",
		"ip daddr 10.0.0.1 jhash ip saddr mod 2 vmap { 0 : accept }",
		"iifname eth0 drop",
		"ip daddr 10.0.0.1 tcp flags syn drop",
	} {
		fake := knftables.NewFake("", "")
		dump := "add table ip t\nadd chain ip t pre { type filter hook prerouting priority 0 ; }\nadd rule ip t pre " + rule + "\n"
		if err := fake.ParseDump(dump); err != nil {
			t.Fatalf("%q: %v", rule, err)
		}
		_, err := NewNFTTracer(nil, fake).Trace(netip.MustParseAddr("10.1.0.9"), netip.MustParseAddr("10.0.0.1"), "tcp", 80)
		if err == nil || !strings.Contains(err.Error(), "nfttrace") {
			t.Errorf("%q: want an nfttrace error, got %v", rule, err)
		}
	}
}

func TestNormalizeWant(t *testing.T) {
	got, err := normalizeWant("DNAT 10.0.0.2:80, 10.0.0.1:80,10.0.0.2:80")
	if err != nil || got != "DNAT 10.0.0.1:80,10.0.0.2:80" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := normalizeWant("DNAT 10.0.0.1"); err == nil {
		t.Error("want an error for an endpoint without port")
	}
}
