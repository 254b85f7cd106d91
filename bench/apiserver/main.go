// Command apiserver benchmarks a running svcnet API server (acceptance
// point 7 of issue 2; `make bench` runs it through bench/run.sh).
//
// It measures, in this order:
//
//  1. etcd's raw Put rate at 1 and 8 concurrent writers against the etcd the
//     server uses (or, when the server does not expose its embedded etcd, a
//     separate fsync'ing embedded member on the same disk), with values the
//     size of a stored Service, beside the API server's Service create rate
//     with 1 and 8 clients (client-go typed clientset, protobuf, one
//     connection per client, every create allocates a ClusterIP);
//  2. the LIST latency of a namespace holding -services Services (JSON,
//     protobuf, Table, and Table paged by 500 as kubectl get does);
//  3. the server's RSS at that size (VmRSS of -server-pid);
//  4. ADDED-event latency over -watchers concurrent all-namespace watches;
//  5. the raw Put and API create rates again with those Services in place.
//
// Every loop is bounded in count and in time. It prints plain-text tables
// and a goals table with PASS/MISS; it is a report, so it exits 0 unless the
// server cannot be reached at all. See bench/README.md for how to read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

type options struct {
	kubeconfig    string
	etcdEndpoints string
	ownEtcdDir    string
	etcdCA        string
	etcdCert      string
	etcdKey       string
	serverPID     int
	services      int
	rateDuration  time.Duration
	rateMaxOps    int
	rounds        int
	fillTimeout   time.Duration
	lists         int
	watchers      int
	watchCreates  int
	watchInterval time.Duration
	rawOnly       int
	waitReady     time.Duration
	maxTime       time.Duration
	serverDesc    string
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "admin kubeconfig of the server under test (required)")
	flag.StringVar(&o.etcdEndpoints, "etcd-endpoints", "", "comma-separated client URLs of the server's etcd; empty starts a separate embedded etcd in -own-etcd-dir for the raw put rate")
	flag.StringVar(&o.etcdCA, "etcd-cafile", "", "CA of the server's etcd, when it serves TLS")
	flag.StringVar(&o.etcdCert, "etcd-certfile", "", "client certificate for the server's etcd")
	flag.StringVar(&o.etcdKey, "etcd-keyfile", "", "client key for the server's etcd")
	flag.StringVar(&o.ownEtcdDir, "own-etcd-dir", "", "data dir for the separate embedded etcd (same disk as the server's data dir)")
	flag.IntVar(&o.serverPID, "server-pid", 0, "pid of the server process, for VmRSS")
	flag.IntVar(&o.services, "services", 10000, "Services to hold in the bench namespace for LIST, RSS and the at-N create rate")
	flag.DurationVar(&o.rateDuration, "rate-duration", 8*time.Second, "how long each create/put rate is measured")
	flag.IntVar(&o.rateMaxOps, "rate-max-ops", 20000, "upper bound of writes in one rate measurement")
	flag.IntVar(&o.rounds, "rounds", 4, "raw and API rates alternate in this many slices of -rate-duration/rounds each")
	flag.DurationVar(&o.fillTimeout, "fill-timeout", 3*time.Minute, "upper bound for creating the -services Services")
	flag.IntVar(&o.lists, "lists", 20, "lists per LIST mode")
	flag.IntVar(&o.watchers, "watchers", 100, "concurrent watchers")
	flag.IntVar(&o.watchCreates, "watch-creates", 200, "Services created while the watchers listen")
	flag.DurationVar(&o.watchInterval, "watch-interval", 25*time.Millisecond, "time between the starts of two watched creates")
	flag.IntVar(&o.rawOnly, "raw-only", 0, "measure only etcd's raw Put rate with values of this many bytes (no API server needed)")
	flag.DurationVar(&o.waitReady, "wait-ready", 2*time.Minute, "how long to wait for the server's /readyz")
	flag.DurationVar(&o.maxTime, "max-time", 6*time.Minute, "soft budget: phases that would start after this are skipped (each phase is bounded too)")
	flag.StringVar(&o.serverDesc, "server-desc", "", "how the server was started, printed in the report header")
	freePort := flag.Bool("print-free-port", false, "print a free loopback TCP port and exit (for run.sh)")
	flag.Parse()
	o.rounds = max(1, o.rounds)
	if *freePort {
		_, port, _ := strings.Cut(freeLoopback(), ":")
		fmt.Println(port)
		return
	}

	base := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := base.With("component", "bench")
	klog.SetSlogLogger(base.With("component", "klog")) // client-go's own logging
	if o.rawOnly > 0 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runRawOnly(ctx, log, o); err != nil {
			fail(err)
		}
		return
	}
	if o.kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "bench: -kubeconfig is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, o); err != nil {
		fail(err)
	}
}

// fail prints err and exits 1.
func fail(err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, "bench:") {
		msg = "bench: " + msg
	}
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
