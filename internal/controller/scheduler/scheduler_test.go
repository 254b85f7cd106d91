package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startScheduler(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	s, err := New(client, factory, Config{Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, 2) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		factory.Shutdown()
	})
}

func createNodes(t *testing.T, client kubernetes.Interface, nodes ...*v1.Node) {
	t.Helper()
	for _, n := range nodes {
		if _, err := client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func makePod(name string, mutate ...func(*v1.Pod)) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func ownedBy(uid string) func(*v1.Pod) {
	return func(p *v1.Pod) {
		yes := true
		p.Labels = map[string]string{"app": uid}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs-" + uid, UID: types.UID("uid-" + uid), Controller: &yes}}
	}
}

func createPods(t *testing.T, client kubernetes.Interface, pods ...*v1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitBound waits for the pods to be bound and returns name -> node.
func waitBound(t *testing.T, client kubernetes.Interface, names ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			p, err := client.CoreV1().Pods("default").Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			c := podScheduledCondition(p)
			if p.Spec.NodeName == "" || c == nil || c.Status != v1.ConditionTrue {
				return false, nil
			}
			got[n] = p.Spec.NodeName
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for %v to be bound (have %v): %v", names, got, err)
	}
	return got
}

func waitUnschedulable(t *testing.T, client kubernetes.Interface, name, wantMsg string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != "" {
			return false, fmt.Errorf("pod %s bound to %s", name, p.Spec.NodeName)
		}
		c := podScheduledCondition(p)
		if c == nil {
			return false, nil
		}
		last = fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
		return c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable && c.Message == wantMsg && p.Status.Phase == v1.PodPending, nil
	})
	if err != nil {
		t.Fatalf("pod %s: condition %q, want Unschedulable %q: %v", name, last, wantMsg, err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + name + ",reason=" + ReasonFailedScheduling,
		})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Type == v1.EventTypeWarning && e.Message == wantMsg && e.Source.Component == DefaultSchedulerName {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no FailedScheduling event %q for %s: %v", wantMsg, name, err)
	}
}

func readyNode(name string, mutate ...func(*v1.Node)) *v1.Node {
	n := node(name, mutate...)
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}}
	return n
}

func TestScheduler(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	client := srv.Client
	ctx := context.Background()
	createNodes(t, client,
		readyNode("n1"),
		readyNode("n2", func(n *v1.Node) { n.Labels["disk"] = "ssd" }),
		readyNode("n3"),
		readyNode("n4", func(n *v1.Node) { n.Spec.Unschedulable = true }),
		readyNode("n5", notReady(v1.ConditionFalse)),
	)
	// Two pods already on n1, placed by hand.
	createPods(t, client,
		makePod("fixed-1", func(p *v1.Pod) { p.Spec.NodeName = "n1" }),
		makePod("fixed-2", func(p *v1.Pod) { p.Spec.NodeName = "n1" }),
	)
	startScheduler(t, client)

	t.Run("spread one owner over the ready nodes", func(t *testing.T) {
		var names []string
		for i := range 6 {
			names = append(names, fmt.Sprintf("web-%d", i))
			createPods(t, client, makePod(names[i], ownedBy("web")))
		}
		per := map[string]int{}
		for _, n := range waitBound(t, client, names...) {
			per[n]++
		}
		if per["n1"] != 2 || per["n2"] != 2 || per["n3"] != 2 {
			t.Fatalf("web pods per node %v, want 2 on each of n1 n2 n3", per)
		}
		// The event recorder writes asynchronously, after the binding.
		var evs *v1.EventList
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			var err error
			evs, err = client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.name=web-0,reason=" + ReasonScheduled,
			})
			return err == nil && len(evs.Items) > 0, err
		})
		if err != nil || len(evs.Items) != 1 || !strings.HasPrefix(evs.Items[0].Message, "Successfully assigned default/web-0 to n") {
			t.Fatalf("Scheduled events for web-0: %v %v", evs, err)
		}
	})

	t.Run("fewest pods overall breaks ties", func(t *testing.T) {
		// n1 has 4 pods, n2 and n3 have 2: an ungrouped pod avoids n1.
		createPods(t, client, makePod("loner"))
		if got := waitBound(t, client, "loner")["loner"]; got != "n2" {
			t.Fatalf("loner on %s, want n2 (fewest pods, then name)", got)
		}
	})

	t.Run("nodeSelector", func(t *testing.T) {
		createPods(t, client, makePod("ssd", func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "ssd"} }))
		if got := waitBound(t, client, "ssd")["ssd"]; got != "n2" {
			t.Fatalf("ssd pod on %s, want n2", got)
		}
	})

	t.Run("nodeName and other schedulers are left alone", func(t *testing.T) {
		createPods(t, client,
			makePod("pinned", func(p *v1.Pod) { p.Spec.NodeName = "n5" }),
			makePod("foreign", func(p *v1.Pod) { p.Spec.SchedulerName = "other-scheduler" }),
		)
		// A later pod being scheduled shows the scheduler has seen both.
		createPods(t, client, makePod("marker"))
		waitBound(t, client, "marker")
		for name, wantNode := range map[string]string{"pinned": "n5", "foreign": ""} {
			p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Spec.NodeName != wantNode || podScheduledCondition(p) != nil {
				t.Fatalf("%s: node %q conditions %v, want node %q untouched", name, p.Spec.NodeName, p.Status.Conditions, wantNode)
			}
		}
	})

	t.Run("unschedulable stays pending, retried on node change", func(t *testing.T) {
		createPods(t, client, makePod("nvme", func(p *v1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "nvme"} }))
		waitUnschedulable(t, client, "nvme", "0/5 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were unschedulable, 3 node(s) didn't match Pod's node affinity/selector.")

		n3, err := client.CoreV1().Nodes().Get(ctx, "n3", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n3.Labels["disk"] = "nvme"
		if _, err := client.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := waitBound(t, client, "nvme")["nvme"]; got != "n3" {
			t.Fatalf("nvme pod on %s, want n3", got)
		}
	})

	t.Run("toleration lets a pod onto a cordoned node", func(t *testing.T) {
		createPods(t, client, makePod("tolerant", func(p *v1.Pod) {
			p.Spec.NodeSelector = map[string]string{v1.LabelHostname: "n4"}
			p.Spec.Tolerations = []v1.Toleration{{Key: v1.TaintNodeUnschedulable, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoSchedule}}
		}))
		if got := waitBound(t, client, "tolerant")["tolerant"]; got != "n4" {
			t.Fatalf("tolerant pod on %s, want n4", got)
		}
	})

	t.Run("two schedulers never double-bind", func(t *testing.T) {
		startScheduler(t, client) // a second, independent scheduler
		var names []string
		for i := range 20 {
			names = append(names, fmt.Sprintf("race-%d", i))
			createPods(t, client, makePod(names[i], ownedBy("race")))
		}
		waitBound(t, client, names...)
		for _, n := range names {
			// The event recorder writes asynchronously, after the binding.
			var evs *v1.EventList
			err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				var err error
				evs, err = client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
					FieldSelector: "involvedObject.name=" + n + ",reason=" + ReasonScheduled,
				})
				return err == nil && len(evs.Items) > 0, err
			})
			if err != nil {
				t.Fatalf("pod %s: no Scheduled event: %v", n, err)
			}
			if len(evs.Items) != 1 || evs.Items[0].Count != 1 {
				t.Fatalf("pod %s has %d Scheduled events, want exactly one binding", n, len(evs.Items))
			}
		}
	})
}
