package nodeipam

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

func startController(t *testing.T, client kubernetes.Interface, cfg Config) (stop func()) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(client, 0)
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	c, err := New(client, factory, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx, 2) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			factory.Shutdown()
		})
	}
	t.Cleanup(stop)
	return stop
}

func createNode(t *testing.T, client kubernetes.Interface, name string, podCIDR string) {
	t.Helper()
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDR: podCIDR}}
	if _, err := client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Error(err)
	}
}

// waitCIDRs waits until every node has podCIDRs and returns name -> CIDRs.
func waitCIDRs(t *testing.T, client kubernetes.Interface, wantNodes int) map[string]string {
	t.Helper()
	var got map[string]string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		got = map[string]string{}
		for _, n := range list.Items {
			if len(n.Spec.PodCIDRs) == 0 {
				return false, nil
			}
			if n.Spec.PodCIDR != n.Spec.PodCIDRs[0] {
				return false, fmt.Errorf("node %s: podCIDR %s but podCIDRs %v", n.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
			}
			got[n.Name] = strings.Join(n.Spec.PodCIDRs, ",")
		}
		return len(got) == wantNodes, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d nodes with podCIDRs (have %v): %v", wantNodes, got, err)
	}
	return got
}

func assertUnique(t *testing.T, cidrs map[string]string) {
	t.Helper()
	owner := map[string]string{}
	for node, list := range cidrs {
		for _, c := range strings.Split(list, ",") {
			if o, dup := owner[c]; dup {
				t.Fatalf("nodes %s and %s share %s", o, node, c)
			}
			owner[c] = node
		}
	}
}

func TestPodCIDRsUniqueAndStable(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	client := srv.Client

	// Nodes that exist before the controller: one already has the subnet
	// the allocator would hand out first.
	createNode(t, client, "pre-0", "10.244.0.0/24")
	createNode(t, client, "pre-1", "")
	createNode(t, client, "pre-2", "")
	stop := startController(t, client, Config{})
	first := waitCIDRs(t, client, 3)
	if first["pre-0"] != "10.244.0.0/24" {
		t.Fatalf("pre-0 changed to %s", first["pre-0"])
	}
	assertUnique(t, first)

	// Many nodes at once.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { createNode(t, client, fmt.Sprintf("burst-%d", i), "") })
	}
	wg.Wait()
	before := waitCIDRs(t, client, 23)
	assertUnique(t, before)
	for _, c := range before {
		if !strings.HasPrefix(c, "10.244.") || !strings.HasSuffix(c, "/24") {
			t.Fatalf("CIDR %s is not a /24 of 10.244.0.0/16", c)
		}
	}

	// Restart: nothing moves, new nodes get fresh subnets.
	stop()
	startController(t, client, Config{})
	for i := range 5 {
		createNode(t, client, fmt.Sprintf("after-%d", i), "")
	}
	after := waitCIDRs(t, client, 28)
	assertUnique(t, after)
	for n, c := range before {
		if after[n] != c {
			t.Fatalf("node %s moved from %s to %s across a restart", n, c, after[n])
		}
	}
}

func TestPodCIDRExhaustionAndRelease(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	client := srv.Client
	ctx := context.Background()
	// Two IPv4 subnets; plenty of IPv6 ones: every node gets one of each.
	startController(t, client, Config{ClusterCIDR: "10.244.0.0/23,fd00:10:244::/56", NodeCIDRMaskSize: 24})
	createNode(t, client, "a", "")
	createNode(t, client, "b", "")
	got := waitCIDRs(t, client, 2)
	assertUnique(t, got)
	for n, c := range got {
		if parts := strings.Split(c, ","); len(parts) != 2 || !strings.HasPrefix(parts[1], "fd00:10:244:") || !strings.HasSuffix(parts[1], "::/64") {
			t.Fatalf("node %s: podCIDRs %s, want an IPv4 /24 and an IPv6 /64", n, c)
		}
	}

	createNode(t, client, "c", "")
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=c,reason=" + ReasonCIDRNotAvailable,
		})
		if err != nil {
			return false, err
		}
		return len(evs.Items) > 0 && evs.Items[0].Message == "Node c status is now: CIDRNotAvailable", nil
	})
	if err != nil {
		t.Fatalf("no CIDRNotAvailable event for node c: %v", err)
	}
	if n, err := client.CoreV1().Nodes().Get(ctx, "c", metav1.GetOptions{}); err != nil || n.Spec.PodCIDR != "" {
		t.Fatalf("node c got %q (%v) from a full cluster CIDR", n.Spec.PodCIDR, err)
	}

	// Deleting a frees its subnets for c.
	if err := client.CoreV1().Nodes().Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	final := waitCIDRs(t, client, 2)
	if strings.Split(final["c"], ",")[0] != strings.Split(got["a"], ",")[0] {
		t.Fatalf("c got %s, want a's freed IPv4 subnet from %s", final["c"], got["a"])
	}
	assertUnique(t, final)
}
