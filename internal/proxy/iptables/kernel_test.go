package iptables_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// kernelBackend returns a backend writing into the sandbox's own namespace
// with the binaries of variant v, splitting syncs as NewSystem does for v
// unless mods change the config.
func kernelBackend(t *testing.T, fam v1.IPFamily, v iptables.Variant, mods ...func(*iptables.Config)) (*iptables.Backend, *iptables.Exec) {
	t.Helper()
	proxytest.RequireSandbox(t, "iptables-"+string(v)+"-restore")
	ex := iptables.NewExec(fam, v)
	cfg := standardConfig(fam)
	cfg.MaxChainsPerRestore = iptables.ChainsPerRestore(v)
	for _, m := range mods {
		m(&cfg)
	}
	b, err := iptables.New(cfg, ex)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b, ex
}

func kernelDump(t *testing.T, ex *iptables.Exec) string {
	t.Helper()
	var out strings.Builder
	for _, table := range []string{"filter", "nat"} {
		b, err := ex.Save(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	return out.String()
}

// TestKernelPacketFlow loads StandardState into the real kernel with both
// iptables variants and both families, reads the rules back with
// iptables-save (the kernel's own spelling) and runs the packet-flow
// table over them. A second, identical sync must be accepted too, and
// Cleanup must leave no svcnet chain or jump behind.
func TestKernelPacketFlow(t *testing.T) {
	ctx := context.Background()
	for _, v := range []iptables.Variant{iptables.VariantNFT, iptables.VariantLegacy} {
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			t.Run(string(v)+"-"+string(fam), func(t *testing.T) {
				b, ex := kernelBackend(t, fam, v)
				st, nodeIPs, cases := proxytest.StandardState(), proxytest.NodeIPs(), proxytest.StandardCases()
				if fam == v1.IPv6Protocol {
					st, nodeIPs, cases = proxytest.StandardStateIPv6(), proxytest.NodeIPsIPv6(), proxytest.StandardCasesIPv6()
				}
				if err := b.Sync(ctx, st); err != nil {
					t.Fatal(err)
				}
				st.Full = true
				if err := b.Sync(ctx, st); err != nil {
					t.Fatalf("second full sync: %v", err)
				}
				dump := kernelDump(t, ex)
				if n := strings.Count(dump, "-j KUBE-SERVICES"); n != 4 {
					t.Errorf("%d jumps to KUBE-SERVICES after two full syncs, want 4 (filter FORWARD, OUTPUT; nat PREROUTING, OUTPUT):\n%s", n, dump)
				}
				tr, err := proxytest.NewIPTTracer(nodeIPs, dump)
				if err != nil {
					t.Fatal(err)
				}
				proxytest.Run(t, tr, cases)

				if err := b.Cleanup(ctx); err != nil {
					t.Fatal(err)
				}
				if dump := kernelDump(t, ex); strings.Contains(dump, "KUBE-") {
					t.Errorf("rules left after Cleanup:\n%s", dump)
				}
			})
		}
	}
}

// TestDetectVariant checks that detection follows the rules already
// present: an empty sandbox reports the "iptables -V" variant, a legacy
// rule makes it legacy, more nft rules than legacy ones make it nft. With
// no legacy rule and "iptables -V" naming nf_tables the nft rules need not
// be counted: no iptables-nft-save may run then (a dump of every table,
// over a second at 10k Services).
func TestDetectVariant(t *testing.T) {
	proxytest.RequireSandbox(t, "iptables-legacy", "iptables-nft")
	ctx := context.Background()
	out, err := exec.Command("iptables", "-V").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := iptables.VariantNFT
	if strings.Contains(string(out), "legacy") {
		want = iptables.VariantLegacy
	}
	// Record the nft dumps DetectVariant runs.
	dir := t.TempDir()
	dumps := filepath.Join(dir, "dumps")
	for _, bin := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		real, err := exec.LookPath(bin)
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec %s \"$@\"\n", bin, dumps, real)
		if err := os.WriteFile(filepath.Join(dir, bin), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	dumped := func() string {
		b, _ := os.ReadFile(dumps)
		os.Remove(dumps)
		return strings.TrimSpace(string(b))
	}

	if got, err := iptables.DetectVariant(ctx); err != nil || got != want {
		t.Fatalf("DetectVariant on an empty namespace = %q, %v; want %q (iptables -V: %s)", got, err, want, out)
	}
	if d := dumped(); want == iptables.VariantNFT && d != "" {
		t.Errorf("with no legacy rule and iptables -V naming nf_tables, DetectVariant dumped the nft tables:\n%s", d)
	}
	rule := func(bin, op, src string) {
		t.Helper()
		if out, err := exec.Command(bin, op, "INPUT", "-s", src, "-j", "ACCEPT").CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", bin, op, err, out)
		}
	}
	rule("iptables-legacy", "-A", "192.0.2.1")
	defer rule("iptables-legacy", "-D", "192.0.2.1")
	if got, err := iptables.DetectVariant(ctx); err != nil || got != iptables.VariantLegacy {
		t.Fatalf("DetectVariant with a legacy rule = %q, %v; want legacy", got, err)
	}
	if d := dumped(); d == "" {
		t.Error("with a legacy rule, DetectVariant did not count the nft rules")
	}
	rule("iptables-nft", "-A", "192.0.2.2")
	defer rule("iptables-nft", "-D", "192.0.2.2")
	rule("iptables-nft", "-A", "192.0.2.3")
	defer rule("iptables-nft", "-D", "192.0.2.3")
	if got, err := iptables.DetectVariant(ctx); err != nil || got != iptables.VariantNFT {
		t.Fatalf("DetectVariant with 2 nft rules and 1 legacy rule = %q, %v; want nft", got, err)
	}
}

// TestKernelMatchesFake loads 300 services (NodePorts and ExternalIPs
// included, so the KUBE-DST address and port trees have several levels)
// into the kernel and into the Fake, then a partial change, and checks
// that the kernel's iptables-save output traces exactly like the Fake's
// for a packet to every service frontend: the payloads mean in the kernel
// what the Fake and the tracer take them to mean.
func TestKernelMatchesFake(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		v     iptables.Variant
		limit int // MaxChainsPerRestore; 0: ChainsPerRestore(v)
	}{
		{"nft", iptables.VariantNFT, 0},
		{"legacy", iptables.VariantLegacy, 0},
		// Every sync and the cleanup in many small runs (TestSyncInRuns
		// with the real binaries).
		{"nft-in-runs", iptables.VariantNFT, 25},
	} {
		v := c.v
		t.Run(c.name, func(t *testing.T) {
			kb, ex := kernelBackend(t, v1.IPv4Protocol, v, func(cfg *iptables.Config) {
				if c.limit > 0 {
					cfg.MaxChainsPerRestore = c.limit
				}
			})
			fb, fake := newFlowBackend(t, v1.IPv4Protocol)
			st := scaleState(300)
			for _, b := range []*iptables.Backend{kb, fb} {
				if err := b.Sync(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			compare := func(st *proxy.State) {
				t.Helper()
				kt, err := proxytest.NewIPTTracer(proxytest.NodeIPs(), kernelDump(t, ex))
				if err != nil {
					t.Fatal(err)
				}
				ft := tracer(t, fake, proxytest.NodeIPs())
				checked := 0
				for _, sp := range st.Services {
					type pkt struct {
						dst  netip.Addr
						port int
					}
					pkts := []pkt{{sp.ClusterIPs[0], int(sp.Port)}, {sp.ClusterIPs[0], int(sp.Port) + 1}}
					if sp.NodePort != 0 {
						pkts = append(pkts, pkt{netip.MustParseAddr(proxytest.NodeIP), int(sp.NodePort)})
					}
					for _, ip := range sp.ExternalIPs {
						pkts = append(pkts, pkt{ip, int(sp.Port)})
					}
					for _, p := range pkts {
						for _, src := range []string{proxytest.LocalPod, proxytest.ExternalIP} {
							s := netip.MustParseAddr(src)
							kr, err := kt.Trace(s, p.dst, "tcp", p.port)
							if err != nil {
								t.Fatal(err)
							}
							fr, err := ft.Trace(s, p.dst, "tcp", p.port)
							if err != nil {
								t.Fatal(err)
							}
							if kr.String() != fr.String() || kr.Masquerade() != fr.Masquerade() {
								t.Errorf("%s -> %s:%d: kernel %q masq=%v, fake %q masq=%v", s, p.dst, p.port, kr, kr.Masquerade(), fr, fr.Masquerade())
							}
							checked++
						}
					}
				}
				if checked < 1000 {
					t.Errorf("only %d packets compared", checked)
				}
			}
			compare(st)

			// A partial change: one service loses its endpoints, one is
			// deleted, one endpoint moves.
			next := *st
			next.Full, next.Generation = false, 2
			next.Services, next.Endpoints = maps.Clone(st.Services), maps.Clone(st.Endpoints)
			next.Changed = map[proxy.ServicePortName]struct{}{}
			names := slices.SortedFunc(maps.Keys(st.Services), func(a, b proxy.ServicePortName) int { return strings.Compare(a.Name, b.Name) })
			delete(next.Endpoints, names[9])
			delete(next.Services, names[19])
			delete(next.Endpoints, names[19])
			eps := slices.Clone(next.Endpoints[names[5]])
			eps[0].IP = netip.MustParseAddr("10.200.0.1")
			next.Endpoints[names[5]] = eps
			for _, i := range []int{5, 9, 19} {
				next.Changed[names[i]] = struct{}{}
			}
			for _, b := range []*iptables.Backend{kb, fb} {
				if err := b.Sync(ctx, &next); err != nil {
					t.Fatal(err)
				}
				if partial, _ := b.LastSyncStats(); !partial {
					t.Fatal("sync was full, want partial")
				}
			}
			compare(&next)
		})
	}
}

// TestCleanupSystem installs rules with both variants and checks that
// CleanupSystem removes them all, and succeeds again on a clean node.
func TestCleanupSystem(t *testing.T) {
	ctx := context.Background()
	var exs []*iptables.Exec
	for _, v := range []iptables.Variant{iptables.VariantNFT, iptables.VariantLegacy} {
		b, ex := kernelBackend(t, v1.IPv4Protocol, v)
		if err := b.Sync(ctx, proxytest.StandardState()); err != nil {
			t.Fatal(err)
		}
		exs = append(exs, ex)
	}
	for i := 0; i < 2; i++ {
		if err := iptables.CleanupSystem(ctx); err != nil {
			t.Fatalf("CleanupSystem #%d: %v", i+1, err)
		}
	}
	for _, ex := range exs {
		if dump := kernelDump(t, ex); strings.Contains(dump, "KUBE-") {
			t.Errorf("%s: rules left after CleanupSystem:\n%s", ex.Variant, dump)
		}
	}
}
