package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// Bounds of the behaviour suite. They only stop a broken behaviour from
// hanging the run; nothing asserts on time.
const (
	// settle bounds the wait for the dataplane to follow an API change.
	settle = 20 * time.Second
	// probeTimeout bounds one connection attempt.
	probeTimeout = 2 * time.Second
)

// behaviourModes are the proxy modes the suite runs in, each in its own lab.
var behaviourModes = []string{"nftables", "iptables", "userspace"}

// TestUpstreamServiceBehaviours replays upstream Kubernetes e2e Service
// behaviours (test/e2e/network/service.go and friends) against a 3-node
// `svcnet lab` per proxy mode, with agnhost pods run by the agents. Each
// subtest is named after the upstream test it re-expresses. The workloads
// of every behaviour are created at once when the lab is up, so the agents
// start the pods and the proxies program the Services in parallel; the
// subtests then check traffic from the host (which routes the pod and
// Service CIDRs into the lab), from pods (agnhost netexec /dial and /shell)
// and the nodes' rules (svcnet lab exec).
func TestUpstreamServiceBehaviours(t *testing.T) {
	proxytest.RequireSandbox(t, "nsenter", "nft", "ss")
	for _, mode := range behaviourModes {
		t.Run(mode, func(t *testing.T) {
			if mode == "iptables" {
				if _, err := exec.LookPath("iptables-restore"); err != nil {
					t.Skipf("iptables mode needs iptables-restore: %v", err)
				}
			}
			start := time.Now()
			b := newBehaviourLab(t, mode)
			for _, c := range behaviours {
				t.Run(c.name, func(t *testing.T) { c.run(t, b) })
			}
			t.Logf("%s: lab up, %d behaviours: %v", mode, len(behaviours), time.Since(start).Round(time.Second))
		})
	}
}

// behaviours are the upstream tests, most valuable first. The last ones
// restart processes of the lab.
var behaviours = []struct {
	name string
	run  func(t *testing.T, b *behaviourLab)
}{
	{"should serve a basic endpoint from pods", testBasicEndpoint},
	{"should serve multiport endpoints from pods", testMultiport},
	{"should be rejected when no endpoints exist", testRejectNoEndpoints},
	{"should allow pods to hairpin back to themselves through services", testHairpin},
	{"should be able to up and down services", testUpDown},
	{"should work after the service has been recreated", testRecreate},
	{"should be updated after adding or deleting ports", testUpdatePorts},
	{"should prevent NodePort collisions", testNodePortCollision},
	{"should check NodePort out-of-range", testNodePortRange},
	{"should release NodePorts on delete", testReleaseNodePort},
	{"should be able to change the type from ExternalName to ClusterIP", testExternalNameToClusterIP},
	{"should be able to change the type from ClusterIP to ExternalName", testClusterIPToExternalName},
	{"should be able to change the type from ExternalName to NodePort", testExternalNameToNodePort},
	{"should be able to change the type from NodePort to ExternalName", testNodePortToExternalName},
	{"should create endpoints for unready pods", testUnreadyEndpoints},
	{"should have session affinity work for service with type clusterIP", testAffinityClusterIP},
	{"should have session affinity work for NodePort service", testAffinityNodePort},
	{"should be able to switch session affinity for service with type clusterIP", testAffinitySwitchClusterIP},
	{"should be able to switch session affinity for NodePort service", testAffinitySwitchNodePort},
	{"should have session affinity timeout work for service with type clusterIP", testAffinityTimeoutClusterIP},
	{"should have session affinity timeout work for NodePort service", testAffinityTimeoutNodePort},
	{"should implement service.kubernetes.io/service-proxy-name", testServiceProxyName},
	{"should implement service.kubernetes.io/headless", testHeadlessLabel},
	{"should respect internalTrafficPolicy=Local Pod to Pod", testInternalTrafficPolicyLocal},
	{"should preserve source IP for externalTrafficPolicy=Local NodePort", testExternalTrafficPolicyLocal},
	{"should answer healthCheckNodePort 200 with local endpoints and 503 without", testHealthCheckNodePort},
	{"should fallback to terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Cluster", testTerminatingFallback},
	{"should serve endpoints on same port and different protocols", testSamePortDifferentProtocols},
	{"should be able to preserve UDP traffic when server pod cycles for a NodePort service", testUDPServerCycles},
	{"should serve a LoadBalancer IP from the pool to the host (L2 announcement)", testLoadBalancerIP},
	{"should work after restarting kube-proxy", testRestartAgent},
	{"should work after restarting apiserver", testRestartServer},
}

// behaviourLab is a running 3-node lab with the suite's workloads.
type behaviourLab struct {
	*testLab
	mode    string
	c       kubernetes.Interface
	nodeIPs map[string]string
	pods    map[string]v1.Pod // the initial pods by name
}

func newBehaviourLab(t *testing.T, mode string) *behaviourLab {
	l := newTestLab(t)
	l.up("--nodes", "3", "--proxy-mode", mode, "--lb-ip-pool", "192.168.77.200-192.168.77.220")
	b := &behaviourLab{testLab: l, mode: mode, nodeIPs: map[string]string{
		"master": "192.168.77.10", "work1": "192.168.77.11", "work2": "192.168.77.12",
	}}
	b.connect(t)
	b.mustKubectl(t, "create", "-f", writeManifest(t, behaviourManifest))
	ready := []string{"web-master", "web-work1", "web-work2", "multi-a", "multi-b", "local-work1", "dual", "term", "udp-1"}
	b.pods = map[string]v1.Pod{}
	eventually(t, "the suite's pods running (ready but for unready)", podTimeout, func() error {
		list, err := b.c.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range list.Items {
			b.pods[p.Name] = p
		}
		for _, name := range append(ready, "unready") {
			p, ok := b.pods[name]
			if !ok || p.Status.Phase != v1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s not running yet", name)
			}
			if name != "unready" && !podReady(&p) {
				return fmt.Errorf("pod %s not ready yet", name)
			}
		}
		return nil
	})
	return b
}

// connect (re)creates the clientset; a new one after a server restart.
func (b *behaviourLab) connect(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(b.dataDir, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 100
	cfg.Timeout = 10 * time.Second
	cfg.Dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	if b.c, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
}

// kubectl runs svcnet kubectl against the lab; output is stdout+stderr.
func (b *behaviourLab) kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, svcnetBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+b.home, "KUBECONFIG="+filepath.Join(b.dataDir, "kubeconfig"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b *behaviourLab) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := b.kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// svc gets a Service of the default namespace.
func (b *behaviourLab) svc(t *testing.T, name string) *v1.Service {
	t.Helper()
	s, err := b.c.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get service %s: %v", name, err)
	}
	return s
}

// updateSvc applies change to a Service (retrying conflicts).
func (b *behaviourLab) updateSvc(t *testing.T, name string, change func(*v1.Service)) *v1.Service {
	t.Helper()
	var (
		s   *v1.Service
		err error
	)
	for range 5 {
		s = b.svc(t, name)
		change(s)
		if s, err = b.c.CoreV1().Services("default").Update(context.Background(), s, metav1.UpdateOptions{}); err == nil {
			return s
		}
	}
	t.Fatalf("update service %s: %v", name, err)
	return nil
}

func (b *behaviourLab) createSvc(t *testing.T, s *v1.Service) *v1.Service {
	t.Helper()
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	got, err := b.c.CoreV1().Services("default").Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", s.Name, err)
	}
	return got
}

func (b *behaviourLab) deleteSvc(t *testing.T, name string) {
	t.Helper()
	if err := b.c.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service %s: %v", name, err)
	}
}

func (b *behaviourLab) podIP(name string) string { return b.pods[name].Status.PodIP }

// cip is a Service's ClusterIP:port.
func cip(s *v1.Service, port int32) string {
	return net.JoinHostPort(s.Spec.ClusterIP, strconv.Itoa(int(port)))
}

// eventually polls f until it returns nil; after timeout the test fails
// with f's last error.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// httpClient makes a new connection per request, as curl does: the proxies
// balance connections.
var httpClient = &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// fetch GETs http://addr/path once.
func fetch(addr, path string) (string, error) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s%s: %s: %s", addr, path, resp.Status, body)
	}
	return string(body), nil
}

// hostnames asks addr for /hostname n times and counts the answers.
func hostnames(addr string, n int) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		h, err := fetch(addr, "/hostname")
		if err != nil {
			return got, err
		}
		got[h]++
	}
	return got, nil
}

// servesExactly waits until addr's /hostname answers come from exactly the
// pods named (over enough requests to see them all).
func servesExactly(t *testing.T, addr string, pods ...string) {
	t.Helper()
	want := slices.Sorted(slices.Values(pods))
	eventually(t, fmt.Sprintf("%s served by %v", addr, want), settle, func() error {
		got, err := hostnames(addr, 6*len(pods))
		if err != nil {
			return err
		}
		if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, want) {
			return fmt.Errorf("answers %v, want from %v", got, want)
		}
		return nil
	})
}

// refused reports whether a TCP connection to addr is actively refused.
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("connected to %s", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("connect %s: %v, want connection refused", addr, err)
	}
	return nil
}

// notServing reports whether addr fails to answer HTTP (refused, reset,
// unreachable or timed out: whatever way the dataplane has of not serving).
func notServing(addr string) error {
	if h, err := fetch(addr, "/hostname"); err == nil {
		return fmt.Errorf("%s still answers (%s)", addr, h)
	}
	return nil
}

// dialResult is netexec's /dial answer.
type dialResult struct {
	Responses []string `json:"responses"`
	Errors    []string `json:"errors"`
}

// podDial makes the pod at podIP request /hostname (HTTP) or "hostname"
// (UDP) from target once.
func podDial(podIP, target, protocol string) (string, error) {
	host, port, _ := net.SplitHostPort(target)
	q := url.Values{"request": {"hostname"}, "protocol": {protocol}, "host": {host}, "port": {port}, "tries": {"1"}}
	body, err := fetch(net.JoinHostPort(podIP, "8080"), "/dial?"+q.Encode())
	if err != nil {
		return "", fmt.Errorf("pod %s dialing %s (%s): no answer within %v: %w", podIP, target, protocol, probeTimeout, err)
	}
	var r dialResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return "", fmt.Errorf("/dial: %w: %s", err, body)
	}
	if len(r.Responses) != 1 {
		return "", fmt.Errorf("pod %s dialing %s: %v", podIP, target, r.Errors)
	}
	return r.Responses[0], nil
}

// podConnect runs `svcnet agnhost connect` in the pod at podIP and returns
// its output ("" when it connected).
func podConnect(podIP, target string) (string, error) {
	q := url.Values{"shellCommand": {fmt.Sprintf("svcnet agnhost connect --timeout=%s %s", probeTimeout, target)}}
	hc := &http.Client{Timeout: probeTimeout + 3*time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + net.JoinHostPort(podIP, "8080") + "/shell?" + q.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct{ Output, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	return strings.TrimSpace(r.Output), nil
}

// nodeRules returns a node's nftables ruleset and iptables rules.
func (b *behaviourLab) nodeRules(t *testing.T, node string) string {
	t.Helper()
	nft, err := b.exec(node, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset on %s: %v\n%s", node, err, nft)
	}
	ipt, _ := b.exec(node, "iptables-save")
	return nft + "\n" + ipt
}

// nodeListeners returns a node's listening TCP and UDP sockets on port.
func (b *behaviourLab) nodeListeners(t *testing.T, node string, port int32) string {
	t.Helper()
	out, err := b.exec(node, "ss", "-Hltun", fmt.Sprintf("sport = :%d", port))
	if err != nil {
		t.Fatalf("ss on %s: %v\n%s", node, err, out)
	}
	return strings.TrimSpace(out)
}

// tcpPort and friends keep the Service literals short.
func tcpPort(name string, port int32, target intstr.IntOrString) v1.ServicePort {
	return v1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: v1.ProtocolTCP}
}

func webService(name string, typ v1.ServiceType) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": "web"},
			Ports:    []v1.ServicePort{tcpPort("http", 80, intstr.FromInt32(8080))},
		},
	}
}

var webPods = []string{"web-master", "web-work1", "web-work2"}

// labProcess is the server's or one agent's process as `lab up` started
// it: its command line, node namespace, log and pid file.
type labProcess struct {
	which        string // "server" or a node name
	argv         []string
	netns        string
	log, pidFile string
	pid          int
	readyLine    string
	readyBefore  int // readyLine count in the log before the restart
}

// labProcessOf reads lab.json and /proc for which ("server" or a node).
func (b *behaviourLab) labProcessOf(t *testing.T, which string) *labProcess {
	t.Helper()
	st := b.labState(t)
	nodes := st["nodes"].([]any)
	p := &labProcess{which: which}
	if which == "server" {
		p.pid = int(st["serverPID"].(float64))
		p.netns = nodes[0].(map[string]any)["netns"].(string)
		p.log = filepath.Join(b.dataDir, "logs", "server.log")
		p.pidFile = filepath.Join(b.dataDir, "run", "server.pid")
		p.readyLine = "svcnet API server is ready"
	} else {
		for _, n := range nodes {
			n := n.(map[string]any)
			if n["name"] == which {
				p.pid = int(n["agentPID"].(float64))
				p.netns = n["netns"].(string)
			}
		}
		p.log = filepath.Join(b.dataDir, "logs", "agent-"+which+".log")
		p.pidFile = filepath.Join(b.dataDir, "run", "agent-"+which+".pid")
		p.readyLine = "agent ready"
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
	if err != nil || p.pid == 0 {
		t.Fatalf("%s process %d: %v", which, p.pid, err)
	}
	p.argv = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if p.argv[0] != svcnetBin {
		t.Fatalf("%s process %d runs %q, not %s", which, p.pid, p.argv, svcnetBin)
	}
	return p
}

func (b *behaviourLab) labState(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.dataDir, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// kill9 sends SIGKILL and waits for the process to go.
func (p *labProcess) kill9(t *testing.T) {
	t.Helper()
	p.readyBefore = strings.Count(readFile(p.log), p.readyLine)
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s (%d): %v", p.which, p.pid, err)
	}
	eventually(t, p.which+" gone", settle, func() error {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid)); err == nil && !strings.Contains(string(stat), ") Z ") {
			return fmt.Errorf("pid %d still there", p.pid)
		}
		return nil
	})
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// start runs the same command line again in the node namespace, as `lab
// up` does (own session, output appended to the log), records the new pid
// for `lab down` and waits for the process's ready line.
func (b *behaviourLab) start(t *testing.T, p *labProcess) {
	t.Helper()
	log, err := os.OpenFile(p.log, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.netns}, p.argv...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart %s: %v", p.which, err)
	}
	go func() { _ = cmd.Wait() }()
	p.pid = cmd.Process.Pid
	if err := os.WriteFile(p.pidFile, []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := b.labState(t)
	if p.which == "server" {
		st["serverPID"] = p.pid
	} else {
		for _, n := range st["nodes"].([]any) {
			if n := n.(map[string]any); n["name"] == p.which {
				n["agentPID"] = p.pid
			}
		}
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dataDir, "lab.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, p.which+" ready again", podTimeout, func() error {
		if n := strings.Count(readFile(p.log), p.readyLine); n <= p.readyBefore {
			return fmt.Errorf("no new %q line in %s", p.readyLine, p.log)
		}
		return nil
	})
}

// testRestartAgent: kill -9 work1's agent (proxy, DNS and pods' manager),
// start it again; Services created before and after serve through work1.
func testRestartAgent(t *testing.T, b *behaviourLab) {
	before := b.createSvc(t, webService("restart-agent-before", v1.ServiceTypeNodePort))
	beforeAddr := net.JoinHostPort(b.nodeIPs["work1"], strconv.Itoa(int(before.Spec.Ports[0].NodePort)))
	servesExactly(t, beforeAddr, webPods...)
	p := b.labProcessOf(t, "work1")
	p.kill9(t)
	if b.mode != "userspace" {
		// The kernel's rules outlive the agent (userspace: the listeners
		// are the agent's, so the node serves nothing until it is back).
		servesExactly(t, beforeAddr, webPods...)
	}
	b.start(t, p)
	servesExactly(t, beforeAddr, webPods...)
	after := b.createSvc(t, webService("restart-agent-after", v1.ServiceTypeNodePort))
	servesExactly(t, net.JoinHostPort(b.nodeIPs["work1"], strconv.Itoa(int(after.Spec.Ports[0].NodePort))), webPods...)
	// The pods of work1 were adopted, not restarted.
	pod, err := b.c.CoreV1().Pods("default").Get(context.Background(), "web-work1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.PodIP != b.podIP("web-work1") || pod.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("web-work1 after the agent restart: IP %s restarts %d, want %s and 0", pod.Status.PodIP, pod.Status.ContainerStatuses[0].RestartCount, b.podIP("web-work1"))
	}
}

// testRestartServer: kill -9 the API server (with its embedded etcd); the
// dataplane keeps serving; once it is back, a new Service serves on every
// node.
func testRestartServer(t *testing.T, b *behaviourLab) {
	basic := cip(b.svc(t, "basic"), 80)
	p := b.labProcessOf(t, "server")
	p.kill9(t)
	servesExactly(t, basic, webPods...)
	b.start(t, p)
	b.connect(t)
	var after *v1.Service
	eventually(t, "a Service created after the restart", settle, func() error {
		s, err := b.c.CoreV1().Services("default").Create(context.Background(), webService("restart-server-after", v1.ServiceTypeNodePort), metav1.CreateOptions{})
		after = s
		return err
	})
	servesExactly(t, cip(after, 80), webPods...)
	for _, node := range []string{"master", "work1", "work2"} {
		servesExactly(t, net.JoinHostPort(b.nodeIPs[node], strconv.Itoa(int(after.Spec.Ports[0].NodePort))), webPods...)
	}
}
