package endpointslice_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/controller/endpoints"
	"github.com/svcnet/svcnet/internal/controller/endpointslice"
	"github.com/svcnet/svcnet/internal/controller/endpointslice/eptest"
	"github.com/svcnet/svcnet/internal/server"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

const (
	churnNS       = "churn"
	churnServices = 8
)

// TestRestartAndCompaction churns pods and Services while the API server
// restarts, etcd is compacted and the controllers restart, then checks that
// the slices are exactly what the pods say: no duplicate endpoint, no lost
// or orphaned slice (acceptance 5); and the same for the Endpoints
// controller running beside it.
func TestRestartAndCompaction(t *testing.T) {
	dir := t.TempDir()
	s1 := apitest.Start(t, apitest.Options{DataDir: dir})
	c := s1.Client // same URL, CA and credentials across restarts
	ctx := context.Background()
	eptest.CreateNode(t, c, "node-a", "192.0.2.1", "zone-a")
	eptest.CreateNode(t, c, "node-b", "192.0.2.2", "zone-b")
	eptest.CreateNamespace(t, c, churnNS)
	for i := range churnServices {
		createService(t, c, churnService(i))
	}
	witness := startWitness(t, c)
	ch := &churner{c: c, rng: rand.New(rand.NewPCG(1, 2))}
	for range 24 {
		ch.createPod(ctx, true)
	}

	stopC1 := startController(t, c)
	stopE1 := startEndpointsController(t, c)
	waitConverged(t, c, witness, "initial sync")

	// Churn; compact; restart the server under the running controller.
	ch.run(t, 1500*time.Millisecond, func() { compact(t, s1.Info.EtcdEndpoints) })
	stop := ch.start(t)
	if err := s1.Stop(); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	s2 := apitest.Start(t, apitest.Options{DataDir: dir, Configure: samePorts(s1.Config)})
	time.Sleep(time.Second)
	compact(t, s2.Info.EtcdEndpoints)
	time.Sleep(500 * time.Millisecond)
	stop()
	t.Logf("churn so far: %d ops, %d errors (expected while the server was down)", ch.ops, ch.errs)
	waitConverged(t, c, witness, "controller that lived through a server restart and compaction")

	// Restart the controller mid-churn; leave behind a managed slice of a
	// Service that does not exist.
	stop = ch.start(t)
	time.Sleep(500 * time.Millisecond)
	stopC1()
	stopE1()
	time.Sleep(500 * time.Millisecond)
	compact(t, s2.Info.EtcdEndpoints)
	ghost := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "ghost-x1", Namespace: churnNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: "ghost", discoveryv1.LabelManagedBy: endpointslice.ControllerName,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	if _, err := c.DiscoveryV1().EndpointSlices(churnNS).Create(ctx, ghost, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startController(t, c)
	startEndpointsController(t, c)
	time.Sleep(time.Second)
	stop()
	t.Logf("churn total: %d ops, %d errors", ch.ops, ch.errs)
	waitConverged(t, c, witness, "restarted controller")
}

// startEndpointsController runs the Endpoints controller beside the slice
// controller, as the controller manager does, until stop.
func startEndpointsController(t *testing.T, client kubernetes.Interface) (stop func()) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := endpoints.New(client, factory, endpoints.Config{Logger: eptest.Logger(t, testing.Verbose())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx, 2)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; factory.Shutdown() }) }
	t.Cleanup(stop)
	return stop
}

// samePorts makes a restarted server listen where the first one did, so
// existing clients reconnect.
func samePorts(old server.Config) func(*server.Config) {
	return func(cfg *server.Config) {
		cfg.SecurePort = old.SecurePort
		cfg.EmbeddedEtcdClientURL = old.EmbeddedEtcdClientURL
		cfg.EmbeddedEtcdPeerURL = old.EmbeddedEtcdPeerURL
	}
}

// compact compacts etcd at its current revision.
func compact(t *testing.T, endpoints []string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compaction-probe")
	if err != nil {
		t.Fatalf("etcd get: %v", err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("etcd compact: %v", err)
	}
	t.Logf("compacted etcd at revision %d", resp.Header.Revision)
}

func churnService(i int) *corev1.Service {
	return newService(churnNS, fmt.Sprintf("svc-%d", i), map[string]string{"app": fmt.Sprintf("svc-%d", i)},
		tcpPort("http", 80, intstr.FromInt32(8080)))
}

// churner makes random pod and Service changes; errors (the server may be
// down) are counted and ignored.
type churner struct {
	c   kubernetes.Interface
	rng *rand.Rand

	mu   sync.Mutex // guards the fields below
	next int
	ops  int
	errs int
}

// start churns in the background until the returned stop is called.
func (ch *churner) start(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ch.step(ctx)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

// run churns for d, calling mid halfway.
func (ch *churner) run(t *testing.T, d time.Duration, mid func()) {
	stop := ch.start(t)
	time.Sleep(d / 2)
	mid()
	time.Sleep(d / 2)
	stop()
}

func (ch *churner) count(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.ops++
	if err != nil {
		ch.errs++
	}
}

func (ch *churner) createPod(ctx context.Context, withIP bool) {
	ch.mu.Lock()
	n := ch.next
	ch.next++
	svc := ch.rng.IntN(churnServices)
	node := []string{"node-a", "node-b"}[ch.rng.IntN(2)]
	ready := ch.rng.IntN(2) == 0
	ch.mu.Unlock()
	pod := eptest.NewPod(churnNS, eptest.PodSpec{
		Name: fmt.Sprintf("p-%d", n), Labels: map[string]string{"app": fmt.Sprintf("svc-%d", svc)}, Node: node,
	})
	created, err := ch.c.CoreV1().Pods(churnNS).Create(ctx, pod, metav1.CreateOptions{})
	ch.count(err)
	if err != nil || !withIP {
		return
	}
	eptest.ApplyStatus(created, fmt.Sprintf("10.244.%d.%d", n/250, 1+n%250), ready)
	_, err = ch.c.CoreV1().Pods(churnNS).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	ch.count(err)
}

// step makes one random change.
func (ch *churner) step(ctx context.Context) {
	pods, err := ch.c.CoreV1().Pods(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		ch.count(err)
		return
	}
	ch.mu.Lock()
	op := ch.rng.IntN(100)
	var pod *corev1.Pod
	if len(pods.Items) > 0 {
		pod = &pods.Items[ch.rng.IntN(len(pods.Items))]
	}
	other := ch.rng.IntN(churnServices)
	ch.mu.Unlock()

	podsClient := ch.c.CoreV1().Pods(churnNS)
	switch {
	case op < 15 || pod == nil || len(pods.Items) < 10:
		ch.createPod(ctx, op%5 != 0)
	case op < 50: // flip readiness
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			return
		}
		ready := false
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		eptest.ApplyStatus(pod, pod.Status.PodIP, !ready)
		_, err = podsClient.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		ch.count(err)
	case op < 62: // start terminating
		ch.count(podsClient.Delete(ctx, pod.Name, metav1.DeleteOptions{}))
	case op < 80: // gone
		ch.count(podsClient.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	case op < 95: // move to another Service
		if pod.DeletionTimestamp != nil {
			return
		}
		pod.Labels = map[string]string{"app": fmt.Sprintf("svc-%d", other)}
		_, err = podsClient.Update(ctx, pod, metav1.UpdateOptions{})
		ch.count(err)
	default: // recreate a Service (new UID)
		svc := churnService(other)
		err := ch.c.CoreV1().Services(churnNS).Delete(ctx, svc.Name, metav1.DeleteOptions{})
		ch.count(err)
		_, err = ch.c.CoreV1().Services(churnNS).Create(ctx, svc, metav1.CreateOptions{})
		ch.count(err)
	}
}

// waitConverged waits until every Service's managed slices match its pods.
// On failure it also says whether an independent informer (the witness,
// running since the start on the same client) agrees with the server, to
// tell a stale watch from a controller bug.
func waitConverged(t *testing.T, c kubernetes.Interface, witness witness, what string) {
	t.Helper()
	eptest.Eventually(t, "desired == actual slices ("+what+")", func() (bool, string) {
		d, err := diffDesired(c)
		if err != nil {
			return false, err.Error()
		}
		if d != "" {
			d += "\n" + witnessDiff(c, witness)
		}
		return d == "", d
	})
}

// witness is a plain all-namespaces Service informer and EndpointSlice
// informer (like the controller's), running for the whole test on the
// same client: when the controller does not converge, whether they agree
// with the server tells a stale watch from a controller bug.
type witness struct{ services, slices cache.Indexer }

func startWitness(t *testing.T, c kubernetes.Interface) witness {
	factory := informers.NewSharedInformerFactory(c, 0)
	w := witness{
		services: factory.Core().V1().Services().Informer().GetIndexer(),
		slices:   factory.Discovery().V1().EndpointSlices().Informer().GetIndexer(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	return w
}

// witnessDiff compares the witness informers' Services and slices with
// the server's.
func witnessDiff(c kubernetes.Interface, w witness) string {
	ctx := context.Background()
	l, err := c.CoreV1().Services(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "witness: " + err.Error()
	}
	var out []string
	for _, s := range l.Items {
		o, ok, _ := w.services.GetByKey(churnNS + "/" + s.Name)
		switch {
		case !ok:
			out = append(out, s.Name+": missing from the witness informer")
		case o.(*corev1.Service).UID != s.UID:
			out = append(out, fmt.Sprintf("%s: witness informer has UID %s (rv %s), server %s (rv %s)", s.Name,
				o.(*corev1.Service).UID, o.(*corev1.Service).ResourceVersion, s.UID, s.ResourceVersion))
		}
	}
	sl, err := c.DiscoveryV1().EndpointSlices(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "witness: " + err.Error()
	}
	onServer := map[string]bool{}
	for _, s := range sl.Items {
		onServer[s.Name] = true
		o, ok, _ := w.slices.GetByKey(churnNS + "/" + s.Name)
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("slice %s (rv %s): missing from the witness informer", s.Name, s.ResourceVersion))
		case o.(*discoveryv1.EndpointSlice).ResourceVersion != s.ResourceVersion:
			out = append(out, fmt.Sprintf("slice %s: witness informer has rv %s, server %s", s.Name,
				o.(*discoveryv1.EndpointSlice).ResourceVersion, s.ResourceVersion))
		}
	}
	for _, o := range w.slices.List() {
		if s := o.(*discoveryv1.EndpointSlice); s.Namespace == churnNS && !onServer[s.Name] {
			out = append(out, fmt.Sprintf("slice %s (rv %s): in the witness informer, not on the server (list rv %s)",
				s.Name, s.ResourceVersion, sl.ResourceVersion))
		}
	}
	if len(out) == 0 {
		return fmt.Sprintf("witness informers agree with the server (%d Services, %d slices)", len(l.Items), len(sl.Items))
	}
	return "witness informers are stale: " + fmt.Sprint(out)
}

// diffDesired compares the slices in the namespace with what the pods,
// Services and Nodes say they must be; "" means equal.
func diffDesired(c kubernetes.Interface) (string, error) {
	ctx := context.Background()
	svcs, err := c.CoreV1().Services(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	pods, err := c.CoreV1().Pods(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	slices, err := c.DiscoveryV1().EndpointSlices(churnNS).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelManagedBy + "=" + endpointslice.ControllerName,
	})
	if err != nil {
		return "", err
	}
	zone := map[string]string{}
	for _, n := range nodes.Items {
		zone[n.Name] = n.Labels[corev1.LabelTopologyZone]
	}
	bySvc := map[string][]discoveryv1.EndpointSlice{}
	for _, s := range slices.Items {
		bySvc[s.Labels[discoveryv1.LabelServiceName]] = append(bySvc[s.Labels[discoveryv1.LabelServiceName]], s)
	}
	var problems []string
	for _, svc := range svcs.Items {
		got := bySvc[svc.Name]
		delete(bySvc, svc.Name)
		if len(got) == 0 {
			problems = append(problems, svc.Name+": no slice")
			continue
		}
		for _, s := range got {
			if ref := metav1.GetControllerOf(&s); ref == nil || ref.UID != svc.UID {
				problems = append(problems, fmt.Sprintf("%s: slice %s (rv %s) owned by %v, not the current Service %s (rv %s)",
					svc.Name, s.Name, s.ResourceVersion, ref, svc.UID, svc.ResourceVersion))
			}
			if len(got) > 1 && len(s.Endpoints) == 0 {
				problems = append(problems, fmt.Sprintf("%s: extra empty slice %s", svc.Name, s.Name))
			}
		}
		var want []string
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, p := range pods.Items {
			if !sel.Matches(labels.Set(p.Labels)) || p.Status.PodIP == "" {
				continue
			}
			want = append(want, desiredLine(&p, zone))
		}
		sort.Strings(want)
		if d := eptest.Diff(eptest.EndpointLines(got), want); d != "" {
			problems = append(problems, svc.Name+": "+d)
		}
	}
	for name, s := range bySvc {
		problems = append(problems, fmt.Sprintf("%d slices of missing Service %s", len(s), name))
	}
	eps, err := c.CoreV1().Endpoints(churnNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	epByName := map[string]*corev1.Endpoints{}
	for i := range eps.Items {
		epByName[eps.Items[i].Name] = &eps.Items[i]
	}
	for _, svc := range svcs.Items {
		ep := epByName[svc.Name]
		delete(epByName, svc.Name)
		if ep == nil {
			problems = append(problems, svc.Name+": no Endpoints")
			continue
		}
		var want []string
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, p := range pods.Items {
			if !sel.Matches(labels.Set(p.Labels)) || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
				continue
			}
			state := "notready"
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					state = "ready"
				}
			}
			want = append(want, state+" "+p.Status.PodIP+" "+p.Name)
		}
		sort.Strings(want)
		var got []string
		for _, ss := range ep.Subsets {
			for _, a := range ss.Addresses {
				got = append(got, "ready "+a.IP+" "+a.TargetRef.Name)
			}
			for _, a := range ss.NotReadyAddresses {
				got = append(got, "notready "+a.IP+" "+a.TargetRef.Name)
			}
		}
		sort.Strings(got)
		if d := eptest.Diff(got, want); d != "" {
			problems = append(problems, svc.Name+" Endpoints: "+d)
		}
	}
	for name := range epByName {
		problems = append(problems, "Endpoints of missing Service "+name)
	}
	sort.Strings(problems)
	if len(problems) == 0 {
		return "", nil
	}
	return fmt.Sprint(problems), nil
}

// desiredLine is the eptest.EndpointLines line the reconciler must write
// for a selected pod with an IP.
func desiredLine(p *corev1.Pod, zone map[string]string) string {
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	terminating := p.DeletionTimestamp != nil
	line := fmt.Sprintf("%s %s ready=%t serving=%t terminating=%t node=%s", p.Name, p.Status.PodIP,
		ready && !terminating, ready, terminating, p.Spec.NodeName)
	if z := zone[p.Spec.NodeName]; z != "" {
		line += " zone=" + z
	}
	return line + " ports=http:8080/TCP"
}
