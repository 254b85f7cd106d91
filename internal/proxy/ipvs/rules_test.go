package ipvs

import (
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

// TestRules: the virtual and real servers (as ipvsadm -Ln shows them) and
// the kube-ipvs0 addresses for a table of service shapes.
func TestRules(t *testing.T) {
	cases := []struct {
		name  string
		sched string // Config.Scheduler
		items []svcWithEps
		want  string
		addrs []string
	}{{
		name: "clusterip three endpoints",
		items: []svcWithEps{{svc{name: "web", cip: []string{"10.97.1.1"}, svcPort: 80}, epList{
			{"10.244.52.222", 80, "", "ready"}, {"10.244.67.79", 80, "", "ready"}, {"10.244.67.84", 80, "", "ready"}}.eps()}},
		want: `TCP  10.97.1.1:80 rr
  -> 10.244.52.222:80             Masq    1      0          0
  -> 10.244.67.79:80              Masq    1      0          0
  -> 10.244.67.84:80              Masq    1      0          0`,
		addrs: []string{"10.97.1.1"},
	}, {
		name: "nodeport on every node IP, both families only where a ClusterIP exists",
		items: []svcWithEps{{svc{name: "np", cip: []string{"10.96.5.5"}, svcPort: 8080, nodePort: 30080}, epList{
			{"10.244.1.2", 8080, "", "ready"}}.eps()}},
		want: `TCP  192.168.0.10:30080 rr
  -> 10.244.1.2:8080              Masq    1      0          0
TCP  10.96.5.5:8080 rr
  -> 10.244.1.2:8080              Masq    1      0          0`,
		addrs: []string{"10.96.5.5"},
	}, {
		name: "external and load balancer IPs, UDP",
		items: []svcWithEps{{svc{name: "dns", proto: v1.ProtocolUDP, cip: []string{"10.96.0.10"}, svcPort: 53,
			externalIPs: []string{"203.0.113.7"}, lbIPs: []string{"198.51.100.9"}, sourceRanges: []string{"198.51.100.0/24"}},
			epList{{"10.244.0.3", 53, "", "ready"}}.eps()}},
		want: `UDP  198.51.100.9:53 rr
  -> 10.244.0.3:53                Masq    1      0          0
UDP  203.0.113.7:53 rr
  -> 10.244.0.3:53                Masq    1      0          0
UDP  10.96.0.10:53 rr
  -> 10.244.0.3:53                Masq    1      0          0`,
		addrs: []string{"10.96.0.10", "198.51.100.9", "203.0.113.7"},
	}, {
		name: "affinity is persistence, annotation picks the scheduler, SCTP",
		items: []svcWithEps{
			{svc{name: "sticky", cip: []string{"10.96.1.1"}, svcPort: 80, affinity: 10800 * time.Second}, epList{{"10.244.1.1", 80, "", "ready"}}.eps()},
			{svc{name: "hash", cip: []string{"10.96.1.2"}, svcPort: 80, alg: "SH"}, epList{{"10.244.1.1", 80, "", "ready"}}.eps()},
			{svc{name: "alias", cip: []string{"10.96.1.3"}, svcPort: 80, alg: "least-connections"}, epList{{"10.244.1.1", 80, "", "ready"}}.eps()},
			{svc{name: "bogus", cip: []string{"10.96.1.4"}, svcPort: 80, alg: "fastest"}, epList{{"10.244.1.1", 80, "", "ready"}}.eps()},
			{svc{name: "sctp", proto: v1.ProtocolSCTP, cip: []string{"10.96.1.5"}, svcPort: 3868, alg: "mh"}, epList{{"10.244.1.1", 3868, "", "ready"}}.eps()},
		},
		want: `TCP  10.96.1.1:80 rr persistent 10800
  -> 10.244.1.1:80                Masq    1      0          0
TCP  10.96.1.2:80 sh
  -> 10.244.1.1:80                Masq    1      0          0
TCP  10.96.1.3:80 lc
  -> 10.244.1.1:80                Masq    1      0          0
TCP  10.96.1.4:80 rr
  -> 10.244.1.1:80                Masq    1      0          0
SCTP  10.96.1.5:3868 mh
  -> 10.244.1.1:3868              Masq    1      0          0`,
		addrs: []string{"10.96.1.1", "10.96.1.2", "10.96.1.3", "10.96.1.4", "10.96.1.5"},
	}, {
		name:  "configured default scheduler",
		sched: "wlc",
		items: []svcWithEps{{svc{name: "web", cip: []string{"10.96.2.1"}, svcPort: 80}, epList{{"10.244.1.1", 80, "", "ready"}}.eps()}},
		want: `TCP  10.96.2.1:80 wlc
  -> 10.244.1.1:80                Masq    1      0          0`,
		addrs: []string{"10.96.2.1"},
	}, {
		name: "terminating endpoints get weight 0, the fallback weight 1",
		items: []svcWithEps{
			{svc{name: "rolling", cip: []string{"10.96.3.1"}, svcPort: 80}, epList{
				{"10.244.1.1", 80, "", "ready"}, {"10.244.1.2", 80, "", "terminating"}, {"10.244.1.3", 80, "", "dead"}}.eps()},
			{svc{name: "fallback", cip: []string{"10.96.3.2"}, svcPort: 80}, epList{
				{"10.244.2.1", 80, "", "terminating"}, {"10.244.2.2", 80, "", "dead"}}.eps()},
		},
		want: `TCP  10.96.3.1:80 rr
  -> 10.244.1.1:80                Masq    1      0          0
  -> 10.244.1.2:80                Masq    0      0          0
  -> 10.244.1.3:80                Masq    0      0          0
TCP  10.96.3.2:80 rr
  -> 10.244.2.1:80                Masq    1      0          0
  -> 10.244.2.2:80                Masq    0      0          0`,
		addrs: []string{"10.96.3.1", "10.96.3.2"},
	}, {
		name: "externalTrafficPolicy Local: NodePort and external IP use local endpoints only",
		items: []svcWithEps{{svc{name: "local", cip: []string{"10.96.4.1"}, svcPort: 80, nodePort: 30001, externalIPs: []string{"203.0.113.1"}, etpLocal: true},
			epList{{"10.244.1.1", 80, testNode, "ready"}, {"10.244.2.1", 80, "node-b", "ready"}}.eps()}},
		want: `TCP  192.168.0.10:30001 rr
  -> 10.244.1.1:80                Masq    1      0          0
TCP  203.0.113.1:80 rr
  -> 10.244.1.1:80                Masq    1      0          0
TCP  10.96.4.1:80 rr
  -> 10.244.1.1:80                Masq    1      0          0
  -> 10.244.2.1:80                Masq    1      0          0`,
		addrs: []string{"10.96.4.1", "203.0.113.1"},
	}, {
		name: "internalTrafficPolicy Local and no endpoints",
		items: []svcWithEps{
			{svc{name: "itp", cip: []string{"10.96.5.1"}, svcPort: 80, itpLocal: true},
				epList{{"10.244.1.1", 80, testNode, "ready"}, {"10.244.2.1", 80, "node-b", "ready"}}.eps()},
			{svc{name: "empty", cip: []string{"10.96.5.2"}, svcPort: 80}, nil},
		},
		want: `TCP  10.96.5.1:80 rr
  -> 10.244.1.1:80                Masq    1      0          0
TCP  10.96.5.2:80 rr`,
		addrs: []string{"10.96.5.1", "10.96.5.2"},
	}, {
		name: "dual stack",
		items: []svcWithEps{{svc{name: "ds", cip: []string{"10.96.6.1", "fd96::6"}, svcPort: 443, nodePort: 30443},
			epList{{"10.244.1.1", 8443, "", "ready"}, {"fd44::1", 8443, "", "ready"}}.eps()}},
		want: `TCP  192.168.0.10:30443 rr
  -> 10.244.1.1:8443              Masq    1      0          0
TCP  10.96.6.1:443 rr
  -> 10.244.1.1:8443              Masq    1      0          0
TCP  [fd00::10]:30443 rr
  -> [fd44::1]:8443               Masq    1      0          0
TCP  [fd96::6]:443 rr
  -> [fd44::1]:8443               Masq    1      0          0`,
		addrs: []string{"10.96.6.1", "fd96::6"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, func(c *Config) { c.Scheduler = tc.sched })
			e.sync(t, buildState(tc.items...))
			if got := e.listing(t); got != tc.want {
				t.Errorf("ipvs state:\n%s\nwant:\n%s", got, tc.want)
			}
			got, _ := e.link.Addrs()
			var gs []string
			for _, a := range got {
				gs = append(gs, a.String())
			}
			slices.Sort(gs)
			if !slices.Equal(gs, tc.addrs) {
				t.Errorf("%s addresses %v, want %v", LinkName, gs, tc.addrs)
			}
		})
	}
}

type ep_ struct {
	ip   string
	port int32
	node string
	cond string
}

type epList []ep_

func (l epList) eps() []proxy.Endpoint {
	var out []proxy.Endpoint
	for _, e := range l {
		out = append(out, ep(e.ip, e.port, e.node, e.cond))
	}
	return out
}

// TestNFTables checks the table that does what IPVS cannot: masquerade
// sets, no-endpoint verdicts, source ranges, service CIDR hygiene.
func TestNFTables(t *testing.T) {
	e := newTestEnv(t, nil)
	e.sync(t, buildState(
		svcWithEps{svc{name: "web", cip: []string{"10.96.0.20"}, svcPort: 80, nodePort: 30080,
			lbIPs: []string{"198.51.100.9"}, sourceRanges: []string{"203.0.113.0/24"}},
			epList{{"10.244.1.1", 8080, "", "ready"}}.eps()},
		svcWithEps{svc{name: "empty", cip: []string{"10.96.0.21"}, svcPort: 80, nodePort: 30081}, nil},
		svcWithEps{svc{name: "local", cip: []string{"10.96.0.22"}, svcPort: 80, nodePort: 30082, etpLocal: true},
			epList{{"10.244.2.1", 80, "node-b", "ready"}}.eps()},
	))
	dump := e.nft[v1.IPv4Protocol].Dump()
	for _, want := range []string{
		"add element ip svcnet-ipvs cluster-ips { 10.96.0.20 . tcp . 80 }",
		"add element ip svcnet-ipvs masquerade-services { 198.51.100.9 . tcp . 80 }",
		"add element ip svcnet-ipvs masquerade-nodeports { tcp . 30080 }",
		"add element ip svcnet-ipvs nodeport-ips { 192.168.0.10 }",
		"add element ip svcnet-ipvs no-endpoint-services { 10.96.0.21 . tcp . 80 : goto reject-chain }",
		"add element ip svcnet-ipvs no-endpoint-nodeports { tcp . 30081 : goto reject-chain }",
		"add element ip svcnet-ipvs no-endpoint-nodeports { tcp . 30082 : drop }",
		"add element ip svcnet-ipvs hairpin-connections { 10.244.1.1 . 10.244.1.1 . tcp . 8080 }",
		"ip saddr { 203.0.113.0/24 } return",
		"ip daddr . meta l4proto . th dport @cluster-ips ip saddr != { 10.244.0.0/16 } meta mark set mark or 0x4000",
		"ct state new ip daddr { 10.96.0.0/12 } ip daddr != @service-addrs drop",
		"ct state new ip daddr @service-addrs ip daddr . meta l4proto . th dport != @service-ips reject",
		"meta l4proto tcp reject with tcp reset",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	// ETP Local: its NodePort is not masqueraded.
	if strings.Contains(dump, "masquerade-nodeports { tcp . 30082 }") {
		t.Errorf("ETP Local NodePort is masqueraded:\n%s", dump)
	}
	if e.sys["net/ipv4/vs/conntrack"] != "1" || e.sys["net/ipv4/conf/all/arp_ignore"] != "1" || e.sys["net/ipv4/conf/all/arp_announce"] != "2" {
		t.Errorf("sysctls: %v", e.sys)
	}
}

// TestNFTablesDelta: a partial sync writes only the table's element and
// firewall chain changes, and the result equals a full rewrite.
func TestNFTablesDelta(t *testing.T) {
	base := []svcWithEps{
		{svc{name: "web", cip: []string{"10.96.0.20"}, svcPort: 80, nodePort: 30080}, epList{{"10.244.1.1", 8080, "", "ready"}}.eps()},
		{svc{name: "gone", cip: []string{"10.96.0.21"}, svcPort: 80, lbIPs: []string{"198.51.100.2"}, sourceRanges: []string{"203.0.113.0/24"}},
			epList{{"10.244.1.2", 80, "", "ready"}}.eps()},
		// Shares 10.96.0.20 (service-addrs) and the hairpin element with
		// web; its removal must keep both.
		{svc{name: "web", port: "alt", cip: []string{"10.96.0.20"}, svcPort: 81}, epList{{"10.244.1.5", 8080, "", "ready"}}.eps()},
		{svc{name: "web", port: "same-ep", cip: []string{"10.96.0.20"}, svcPort: 82}, epList{{"10.244.1.1", 8080, "", "ready"}}.eps()},
	}
	changed := []svcWithEps{
		{svc{name: "web", cip: []string{"10.96.0.20"}, svcPort: 80, nodePort: 30080}, nil}, // now no endpoints
		{svc{name: "web", port: "same-ep", cip: []string{"10.96.0.20"}, svcPort: 82}, epList{{"10.244.1.1", 8080, "", "ready"}}.eps()},
		{svc{name: "new", cip: []string{"10.96.0.22"}, svcPort: 443, lbIPs: []string{"198.51.100.3"}, sourceRanges: []string{"192.0.2.0/24"}},
			epList{{"10.244.1.3", 8443, "", "ready"}}.eps()},
	}
	inc := newTestEnv(t, nil)
	st := buildState(base...)
	inc.sync(t, st)
	st2 := buildState(changed...)
	st2.Changed = map[proxy.ServicePortName]struct{}{}
	for n := range st.Services {
		st2.Changed[n] = struct{}{}
	}
	for n := range st2.Services {
		st2.Changed[n] = struct{}{}
	}
	inc.sync(t, st2)
	if partial, _ := inc.b.LastSyncStats(); !partial {
		t.Fatal("second sync was not partial")
	}
	tx := inc.nft[v1.IPv4Protocol].LastTransaction.String()
	if strings.Contains(tx, "add table") || strings.Contains(tx, "10.96.0.20 . tcp . 80 }") && !strings.Contains(tx, "no-endpoint-services") {
		t.Errorf("partial sync rewrote more than the changes:\n%s", tx)
	}
	t.Logf("partial transaction:\n%s", tx)
	full := newTestEnv(t, nil)
	full.sync(t, buildState(changed...))
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		if a, b := inc.nft[fam].Dump(), full.nft[fam].Dump(); a != b {
			t.Errorf("%s: incremental table:\n%s\nfull rewrite:\n%s\nlast transaction:\n%s", fam, a, b, tx)
		}
	}
	// Nothing changed: no transaction at all.
	before := inc.nft[v1.IPv4Protocol].LastTransaction
	inc.sync(t, next(st2, name(st2, "new")))
	if inc.nft[v1.IPv4Protocol].LastTransaction != before {
		t.Errorf("unchanged state wrote %s", inc.nft[v1.IPv4Protocol].LastTransaction)
	}
}
