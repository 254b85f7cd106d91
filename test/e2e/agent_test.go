package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// podTimeout bounds waiting for pods to start or go; no test asserts on time.
const podTimeout = 2 * time.Minute

// agentOptions configure one `svcnet agent` process.
type agentOptions struct {
	nodeName string
	nodeIP   string
	// netns runs the agent in that namespace (nil: the sandbox's own).
	netns   *proxytest.NetNS
	rootDir string
	server  string // API server URL (default the server's loopback URL)
}

// agent is a running `svcnet agent` process.
type agent struct {
	t      *testing.T
	args   []string
	netns  *proxytest.NetNS
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	err    error
}

// startAgent starts an agent against s and waits until its Node is Ready.
func startAgent(t *testing.T, s *server, opts agentOptions) *agent {
	t.Helper()
	if opts.rootDir == "" {
		opts.rootDir = t.TempDir()
	}
	a := &agent{t: t, netns: opts.netns, out: newLogBuffer()}
	a.args = []string{"agent",
		"--server", cmp.Or(opts.server, s.url()),
		"--token", "@" + filepath.Join(s.opts.dataDir, "node-token"),
		"--ca-file", filepath.Join(s.opts.dataDir, "pki", "ca.crt"),
		"--node-name", opts.nodeName,
		"--node-ip", opts.nodeIP,
		"--root-dir", opts.rootDir,
		"--kubelet-port", "10250",
	}
	t.Cleanup(func() {
		if a.running() {
			a.kill()
		}
		// Leave nothing behind: a final agent run with --cleanup stops
		// every pod and removes their network.
		a.cleanupRun()
		if t.Failed() {
			t.Logf("agent %s output:\n%s", opts.nodeName, a.out.tail(120))
		}
	})
	a.start()
	waitFor(t, fmt.Sprintf("node %s Ready", opts.nodeName), func() (bool, error) {
		n, err := s.clientset().CoreV1().Nodes().Get(context.Background(), opts.nodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
				return n.Spec.PodCIDR != "", nil
			}
		}
		return false, nil
	})
	return a
}

func (a *agent) command(args ...string) *exec.Cmd {
	if a.netns != nil {
		return a.netns.Command(context.Background(), svcnetBin, args...)
	}
	return exec.Command(svcnetBin, args...)
}

func (a *agent) start() {
	a.t.Helper()
	a.out.mark("--- start ---")
	a.cmd = a.command(a.args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start agent: %v", err)
	}
	a.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		a.err = cmd.Wait()
		close(exited)
	}(a.cmd, a.exited)
}

func (a *agent) running() bool {
	select {
	case <-a.exited:
		return false
	default:
		return a.exited != nil
	}
}

func (a *agent) kill() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

// cleanupRun runs the agent once more with --cleanup and stops it at once:
// it adopts what is left and removes it.
func (a *agent) cleanupRun() {
	args := append(slices.Clone(a.args), "--cleanup")
	cmd := a.command(args...)
	cmd.Stdout, cmd.Stderr = a.out, a.out
	if err := cmd.Start(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-a.out.waitFor("agent ready"):
	case <-done:
		return
	case <-time.After(time.Minute):
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitFor polls cond until it holds or podTimeout passes.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(podTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if err != nil {
			lastErr = err
		}
		if ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
}

// nodeLab gives the sandbox's own namespace a node address on a veth (the
// kernel has no dummy interface) and returns it.
func nodeLab(t *testing.T) (*proxytest.Lab, netip.Addr) {
	t.Helper()
	proxytest.RequireSandbox(t, "nsenter", "unshare")
	lab := proxytest.NewLab(t)
	peer := lab.NewNetNS("peer")
	ip := netip.MustParseAddr("192.168.50.1")
	lab.Link(lab.Root(), "node0", ip, peer, "eth0", netip.MustParseAddr("192.168.50.2"))
	lab.EnableForwarding(lab.Root())
	return lab, ip
}

// readyPods waits until n pods match selector, all Running and Ready, and
// returns them.
func readyPods(t *testing.T, c kubernetes.Interface, ns, selector string, n int) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	waitFor(t, fmt.Sprintf("%d ready pods %q", n, selector), func() (bool, error) {
		list, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		pods = list.Items
		if len(pods) != n {
			return false, nil
		}
		for _, p := range pods {
			if p.Status.Phase != v1.PodRunning || !podReady(&p) || p.DeletionTimestamp != nil {
				return false, nil
			}
		}
		return true, nil
	})
	return pods
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	// A new connection per request, as curl makes: the proxy balances
	// connections, not requests.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	for range 20 {
		resp, err := c.Get(url)
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				return string(b)
			}
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

func writeManifest(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// serviceEnvDeployment is the seed's Service-Env Deployment with a command,
// since svcnet runs processes, not images.
const serviceEnvDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: service-env
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels:
      app: service-env
  template:
    metadata:
      labels:
        app: service-env
    spec:
      containers:
      - name: nginx
        image: nginx:1.17.1
        command: ["svcnet", "agnhost", "netexec", "--http-port=80"]
        ports:
        - containerPort: 80
`

// TestAgentSeedEnvironment is issue 4's acceptance points 1 and 2: the
// seed's 3-replica Deployment runs as processes with their own pod IPs;
// curl <podIP>/hostname answers the pod name; kubectl get -o wide, exec and
// logs work; the agnhost image name runs the built-in agnhost.
func TestAgentSeedEnvironment(t *testing.T) {
	_, nodeIP := nodeLab(t)
	s := startServer(t, serverOptions{})
	startAgent(t, s, agentOptions{nodeName: "work1", nodeIP: nodeIP.String()})
	c := s.clientset()

	s.mustKubectl("create", "-f", writeManifest(t, serviceEnvDeployment))
	pods := readyPods(t, c, "default", "app=service-env", 3)
	seen := map[string]bool{}
	cidr := netip.MustParsePrefix("10.244.0.0/16")
	for _, p := range pods {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !cidr.Contains(ip) {
			t.Fatalf("pod %s IP %q, want an address in %s", p.Name, p.Status.PodIP, cidr)
		}
		if seen[p.Status.PodIP] {
			t.Fatalf("pod IP %s given twice", p.Status.PodIP)
		}
		seen[p.Status.PodIP] = true
		if got := httpGet(t, "http://"+p.Status.PodIP+"/hostname"); got != p.Name {
			t.Errorf("curl %s/hostname = %q, want the pod name %q", p.Status.PodIP, got, p.Name)
		}
	}
	wide := s.mustKubectl("get", "pods", "-o", "wide", "-l", "app=service-env")
	t.Logf("kubectl get pods -o wide:\n%s", wide)
	rows := tableRows(wide)
	if len(rows) != 4 || !slices.Equal(rows[0][:7], []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"}) {
		t.Fatalf("unexpected table:\n%s", wide)
	}
	for _, r := range rows[1:] {
		if r[1] != "1/1" || r[2] != "Running" || !seen[r[5]] || r[6] != "work1" {
			t.Errorf("row %v: want 1/1 Running <pod IP> work1", r)
		}
	}

	// Acceptance 2: exec and logs.
	p := pods[0]
	out := s.mustKubectl("exec", p.Name, "--", "sh", "-c", "echo $(hostname -i) > /tmp/x; cat /tmp/x")
	if strings.TrimSpace(out) != p.Status.PodIP {
		t.Errorf("kubectl exec hostname -i = %q, want %s", out, p.Status.PodIP)
	}
	if out := s.mustKubectl("exec", pods[1].Name, "--", "sh", "-c", "cat /tmp/x 2>/dev/null || echo absent"); strings.TrimSpace(out) != "absent" {
		t.Errorf("/tmp of another pod shows %q: /tmp is not private", out)
	}
	if _, _, err := s.kubectl("exec", p.Name, "--", "sh", "-c", "exit 3"); err == nil {
		t.Errorf("kubectl exec of a failing command succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("kubectl exec 'exit 3' = %v, want exit code 3", err)
	}
	logs := s.mustKubectl("logs", p.Name)
	if !strings.Contains(logs, "started") {
		t.Errorf("kubectl logs %s = %q, want netexec's start line", p.Name, logs)
	}

	// The upstream agnhost image name runs the built-in agnhost.
	s.mustKubectl("create", "-f", writeManifest(t, `apiVersion: v1
kind: Pod
metadata:
  name: agnhost
  labels: {app: agnhost}
spec:
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
`))
	ap := readyPods(t, c, "default", "app=agnhost", 1)[0]
	if got := httpGet(t, "http://"+ap.Status.PodIP+":8080/hostname"); got != "agnhost" {
		t.Errorf("agnhost image /hostname = %q, want agnhost", got)
	}

	// An image without a command is refused clearly, not silently.
	s.mustKubectl("run", "nginx", "--image=nginx:1.17.1")
	waitFor(t, "nginx pod waiting with a reason", func() (bool, error) {
		pod, err := c.CoreV1().Pods("default").Get(context.Background(), "nginx", metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) == 0 {
			return false, err
		}
		w := pod.Status.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == "CreateContainerConfigError" && strings.Contains(w.Message, "has no command"), nil
	})
}

// TestAgentProbesAndTermination is acceptance point 3: a failing readiness
// probe makes the pod and its endpoint not ready; deletion sends SIGTERM and
// the endpoint is terminating until the process exits; then nothing is left.
func TestAgentProbesAndTermination(t *testing.T) {
	_, nodeIP := nodeLab(t)
	s := startServer(t, serverOptions{})
	rootDir := t.TempDir()
	startAgent(t, s, agentOptions{nodeName: "work1", nodeIP: nodeIP.String(), rootDir: rootDir})
	c := s.clientset()
	ctx := context.Background()

	s.mustKubectl("create", "-f", writeManifest(t, `apiVersion: v1
kind: Pod
metadata:
  name: probed
  labels: {app: probed}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "touch /tmp/ready; trap 'echo got TERM; sleep 3; echo bye; exit 0' TERM; while true; do sleep 0.2; done"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: probed
spec:
  selector: {app: probed}
  ports:
  - port: 80
`))
	pod := readyPods(t, c, "default", "app=probed", 1)[0]
	endpoint := func() *discoveryv1.Endpoint {
		list, err := c.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=probed"})
		if err != nil {
			return nil
		}
		for _, sl := range list.Items {
			for i := range sl.Endpoints {
				if slices.Contains(sl.Endpoints[i].Addresses, pod.Status.PodIP) {
					return &sl.Endpoints[i]
				}
			}
		}
		return nil
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	waitFor(t, "endpoint ready", func() (bool, error) { e := endpoint(); return e != nil && isTrue(e.Conditions.Ready), nil })

	s.mustKubectl("exec", "probed", "--", "rm", "/tmp/ready")
	waitFor(t, "pod NotReady after the probe fails", func() (bool, error) {
		p, err := c.CoreV1().Pods("default").Get(ctx, "probed", metav1.GetOptions{})
		return err == nil && !podReady(p) && p.Status.Phase == v1.PodRunning, err
	})
	waitFor(t, "endpoint not ready", func() (bool, error) { e := endpoint(); return e != nil && !isTrue(e.Conditions.Ready), nil })
	s.mustKubectl("exec", "probed", "--", "touch", "/tmp/ready")
	waitFor(t, "endpoint ready again", func() (bool, error) { e := endpoint(); return e != nil && isTrue(e.Conditions.Ready), nil })

	// Graceful deletion: the trap keeps the process 3 s after SIGTERM.
	s.mustKubectl("delete", "pod", "probed", "--wait=false")
	waitFor(t, "endpoint terminating", func() (bool, error) {
		e := endpoint()
		return e != nil && isTrue(e.Conditions.Terminating) && !isTrue(e.Conditions.Ready), nil
	})
	if _, err := c.CoreV1().Pods("default").Get(ctx, "probed", metav1.GetOptions{}); err != nil {
		t.Fatalf("pod gone while its process should still run its TERM trap: %v", err)
	}
	waitFor(t, "pod deleted", func() (bool, error) {
		_, err := c.CoreV1().Pods("default").Get(ctx, "probed", metav1.GetOptions{})
		return err != nil, nil
	})
	assertNoPodLeftovers(t, rootDir)
}

// assertNoPodLeftovers checks that no pod process, veth, /32 route or pod
// directory is left in the sandbox's namespace.
func assertNoPodLeftovers(t *testing.T, rootDir string) {
	t.Helper()
	waitFor(t, "no pod leftovers", func() (bool, error) {
		links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
		routes, _ := exec.Command("ip", "route", "show").CombinedOutput()
		for _, l := range strings.Split(string(links), "\n") {
			if strings.Contains(l, ": svc") {
				return false, fmt.Errorf("veth left: %s", l)
			}
		}
		for _, r := range strings.Split(string(routes), "\n") {
			if strings.HasPrefix(r, "10.244.") && strings.Contains(r, "dev svc") {
				return false, fmt.Errorf("route left: %s", r)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(rootDir, "pods")); len(entries) > 0 {
			return false, fmt.Errorf("pod dirs left: %d", len(entries))
		}
		return true, nil
	})
}

// TestAgentTwoNodes is acceptance point 4: pods on two nodes (two network
// namespaces joined by a link, host-gw routes from the podCIDRs) reach each
// other by pod IP.
func TestAgentTwoNodes(t *testing.T) {
	proxytest.RequireSandbox(t, "nsenter", "unshare")
	lab := proxytest.NewLab(t)
	nodeB := lab.NewNetNS("node-b")
	ipA, ipB := netip.MustParseAddr("192.168.60.1"), netip.MustParseAddr("192.168.60.2")
	lab.Link(lab.Root(), "nodeb0", ipA, nodeB, "eth0", ipB)
	lab.EnableForwarding(lab.Root())
	lab.EnableForwarding(nodeB)

	s := startServer(t, serverOptions{bindAddress: "0.0.0.0", advertiseAddress: ipA.String()})
	startAgent(t, s, agentOptions{nodeName: "work1", nodeIP: ipA.String()})
	startAgent(t, s, agentOptions{nodeName: "work2", nodeIP: ipB.String(), netns: nodeB,
		server: fmt.Sprintf("https://%s:%d", ipA, s.port)})
	c := s.clientset()
	for _, node := range []string{"work1", "work2"} {
		s.mustKubectl("create", "-f", writeManifest(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: pod-%[1]s
  labels: {app: two-nodes}
spec:
  nodeSelector: {kubernetes.io/hostname: %[1]s}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
`, node)))
	}
	pods := readyPods(t, c, "default", "app=two-nodes", 2)
	byNode := map[string]v1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
	}
	if len(byNode) != 2 {
		t.Fatalf("pods not spread over both nodes: %v", byNode)
	}
	for from, to := range map[string]string{"work1": "work2", "work2": "work1"} {
		target := byNode[to].Status.PodIP + ":8080"
		out := s.mustKubectl("exec", byNode[from].Name, "--", "svcnet", "agnhost", "connect", "--timeout=5s", target)
		t.Logf("%s → %s (%s): connected %s", from, to, target, out)
	}
	// The other side sees the pod's own address (no NAT between pods):
	// netexec /dial on work1's pod asks work2's pod for /clientip.
	a, b := byNode["work1"].Status.PodIP, byNode["work2"].Status.PodIP
	dial := httpGet(t, fmt.Sprintf("http://%s:8080/dial?request=clientip&protocol=http&host=%s&port=8080&tries=1", a, b))
	if !strings.Contains(dial, a+":") {
		t.Errorf("work2's pod saw %s, want work1's pod address %s", dial, a)
	}
}

// TestAgentRestartAdoptsPods is acceptance point 5: SIGKILL of the agent and
// a restart leave each pod running once with its IP; after the pods are
// deleted nothing of theirs remains.
func TestAgentRestartAdoptsPods(t *testing.T) {
	_, nodeIP := nodeLab(t)
	s := startServer(t, serverOptions{})
	rootDir := t.TempDir()
	a := startAgent(t, s, agentOptions{nodeName: "work1", nodeIP: nodeIP.String(), rootDir: rootDir})
	c := s.clientset()
	ctx := context.Background()

	s.mustKubectl("create", "-f", writeManifest(t, serviceEnvDeployment))
	before := readyPods(t, c, "default", "app=service-env", 3)
	// A pod is Running (and, without probes, Ready) once its container
	// process started, which is nsenter until it execs the command.
	waitFor(t, "3 netexec processes before the restart", func() (bool, error) {
		n := countNetexec()
		return n == 3, fmt.Errorf("%d netexec processes, want 3", n)
	})
	a.kill()
	// The pods keep running without their agent.
	for _, p := range before {
		if got := httpGet(t, "http://"+p.Status.PodIP+"/hostname"); got != p.Name {
			t.Errorf("with the agent down, %s/hostname = %q, want %q", p.Status.PodIP, got, p.Name)
		}
	}
	a.start()
	<-a.out.waitFor("agent ready")
	// Give the restarted agent a few syncs, then check nothing moved.
	time.Sleep(3 * time.Second)
	after := readyPods(t, c, "default", "app=service-env", 3)
	t.Logf("before: %s\nafter:  %s", podsJSON(before), podsJSON(after))
	for i := range before {
		b, af := before[i], after[i]
		if b.Name != af.Name || b.Status.PodIP != af.Status.PodIP {
			t.Errorf("pod %s changed across the agent restart: %s/%s → %s/%s", b.Name, b.Name, b.Status.PodIP, af.Name, af.Status.PodIP)
		}
		if rc := af.Status.ContainerStatuses[0].RestartCount; rc != 0 {
			t.Errorf("pod %s restartCount %d after the agent restart, want 0 (adopted, not restarted)", af.Name, rc)
		}
		if got := httpGet(t, "http://"+af.Status.PodIP+"/hostname"); got != af.Name {
			t.Errorf("%s/hostname = %q, want %q", af.Status.PodIP, got, af.Name)
		}
	}
	if n := countNetexec(); n != 3 {
		t.Errorf("%d netexec processes after the restart, want 3 (each pod once)", n)
	}

	s.mustKubectl("delete", "deployment", "service-env")
	waitFor(t, "pods deleted", func() (bool, error) {
		list, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=service-env"})
		return err == nil && len(list.Items) == 0, err
	})
	assertNoPodLeftovers(t, rootDir)
	if n := countNetexec(); n != 0 {
		t.Errorf("%d netexec processes left after deleting the pods", n)
	}
}

// countNetexec counts live `svcnet agnhost netexec` container processes.
func countNetexec() int {
	n := 0
	for _, pid := range pids() {
		argv := procArgv(pid)
		if len(argv) >= 3 && argv[0] == svcnetBin && argv[1] == "agnhost" && argv[2] == "netexec" && !isZombie(pid) {
			n++
		}
	}
	return n
}

// podsJSON is a compact view of pods for logs.
func podsJSON(pods []v1.Pod) string {
	type row struct{ Name, IP, Phase string }
	var rows []row
	for _, p := range pods {
		rows = append(rows, row{p.Name, p.Status.PodIP, string(p.Status.Phase)})
	}
	b, _ := json.Marshal(rows)
	return string(b)
}

// TestAgentPodFeatures covers the rest of the pod spec the agent honours:
// downward-API env, a liveness probe that restarts the container (and
// `kubectl logs --previous`), restartPolicy Never with a failing command,
// and a hostNetwork pod in the node's namespaces.
func TestAgentPodFeatures(t *testing.T) {
	_, nodeIP := nodeLab(t)
	s := startServer(t, serverOptions{})
	startAgent(t, s, agentOptions{nodeName: "work1", nodeIP: nodeIP.String()})
	c := s.clientset()
	ctx := context.Background()

	s.mustKubectl("create", "-f", writeManifest(t, `apiVersion: v1
kind: Pod
metadata:
  name: features
  labels: {app: features}
spec:
  containers:
  - name: main
    image: busybox
    env:
    - {name: MY_POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: GREETING, value: "hello $(MY_NAME)"}
    command: ["sh", "-c", "echo run $GREETING $MY_POD_IP $MY_NODE; touch /tmp/alive; while true; do sleep 0.2; done"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: fails
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo bad; exit 3"]
---
apiVersion: v1
kind: Pod
metadata:
  name: hostnet
  labels: {app: hostnet}
spec:
  hostNetwork: true
  containers:
  - name: main
    image: busybox
    command: ["sleep", "1000"]
`))
	p := readyPods(t, c, "default", "app=features", 1)[0]
	want := fmt.Sprintf("run hello features %s work1", p.Status.PodIP)
	waitFor(t, "env in the log", func() (bool, error) {
		out, _, err := s.kubectl("logs", "features")
		return strings.Contains(out, want), err
	})

	// Liveness: remove the file, the container is killed and restarted.
	s.mustKubectl("exec", "features", "--", "rm", "/tmp/alive")
	waitFor(t, "container restarted by the liveness probe", func() (bool, error) {
		pod, err := c.CoreV1().Pods("default").Get(ctx, "features", metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) == 0 {
			return false, err
		}
		cs := pod.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && cs.State.Running != nil, nil
	})
	waitFor(t, "kubectl logs --previous shows the first run", func() (bool, error) {
		out, errOut, err := s.kubectl("logs", "features", "--previous")
		if err != nil || !strings.Contains(out, want) {
			return false, fmt.Errorf("kubectl logs --previous = %q (%v, %s), want %q", out, err, errOut, want)
		}
		return true, nil
	})

	// restartPolicy Never + exit 3: Failed, exit code 3, not restarted.
	waitFor(t, "pod fails", func() (bool, error) {
		pod, err := c.CoreV1().Pods("default").Get(ctx, "fails", metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) == 0 {
			return false, err
		}
		term := pod.Status.ContainerStatuses[0].State.Terminated
		return pod.Status.Phase == v1.PodFailed && term != nil && term.ExitCode == 3 && pod.Status.ContainerStatuses[0].RestartCount == 0, nil
	})

	// hostNetwork: the node's IP and interfaces.
	hp := readyPods(t, c, "default", "app=hostnet", 1)[0]
	if hp.Status.PodIP != nodeIP.String() {
		t.Errorf("hostNetwork pod IP %s, want the node IP %s", hp.Status.PodIP, nodeIP)
	}
	if out := s.mustKubectl("exec", "hostnet", "--", "cat", "/proc/net/dev"); !strings.Contains(out, "node0") {
		t.Errorf("hostNetwork pod does not see the node's interfaces:\n%s", out)
	}
}
