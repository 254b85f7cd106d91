package ipvs_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/ipvs"
	"github.com/svcnet/svcnet/internal/proxy/list"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestMain runs the package's tests inside a private network namespace when
// root (see proxytest.Main).
func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

// envVM is set by hack/ipvs-vm.sh inside the VM: there the kernel must
// have IPVS, and its absence fails the tests instead of skipping them.
const envVM = "SVCNET_IPVS_VM"

// requireIPVS skips (outside the VM) or fails (inside) when the kernel has
// no IPVS. This machine kind's kernel has none: `make test-ipvs` boots a
// Debian kernel that has it and runs these tests there.
func requireIPVS(t testing.TB) {
	t.Helper()
	proxytest.RequireSandbox(t, "nft")
	if err := ipvs.CheckKernel(ipvs.DefaultKernelPaths()); err != nil {
		if os.Getenv(envVM) != "" {
			t.Fatalf("inside the VM the kernel must have IPVS: %v", err)
		}
		t.Skipf("kernel without IPVS (%v); make test-ipvs runs this in a VM", err)
	}
}

func newSystemBackend(t *testing.T, ns *proxytest.NetNS, cfg ipvs.Config) *ipvs.Backend {
	t.Helper()
	var b *ipvs.Backend
	if err := ns.Do(func() error {
		var err error
		b, err = ipvs.NewSystem(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Do(func() error { return b.Cleanup(context.Background()) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return b
}

// TestRealTraffic runs the shared real-traffic matrix on the ipvs backend.
func TestRealTraffic(t *testing.T) {
	requireIPVS(t)
	proxytest.RunRealTraffic(t, func(t *testing.T, ns *proxytest.NetNS, node string, nodeIPs []netip.Addr) proxy.Backend {
		return newSystemBackend(t, ns, ipvs.Config{
			NodeName: node, NodeIPs: nodeIPs,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ServiceCIDR)},
			// Short FIN timeout so affinity templates are not held by
			// closing connections for minutes.
			TCPFinTimeout: time.Second,
		})
	})
}

func ipvsadm(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Ln: %v: %s", err, out)
	}
	return string(out)
}

var seedLines = []string{
	"TCP  10.97.1.1:80 rr",
	"  -> 10.244.52.222:80             Masq    1      0          0",
	"  -> 10.244.67.79:80              Masq    1      0          0",
	"  -> 10.244.67.84:80              Masq    1      0          0",
}

// TestSeedService: the seed's nginx Service (10.97.1.1:80, three pods):
// ipvsadm -Ln shows it as in the seed, `svcnet proxy list` (list.FromState)
// and the backend's kernel view render the same, 30 requests go round
// robin over the three pods; affinity shows as persistence and sticks;
// removing an endpoint drains it (weight 0, its open connection still
// served, no new connection reaches it).
func TestSeedService(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	lab := proxytest.NewLab(t)
	root := lab.Root()
	pods := map[string]string{"p222": "10.244.52.222", "p79": "10.244.67.79", "p84": "10.244.67.84"}
	for name, ip := range pods {
		lab.StartServer(lab.AddPod(root, name, netip.MustParseAddr(ip)), name, []int{80}, nil)
	}
	client := lab.AddPod(root, "client", netip.MustParseAddr("10.244.1.100"))
	lab.EnableForwarding(root)

	b := newSystemBackend(t, root, ipvs.Config{
		NodeName:     "node-a",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
	})
	n := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "dev", Name: "service-clusterip"}, Protocol: v1.ProtocolTCP}
	sp := &proxy.ServicePort{Name: n, Protocol: v1.ProtocolTCP, Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.97.1.1")}}
	st := proxy.NewState("node-a")
	st.Services[n] = sp
	for _, ip := range []string{"10.244.52.222", "10.244.67.79", "10.244.67.84"} {
		st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: netip.MustParseAddr(ip), Port: 80, Ready: true, Serving: true})
	}
	st.Changed[n] = struct{}{}
	st.Full = true
	if err := b.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}

	out := ipvsadm(t)
	t.Logf("ipvsadm -Ln:\n%s", out)
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		got = append(got, strings.TrimRight(sc.Text(), " "))
	}
	if i := slices.Index(got, seedLines[0]); i < 0 || !slices.Equal(got[i:i+4], seedLines) {
		t.Errorf("ipvsadm -Ln lacks the seed's lines %q", seedLines)
	}
	// svcnet proxy list's view of the same State renders byte for byte
	// as ipvsadm (but for the kernel's version/size line).
	tbl, err := list.FromState(st, list.Options{Mode: list.ModeIPVS})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := tbl.Render(&sb); err != nil {
		t.Fatal(err)
	}
	if a, b := afterFirstLine(sb.String()), afterFirstLine(out); a != b {
		t.Errorf("svcnet proxy list:\n%s\nipvsadm -Ln:\n%s", a, b)
	}

	t.Run("30 requests go round robin over the three pods", func(t *testing.T) {
		var order []string
		for range 30 {
			r, err := client.HTTPGet(ctx, "10.97.1.1:80")
			if err != nil {
				t.Fatal(err)
			}
			if r.ClientIP() != "10.244.1.100" {
				t.Errorf("pod saw client %s, want the pod IP", r.ClientIP())
			}
			order = append(order, r.Backend)
		}
		seen := map[string]int{}
		for i, b := range order {
			seen[b]++
			if i >= 3 && b != order[i-3] {
				t.Errorf("request %d went to %s, want %s (round robin): %v", i, b, order[i-3], order)
				break
			}
		}
		if len(seen) != 3 {
			t.Errorf("backends: %v", seen)
		}
	})

	t.Run("affinity is persistence and sticks", func(t *testing.T) {
		sticky := *sp
		sticky.AffinityTimeout = 10800 * time.Second
		sticky.LBAlgorithm = "wrr"
		st2 := *st
		st2.Services = map[proxy.ServicePortName]*proxy.ServicePort{n: &sticky}
		st2.Full = false
		if err := b.Sync(ctx, &st2); err != nil {
			t.Fatal(err)
		}
		if out := ipvsadm(t); !strings.Contains(out, "TCP  10.97.1.1:80 wrr persistent 10800") {
			t.Errorf("ipvsadm -Ln:\n%s", out)
		}
		seen := map[string]int{}
		for range 30 {
			r, err := client.HTTPGet(ctx, "10.97.1.1:80")
			if err != nil {
				t.Fatal(err)
			}
			seen[r.Backend]++
		}
		if len(seen) != 1 {
			t.Errorf("with affinity, 30 requests went to %v", seen)
		}
		if err := b.Sync(ctx, st); err != nil { // back to rr without affinity
			t.Fatal(err)
		}
	})

	t.Run("endpoint removal drains", func(t *testing.T) {
		// A kept-alive connection to whichever pod answers.
		conn, err := client.Dial(ctx, "tcp", "10.97.1.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		get := func() (string, error) {
			if _, err := fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				return "", err
			}
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return "", err
				}
				if strings.HasPrefix(line, "p") && strings.Contains(line, " ") { // body "NAME CLIENT"
					return strings.Fields(line)[0], nil
				}
			}
		}
		victim, err := get()
		if err != nil {
			t.Fatal(err)
		}
		st3 := *st
		st3.Endpoints = map[proxy.ServicePortName][]proxy.Endpoint{}
		for _, e := range st.Endpoints[n] {
			if e.IP.String() != pods[victim] {
				st3.Endpoints[n] = append(st3.Endpoints[n], e)
			}
		}
		st3.Full = false
		if err := b.Sync(ctx, &st3); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("  -> %-28s Masq    0", pods[victim]+":80")
		if out := ipvsadm(t); !strings.Contains(out, want) {
			t.Errorf("removed endpoint with an open connection is not draining (want %q):\n%s", want, out)
		}
		again, err := get()
		if err != nil || again != victim {
			t.Errorf("open connection after removal: %q, %v; want %s still serving it", again, err, victim)
		}
		for range 12 {
			r, err := client.HTTPGet(ctx, "10.97.1.1:80")
			if err != nil {
				t.Fatal(err)
			}
			if r.Backend == victim {
				t.Fatalf("a new connection reached the removed endpoint %s", victim)
			}
		}
	})
}

func afterFirstLine(s string) string {
	_, rest, _ := strings.Cut(s, "\n")
	return rest
}

// TestNoIPVSRefusal: on a kernel without IPVS, NewSystem refuses and
// names the module (on a kernel with IPVS it must succeed).
func TestNoIPVSRefusal(t *testing.T) {
	proxytest.RequireSandbox(t)
	paths := ipvs.DefaultKernelPaths()
	paths.Modprobe = func(string) error { return errors.New("not loading") }
	has := ipvs.CheckKernel(paths) == nil
	b, err := ipvs.NewSystem(ipvs.Config{})
	switch {
	case has && err != nil:
		t.Errorf("kernel with IPVS: NewSystem: %v", err)
	case !has && (!errors.Is(err, ipvs.ErrNoIPVS) || !strings.Contains(err.Error(), "module ip_vs")):
		t.Errorf("kernel without IPVS: NewSystem: %v, want a refusal naming module ip_vs", err)
	case has:
		_ = b.Cleanup(context.Background())
	}
	t.Logf("IPVS in this kernel: %v (%v)", has, err)
}

// TestCleanupSystem: `svcnet proxy cleanup` removes the mode's tables on
// any kernel (with or without IPVS) and succeeds when there is nothing.
func TestCleanupSystem(t *testing.T) {
	proxytest.RequireSandbox(t, "nft")
	for _, args := range [][]string{{"add", "table", "ip", ipvs.TableName}, {"add", "table", "ip6", ipvs.TableName}} {
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	for range 2 { // the second run finds nothing
		if err := ipvs.CleanupSystem(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, fam := range []string{"ip", "ip6"} {
		if out, err := exec.Command("nft", "list", "table", fam, ipvs.TableName).CombinedOutput(); err == nil {
			t.Errorf("table %s %s left:\n%s", fam, ipvs.TableName, out)
		}
	}
}

// seedListing is the seed's `ipvsadm -Ln` for its Services (its two
// listings joined, in ipvsadm's order; the seed's copy lost the trailing
// padding of the real-server lines).
const seedListing = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.16.1.10:6443             Masq    1      0          0
TCP  10.96.0.10:53 rr
  -> 10.244.52.213:53             Masq    1      0          0
  -> 10.244.52.218:53             Masq    1      0          0
TCP  10.96.0.10:9153 rr
  -> 10.244.52.213:9153           Masq    1      0          0
  -> 10.244.52.218:9153           Masq    1      0          0
TCP  10.97.1.1:80 rr
  -> 10.244.52.222:80             Masq    1      0          0
  -> 10.244.67.79:80              Masq    1      0          0
  -> 10.244.67.84:80              Masq    1      0          0
UDP  10.96.0.10:53 rr
  -> 10.244.52.213:53             Masq    1      0          0
  -> 10.244.52.218:53             Masq    1      0          0`

// TestSeedListingKernel: the seed's Services programmed into the kernel
// make the real ipvsadm -Ln print the seed's listing, and `svcnet proxy
// list` (list.FromState) prints the same bytes.
func TestSeedListingKernel(t *testing.T) {
	requireIPVS(t)
	lab := proxytest.NewLab(t)
	b := newSystemBackend(t, lab.Root(), ipvs.Config{NodeName: "node-a"})
	st := proxy.NewState("node-a")
	add := func(ns, name, port string, proto v1.Protocol, cip string, svcPort int32, eps ...string) {
		n := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Protocol: proto}
		st.Services[n] = &proxy.ServicePort{Name: n, Protocol: proto, Port: svcPort, ClusterIPs: []netip.Addr{netip.MustParseAddr(cip)}}
		for _, e := range eps {
			ap := netip.MustParseAddrPort(e)
			st.Endpoints[n] = append(st.Endpoints[n], proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true})
		}
		st.Changed[n] = struct{}{}
	}
	add("default", "kubernetes", "https", v1.ProtocolTCP, "10.96.0.1", 443, "192.16.1.10:6443")
	add("kube-system", "kube-dns", "dns-tcp", v1.ProtocolTCP, "10.96.0.10", 53, "10.244.52.213:53", "10.244.52.218:53")
	add("kube-system", "kube-dns", "metrics", v1.ProtocolTCP, "10.96.0.10", 9153, "10.244.52.213:9153", "10.244.52.218:9153")
	add("kube-system", "kube-dns", "dns", v1.ProtocolUDP, "10.96.0.10", 53, "10.244.52.213:53", "10.244.52.218:53")
	add("dev", "service-clusterip", "", v1.ProtocolTCP, "10.97.1.1", 80, "10.244.67.84:80", "10.244.52.222:80", "10.244.67.79:80")
	st.Full = true
	if err := b.Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	out := ipvsadm(t)
	var got []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		got = append(got, strings.TrimRight(l, " "))
	}
	if g := strings.Join(got, "\n"); g != seedListing {
		t.Errorf("ipvsadm -Ln:\n%s\nwant the seed's:\n%s", g, seedListing)
	}
	tbl, err := list.FromState(st, list.Options{Mode: list.ModeIPVS})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := tbl.Render(&sb); err != nil {
		t.Fatal(err)
	}
	if sb.String() != out {
		t.Errorf("svcnet proxy list:\n%q\nipvsadm -Ln:\n%q", sb.String(), out)
	}
}
