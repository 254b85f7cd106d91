package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// labTimeout bounds one `svcnet lab` or walkthrough run.
const labTimeout = 5 * time.Minute

// TestSeedWalkthroughLab is issue 8's lab acceptance: `svcnet lab up
// --nodes 3` (nodes master, work1, work2 as network namespaces on a bridge),
// examples/seed/walkthrough.sh replayed from the host namespace, and `svcnet
// lab down` leaving nothing behind — for every proxy mode. The walkthrough
// must show the seed's results: each pod serving its own IP, the ClusterIP
// 10.97.1.1 spreading over the 3 pods, dig of the headless Service giving
// the 3 pod IPs, NodePort 30002 answering on every node's IP, and the
// ExternalName Service giving a CNAME plus the target's A records from the
// upstream (a fake resolver in the sandbox, passed with --dns-upstream).
func TestSeedWalkthroughLab(t *testing.T) {
	proxytest.RequireSandbox(t, "nsenter", "curl", "dig", "bash")
	for _, mode := range []string{"nftables", "iptables", "userspace"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "iptables" {
				if _, err := exec.LookPath("iptables-restore"); err != nil {
					t.Skipf("iptables mode needs iptables-restore: %v", err)
				}
			}
			testSeedWalkthroughLab(t, mode)
		})
	}
}

// testLab is a `svcnet lab` with its own data dir; lab down runs at
// cleanup unless the test ran it.
type testLab struct {
	t       *testing.T
	dataDir string
	home    string
	down    bool
}

func newTestLab(t *testing.T) *testLab {
	l := &testLab{t: t, dataDir: filepath.Join(t.TempDir(), "lab"), home: t.TempDir()}
	t.Cleanup(func() {
		if l.down {
			return
		}
		if t.Failed() {
			l.dumpLogs()
		}
		if out, err := l.run("down"); err != nil {
			t.Errorf("lab down (cleanup): %v\n%s", err, out)
		}
	})
	return l
}

// run runs `svcnet lab --data-dir D args...`.
func (l *testLab) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, svcnetBin, append([]string{"lab", "--data-dir", l.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+l.home)
	out, err := cmd.CombinedOutput()
	if len(args) > 0 && args[0] == "down" {
		l.down = true
	}
	return string(out), err
}

// up runs lab up and fails the test (with the processes' logs) if it fails.
func (l *testLab) up(args ...string) {
	l.t.Helper()
	out, err := l.run(append([]string{"up"}, args...)...)
	l.t.Logf("svcnet lab up %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		l.dumpLogs()
		l.t.Fatalf("lab up: %v", err)
	}
}

// kubectl runs svcnet kubectl with the lab's kubeconfig.
func (l *testLab) kubectl(args ...string) string {
	l.t.Helper()
	cmd := exec.Command(svcnetBin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+l.home, "KUBECONFIG="+filepath.Join(l.dataDir, "kubeconfig"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exec runs a command on node (lab exec) and returns its output.
func (l *testLab) exec(node string, argv ...string) (string, error) {
	return l.run(append([]string{"exec", node, "--"}, argv...)...)
}

func (l *testLab) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(l.dataDir, "logs", "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		l.t.Logf("--- %s:\n%s", f, strings.Join(lines, "\n"))
	}
}

// assertNothingLeft compares the host's state with the snapshot taken
// before lab up.
func assertNothingLeft(t *testing.T, before map[string]string) {
	t.Helper()
	after := hostSnapshot(t)
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if before[k] != after[k] {
			t.Errorf("after lab down, %s differs:\nbefore:\n%s\nafter:\n%s", k, before[k], after[k])
		}
	}
}

func testSeedWalkthroughLab(t *testing.T, mode string) {
	before := hostSnapshot(t)
	upstream, queries := fakeUpstream(t)
	l := newTestLab(t)
	dataDir, home, lab := l.dataDir, l.home, l.run

	l.up("--nodes", "3", "--proxy-mode", mode, "--dns-upstream", "192.168.77.1:"+upstream)
	status, err := lab("status")
	t.Logf("svcnet lab status:\n%s", status)
	if err != nil {
		t.Fatalf("lab status: %v", err)
	}
	nodeIPs := map[string]string{"master": "192.168.77.10", "work1": "192.168.77.11", "work2": "192.168.77.12"}
	for node, ip := range nodeIPs {
		if !lineHas(status, node, "svcnet-lab-"+node, ip, "running", "Ready") {
			t.Errorf("lab status has no line for %s with its netns, %s, a running agent and Ready", node, ip)
		}
	}
	if out, err := lab("exec", "work1", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, "192.168.77.11/24") {
		t.Errorf("lab exec work1 -- ip addr: %v\n%s", err, out)
	}
	if out, err := lab("exec", "work1", "--", "sh", "-c", "exit 7"); err == nil {
		t.Errorf("lab exec of 'exit 7' succeeded: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("lab exec of 'exit 7' = %v, want exit code 7", err)
	}

	// The walkthrough, from the host namespace like the seed's prompt.
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	wt := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "examples", "seed", "walkthrough.sh"))
	wt.Env = append(os.Environ(), "SVCNET="+svcnetBin, "KUBECONFIG="+filepath.Join(dataDir, "kubeconfig"), "HOME="+home, "CURLS=30")
	wout, err := wt.CombinedOutput()
	t.Logf("walkthrough.sh (%s):\n%s", mode, wout)
	if err != nil {
		l.dumpLogs()
		t.Fatalf("walkthrough.sh: %v", err)
	}
	checkWalkthrough(t, string(wout), nodeIPs)
	if queries.Load() == 0 {
		t.Errorf("the fake upstream resolver got no query")
	}

	// A second lab is refused while this one is up, and this one survives.
	other := exec.Command(svcnetBin, "lab", "up", "--nodes", "1", "--data-dir", filepath.Join(t.TempDir(), "other"))
	if out, err := other.CombinedOutput(); err == nil || !strings.Contains(string(out), "another lab is up") {
		t.Errorf("a second lab up: %v, want a refusal naming the running lab:\n%s", err, out)
	}
	if out, err := lab("status"); err != nil {
		t.Errorf("lab status after the refused second lab up: %v\n%s", err, out)
	}

	// An agent killed hard leaves its pods running: lab status reports
	// it, and lab down must still remove everything.
	st, err := os.ReadFile(filepath.Join(dataDir, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Nodes []struct {
			Name     string `json:"name"`
			AgentPID int    `json:"agentPID"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(st, &state); err != nil {
		t.Fatal(err)
	}
	for _, n := range state.Nodes {
		if n.Name == "work1" {
			if err := syscall.Kill(n.AgentPID, syscall.SIGKILL); err != nil {
				t.Fatalf("kill agent work1: %v", err)
			}
		}
	}
	waitFor(t, "lab status reporting agent work1 gone", func() (bool, error) {
		out, err := lab("status")
		return err != nil && strings.Contains(out, "agent work1 not running"), nil
	})

	out, err := lab("down")
	t.Logf("svcnet lab down:\n%s", out)
	if err != nil {
		t.Errorf("lab down: %v", err)
	}
	assertNothingLeft(t, before)
	if _, err := os.Stat(filepath.Join(dataDir, "lab.json")); err == nil {
		t.Errorf("lab.json still there after lab down")
	}
	if out, err := lab("status"); err == nil {
		t.Errorf("lab status succeeded after lab down:\n%s", out)
	}
}

// TestLabProxyModeConfigMap is the seed's "Set working mode" in the lab:
// with no --proxy-mode the agents follow ConfigMap kube-system/kube-proxy;
// editing its mode switches every node's dataplane live (the master's
// nftables table goes, iptables chains come, then the userspace proxy),
// and the ClusterIP keeps answering from the host throughout.
func TestLabProxyModeConfigMap(t *testing.T) {
	proxytest.RequireSandbox(t, "nsenter", "curl", "iptables-save")
	before := hostSnapshot(t)
	l := newTestLab(t)
	l.up("--nodes", "2")
	l.kubectl("create", "-f", filepath.Join(repoRoot, "examples", "seed", "Service-Env.yaml"),
		"-f", filepath.Join(repoRoot, "examples", "seed", "Service-Clusterip.yaml"))
	curlClusterIP := func(what string) {
		t.Helper()
		waitFor(t, "10.97.1.1 answering a pod IP "+what, func() (bool, error) {
			out, err := exec.Command("curl", "-sf", "-m", "2", "http://10.97.1.1").Output()
			return err == nil && strings.HasPrefix(string(out), "10.244."), err
		})
	}
	curlClusterIP("in nftables mode")
	nftTables := func(node string) string {
		out, err := l.exec(node, "nft", "list", "tables")
		if err != nil {
			t.Fatalf("nft list tables on %s: %v\n%s", node, err, out)
		}
		return out
	}
	for _, node := range []string{"master", "work1"} {
		if !strings.Contains(nftTables(node), "table ip svcnet") {
			t.Fatalf("%s has no nftables table svcnet in the default mode:\n%s", node, nftTables(node))
		}
	}
	setMode := func(mode string) {
		t.Helper()
		cm := l.kubectl("get", "cm", "kube-proxy", "-n", "kube-system", "-o", "yaml")
		edited := modeLine.ReplaceAllString(cm, `mode: "`+mode+`"`)
		if edited == cm {
			t.Fatalf("no mode line in the kube-proxy ConfigMap:\n%s", cm)
		}
		l.kubectl("replace", "-f", writeManifest(t, edited))
	}

	setMode("iptables")
	for _, node := range []string{"master", "work1"} {
		waitFor(t, node+" switched to iptables", func() (bool, error) {
			ipt, _ := l.exec(node, "iptables-save")
			return !strings.Contains(nftTables(node), "table ip svcnet") && strings.Contains(ipt, "10.97.1.1"), nil
		})
	}
	curlClusterIP("in iptables mode")

	setMode("userspace")
	for _, node := range []string{"master", "work1"} {
		waitFor(t, node+" switched to userspace", func() (bool, error) {
			ipt, _ := l.exec(node, "iptables-save")
			return !strings.Contains(ipt, "10.97.1.1") && strings.Contains(nftTables(node), "table ip svcnet-userspace"), nil
		})
	}
	curlClusterIP("in userspace mode")

	if out, err := l.run("down"); err != nil {
		t.Fatalf("lab down: %v\n%s", err, out)
	}
	assertNothingLeft(t, before)
}

// modeLine is the mode setting in the kube-proxy ConfigMap's config.conf.
var modeLine = regexp.MustCompile(`mode: "?[a-z]*"?`)

// step is one command of the walkthrough and its output.
type step struct {
	cmd string
	out []string
}

// parseWalkthrough splits the output at the "[root@master yaml]# " prompts.
func parseWalkthrough(out string) []step {
	var steps []step
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "[root@master yaml]# "); ok {
			steps = append(steps, step{cmd: c})
			continue
		}
		if len(steps) == 0 || line == "" || strings.HasPrefix(line, "==> ") || strings.HasPrefix(line, "# node ") {
			continue
		}
		steps[len(steps)-1].out = append(steps[len(steps)-1].out, line)
	}
	return steps
}

func checkWalkthrough(t *testing.T, out string, nodeIPs map[string]string) {
	t.Helper()
	steps := parseWalkthrough(out)
	find := func(prefix string) []step {
		var r []step
		for _, s := range steps {
			if strings.HasPrefix(s.cmd, prefix) {
				r = append(r, s)
			}
		}
		return r
	}
	// Each pod serves its own IP.
	pods := map[string]bool{}
	for _, s := range find("curl -s -m 5 10.244.") {
		ip := strings.TrimPrefix(s.cmd, "curl -s -m 5 ")
		if len(s.out) != 1 || s.out[0] != ip {
			t.Errorf("curl %s = %q, want the pod's own IP", ip, s.out)
		}
		pods[ip] = true
	}
	if len(pods) != 3 {
		t.Fatalf("walkthrough curled %d pod IPs, want 3", len(pods))
	}
	podList := slices.Sorted(maps.Keys(pods))

	// kubectl get svc columns as in the seed.
	svc := find("kubectl get svc -n default -o wide")
	if len(svc) == 0 {
		t.Fatal("no kubectl get svc step")
	}
	table := strings.Join(svc[len(svc)-1].out, "\n")
	for _, want := range [][]string{
		{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"},
		{"kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"},
		{"service-clusterip", "ClusterIP", "10.97.1.1", "<none>", "80/TCP"},
		{"service-headliness", "ClusterIP", "None", "<none>", "80/TCP"},
		{"service-nodeport", "NodePort"},
	} {
		if !lineHas(table, want...) {
			t.Errorf("kubectl get svc has no row with %v:\n%s", want, table)
		}
	}
	if !strings.Contains(table, "80:30002/TCP") {
		t.Errorf("kubectl get svc does not show the NodePort 80:30002/TCP:\n%s", table)
	}
	// describe lists the 3 endpoints.
	for _, name := range []string{"service-clusterip", "service-headliness"} {
		d := find("kubectl describe svc " + name)
		if len(d) != 1 {
			t.Errorf("no describe step for %s", name)
			continue
		}
		var eps []string
		for _, l := range d[0].out {
			if v, ok := strings.CutPrefix(l, "Endpoints:"); ok {
				eps = strings.Split(strings.TrimSpace(v), ",")
			}
		}
		sort.Strings(eps)
		var want []string
		for _, p := range podList {
			want = append(want, p+":80")
		}
		sort.Strings(want)
		if !slices.Equal(eps, want) {
			t.Errorf("describe svc %s Endpoints %v, want %v", name, eps, want)
		}
	}

	// ClusterIP: every answer is a pod IP, and all three pods answer.
	curls := find("curl -s -m 5 http://10.97.1.1:80")
	if len(curls) != 30 {
		t.Errorf("%d curls of the ClusterIP, want 30", len(curls))
	}
	hits := map[string]int{}
	for _, s := range curls {
		if len(s.out) != 1 || !pods[s.out[0]] {
			t.Errorf("curl 10.97.1.1 = %q, want one of the pod IPs %v", s.out, podList)
			continue
		}
		hits[s.out[0]]++
	}
	t.Logf("ClusterIP answers per pod over %d curls: %v", len(curls), hits)
	if len(hits) != 3 {
		t.Errorf("the ClusterIP's answers came from %d pods (%v), want all 3", len(hits), hits)
	}

	// Headless: dig gives the 3 pod IPs.
	digs := find("dig @10.96.0.10 service-headliness.default.svc.cluster.local +short")
	if len(digs) != 1 {
		t.Fatalf("no dig step for the headless Service")
	}
	got := slices.Clone(digs[0].out)
	sort.Strings(got)
	if !slices.Equal(got, podList) {
		t.Errorf("dig headless = %v, want the pod IPs %v", got, podList)
	}
	if rc := find("kubectl exec"); len(rc) != 1 || !slices.Contains(rc[0].out, "nameserver 10.96.0.10") {
		t.Errorf("pod resolv.conf step = %v, want nameserver 10.96.0.10", rc)
	}

	// NodePort 30002 answers on every node IP.
	for node, ip := range nodeIPs {
		s := find("curl -s -m 5 http://" + ip + ":30002")
		if len(s) != 1 || len(s[0].out) != 1 || !pods[s[0].out[0]] {
			t.Errorf("NodePort on %s (%s) = %v, want a pod IP", node, ip, s)
		}
	}

	// ExternalName: the CNAME, then the target's addresses from upstream.
	ext := find("dig @10.96.0.10 service-externalname.default.svc.cluster.local +short")
	if len(ext) != 1 {
		t.Fatalf("no dig step for the ExternalName Service")
	}
	if want := []string{"www.baidu.com.", "39.156.66.14", "39.156.66.18"}; !slices.Equal(sortedAfterFirst(ext[0].out), want) {
		t.Errorf("dig ExternalName = %q, want %q (CNAME first, then the A records)", ext[0].out, want)
	}
}

// sortedAfterFirst keeps the first line and sorts the rest.
func sortedAfterFirst(lines []string) []string {
	if len(lines) < 2 {
		return lines
	}
	rest := slices.Clone(lines[1:])
	sort.Strings(rest)
	return append([]string{lines[0]}, rest...)
}

// lineHas reports whether some line of text has words containing fields,
// in order ("running" matches the word "(running)").
func lineHas(text string, fields ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		i := 0
		for _, w := range strings.Fields(line) {
			if i < len(fields) && strings.Contains(w, fields[i]) {
				i++
			}
		}
		if i == len(fields) {
			return true
		}
	}
	return false
}

// fakeUpstream serves www.baidu.com's A records on UDP in the sandbox (all
// addresses, so the nodes reach it at the host's segment address) and
// returns its port and a query counter.
func fakeUpstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if strings.EqualFold(q.Name, "www.baidu.com.") && q.Qtype == dns.TypeA {
			for _, ip := range []string{"39.156.66.14", "39.156.66.18"} {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(ip)})
			}
		} else if !strings.EqualFold(q.Name, "www.baidu.com.") {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return port, &n
}

// hostSnapshot lists what a lab could leave in the sandbox's namespace:
// namespaces, links, routes, rules, nftables tables, iptables rules and
// svcnet processes.
func hostSnapshot(t *testing.T) map[string]string {
	t.Helper()
	cmds := map[string][]string{
		"netns":  {"ip", "netns", "list"},
		"links":  {"ip", "-o", "link", "show"},
		"routes": {"ip", "route", "show", "table", "all"},
		"rules":  {"ip", "rule", "show"},
		"nft":    {"nft", "list", "tables"},
	}
	if _, err := exec.LookPath("iptables-save"); err == nil {
		cmds["iptables"] = []string{"iptables-save"}
	}
	snap := map[string]string{}
	for k, c := range cmds {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") || l == "" {
				continue // iptables-save's timestamps
			}
			if k == "links" {
				// Counters and state flags aside: the names.
				f := strings.Fields(l)
				if len(f) > 1 {
					l = f[1]
				}
			}
			if k == "iptables" && strings.HasPrefix(l, ":") {
				l, _, _ = strings.Cut(l, " [") // chain counters
			}
			lines = append(lines, l)
		}
		sort.Strings(lines)
		snap[k] = strings.Join(lines, "\n")
	}
	snap["processes"] = svcnetProcesses()
	return snap
}

// svcnetProcesses lists the live processes running the binary under test.
func svcnetProcesses() string {
	entries, _ := os.ReadDir("/proc")
	var ps []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(svcnetBin)) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		ps = append(ps, fmt.Sprintf("%s %s", e.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return strings.Join(ps, "\n")
}
