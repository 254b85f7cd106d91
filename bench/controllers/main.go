// Command controllers benchmarks the endpoint controllers (issue 3,
// acceptance point 4) against an in-process svcnet API server.
//
// It starts internal/server.Run on loopback ports with a throwaway data dir
// (its embedded etcd fsyncs unless -nofsync), runs the EndpointSlice,
// Endpoints and EndpointSlice-mirroring controllers in the same process as
// `svcnet server` does, and measures:
//
//  1. endpoint propagation on an idle server: -services Services with
//     -pods-per-service pods each, every pod running but not ready; then,
//     one pod at a time, the kubelet-style status write that makes it Ready
//     and the moment a separate EndpointSlice watcher sees that endpoint
//     ready (and the same for Ready → not ready). Latency is reported from
//     the status write's return (the pod is Ready in the API) and, for
//     reference, from just before the write was sent;
//  2. cold start: the controllers are stopped, -cold-services Services with
//     -cold-pods pods each (running and ready) are created through the API
//     (bounded by -cold-create-budget; when the budget runs out the scale
//     actually created is reported, with an extrapolation), then fresh
//     controllers start and the time until every Service has its slice (and
//     its Endpoints) with all pods ready is measured;
//  3. propagation again at that scale.
//
// It prints plain-text tables and a goals table (p99 ≤ 50 ms); it is a
// report, so it exits 0 unless the server cannot start. Only loopback
// addresses are used. Run: go run ./bench/controllers [-flags].
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

type options struct {
	dataDir          string
	nofsync          bool
	services         int
	podsPerService   int
	coldServices     int
	coldPods         int
	coldCreateBudget time.Duration
	coldTimeout      time.Duration
	scalePods        int
	workers          int
	createWorkers    int
	controllerQPS    float64
	gap              time.Duration
	skipCold         bool
	cpuProfile       string
	verbose          bool
}

func main() {
	var o options
	flag.StringVar(&o.dataDir, "data-dir", "", "server data dir (default: a new dir under $BENCH_TMPDIR, $TMPDIR or /tmp, removed at exit)")
	flag.BoolVar(&o.nofsync, "nofsync", false, "run the embedded etcd without fsync (test mode; figures are then optimistic)")
	flag.IntVar(&o.services, "services", 100, "Services in the propagation phase")
	flag.IntVar(&o.podsPerService, "pods-per-service", 10, "pods per Service in the propagation phase")
	flag.IntVar(&o.coldServices, "cold-services", 10000, "Services in the cold-start phase")
	flag.IntVar(&o.coldPods, "cold-pods", 10, "pods per Service in the cold-start phase")
	flag.DurationVar(&o.coldCreateBudget, "cold-create-budget", 5*time.Minute, "stop creating cold-start objects after this long and report the scale reached")
	flag.DurationVar(&o.coldTimeout, "cold-timeout", 10*time.Minute, "give up waiting for cold-start convergence after this long")
	flag.IntVar(&o.scalePods, "scale-pods", 200, "pods flipped for the propagation measurement at cold-start scale")
	flag.IntVar(&o.workers, "workers", 5, "workers per controller (kube-controller-manager's default 5)")
	flag.IntVar(&o.createWorkers, "create-workers", 16, "concurrent clients creating the cold-start objects")
	flag.Float64Var(&o.controllerQPS, "controller-qps", 500, "client-side QPS limit of the controllers' client, burst 2× (the controller manager's default)")
	flag.DurationVar(&o.gap, "gap", 5*time.Millisecond, "pause between two measured pod transitions (keeps the server idle)")
	flag.BoolVar(&o.skipCold, "skip-cold", false, "only run the propagation phase")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the cold-start convergence and phase 3 to this file")
	flag.BoolVar(&o.verbose, "v", false, "log the server and controllers to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/controllers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	logger := slog.New(slog.DiscardHandler)
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := startServer(ctx, o, logger)
	if err != nil {
		return err
	}
	defer srv.stop()

	r := &report{start: time.Now()}
	fmt.Printf("bench/controllers: svcnet endpoint controllers, in-process server (etcd fsync: %v), GOMAXPROCS=%d, load average at start %s\n",
		!o.nofsync, runtime.GOMAXPROCS(0), loadAvg())
	fmt.Printf("controllers: endpointslice, endpoints, endpointslice-mirroring; %d workers each; client QPS %.0f\n\n", o.workers, o.controllerQPS)

	b := &bench{o: o, srv: srv, logger: logger, r: r}
	if err := b.propagation(ctx); err != nil {
		return err
	}
	if !o.skipCold {
		if err := b.coldStart(ctx); err != nil {
			return err
		}
	}
	r.print(o)
	fmt.Printf("\nload average at end %s; total %s\n", loadAvg(), time.Since(r.start).Round(time.Second))
	return nil
}
