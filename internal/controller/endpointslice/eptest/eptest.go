// Package eptest holds test helpers shared by the endpoint controllers'
// tests (endpointslice, endpoints, endpointslicemirroring): it plays the
// kubelet the way kwok does (Nodes created by hand, pod status written
// through /status), and renders EndpointSlices and Endpoints as sorted text
// lines so expectations read as text.
package eptest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// WaitTimeout bounds every Eventually; generous, since the suite may run
// on a loaded 2-core machine. It is a deadline, not a timing assertion.
const WaitTimeout = 60 * time.Second

// Logger logs through t.Log when verbose, else discards.
func Logger(t testing.TB, verbose bool) *slog.Logger {
	if !verbose {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Eventually polls cond until it reports done or WaitTimeout passes; on
// timeout it fails the test with cond's last explanation.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s:\n%s", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CreateNamespace creates a namespace.
func CreateNamespace(t testing.TB, c kubernetes.Interface, name string) {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// CreateNode creates a Ready Node with an InternalIP and, when zone is not
// empty, the topology.kubernetes.io/zone label.
func CreateNode(t testing.TB, c kubernetes.Interface, name, ip, zone string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	if zone != "" {
		n.Labels[corev1.LabelTopologyZone] = zone
	}
	created, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	created.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
}

// PodSpec describes a pod for CreatePod.
type PodSpec struct {
	Name      string
	Labels    map[string]string
	Node      string
	Ports     []corev1.ContainerPort
	Hostname  string
	Subdomain string
}

// CreatePod creates a pod bound to spec.Node (no scheduler needed).
func CreatePod(t testing.TB, c kubernetes.Interface, ns string, p PodSpec) *corev1.Pod {
	t.Helper()
	pod, err := c.CoreV1().Pods(ns).Create(context.Background(), NewPod(ns, p), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
	}
	return pod
}

// NewPod builds the pod CreatePod creates.
func NewPod(ns string, p PodSpec) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns, Labels: p.Labels},
		Spec: corev1.PodSpec{
			NodeName:  p.Node,
			Hostname:  p.Hostname,
			Subdomain: p.Subdomain,
			Containers: []corev1.Container{{
				Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Ports: p.Ports,
			}},
		},
	}
}

// SetPodStatus plays the kubelet: phase Running, the pod IP, and the Ready
// and ContainersReady conditions set to ready (their transition time moves
// only when the value changes, as the kubelet does).
func SetPodStatus(t testing.TB, c kubernetes.Interface, ns, name, ip string, ready bool) {
	t.Helper()
	if err := SetPodStatusE(context.Background(), c, ns, name, ip, ready); err != nil {
		t.Fatal(err)
	}
}

// SetPodStatusE is SetPodStatus returning its error (for goroutines and
// benchmarks). It retries on conflicts.
func SetPodStatusE(ctx context.Context, c kubernetes.Interface, ns, name, ip string, ready bool) error {
	for attempt := 0; ; attempt++ {
		pod, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("eptest: get pod %s/%s: %w", ns, name, err)
		}
		ApplyStatus(pod, ip, ready)
		_, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if attempt > 5 {
			return fmt.Errorf("eptest: pod %s/%s status: %w", ns, name, err)
		}
	}
}

// ApplyStatus edits pod's status in place as SetPodStatus does.
func ApplyStatus(pod *corev1.Pod, ip string, ready bool) {
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if pod.Status.StartTime == nil {
		now := metav1.Now()
		pod.Status.StartTime = &now
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		found := false
		for i := range pod.Status.Conditions {
			cond := &pod.Status.Conditions[i]
			if cond.Type != typ {
				continue
			}
			found = true
			if cond.Status != status {
				cond.Status = status
				cond.LastTransitionTime = metav1.Now()
			}
		}
		if !found {
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
				Type: typ, Status: status, LastTransitionTime: metav1.Now(),
			})
		}
	}
}

// ListSlices lists a Service's EndpointSlices (all managers).
func ListSlices(t testing.TB, c kubernetes.Interface, ns, svc string) []discoveryv1.EndpointSlice {
	t.Helper()
	l, err := c.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		t.Fatalf("list slices: %v", err)
	}
	return l.Items
}

// EndpointLines renders the endpoints of slices as sorted lines:
//
//	<pod> <addr> ready=<b> serving=<b> terminating=<b> [node=<n>] [zone=<z>] [host=<h>] ports=<name>:<port>/<proto>,...
//
// An endpoint without a targetRef shows "-" as its pod.
func EndpointLines(slices []discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range slices {
		ports := PortsString(s.Ports)
		for _, ep := range s.Endpoints {
			var b strings.Builder
			name := "-"
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name
			}
			fmt.Fprintf(&b, "%s %s ready=%s serving=%s terminating=%s", name, strings.Join(ep.Addresses, ","),
				boolPtr(ep.Conditions.Ready), boolPtr(ep.Conditions.Serving), boolPtr(ep.Conditions.Terminating))
			if ep.NodeName != nil {
				fmt.Fprintf(&b, " node=%s", *ep.NodeName)
			}
			if ep.Zone != nil {
				fmt.Fprintf(&b, " zone=%s", *ep.Zone)
			}
			if ep.Hostname != nil {
				fmt.Fprintf(&b, " host=%s", *ep.Hostname)
			}
			fmt.Fprintf(&b, " ports=%s", ports)
			out = append(out, b.String())
		}
	}
	sort.Strings(out)
	return out
}

// PortsString renders slice ports sorted as name:port/proto, joined by ",".
func PortsString(ports []discoveryv1.EndpointPort) string {
	var ps []string
	for _, p := range ports {
		name, proto, num := "", "", "?"
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		if p.Port != nil {
			num = fmt.Sprint(*p.Port)
		}
		ps = append(ps, fmt.Sprintf("%s:%s/%s", name, num, proto))
	}
	sort.Strings(ps)
	return strings.Join(ps, ",")
}

func boolPtr(b *bool) string {
	if b == nil {
		return "nil"
	}
	return fmt.Sprint(*b)
}

// Diff reports the difference between two sorted line sets, or "".
func Diff(got, want []string) string {
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return ""
	}
	return "got:\n  " + strings.Join(got, "\n  ") + "\nwant:\n  " + strings.Join(want, "\n  ")
}
