package manager_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/svcnet/svcnet/internal/controller/manager"
	"github.com/svcnet/svcnet/internal/controller/replicaset/kubelettest"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

var allNames = []string{
	"endpointslice", "endpoints", "endpointslice-mirroring", "deployment", "replicaset",
	"garbage-collector", "scheduler", "node-ipam", "node-lifecycle", "service-lb",
}

func TestNames(t *testing.T) {
	if got := manager.Names(); !slices.Equal(got, allNames) {
		t.Fatalf("Names() = %v, want %v", got, allNames)
	}
}

func TestParseControllers(t *testing.T) {
	all := func(except ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range allNames {
			if !slices.Contains(except, n) {
				m[n] = true
			}
		}
		return m
	}
	tests := []struct {
		flag     []string
		disabled map[string]bool
		err      bool
	}{
		{nil, map[string]bool{}, false},
		{[]string{"*"}, map[string]bool{}, false},
		{[]string{"*", "-scheduler"}, map[string]bool{"scheduler": true}, false},
		{[]string{"*,-scheduler,-service-lb"}, map[string]bool{"scheduler": true, "service-lb": true}, false},
		{[]string{"deployment", "replicaset"}, all("deployment", "replicaset"), false},
		{[]string{"-deployment", "deployment", "*"}, map[string]bool{"deployment": true}, false}, // first match wins
		{[]string{"deployment", "-deployment"}, all("deployment"), false},
		{[]string{"*", "-nope"}, nil, true},
		{[]string{"bogus"}, nil, true},
	}
	for _, tc := range tests {
		got, err := manager.ParseControllers(tc.flag)
		if (err != nil) != tc.err {
			t.Errorf("ParseControllers(%q) error = %v, want error %v", tc.flag, err, tc.err)
			continue
		}
		if !tc.err && !maps.Equal(got, tc.disabled) {
			t.Errorf("ParseControllers(%q) = %v, want %v", tc.flag, got, tc.disabled)
		}
	}
}

func TestRunRequiresRest(t *testing.T) {
	if err := manager.Run(context.Background(), manager.Config{}); err == nil {
		t.Fatal("Run without Rest succeeded")
	}
	if err := manager.Run(context.Background(), manager.Config{Rest: &rest.Config{}, Disabled: map[string]bool{"nope": true}}); err == nil {
		t.Fatal("Run with an unknown disabled controller succeeded")
	}
}

// startManager runs manager.Run until stop is called or the test ends.
func startManager(t *testing.T, s *apitest.Server, disabled map[string]bool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- manager.Run(ctx, manager.Config{
			Rest:     s.Rest,
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			Disabled: disabled,
			LBIPPool: []string{"192.0.2.200-192.0.2.201"},
		})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("manager.Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 25*time.Millisecond, 20*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func serviceEnv() *appsv1.Deployment {
	n := int32(3)
	l := map[string]string{"app": "service-env"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "service-env", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "nginx", Image: "docker.io/library/nginx:1.23.1",
					Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				}}},
			},
		},
	}
}

func pods(ctx context.Context, c kubernetes.Interface) ([]corev1.Pod, error) {
	l, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=service-env"})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// TestManagerRunsEveryController drives the seed's Deployment and Service
// through the whole manager: with the scheduler disabled pods are created
// but stay unbound; after a restart with everything enabled they are
// scheduled, run (the fake kubelet), appear in the Service's EndpointSlice,
// the nodes get podCIDRs, a LoadBalancer Service gets an IP, and deleting
// the Deployment removes its ReplicaSet and pods.
func TestManagerRunsEveryController(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	c := s.Client
	ctx := context.Background()
	kubelettest.Start(t, c, kubelettest.Options{Nodes: []string{"work1", "work2"}})

	stop := startManager(t, s, map[string]bool{"scheduler": true})
	if _, err := c.AppsV1().Deployments("default").Create(ctx, serviceEnv(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 unscheduled pods", func(ctx context.Context) (bool, error) {
		ps, err := pods(ctx, c)
		if err != nil || len(ps) != 3 {
			return false, err
		}
		for _, p := range ps {
			if p.Spec.NodeName != "" {
				t.Fatalf("pod %s bound to %s with the scheduler disabled", p.Name, p.Spec.NodeName)
			}
		}
		return true, nil
	})
	stop()

	startManager(t, s, nil)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "service-clusterip", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "service-env"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt(80)}},
		},
	}
	if _, err := c.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lb := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "service-lb", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "service-env"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt(80)}},
		},
	}
	if _, err := c.CoreV1().Services("default").Create(ctx, lb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	name := regexp.MustCompile(`^service-env-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}$`)
	waitFor(t, "3 running pods on the nodes", func(ctx context.Context) (bool, error) {
		ps, err := pods(ctx, c)
		if err != nil || len(ps) != 3 {
			return false, err
		}
		for _, p := range ps {
			if !name.MatchString(p.Name) {
				t.Fatalf("pod name %q", p.Name)
			}
			if p.Spec.NodeName == "" || p.Status.PodIP == "" {
				return false, nil
			}
		}
		return true, nil
	})
	waitFor(t, "deployment available", func(ctx context.Context) (bool, error) {
		d, err := c.AppsV1().Deployments("default").Get(ctx, "service-env", metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == 3, err
	})
	waitFor(t, "3 ready endpoints in the Service's slice", func(ctx context.Context) (bool, error) {
		l, err := c.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=service-clusterip"})
		if err != nil {
			return false, err
		}
		n := 0
		for _, sl := range l.Items {
			for _, ep := range sl.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					n++
				}
			}
		}
		return n == 3, nil
	})
	waitFor(t, "podCIDRs on both nodes", func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, n := range l.Items {
			if n.Spec.PodCIDR == "" {
				return false, nil
			}
		}
		return len(l.Items) == 2, nil
	})
	waitFor(t, "a LoadBalancer IP from the pool", func(ctx context.Context) (bool, error) {
		got, err := c.CoreV1().Services("default").Get(ctx, "service-lb", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		in := got.Status.LoadBalancer.Ingress
		return len(in) == 1 && (in[0].IP == "192.0.2.200" || in[0].IP == "192.0.2.201"), nil
	})

	bg := metav1.DeletePropagationBackground
	if err := c.AppsV1().Deployments("default").Delete(ctx, "service-env", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ReplicaSet and pods collected", func(ctx context.Context) (bool, error) {
		rs, err := c.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ps, err := pods(ctx, c)
		return err == nil && len(rs.Items) == 0 && len(ps) == 0, err
	})
}
