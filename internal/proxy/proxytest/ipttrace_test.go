package proxytest

import (
	"net/netip"
	"strings"
	"testing"
)

// iptRules is a small hand-written ruleset (not the backend's) that
// exercises the iptables tracer's semantics: table order per hook, nat
// bindings, statistic choice points, recent lists, marks, policies,
// RETURN, ACCEPT ending a table, addrtype and negation.
const iptRules = `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CHECK - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -m conntrack --ctstate NEW -j CHECK
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A FORWARD -d 10.1.0.66/32 -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -d 10.1.0.0/16 -p udp -m udp --dport 100:199 -j DROP
-A CHECK -d 10.0.0.0/8 -j RETURN
-A CHECK -p tcp -m tcp --dport 8080 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SVCS - [0:0]
:SVC-A - [0:0]
:EP-1 - [0:0]
:EP-2 - [0:0]
:MASQ - [0:0]
-A PREROUTING -j SVCS
-A OUTPUT -j SVCS
-A POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A POSTROUTING -j MASQUERADE --random-fully
-A SVCS -d 10.0.0.1/32 -p tcp -m comment --comment "svc a" -m tcp --dport 80 -j SVC-A
-A SVCS -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A SVCS -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.0.9:80
-A SVCS -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30000 -j SVC-A
-A SVC-A ! -s 10.1.0.0/16 -j MASQ
-A SVC-A -m recent --rcheck --seconds 10 --reap --name EP-1 --mask 255.255.255.255 --rsource -j EP-1
-A SVC-A -m recent --rcheck --seconds 10 --reap --name EP-2 --mask 255.255.255.255 --rsource -j EP-2
-A SVC-A -m statistic --mode random --probability 0.5000000000 -j EP-1
-A SVC-A -j EP-2
-A EP-1 -s 10.1.0.1/32 -j MASQ
-A EP-1 -p tcp -m recent --set --name EP-1 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.1.0.1:8080
-A EP-2 -p tcp -m recent --set --name EP-2 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.1.0.2:8080
-A MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
`

func TestIPTTracer(t *testing.T) {
	node := []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("10.9.9.9")}
	tr, err := NewIPTTracer(node, iptRules)
	if err != nil {
		t.Fatal(err)
	}
	Run(t, tr, []Case{
		{Name: "statistic explores both endpoints", Src: "10.1.0.50", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:8080"},
		{Name: "negated source marks, postrouting masquerades", Src: "203.0.113.1", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:8080", Masq: true},
		{Name: "hairpin: one path masquerades", Src: "10.1.0.1", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:8080", Masq: true},
		{Name: "recent sticks after Follow", Src: "10.1.0.50", Dst: "10.0.0.1", Port: 80, After: "10.1.0.2:8080", Want: "DNAT 10.1.0.2:8080"},
		{Name: "ACCEPT ends the nat table before the DNAT", Src: "10.1.0.50", Dst: "10.0.0.2", Port: 80, Want: ""},
		{Name: "wrong port: not handled", Src: "10.1.0.50", Dst: "10.0.0.1", Port: 81, Want: ""},
		{Name: "addrtype LOCAL destination", Src: "203.0.113.1", Dst: "192.168.0.2", Port: 30000, Want: "DNAT 10.1.0.1:8080,10.1.0.2:8080", Masq: true},
		{Name: "input policy drop", Src: "203.0.113.1", Dst: "192.168.0.2", Port: 23, Want: "DROP"},
		{Name: "input accept by port", Src: "203.0.113.1", Dst: "192.168.0.2", Port: 22, Want: ""},
		{Name: "ACCEPT in a user chain ends the table", Src: "10.1.0.50", Dst: "192.168.0.2", Port: 8080, Want: ""},
		{Name: "RETURN from a user chain falls to the built-in policy", Src: "203.0.113.1", Dst: "10.9.9.9", Port: 8080, Want: "DROP"},
		{Name: "forward reject", Src: "203.0.113.1", Dst: "10.1.0.66", Port: 80, Want: "REJECT"},
		{Name: "port range", Src: "203.0.113.1", Dst: "10.1.0.7", Proto: "udp", Port: 150, Want: "DROP"},
		{Name: "outside the port range", Src: "203.0.113.1", Dst: "10.1.0.7", Proto: "udp", Port: 200, Want: ""},
		{Name: "node-originated goes through OUTPUT nat", Src: "192.168.0.2", Dst: "10.0.0.1", Port: 80, Want: "DNAT 10.1.0.1:8080,10.1.0.2:8080", Masq: true},
	})
	res, err := tr.Trace(netip.MustParseAddr("10.1.0.50"), netip.MustParseAddr("10.0.0.1"), "tcp", 80)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Paths) != 2 {
		t.Errorf("%d paths through a 2-endpoint statistic cascade, want 2", len(res.Paths))
	}
	if got := tr.RulesEvaluated(); got < 5 || got > 20 {
		t.Errorf("RulesEvaluated = %d, want the handful this ruleset has", got)
	}
}

// TestIPTTracerRejectsUnknown checks that options outside the modelled
// subset are errors, never silently skipped.
func TestIPTTracerRejectsUnknown(t *testing.T) {
	for _, rule := range []string{
		"-A X -m set --match-set foo dst -j ACCEPT",
		"-A X -i eth0 -j ACCEPT",
		"-A X -m statistic --mode nth --every 2 -j ACCEPT",
		"-A X -j SNAT --to-source 1.2.3.4",
		"-A X -j NOSUCHCHAIN",
		"-A X -m addrtype --dst-type UNICAST -j ACCEPT",
	} {
		save := "*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n" + rule + "\nCOMMIT\n"
		if _, err := NewIPTTracer(nil, save); err == nil {
			t.Errorf("%q: parsed without error", rule)
		} else if !strings.Contains(err.Error(), "ipttrace") {
			t.Errorf("%q: %v", rule, err)
		}
	}
}
