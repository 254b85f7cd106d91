// Command agent benchmarks `svcnet agent` (issue 4, acceptance point 6):
// pod create → Running+Ready latency for N pods on one node (p50, p90, p99,
// max, wall time, pods/s), and the memory of the agent and of the pods'
// processes with 0 and with N pods running.
//
//	go run ./bench/agent                 # 100 pods, 10 creating workers
//	go run ./bench/agent -pods 20        # a quick run
//
// It is a report, not a test: there is no hard goal in the issue, and the
// latency table compares p99 with upstream's pod startup SLO (p99 ≤ 5 s for
// stateless pods, create → Running observed by a watch, image pulls
// excluded) as a reference ratio. The exit status is non-zero only when the
// bench could not run or left something behind.
//
// # How it runs
//
// The parent builds `svcnet` into a fresh directory under /var/tmp (pods get
// a private /tmp, so the binary and the data dirs must not live there) and
// re-executes itself under `unshare --net --mount --propagation private`:
// every namespace, veth, route and packet it makes lives in a private
// network namespace that vanishes with it. Inside (child), it mounts a tmpfs
// on /run/netns, gives the namespace a node address 192.168.50.1 on a veth
// to a peer namespace (as the e2e tests do), starts `svcnet server` (embedded
// etcd with its default fsync) and `svcnet agent`, waits for the Node to be
// Ready, and then:
//
//  1. measures the agent's VmRSS with 0 pods;
//  2. creates N pods concurrently with client-go (-workers goroutines), each
//     running `svcnet agnhost netexec --http-port=8080` with an httpGet
//     readiness probe on /readyz every second, without a nodeName (the
//     server's scheduler binds them, as in a cluster);
//  3. records, from one watch opened before the first create, the first
//     time each pod is seen scheduled, Running and Ready=True; the latency of
//     a pod runs from its create call returning to Ready=True seen;
//  4. once all are Ready, measures the agent's VmRSS and the RSS and PSS of
//     the pods' processes (sandbox + shim + container) by kind;
//  5. deletes the pods, stops the agent (SIGTERM), runs it once more with
//     --cleanup (as the e2e tests do), stops the server, and checks that no
//     svc* veth, pod route, pod directory or pod process is left.
//
// The parent removes the work directory on every exit path.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// sandboxEnv marks the copy of the bench that runs inside unshare; its value
// is the work directory.
const sandboxEnv = "SVCNET_BENCH_AGENT_SANDBOX"

// options are the command-line flags.
type options struct {
	pods     int
	workers  int
	timeout  time.Duration
	noFsync  bool
	keepLogs bool
	settle   time.Duration
	logDir   string
	logLevel string
}

func main() {
	var o options
	flag.IntVar(&o.pods, "pods", 100, "pods to create on the node")
	flag.IntVar(&o.workers, "workers", 10, "goroutines creating pods concurrently")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up waiting for the pods to be Ready (or gone) after this")
	flag.BoolVar(&o.noFsync, "no-fsync", false, "run the embedded etcd without fsync (the default keeps it, as a real server)")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "print the server and agent logs' tails at the end")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "pause before each memory reading")
	flag.StringVar(&o.logDir, "log-dir", "", "write the server's and agent's full logs into this directory")
	flag.StringVar(&o.logLevel, "agent-log-level", "info", "the agent's --log-level")
	flag.Parse()
	if o.pods < 1 || o.workers < 1 {
		fmt.Fprintln(os.Stderr, "bench/agent: -pods and -workers must be ≥ 1")
		os.Exit(2)
	}
	if dir := os.Getenv(sandboxEnv); dir != "" {
		if err := child(dir, o); err != nil {
			fmt.Fprintln(os.Stderr, "bench/agent:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(parent())
}

// parent builds svcnet under /var/tmp, re-executes the bench inside private
// network and mount namespaces, and removes the work directory.
func parent() int {
	if os.Geteuid() != 0 {
		fmt.Println("agent bench: skipped (needs root: the agent creates namespaces, veths and routes; the bench runs it inside unshare --net)")
		return 0
	}
	for _, tool := range []string{"unshare", "ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("agent bench: skipped (needs %s)\n", tool)
			return 0
		}
	}
	work, err := os.MkdirTemp("/var/tmp", "svcnet-bench-agent-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		return 1
	}
	defer os.RemoveAll(work)
	// Whatever the child did, no process of this run's binary outlives it.
	defer killStray(filepath.Join(work, "svcnet"))

	bin := filepath.Join(work, "svcnet")
	fmt.Printf("agent bench: building svcnet into %s\n", bin)
	build := exec.Command("go", "build", "-o", bin, "./cmd/svcnet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent: build svcnet:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		return 1
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), sandboxEnv+"="+work)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return max(1, ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "bench/agent: re-exec under unshare:", err)
		return 1
	}
	return 0
}

// run runs a command and includes its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// killStray SIGKILLs every process still running bin (this run's own
// binary, by its unique path): pods of a child that crashed.
func killStray(bin string) {
	procs, _ := straysOf(bin)
	for _, pid := range procs {
		fmt.Fprintf(os.Stderr, "bench/agent: killing stray process %d of this run\n", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
