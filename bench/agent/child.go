package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The node's address and its veth peer inside the private namespace (the
// e2e tests use the same).
const (
	nodeIP   = "192.168.50.1"
	peerIP   = "192.168.50.2"
	nodeName = "work1"
)

// child runs the bench inside the private namespaces; work holds the svcnet
// binary and receives the data dirs.
func child(work string, o options) (err error) {
	bin := filepath.Join(work, "svcnet")
	if err := setupNode(nodeIP, peerIP); err != nil {
		return fmt.Errorf("node network: %w", err)
	}
	dataDir := filepath.Join(work, "server")
	rootDir := filepath.Join(work, "agent")
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	sargs := []string{"server",
		"--data-dir", dataDir,
		"--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[0]),
		"--embedded-etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--embedded-etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
	}
	if o.noFsync {
		sargs = append(sargs, "--embedded-etcd-unsafe-no-fsync")
	}
	r := &report{opts: o, start: time.Now()}
	r.header()

	srv, err := startProc("server", bin, sargs...)
	if err != nil {
		return err
	}
	defer func() {
		if _, serr := srv.stop(time.Minute); serr != nil && err == nil {
			err = serr
		}
		if err != nil || o.keepLogs {
			fmt.Printf("\n--- server log (tail) ---\n%s\n", srv.out.tail(60))
		}
		saveLog(o.logDir, "server.log", srv.out)
	}()
	if err := srv.waitLine("svcnet API server is ready at", 2*time.Minute); err != nil {
		return err
	}
	aargs := []string{"agent",
		"--server", fmt.Sprintf("https://127.0.0.1:%d", ports[0]),
		"--token", "@" + filepath.Join(dataDir, "node-token"),
		"--ca-file", filepath.Join(dataDir, "pki", "ca.crt"),
		"--node-name", nodeName,
		"--node-ip", nodeIP,
		"--root-dir", rootDir,
		"--log-level", o.logLevel,
	}
	agentStart := time.Now()
	agt, err := startProc("agent", bin, aargs...)
	if err != nil {
		return err
	}
	agentStopped := false
	defer func() {
		if !agentStopped {
			_, _ = agt.stop(time.Minute)
		}
		// Whatever happened, a final --cleanup run removes every pod.
		if cerr := cleanupRun(bin, aargs); cerr != nil && err == nil {
			err = cerr
		}
		if left := leftovers(bin, rootDir); len(left) > 0 {
			fmt.Printf("\nLEFT BEHIND after the --cleanup run:\n  %s\n", strings.Join(left, "\n  "))
			if err == nil {
				err = errors.New("the run left pod resources behind")
			}
		} else {
			fmt.Println("   leftover check after `agent --cleanup`: no svc* veth, no pod route, no pod directory, no pod process")
		}
		if err != nil || o.keepLogs {
			fmt.Printf("\n--- agent log (tail) ---\n%s\n", agt.out.tail(80))
		}
		saveLog(o.logDir, "agent.log", agt.out)
	}()

	c, err := clientset(filepath.Join(dataDir, "admin.kubeconfig"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+5*time.Minute)
	defer cancel()
	if err := waitNodeReady(ctx, c, agt); err != nil {
		return err
	}
	r.agentReady = time.Since(agentStart)

	// 1. Memory with no pods.
	time.Sleep(o.settle)
	if r.agent0, err = readMem(agt.pid()); err != nil {
		return fmt.Errorf("agent memory: %w", err)
	}
	if r.pods0, err = podProcs(bin, agt.pid(), srv.pid()); err != nil {
		return err
	}

	// 2 and 3. Create the pods and watch them become Ready.
	obs, err := startObserver(ctx, c, o.pods)
	if err != nil {
		return err
	}
	r.run, err = createPods(ctx, c, o, obs)
	if err != nil {
		return err
	}
	agentSteps(agt.out, r.run.pods)
	containerLogSteps(rootDir, r.run.pods)
	r.throttled, r.longestThrottle = throttled(agt.out)

	// 4. Memory with every pod running.
	time.Sleep(o.settle)
	if r.agentN, err = readMem(agt.pid()); err != nil {
		return fmt.Errorf("agent memory: %w", err)
	}
	if r.podsN, err = podProcs(bin, agt.pid(), srv.pid()); err != nil {
		return err
	}
	r.restarts = restartCount(ctx, c)
	r.events = eventReasons(ctx, c)

	// 5. Delete, stop, clean up.
	r.del, err = deletePods(ctx, c, o)
	if err != nil {
		return err
	}
	// The DELETED event comes once the containers have stopped; the agent
	// then removes the sandbox, veth, route and directory.
	r.nodeClean, r.nodeCleanErr = waitNodeClean(bin, rootDir, r.del.firstSent, o.timeout, agt.pid(), srv.pid())
	r.agentStop, err = agt.stop(time.Minute)
	agentStopped = true
	if err != nil {
		return err
	}
	r.agentErrors = agt.out.count("level=ERROR")
	r.agentWarns = agt.out.count("level=WARN")
	r.warnings = warnings(agt.out)
	r.print()
	return nil
}

// cleanupRun runs the agent once more with --cleanup, waits for it to be
// ready and stops it: it adopts whatever is left and removes it.
func cleanupRun(bin string, args []string) error {
	p, err := startProc("agent --cleanup", bin, append(args, "--cleanup")...)
	if err != nil {
		return err
	}
	if err := p.waitLine("agent ready", time.Minute); err != nil {
		_, _ = p.stop(time.Minute)
		return err
	}
	_, err = p.stop(time.Minute)
	return err
}

// waitNodeReady waits until the Node is Ready with a podCIDR.
func waitNodeReady(ctx context.Context, c kubernetes.Interface, agt *proc) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-agt.exited:
			return fmt.Errorf("agent exited: %v\n%s", agt.err, agt.out.tail(40))
		default:
		}
		n, err := c.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" {
			for _, cond := range n.Status.Conditions {
				if cond.Type == v1.NodeReady && cond.Status == v1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node %s not Ready with a podCIDR after 2m:\n%s", nodeName, agt.out.tail(40))
}

// clientset builds a client-go clientset (protobuf, no client-side rate
// limit) from the admin kubeconfig.
func clientset(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return kubernetes.NewForConfig(cfg)
}

// freePorts returns n loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hostLoad is /proc/loadavg's first three fields.
func hostLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// waitNodeClean waits until no pod process or pod directory is left and
// returns the time since the first delete was sent.
func waitNodeClean(bin, rootDir string, since time.Time, timeout time.Duration, skip ...int) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		procs, _ := podProcs(bin, skip...)
		entries, _ := os.ReadDir(filepath.Join(rootDir, "pods"))
		links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
		if len(procs) == 0 && len(entries) == 0 && !strings.Contains(string(links), ": svc") {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return time.Since(since), fmt.Errorf("after %v: %d pod process kinds, %d pod dirs left", timeout, len(procs), len(entries))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// saveLog writes a process's whole output to dir/name (nothing when dir is
// empty).
func saveLog(dir, name string, b *logBuffer) {
	if dir == "" {
		return
	}
	b.mu.Lock()
	data := append([]byte(nil), b.buf.Bytes()...)
	b.mu.Unlock()
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent: saving", name+":", err)
	}
}
