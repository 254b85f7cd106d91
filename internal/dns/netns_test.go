package dns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

// netnsEnv is set when the test binary runs inside its own network and
// mount namespaces (TestMain re-executes itself under unshare as root).
const netnsEnv = "SVCNET_DNS_TEST_NETNS"

// TestMain re-executes the test binary, as root, in a private network and
// mount namespace, so that the netns test can add 10.96.0.10 and veths
// without touching the host: nothing it sends can leave the sandbox. The
// other tests only use 127.0.0.1 and run there too.
func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" && os.Getuid() == 0 &&
		exec.Command("unshare", "--net", "--mount", "--propagation", "private", "true").Run() == nil {
		cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", os.Args[0]}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "re-exec under unshare:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(netnsEnv) == "1" {
		for _, args := range [][]string{
			{"ip", "link", "set", "lo", "up"},
			{"mkdir", "-p", "/run/netns"},
			{"mount", "-t", "tmpfs", "tmpfs", "/run/netns"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "netns setup %v: %v %s\n", args, err, out)
				os.Exit(1)
			}
		}
	}
	os.Exit(m.Run())
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPodResolvesThroughNodeLocalDNS is acceptance point 2. Inside the
// test's private network namespace (the "node"), the DNS server listens on
// 10.96.0.10:53, an address on the node's lo (NodeLocal DNSCache style: the
// path through the kube-dns Service's ClusterIP comes with the proxy,
// issue 5). A "pod" network namespace, routed to the node over a veth, has
// its own /etc/resolv.conf (bind-mounted in a private mount namespace) with
// nameserver 10.96.0.10, the cluster search path and ndots:5.
func TestPodResolvesThroughNodeLocalDNS(t *testing.T) {
	if os.Getenv(netnsEnv) != "1" {
		t.Skip("needs root: runs inside a private network namespace created with unshare")
	}
	for _, tool := range []string{"dig", "getent", "ip", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (dnsutils, libc-bin, iproute2, util-linux)", tool)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run(t, "ip", "addr", "add", "10.96.0.10/32", "dev", "lo")
	// The namespace outlives the test when it runs again in the same
	// process (go test -count=N).
	defer exec.Command("ip", "addr", "del", "10.96.0.10/32", "dev", "lo").Run()

	api := apitest.Start(t, apitest.Options{})
	up := startFakeUpstream(t, "www.example.com. 300 IN A 192.0.2.53", "www.example.com. 300 IN A 192.0.2.54")
	cip := createDemo(t, ctx, api.Client, "www.example.com")

	s, err := NewServer(Config{Records: RecordConfig{Zone: "cluster.local", TTL: 5}, Listen: "10.96.0.10:53",
		Upstreams: []string{up.addr}, Sockets: 2, HealthListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	watchDone := make(chan error, 1)
	go func() { watchDone <- Watch(ctx, api.Client, s) }()
	defer func() { cancel(); <-watchDone }()
	for deadline := time.Now().Add(30 * time.Second); !s.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("DNS server never became ready")
		}
	}

	for _, n := range []string{"service-clusterip", "service-headliness", "service-externalname"} {
		waitResolves(t, "10.96.0.10:53", n+".default.svc.cluster.local.")
	}

	// The pod: its own netns, eth0 10.244.0.5/24 via a veth to the node
	// (10.244.0.1), default route to the node.
	pod := fmt.Sprintf("dnspod%d", os.Getpid())
	run(t, "ip", "netns", "add", pod)
	defer exec.Command("ip", "netns", "del", pod).Run()
	run(t, "ip", "link", "add", "vpod0", "type", "veth", "peer", "name", "eth0", "netns", pod)
	run(t, "ip", "addr", "add", "10.244.0.1/24", "dev", "vpod0")
	run(t, "ip", "link", "set", "vpod0", "up")
	run(t, "ip", "-n", pod, "link", "set", "lo", "up")
	run(t, "ip", "-n", pod, "addr", "add", "10.244.0.5/24", "dev", "eth0")
	run(t, "ip", "-n", pod, "link", "set", "eth0", "up")
	run(t, "ip", "-n", pod, "route", "add", "default", "via", "10.244.0.1")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(resolv, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// inPod runs a command in the pod's network namespace with the pod's
	// resolv.conf bind-mounted in a private mount namespace.
	inPod := func(args ...string) string {
		t.Helper()
		full := append([]string{"ip", "netns", "exec", pod, "unshare", "--mount", "--propagation", "private",
			"sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv}, args...)
		return strings.TrimSpace(run(t, full...))
	}
	lines := func(s string) []string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(l)
		return l
	}

	got := inPod("dig", "@10.96.0.10", "service-headliness.default.svc.cluster.local", "+short")
	t.Logf("dig @10.96.0.10 service-headliness.default.svc.cluster.local +short:\n%s", got)
	if want := []string{"10.244.1.11", "10.244.1.12", "10.244.2.13"}; !slices.Equal(lines(got), want) {
		t.Errorf("headless: got %q, want %q", lines(got), want)
	}
	got = inPod("dig", "@10.96.0.10", "+tcp", "service-headliness.default.svc.cluster.local", "+short")
	if want := []string{"10.244.1.11", "10.244.1.12", "10.244.2.13"}; !slices.Equal(lines(got), want) {
		t.Errorf("headless over TCP: got %q, want %q", lines(got), want)
	}

	got = inPod("dig", "@10.96.0.10", "service-externalname.default.svc.cluster.local", "+short")
	t.Logf("dig @10.96.0.10 service-externalname.default.svc.cluster.local +short:\n%s", got)
	l := strings.Split(got, "\n")
	if len(l) != 3 || l[0] != "www.example.com." || !slices.Equal(lines(strings.Join(l[1:], "\n")), []string{"192.0.2.53", "192.0.2.54"}) {
		t.Errorf("ExternalName: got %q, want the CNAME target then its 2 A records", l)
	}

	got = inPod("getent", "hosts", "service-clusterip")
	t.Logf("getent hosts service-clusterip: %s", got)
	if f := strings.Fields(got); len(f) < 2 || f[0] != cip.Spec.ClusterIP || f[1] != "service-clusterip.default.svc.cluster.local" {
		t.Errorf("getent hosts service-clusterip: %q, want %s service-clusterip.default.svc.cluster.local", got, cip.Spec.ClusterIP)
	}

	// ExternalName → ClusterIP: the pod sees the ClusterIP within 2 s.
	svcs := api.Client.CoreV1().Services("default")
	ext, err := svcs.Get(ctx, "service-externalname", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ext.Spec.Type = corev1.ServiceTypeClusterIP
	ext.Spec.ExternalName = ""
	ext.Spec.Ports = []corev1.ServicePort{port("http", corev1.ProtocolTCP, 80)}
	start := time.Now()
	ext, err = svcs.Update(ctx, ext, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ext.Spec.ClusterIP == "" {
		t.Fatal("no ClusterIP allocated on the change to ClusterIP")
	}
	for {
		got = inPod("dig", "@10.96.0.10", "service-externalname.default.svc.cluster.local", "+short")
		if got == ext.Spec.ClusterIP {
			t.Logf("ExternalName→ClusterIP: the pod got %s %v after the update was sent", got, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("ExternalName→ClusterIP: still %q after 2s, want %s", got, ext.Spec.ClusterIP)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
