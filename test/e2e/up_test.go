package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// upProc is a running `svcnet up`.
type upProc struct {
	t      *testing.T
	args   []string
	data   string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
	err    error
}

func startUp(t *testing.T, data string, extra ...string) *upProc {
	t.Helper()
	u := &upProc{t: t, data: data, out: newLogBuffer()}
	u.args = append([]string{"up", "--data-dir", data, "--node-name", "master", "--node-ip", "192.168.50.1",
		"--secure-port", fmt.Sprint(freePort(t)),
		"--embedded-etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		"--embedded-etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		"--embedded-etcd-unsafe-no-fsync"}, extra...)
	u.start()
	t.Cleanup(func() {
		if u.running() {
			_ = u.cmd.Process.Signal(syscall.SIGKILL)
			<-u.exited
		}
		if t.Failed() {
			t.Logf("svcnet up output:\n%s", u.out.tail(150))
		}
	})
	return u
}

func (u *upProc) start() {
	u.t.Helper()
	u.out.mark("--- start ---")
	ready := u.out.waitFor("svcnet is up")
	u.cmd = exec.Command(svcnetBin, u.args...)
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	if err := u.cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	u.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { u.err = cmd.Wait(); close(ch) }(u.cmd, u.exited)
	select {
	case <-ready:
	case <-u.exited:
		u.t.Fatalf("svcnet up exited: %v\n%s", u.err, u.out.tail(80))
	case <-time.After(startTimeout):
		u.t.Fatalf("svcnet up not up after %v\n%s", startTimeout, u.out.tail(80))
	}
}

func (u *upProc) running() bool {
	select {
	case <-u.exited:
		return false
	default:
		return true
	}
}

// interrupt is Ctrl-C: it must stop cleanly.
func (u *upProc) interrupt() {
	u.t.Helper()
	_ = u.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-u.exited:
	case <-time.After(2 * time.Minute):
		u.t.Fatalf("svcnet up did not stop within 2m of SIGINT")
	}
	if u.err != nil {
		u.t.Errorf("svcnet up exited with %v after Ctrl-C, want a clean exit", u.err)
	}
}

func (u *upProc) kubectl(args ...string) string {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, svcnetBin, append([]string{"kubectl", "--kubeconfig", filepath.Join(u.data, "admin.kubeconfig")}, args...)...)
	cmd.Env = append(cmd.Environ(), "HOME="+u.data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		u.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (u *upProc) client() kubernetes.Interface {
	u.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(u.data, "admin.kubeconfig"))
	if err != nil {
		u.t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// nodeState lists what svcnet may leave on a node: links, routes, nft
// tables, iptables KUBE- chains and svcnet processes.
func nodeState(t *testing.T) map[string]string {
	t.Helper()
	run := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		return string(out)
	}
	var chains []string
	for _, line := range strings.Split(run("iptables-save"), "\n") {
		if strings.HasPrefix(line, ":KUBE-") {
			chains = append(chains, strings.Fields(line)[0])
		}
	}
	return map[string]string{
		"links":     run("ip", "-o", "link", "show"),
		"routes":    run("ip", "route", "show"),
		"nftables":  run("nft", "list", "tables"),
		"iptables":  strings.Join(chains, " "),
		"processes": fmt.Sprint(countProcsOf(svcnetBin)),
	}
}

// countProcsOf counts live processes running binary bin (pods' sandboxes,
// shims and agnhost containers included).
func countProcsOf(bin string) int {
	n := 0
	for _, pid := range pids() {
		argv := procArgv(pid)
		if len(argv) > 0 && argv[0] == bin && !isZombie(pid) {
			n++
		}
	}
	return n
}

// TestUpSeedFlow is `svcnet up` end to end on this host (issue 8 points 1
// and 4, and issue 6's DNS through the proxy): the node comes up Ready with
// the kubernetes and kube-dns Services; a Deployment's pods are reached
// round-robin through a ClusterIP from the node; a pod resolves a Service
// name through the cluster DNS IP (DNS reached through the proxy); the
// node's dig resolves the headless Service to the pod IPs; Ctrl-C leaves
// nothing behind; a second `up` on the same data dir resumes the cluster.
func TestUpSeedFlow(t *testing.T) {
	_, _ = nodeLab(t)
	before := nodeState(t)
	data := t.TempDir()
	u := startUp(t, data)
	out := u.kubectl("get", "nodes,svc", "-A")
	t.Logf("kubectl get nodes,svc -A:\n%s", out)
	for _, want := range []string{"node/master", "Ready", "service/kubernetes", "10.96.0.1", "service/kube-dns", "10.96.0.10"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get nodes,svc -A lacks %q", want)
		}
	}

	u.kubectl("create", "-f", writeManifest(t, serviceEnvDeployment))
	u.kubectl("create", "-f", writeManifest(t, `apiVersion: v1
kind: Service
metadata:
  name: service-clusterip
spec:
  selector: {app: service-env}
  clusterIP: 10.97.1.1
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: service-headliness
spec:
  selector: {app: service-env}
  clusterIP: None
  ports:
  - port: 80
`))
	c := u.client()
	pods := readyPods(t, c, "default", "app=service-env", 3)
	names := map[string]bool{}
	for _, p := range pods {
		names[p.Name] = true
	}
	// Ready pods reach the EndpointSlice and then the rules a moment later:
	// curl in rounds of 30 until every pod has answered within one round.
	var seen map[string]int
	waitFor(t, "every pod answering through the ClusterIP within 30 requests", func() (bool, error) {
		seen = map[string]int{}
		for range 30 {
			seen[httpGet(t, "http://10.97.1.1/hostname")]++
		}
		for n := range names {
			if seen[n] == 0 {
				return false, fmt.Errorf("pod %s did not answer: %v", n, seen)
			}
		}
		return true, nil
	})
	t.Logf("curl 10.97.1.1/hostname ×30: %v", seen)

	// DNS from a pod: resolv.conf points at 10.96.0.10, which the proxy
	// sends to the node-local DNS.
	p := pods[0].Name
	if out := u.kubectl("exec", p, "--", "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 10.96.0.10") || !strings.Contains(out, "ndots:5") {
		t.Errorf("pod resolv.conf:\n%s", out)
	}
	u.kubectl("exec", p, "--", "svcnet", "agnhost", "connect", "--timeout=5s", "service-clusterip:80")

	// dig from the node, as in the seed.
	dig := func(name string) []string {
		out, err := exec.Command("dig", "+short", "+time=2", "+tries=2", "@10.96.0.10", name).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", name, err, out)
		}
		return strings.Fields(string(out))
	}
	if got := dig("service-headliness.default.svc.cluster.local"); len(got) != 3 {
		t.Errorf("dig headless = %v, want the 3 pod IPs", got)
	}
	if got := dig("service-clusterip.default.svc.cluster.local"); len(got) != 1 || got[0] != "10.97.1.1" {
		t.Errorf("dig service-clusterip = %v, want 10.97.1.1", got)
	}

	// Ctrl-C: pods stopped, rules and routes removed.
	u.interrupt()
	after := nodeState(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("after Ctrl-C, %s differ:\nbefore:\n%s\nafter:\n%s", k, v, after[k])
		}
	}

	// A second `up` resumes the same cluster: the Deployment's pods run again.
	u2 := startUp(t, data)
	pods2 := readyPods(t, u2.client(), "default", "app=service-env", 3)
	for _, p := range pods2 {
		if !names[p.Name] {
			t.Errorf("after the restart pod %s is new; want the same pods resumed", p.Name)
		}
	}
	if got := httpGet(t, "http://10.97.1.1/hostname"); !names[got] {
		t.Errorf("after the restart the ClusterIP answers %q", got)
	}
	svcs, err := u2.client().CoreV1().Services("default").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(svcs.Items) != 3 {
		t.Errorf("services after restart: %v %v", len(svcs.Items), err)
	}
	u2.interrupt()
	if got := nodeState(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after the second Ctrl-C the node differs:\n%v\nwant\n%v", got, before)
	}
}

func pids() []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			out = append(out, e.Name())
		}
	}
	return out
}

func procArgv(pid string) []string {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func isZombie(pid string) bool {
	stat, _ := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && len(stat) > i+2 && stat[i+2] == 'Z'
}
