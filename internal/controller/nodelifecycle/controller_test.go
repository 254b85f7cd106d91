package nodelifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func TestReconcileTaints(t *testing.T) {
	now := metav1.Now()
	earlier := metav1.NewTime(now.Add(-time.Hour))
	user := v1.Taint{Key: "dedicated", Value: "db", Effect: v1.TaintEffectNoSchedule}
	unreachable := v1.Taint{Key: v1.TaintNodeUnreachable, Effect: v1.TaintEffectNoSchedule, TimeAdded: &earlier}
	noExec := v1.Taint{Key: v1.TaintNodeUnreachable, Effect: v1.TaintEffectNoExecute}
	tests := []struct {
		name        string
		node        v1.Node
		want        []string // keys of the resulting taints, in order
		wantChanged bool
	}{
		{name: "ready", node: nodeWith(v1.ConditionTrue, false)},
		{name: "not ready", node: nodeWith(v1.ConditionFalse, false), want: []string{v1.TaintNodeNotReady}, wantChanged: true},
		{name: "unknown", node: nodeWith(v1.ConditionUnknown, false), want: []string{v1.TaintNodeUnreachable}, wantChanged: true},
		{name: "cordoned", node: nodeWith(v1.ConditionTrue, true), want: []string{v1.TaintNodeUnschedulable}, wantChanged: true},
		{name: "recovered keeps user taints", node: nodeWith(v1.ConditionTrue, false, user, unreachable),
			want: []string{"dedicated"}, wantChanged: true},
		{name: "unknown to not ready swaps", node: nodeWith(v1.ConditionFalse, false, unreachable),
			want: []string{v1.TaintNodeNotReady}, wantChanged: true},
		{name: "already right", node: nodeWith(v1.ConditionUnknown, false, user, unreachable),
			want: []string{"dedicated", v1.TaintNodeUnreachable}},
		{name: "NoExecute taints are not ours", node: nodeWith(v1.ConditionTrue, false, noExec),
			want: []string{v1.TaintNodeUnreachable}},
		{name: "pressure", node: func() v1.Node {
			n := nodeWith(v1.ConditionTrue, false)
			n.Status.Conditions = append(n.Status.Conditions,
				v1.NodeCondition{Type: v1.NodeDiskPressure, Status: v1.ConditionTrue},
				v1.NodeCondition{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse})
			return n
		}(), want: []string{v1.TaintNodeDiskPressure}, wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := reconcileTaints(tt.node.Spec.Taints, wantTaints(&tt.node), now)
			var keys []string
			for _, g := range got {
				keys = append(keys, g.Key)
			}
			if !slices.Equal(keys, tt.want) || changed != tt.wantChanged {
				t.Fatalf("taints %v changed %v, want %v %v", keys, changed, tt.want, tt.wantChanged)
			}
			for _, g := range got {
				if g.Key == v1.TaintNodeUnreachable && g.Effect == v1.TaintEffectNoSchedule && slices.Contains(tt.node.Spec.Taints, unreachable) && !g.TimeAdded.Equal(&earlier) {
					t.Fatal("an existing taint lost its timeAdded")
				}
			}
		})
	}
}

func nodeWith(ready v1.ConditionStatus, unschedulable bool, taints ...v1.Taint) v1.Node {
	return v1.Node{
		Spec:   v1.NodeSpec{Unschedulable: unschedulable, Taints: taints},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: ready}}},
	}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

const grace = 1500 * time.Millisecond

func startController(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := New(client, factory, Config{NodeMonitorGracePeriod: grace, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx, 2) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		factory.Shutdown()
	})
}

// kubelet plays a node agent: it registers the node and renews its lease
// while renewing is on.
type kubelet struct {
	t      *testing.T
	client kubernetes.Interface
	name   string
	mu     sync.Mutex
	renew  bool
}

func startKubelet(t *testing.T, client kubernetes.Interface, name string, unschedulable bool) *kubelet {
	t.Helper()
	ctx := context.Background()
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1.NodeSpec{Unschedulable: unschedulable},
		Status:     readyStatusNow(),
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now := metav1.NowMicro()
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: v1.NamespaceNodeLease},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: new(int32(40)), RenewTime: &now},
	}
	if _, err := client.CoordinationV1().Leases(v1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k := &kubelet{t: t, client: client, name: name, renew: true}
	loopCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-time.After(grace / 8):
			}
			k.mu.Lock()
			on := k.renew
			k.mu.Unlock()
			if on {
				k.renewLease(loopCtx)
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return k
}

func (k *kubelet) setRenewing(on bool) {
	k.mu.Lock()
	k.renew = on
	k.mu.Unlock()
}

func (k *kubelet) renewLease(ctx context.Context) {
	l, err := k.client.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, k.name, metav1.GetOptions{})
	if err != nil {
		return
	}
	now := metav1.NowMicro()
	l.Spec.RenewTime = &now
	_, _ = k.client.CoordinationV1().Leases(v1.NamespaceNodeLease).Update(ctx, l, metav1.UpdateOptions{})
}

func readyStatusNow() v1.NodeStatus {
	now := metav1.Now()
	var conds []v1.NodeCondition
	for _, c := range []struct {
		t      v1.NodeConditionType
		s      v1.ConditionStatus
		reason string
	}{
		{v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory"},
		{v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure"},
		{v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID"},
		{v1.NodeReady, v1.ConditionTrue, "KubeletReady"},
	} {
		conds = append(conds, v1.NodeCondition{Type: c.t, Status: c.s, Reason: c.reason, LastHeartbeatTime: now, LastTransitionTime: now})
	}
	return v1.NodeStatus{
		Conditions: conds,
		Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}},
	}
}

// postReady is the kubelet reporting Ready again.
func (k *kubelet) postReady(ctx context.Context) {
	k.t.Helper()
	n, err := k.client.CoreV1().Nodes().Get(ctx, k.name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	n.Status.Conditions = readyStatusNow().Conditions
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

func runningPod(t *testing.T, client kubernetes.Interface, name, node string) {
	t.Helper()
	ctx := context.Background()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	p, err := client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.Status.Phase = v1.PodRunning
	p.Status.PodIP = "10.244.0.5"
	p.Status.Conditions = []v1.PodCondition{
		{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: now},
		{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: now},
		{Type: v1.ContainersReady, Status: v1.ConditionTrue, LastTransitionTime: now},
	}
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func getNode(ctx context.Context, client kubernetes.Interface, name string) (*v1.Node, error) {
	return client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

func hasTaint(n *v1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == key && t.Effect == v1.TaintEffectNoSchedule })
}

func podReady(ctx context.Context, client kubernetes.Interface, name string) (v1.ConditionStatus, error) {
	p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status, nil
		}
	}
	return "", fmt.Errorf("pod %s has no Ready condition", name)
}

func TestLeaseExpiryAndRecovery(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	client := srv.Client
	ctx := context.Background()
	startKubelet(t, client, "alive", false)
	dying := startKubelet(t, client, "dying", false)
	startKubelet(t, client, "cordoned", true)
	runningPod(t, client, "p1", "dying")
	runningPod(t, client, "p2", "dying")
	runningPod(t, client, "p3", "alive")
	startController(t, client)

	poll(t, "the unschedulable taint on a cordoned node", func(ctx context.Context) (bool, error) {
		n, err := getNode(ctx, client, "cordoned")
		return err == nil && hasTaint(n, v1.TaintNodeUnschedulable), err
	})

	// While leases are renewed, nothing changes, even past the grace period.
	time.Sleep(2 * grace)
	for _, name := range []string{"alive", "dying", "cordoned"} {
		n, err := getNode(ctx, client, name)
		if err != nil {
			t.Fatal(err)
		}
		if c := condition(n, v1.NodeReady); c.Status != v1.ConditionTrue || hasTaint(n, v1.TaintNodeUnreachable) {
			t.Fatalf("node %s with a live lease: Ready=%s taints %v", name, c.Status, n.Spec.Taints)
		}
	}

	// The lease stops: Unknown, tainted, pods not ready.
	dying.setRenewing(false)
	poll(t, "dying to become Unknown and tainted", func(ctx context.Context) (bool, error) {
		n, err := getNode(ctx, client, "dying")
		if err != nil {
			return false, err
		}
		c := condition(n, v1.NodeReady)
		return c.Status == v1.ConditionUnknown && hasTaint(n, v1.TaintNodeUnreachable), nil
	})
	n, err := getNode(ctx, client, "dying")
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range conditionsMadeUnknown {
		c := condition(n, ct)
		if c.Status != v1.ConditionUnknown || c.Reason != "NodeStatusUnknown" || c.Message != "Kubelet stopped posting node status." {
			t.Fatalf("condition %s = %s %q %q", ct, c.Status, c.Reason, c.Message)
		}
	}
	for _, p := range []string{"p1", "p2"} {
		poll(t, p+" not ready", func(ctx context.Context) (bool, error) {
			s, err := podReady(ctx, client, p)
			return s == v1.ConditionFalse, err
		})
	}
	poll(t, "NodeNotReady events", func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=NodeNotReady"})
		if err != nil {
			return false, err
		}
		var got []string
		for _, e := range evs.Items {
			got = append(got, e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+": "+e.Message)
		}
		slices.Sort(got)
		return slices.Equal(got, []string{"Node/dying: Node dying status is now: NodeNotReady",
			"Pod/p1: Node is not ready", "Pod/p2: Node is not ready"}), nil
	})
	if s, err := podReady(ctx, client, "p3"); err != nil || s != v1.ConditionTrue {
		t.Fatalf("p3 on a live node: Ready=%s %v", s, err)
	}
	if n, err := getNode(ctx, client, "alive"); err != nil || condition(n, v1.NodeReady).Status != v1.ConditionTrue {
		t.Fatalf("alive node changed: %v", err)
	}

	// Recovery: the lease resumes and the agent posts Ready.
	dying.setRenewing(true)
	dying.postReady(ctx)
	poll(t, "dying to lose the unreachable taint", func(ctx context.Context) (bool, error) {
		n, err := getNode(ctx, client, "dying")
		if err != nil {
			return false, err
		}
		return condition(n, v1.NodeReady).Status == v1.ConditionTrue && !hasTaint(n, v1.TaintNodeUnreachable), nil
	})
	time.Sleep(2 * grace)
	if n, err := getNode(ctx, client, "dying"); err != nil || condition(n, v1.NodeReady).Status != v1.ConditionTrue {
		t.Fatalf("recovered node with a live lease went back to %v (%v)", condition(n, v1.NodeReady), err)
	}
}
