package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
)

// loadConfig reads the admin kubeconfig and sets what every bench client
// uses: protobuf bodies as typed client-go clients send them, and no
// client-side rate limit (the default 5 QPS would measure the limiter).
func loadConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("bench: kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	cfg.Timeout = 60 * time.Second
	cfg.UserAgent = "svcnet-bench"
	return cfg, nil
}

// newClients returns n clientsets, each with its own TCP/TLS connection, as n
// separate client processes would have. client-go shares one transport (and
// so one HTTP/2 connection) between configs that are equal; a distinct Dial
// function per config makes each one distinct.
func newClients(cfg *rest.Config, n int) ([]kubernetes.Interface, error) {
	out := make([]kubernetes.Interface, n)
	for i := range out {
		c := rest.CopyConfig(cfg)
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		c.Dial = d.DialContext
		cs, err := kubernetes.NewForConfig(c)
		if err != nil {
			return nil, fmt.Errorf("bench: clientset: %w", err)
		}
		out[i] = cs
	}
	return out, nil
}

// benchService is the Service every create sends: a plain ClusterIP service
// with a selector and one TCP port, so each create allocates a ClusterIP.
func benchService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{"app": "bench", "bench": "svcnet"},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"app": "bench"},
			Ports: []corev1.ServicePort{{
				Name:       "http",
				Protocol:   corev1.ProtocolTCP,
				Port:       80,
				TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
}

// createOne creates ns/name and checks a ClusterIP was allocated.
func createOne(ctx context.Context, cs kubernetes.Interface, ns, name string) (*corev1.Service, error) {
	s, err := cs.CoreV1().Services(ns).Create(ctx, benchService(name), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create %s/%s: %w", ns, name, err)
	}
	if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, fmt.Errorf("create %s/%s: no ClusterIP allocated (got %q)", ns, name, s.Spec.ClusterIP)
	}
	return s, nil
}

// apiCreates measures Service creates/s with one client per worker. Names
// are prefix-000000, prefix-000001, … in ns.
func apiCreates(ctx context.Context, clients []kubernetes.Interface, ns, prefix string, maxOps int, dur time.Duration) rateResult {
	return runWorkers(ctx, len(clients), maxOps, dur, func(ctx context.Context, w, seq int) error {
		_, err := createOne(ctx, clients[w], ns, fmt.Sprintf("%s-%06d", prefix, seq))
		return err
	})
}

// ensureNamespaces creates the namespaces the bench writes into.
func ensureNamespaces(ctx context.Context, cs kubernetes.Interface, names ...string) error {
	for _, n := range names {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("bench: create namespace %s: %w", n, err)
		}
	}
	return nil
}

// countServices returns how many Services ns holds (one protobuf list).
func countServices(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("bench: list services in %s: %w", ns, err)
	}
	return len(l.Items), nil
}

// deleteAll deletes every Service in ns, one request each from all clients
// in parallel (Services have no deletecollection, upstream neither), and
// waits, bounded by timeout, until the namespace is empty. It returns how
// many it found to delete.
func deleteAll(ctx context.Context, clients []kubernetes.Interface, ns string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l, err := clients[0].CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("bench: list %s for delete: %w", ns, err)
	}
	n := len(l.Items)
	names := make(chan string, n)
	for _, s := range l.Items {
		names <- s.Name
	}
	close(names)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	for _, c := range clients {
		wg.Go(func() {
			for name := range names {
				err := c.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return n, fmt.Errorf("bench: %d of %d deletes in %s failed, first: %w", f, n, ns, *firstErr.Load())
	}
	for {
		left, err := countServices(ctx, clients[0], ns)
		if err != nil {
			return n, err
		}
		if left == 0 {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("bench: %d Services still in %s after %s", left, ns, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
