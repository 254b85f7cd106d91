package iptables_test

import (
	"context"
	"flag"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenBackend returns the backend over a Fake for standardConfig,
// changed by mod when not nil.
func goldenBackend(t *testing.T, fam v1.IPFamily, mod func(*iptables.Config)) (*iptables.Backend, *iptables.Fake) {
	t.Helper()
	cfg := standardConfig(fam)
	if mod != nil {
		mod(&cfg)
	}
	fake := iptables.NewFake()
	b, err := iptables.New(cfg, fake)
	if err != nil {
		t.Fatal(err)
	}
	return b, fake
}

// only returns a copy of st holding the named services of the standard
// fixture.
func only(st *proxy.State, names ...string) *proxy.State {
	out := proxy.NewState(st.NodeName)
	out.NodeIPs, out.Full, out.Generation = st.NodeIPs, true, st.Generation
	for n, sp := range st.Services {
		if slices.Contains(names, n.Name) {
			out.Services[n] = sp
			out.Changed[n] = struct{}{}
			if eps, ok := st.Endpoints[n]; ok {
				out.Endpoints[n] = eps
			}
		}
	}
	return out
}

// next returns a partial-sync successor of st after change, with the
// named services in Changed.
func next(st *proxy.State, change func(*proxy.State), changed ...string) *proxy.State {
	out := &proxy.State{
		NodeName: st.NodeName, NodeIPs: st.NodeIPs, Generation: st.Generation + 1,
		Services: maps.Clone(st.Services), Endpoints: maps.Clone(st.Endpoints),
		Changed: map[proxy.ServicePortName]struct{}{},
	}
	change(out)
	for n := range out.Services {
		if slices.Contains(changed, n.Name) {
			out.Changed[n] = struct{}{}
		}
	}
	for n := range st.Services {
		if slices.Contains(changed, n.Name) {
			out.Changed[n] = struct{}{}
		}
	}
	return out
}

func name(st *proxy.State, svc string) proxy.ServicePortName {
	for n := range st.Services {
		if n.Name == svc {
			return n
		}
	}
	panic("no service " + svc)
}

// TestGolden pins the iptables-restore payloads the backend writes for a
// table of service shapes and of partial changes (testdata/<name>.golden;
// refresh with -update). Each golden file holds the payloads of the
// steps after the first one, which sets the scene.
func TestGolden(t *testing.T) {
	std := proxytest.StandardState()
	cases := []struct {
		name   string
		family v1.IPFamily
		mod    func(*iptables.Config)
		steps  []*proxy.State
	}{
		{name: "empty", steps: []*proxy.State{nil, only(std)}},
		{name: "standard", steps: []*proxy.State{nil, std}},
		{name: "standard-ipv6", family: v1.IPv6Protocol, steps: []*proxy.State{nil, proxytest.StandardStateIPv6()}},
		{name: "masquerade-all-tcp-be-liberal", mod: func(c *iptables.Config) { c.MasqueradeAll, c.TCPBeLiberal = true, true },
			steps: []*proxy.State{nil, only(std, "clusterip", "nodeport")}},
		{name: "clusterip-affinity", steps: []*proxy.State{nil, only(std, "affinity", "hairpin")}},
		{name: "lb-source-ranges-etp-local", steps: []*proxy.State{nil, only(std, "lb", "etp-local", "etp-local-remote-only")}},
		{name: "no-endpoints-itp-local", steps: []*proxy.State{nil, only(std, "no-endpoints", "itp-local", "itp-local-remote-only", "not-ready")}},
		// Partial syncs: only the changed service's chains, and the
		// top-level/dispatch chains on its path.
		{name: "partial-endpoint-change", steps: []*proxy.State{std, next(std, func(st *proxy.State) {
			n := name(st, "clusterip")
			eps := slices.Clone(st.Endpoints[n])
			eps[0].IP = netip.MustParseAddr("10.244.1.99")
			st.Endpoints[n] = eps
		}, "clusterip")}},
		{name: "partial-service-delete", steps: []*proxy.State{std, next(std, func(st *proxy.State) {
			n := name(st, "lb")
			delete(st.Services, n)
			delete(st.Endpoints, n)
		}, "lb")}},
		{name: "partial-endpoints-gone", steps: []*proxy.State{std, next(std, func(st *proxy.State) {
			delete(st.Endpoints, name(st, "nodeport"))
		}, "nodeport")}},
		{name: "partial-nothing-changed", steps: []*proxy.State{std, next(std, func(*proxy.State) {}, "clusterip")}},
		{name: "resync-full", steps: []*proxy.State{only(std, "hairpin"), func() *proxy.State { s := only(std, "hairpin"); s.Full = true; return s }()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fam := tc.family
			if fam == "" {
				fam = v1.IPv4Protocol
			}
			b, fake := goldenBackend(t, fam, tc.mod)
			ctx := context.Background()
			if first := tc.steps[0]; first != nil {
				if err := b.Sync(ctx, first); err != nil {
					t.Fatal(err)
				}
			}
			before := len(fake.Restores)
			for _, st := range tc.steps[1:] {
				if err := b.Sync(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			got := "# payloads passed to iptables-restore --noflush\n" + strings.Join(fake.Restores[before:], "# --- next sync\n")
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
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("payload differs from %s (run with -update after checking):\n%s", path, lineDiff(got, string(want)))
			}
		})
	}
}
