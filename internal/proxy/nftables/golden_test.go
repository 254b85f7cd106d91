package nftables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenCases is the table of service shapes whose rulesets are pinned in
// testdata/<name>.golden (acceptance 1 of issue 5).
func goldenCases() []struct {
	name   string
	family v1.IPFamily
	mod    func(*Config)
	state  *proxy.State
} {
	cip := func(s string) []string { return []string{s} }
	return []struct {
		name   string
		family v1.IPFamily
		mod    func(*Config)
		state  *proxy.State
	}{
		{name: "empty", state: buildState()},
		{name: "clusterip-three-endpoints", state: buildState(svcWithEps{
			svc{name: "web", port: "http", cip: cip("10.96.0.10"), svcPort: 80},
			[]proxy.Endpoint{ep("10.244.1.2", 8080, "node-b", "ready"), ep("10.244.2.2", 8080, "node-c", "ready"), ep("10.244.0.5", 8080, testNode, "ready")},
		})},
		{name: "clusterip-one-endpoint", state: buildState(svcWithEps{
			svc{name: "one", cip: cip("10.96.0.11"), svcPort: 443},
			[]proxy.Endpoint{ep("10.244.1.3", 8443, "node-b", "ready")},
		})},
		{name: "no-endpoints", state: buildState(svcWithEps{
			svc{name: "empty", cip: cip("10.96.0.12"), svcPort: 80, nodePort: 30080, externalIPs: []string{"192.168.0.100"}},
			[]proxy.Endpoint{ep("10.244.1.4", 80, "node-b", "dead")},
		})},
		{name: "nodeport-cluster", state: buildState(svcWithEps{
			svc{name: "np", cip: cip("10.96.0.13"), svcPort: 80, nodePort: 30081},
			[]proxy.Endpoint{ep("10.244.1.5", 80, "node-b", "ready"), ep("10.244.2.5", 80, "node-c", "ready")},
		})},
		{name: "loadbalancer-etp-local", state: buildState(svcWithEps{
			svc{name: "lb", cip: cip("10.96.0.14"), svcPort: 80, nodePort: 30082, lbIPs: []string{"192.168.0.200"}, etpLocal: true, hcNodePort: 32000},
			[]proxy.Endpoint{ep("10.244.0.6", 80, testNode, "ready"), ep("10.244.1.6", 80, "node-b", "ready")},
		})},
		{name: "etp-local-no-local-endpoints", state: buildState(svcWithEps{
			svc{name: "lb", cip: cip("10.96.0.15"), svcPort: 80, nodePort: 30083, lbIPs: []string{"192.168.0.201"}, etpLocal: true, hcNodePort: 32001},
			[]proxy.Endpoint{ep("10.244.1.7", 80, "node-b", "ready")},
		})},
		{name: "itp-local", state: buildState(svcWithEps{
			svc{name: "itp", cip: cip("10.96.0.16"), svcPort: 53, proto: v1.ProtocolUDP, itpLocal: true},
			[]proxy.Endpoint{ep("10.244.0.8", 5353, testNode, "ready"), ep("10.244.1.8", 5353, "node-b", "ready")},
		})},
		{name: "affinity", state: buildState(svcWithEps{
			svc{name: "sticky", cip: cip("10.96.0.17"), svcPort: 80, affinity: 10800 * time.Second},
			[]proxy.Endpoint{ep("10.244.1.9", 80, "node-b", "ready"), ep("10.244.2.9", 80, "node-c", "ready")},
		})},
		{name: "externalip-lb-source-ranges", state: buildState(svcWithEps{
			svc{name: "fw", cip: cip("10.96.0.18"), svcPort: 443, externalIPs: []string{"192.168.0.101"}, lbIPs: []string{"192.168.0.202"},
				sourceRanges: []string{"203.0.113.0/24", "192.168.0.0/24"}},
			[]proxy.Endpoint{ep("10.244.1.10", 8443, "node-b", "ready")},
		})},
		{name: "udp-and-sctp", state: buildState(
			svcWithEps{svc{name: "dns", port: "dns", proto: v1.ProtocolUDP, cip: cip("10.96.0.19"), svcPort: 53},
				[]proxy.Endpoint{ep("10.244.1.11", 53, "node-b", "ready")}},
			svcWithEps{svc{name: "sig", proto: v1.ProtocolSCTP, cip: cip("10.96.0.20"), svcPort: 3868},
				[]proxy.Endpoint{ep("10.244.1.12", 3868, "node-b", "ready")}},
		)},
		{name: "terminating-fallback", state: buildState(svcWithEps{
			svc{name: "drain", cip: cip("10.96.0.21"), svcPort: 80},
			[]proxy.Endpoint{ep("10.244.1.13", 80, "node-b", "terminating"), ep("10.244.1.14", 80, "node-b", "dead")},
		})},
		{name: "multi-port", state: buildState(
			svcWithEps{svc{name: "multi", port: "http", cip: cip("10.96.0.22"), svcPort: 80}, []proxy.Endpoint{ep("10.244.1.15", 8080, "node-b", "ready")}},
			svcWithEps{svc{name: "multi", port: "https", cip: cip("10.96.0.22"), svcPort: 443}, []proxy.Endpoint{ep("10.244.1.15", 8443, "node-b", "ready")}},
		)},
		{name: "masquerade-all", mod: func(c *Config) { c.MasqueradeAll = true; c.TCPBeLiberal = true }, state: buildState(svcWithEps{
			svc{name: "web", cip: cip("10.96.0.23"), svcPort: 80},
			[]proxy.Endpoint{ep("10.244.1.16", 80, "node-b", "ready")},
		})},
		{name: "nodeport-addresses", mod: func(c *Config) {
			c.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}
			c.InterfaceAddrs = func() ([]netip.Addr, error) {
				return addrs([]string{"127.0.0.1", "192.168.0.10", "192.168.0.11", "172.16.0.1"}), nil
			}
		}, state: buildState(svcWithEps{
			svc{name: "np", cip: cip("10.96.0.24"), svcPort: 80, nodePort: 30084},
			[]proxy.Endpoint{ep("10.244.1.17", 80, "node-b", "ready")},
		})},
		{name: "ipv6-dual-stack", family: v1.IPv6Protocol, state: buildState(svcWithEps{
			svc{name: "ds", cip: []string{"10.96.0.25", "fd96::25"}, svcPort: 80, nodePort: 30085, affinity: 60 * time.Second},
			[]proxy.Endpoint{ep("10.244.1.18", 80, "node-b", "ready"), ep("fd44:1::18", 80, "node-b", "ready"), ep("fd44::19", 80, testNode, "ready")},
		})},
	}
}

func TestGoldenRulesets(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			fam := tc.family
			if fam == "" {
				fam = v1.IPv4Protocol
			}
			cfg := testConfig(fam)
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			b, fake, _ := newTestBackend(t, cfg)
			mustSync(t, b, tc.state)
			got := fake.Dump()

			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("ruleset differs from %s (run with -update after checking):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
			}
		})
	}
}
