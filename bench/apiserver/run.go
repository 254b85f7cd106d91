package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/svcnet/svcnet/internal/apiserver"
	"github.com/svcnet/svcnet/internal/registry/service"
)

const (
	nsBench = "bench"        // holds exactly -services Services for LIST and RSS
	nsAt0   = "bench-at-0"   // the create rate measured with no Services yet
	nsAtN   = "bench-at-n"   // the create rate measured with -services in place
	nsWatch = "bench-watch"  // watched creates
	nsWarm  = "bench-warmup" // warm-up creates and the sample value
)

// rates is one row pair of the create table.
type rates struct {
	existing int
	conc     int
	// raw are plain puts, txn create-shaped transactions (rawCreateTxns),
	// api Service creates.
	raw, txn, api rateResult
	// rawCPU, txnCPU and apiCPU are the server process's CPU time
	// (user+system) during each measurement; with the embedded etcd that
	// includes etcd.
	rawCPU, txnCPU, apiCPU time.Duration
	// rawSelf, txnSelf and apiSelf are the bench process's own CPU time
	// (the clients; with -own-etcd-dir also that etcd).
	rawSelf, txnSelf, apiSelf time.Duration
	// deleted Services were removed after the row in deleteTook.
	deleted    int
	deleteTook time.Duration
	deleteErr  error
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	began := time.Now()
	loadStart := loadavg()
	ph := newPhases(o.serverPID)
	cfg, err := loadConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	admin, err := newClients(cfg, 1)
	if err != nil {
		return err
	}
	one, err := newClients(cfg, 1)
	if err != nil {
		return err
	}
	eight, err := newClients(cfg, 8)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, admin[0], o.waitReady); err != nil {
		return err
	}
	if err := ensureNamespaces(ctx, admin[0], nsBench, nsAt0, nsAtN, nsWatch, nsWarm); err != nil {
		return err
	}

	ec, etcdWhere, closeEtcd, err := rawEtcd(ctx, log, o)
	if err != nil {
		return err
	}
	defer closeEtcd()

	// Warm-up: connections, caches, and one stored Service for the value size.
	log.Info("warm-up creates")
	warm := apiCreates(ctx, one, nsWarm, "warm", 20, 20*time.Second)
	if warm.ok == 0 {
		return fmt.Errorf("warm-up: no Service could be created: %v", warm.firstErr)
	}
	value, valueFrom, err := sampleValue(ctx, ec, admin[0], nsWarm, "warm-000000")
	if err != nil {
		return err
	}
	allocValue, err := sampleAllocValue(ctx, ec, admin[0], nsWarm, "warm-000000")
	if err != nil {
		return err
	}
	res := &results{server: o.serverDesc, etcdWhere: etcdWhere, valueFrom: valueFrom, valueLen: len(value), loadStart: loadStart,
		warmOK: warm.ok, rssStart: readRSS(o.serverPID), rssAtN: noRSS, rssEnd: noRSS, phases: ph.t}

	// measure runs one row per concurrency. Every row writes into an empty
	// namespace that is emptied again afterwards (and the raw keys deleted),
	// so each row starts with the same number of Services in the cluster.
	measure := func(ns, prefix string) error {
		for _, c := range []struct {
			n  int
			cs []kubernetes.Interface
		}{{1, one}, {8, eight}} {
			existing, err := countServices(ctx, admin[0], metav1.NamespaceAll)
			if err != nil {
				return err
			}
			log.Info("raw etcd puts and API creates, interleaved", "clients", c.n, "existing", existing, "rounds", o.rounds)
			r := rates{existing: existing, conc: c.n}
			// Interleave short raw and API slices so drift in fsync latency
			// or background work during the run hits both sides alike.
			for round := range o.rounds {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				tag := fmt.Sprintf("%s-c%d-r%d", prefix, c.n, round)
				slice, maxOps := o.rateDuration/time.Duration(o.rounds), max(1, o.rateMaxOps/o.rounds)
				srv0, self0 := procCPU(o.serverPID), selfCPU()
				r.raw.merge(rawPuts(ctx, ec, c.n, maxOps, slice, tag, value))
				srv1, self1 := procCPU(o.serverPID), selfCPU()
				r.txn.merge(rawCreateTxns(ctx, ec, c.n, maxOps, slice, tag+"-txn", value, allocValue))
				srv2, self2 := procCPU(o.serverPID), selfCPU()
				r.api.merge(apiCreates(ctx, c.cs, ns, tag, maxOps, slice))
				srv3, self3 := procCPU(o.serverPID), selfCPU()
				r.rawCPU += srv1 - srv0
				r.txnCPU += srv2 - srv1
				r.apiCPU += srv3 - srv2
				r.rawSelf += self1 - self0
				r.txnSelf += self2 - self1
				r.apiSelf += self3 - self2
			}
			t0 := time.Now()
			if err := cleanRaw(ctx, ec); err != nil {
				return fmt.Errorf("bench: delete raw keys: %w", err)
			}
			r.deleted, r.deleteErr = deleteAll(ctx, eight, ns, time.Minute)
			r.deleteTook = time.Since(t0)
			res.rates = append(res.rates, r)
		}
		return nil
	}
	ph.done("start, warm-up")
	if err := measure(nsAt0, "at0"); err != nil {
		return err
	}
	ph.done("rates at 0 (raw + API)")

	// A soft time budget: each phase is bounded, and once -max-time has
	// passed the remaining phases are skipped and the report says so.
	overBudget := func(next string) bool {
		if time.Since(began) < o.maxTime {
			return false
		}
		res.skipped = append(res.skipped, next)
		return true
	}
	if overBudget("fill, lists, watch, rates at N") {
		res.took = time.Since(began)
		res.print(os.Stdout, o)
		return nil
	}

	// Fill the bench namespace up to -services with 8 clients.
	have, err := countServices(ctx, admin[0], nsBench)
	if err != nil {
		return err
	}
	log.Info("filling", "namespace", nsBench, "have", have, "want", o.services)
	res.fill = apiCreates(ctx, eight, nsBench, "fill", max(0, o.services-have), o.fillTimeout)
	if res.stored, err = countServices(ctx, admin[0], nsBench); err != nil {
		return err
	}
	ph.done("fill")
	if ctx.Err() != nil {
		return ctx.Err()
	}

	log.Info("lists", "services", res.stored)
	res.lists = measureLists(ctx, admin[0], nsBench, o.lists, 30*time.Second)
	res.rssAtN = readRSS(o.serverPID)
	ph.done("lists")
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if !overBudget("watch") {
		log.Info("watch", "watchers", o.watchers)
		watchClients, err := newClients(cfg, o.watchers)
		if err != nil {
			return err
		}
		res.watch, res.watchErr = measureWatch(ctx, one[0], watchClients, nsWatch, o.watchCreates, o.watchInterval)
		ph.done("watch")
		if ctx.Err() != nil {
			return ctx.Err()
		}
	} else {
		res.watchErr = fmt.Errorf("skipped: the run was past -max-time %s", o.maxTime)
	}

	if !overBudget("rates at N") {
		if err := measure(nsAtN, "atn"); err != nil {
			return err
		}
		ph.done("rates at N (raw + API)")
	}
	res.rssEnd = readRSS(o.serverPID)
	res.total, _ = countServices(ctx, admin[0], "") // only for the report
	res.loadEnd = loadavg()
	res.took = time.Since(began)
	res.print(os.Stdout, o)
	return nil
}

// sampleValue returns the bytes the server stored for the Service ns/name,
// or failing that (another key layout) the protobuf encoding of that Service
// as kube-apiserver would store it, and says which.
func sampleValue(ctx context.Context, ec *clientv3.Client, cs kubernetes.Interface, ns, name string) ([]byte, string, error) {
	key := apiserver.KeyPrefix + "core/services/" + ns + "/" + name
	if r, err := ec.Get(ctx, key); err == nil && len(r.Kvs) == 1 {
		return r.Kvs[0].Value, "what the server stored at " + key, nil
	}
	s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("bench: get sample service: %w", err)
	}
	s.APIVersion, s.Kind = "v1", "Service"
	s.ResourceVersion = ""
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(s, &buf); err != nil {
		return nil, "", fmt.Errorf("bench: encode sample service: %w", err)
	}
	return buf.Bytes(), "protobuf encoding of a created Service; " + key + " not found in etcd", nil
}

// sampleAllocValue returns what the server stored at the ClusterIP
// allocation key of the Service ns/name, or failing that (another key
// layout) a value of the same form.
func sampleAllocValue(ctx context.Context, ec *clientv3.Client, cs kubernetes.Interface, ns, name string) ([]byte, error) {
	s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: get sample service: %w", err)
	}
	if ip, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
		if r, err := ec.Get(ctx, service.ClusterIPKey(ip)); err == nil && len(r.Kvs) == 1 {
			return r.Kvs[0].Value, nil
		}
	}
	return json.Marshal(service.Owner{Namespace: ns, Name: name, UID: s.UID})
}

// rawEtcd connects to the etcd for the raw put rate: the server's, or a
// separate embedded member. The returned func deletes the raw keys and
// closes what was opened.
func rawEtcd(ctx context.Context, log *slog.Logger, o options) (*clientv3.Client, string, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	etcdWhere := ""
	ca, cert, key := o.etcdCA, o.etcdCert, o.etcdKey
	endpoints := splitList(o.etcdEndpoints)
	if len(endpoints) > 0 {
		etcdWhere = fmt.Sprintf("the server's own etcd at %s", strings.Join(endpoints, ","))
	} else {
		if o.ownEtcdDir == "" {
			return nil, "", nil, fmt.Errorf("need -etcd-endpoints or -own-etcd-dir")
		}
		log.Info("starting a separate embedded etcd for the raw put rate", "dir", o.ownEtcdDir)
		e, err := ownEtcd(ctx, o.ownEtcdDir)
		if err != nil {
			return nil, "", nil, err
		}
		closers = append(closers, e.Close)
		endpoints = e.Endpoints()
		ca, cert, key = "", "", "" // our own member serves plain HTTP on loopback
		etcdWhere = fmt.Sprintf("a SEPARATE embedded etcd (fsync on) in the bench process, data in %s", o.ownEtcdDir)
	}
	ec, err := dialEtcd(ctx, endpoints, ca, cert, key)
	if err != nil {
		closeAll()
		return nil, "", nil, err
	}
	closers = append(closers, func() { ec.Close() }, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cleanRaw(cctx, ec); err != nil {
			log.Warn("delete raw keys", "err", err)
		}
	})
	return ec, etcdWhere, closeAll, nil
}

// runRawOnly prints etcd's raw Put rate at 1 and 8 writers and exits.
func runRawOnly(ctx context.Context, log *slog.Logger, o options) error {
	ec, etcdWhere, closeEtcd, err := rawEtcd(ctx, log, o)
	if err != nil {
		return err
	}
	defer closeEtcd()
	value := bytes.Repeat([]byte("x"), o.rawOnly)
	t := &table{
		title: "etcd raw Put rate on " + etcdWhere,
		head:  []string{"writers", "put/s", "p50", "p99", "errors"},
	}
	for _, c := range []int{1, 8} {
		r := rawPuts(ctx, ec, c, o.rateMaxOps, o.rateDuration, fmt.Sprintf("raw-c%d", c), value)
		t.add(strconv.Itoa(c), fmt.Sprintf("%.0f", r.perSec()), ms(pct(r.lat, 50)), ms(pct(r.lat, 99)), strconv.Itoa(r.failed))
		if r.firstErr != nil {
			t.note("first error (%d writers): %v", c, r.firstErr)
		}
	}
	t.note("%d-byte values, %s or %d puts per row", o.rawOnly, o.rateDuration, o.rateMaxOps)
	t.print(os.Stdout)
	return nil
}

// waitReady polls the server's /readyz (authenticated as admin) until it
// answers 200 "ok" or timeout passes.
func waitReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cs.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("server not ready within %s: %v", timeout, last)
}
