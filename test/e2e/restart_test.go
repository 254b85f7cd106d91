package e2e

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// svcSummary is what must survive a restart of a Service.
type svcSummary struct {
	UID, ClusterIP, ResourceVersion string
	NodePorts                       []int32
}

// services returns every Service the server serves, by namespace/name.
func (s *server) services(t *testing.T) map[string]svcSummary {
	t.Helper()
	out := s.mustKubectl("get", "svc", "-A", "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Namespace, Name, UID, ResourceVersion string
			}
			Spec struct {
				ClusterIP string
				Ports     []struct{ NodePort int32 }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("decode service list: %v", err)
	}
	m := map[string]svcSummary{}
	for _, it := range list.Items {
		sum := svcSummary{UID: it.Metadata.UID, ClusterIP: it.Spec.ClusterIP, ResourceVersion: it.Metadata.ResourceVersion}
		for _, p := range it.Spec.Ports {
			sum.NodePorts = append(sum.NodePorts, p.NodePort)
		}
		m[it.Metadata.Namespace+"/"+it.Metadata.Name] = sum
	}
	return m
}

// TestRestartAndSharedEtcd is acceptance point 5 of issue 2: a restart loses
// no acknowledged object, and a second server on the same etcd serves the
// same objects.
func TestRestartAndSharedEtcd(t *testing.T) {
	a := startServer(t, serverOptions{fsync: true})
	for _, f := range []string{"service-clusterip.yaml", "service-headless.yaml", "service-nodeport.yaml", "service-externalname.yaml"} {
		a.mustKubectl("create", "-f", example(f))
	}
	a.mustKubectl("create", "namespace", "team-a")
	a.mustKubectl("create", "service", "nodeport", "web", "-n", "team-a", "--tcp", "80:8080")
	before := a.services(t)
	// 4 examples + web + the bootstrap kubernetes and kube-system/kube-dns.
	if len(before) != 7 {
		t.Fatalf("services before restart: %v", before)
	}

	t.Run("graceful restart", func(t *testing.T) {
		a.stop()
		a.start()
		if after := a.services(t); !reflect.DeepEqual(before, after) {
			t.Errorf("services changed across a restart:\nbefore %v\nafter  %v", before, after)
		}
	})

	t.Run("SIGKILL right after an acknowledged write", func(t *testing.T) {
		out := a.mustKubectl("create", "service", "clusterip", "acked", "--tcp", "81:81", "-o", "jsonpath={.metadata.uid}")
		a.kill()
		a.start()
		got := a.mustKubectl("get", "svc", "acked", "-o", "jsonpath={.metadata.uid}")
		if got != out {
			t.Errorf("acknowledged service after SIGKILL: uid %q, want %q", got, out)
		}
		// The restart's repair must not have changed the others.
		after := a.services(t)
		for k, v := range before {
			if !reflect.DeepEqual(after[k], v) {
				t.Errorf("%s changed across SIGKILL: %v -> %v", k, v, after[k])
			}
		}
	})

	t.Run("second server on the same etcd", func(t *testing.T) {
		b := startServer(t, serverOptions{etcdServers: a.etcdURL})
		fromA, fromB := a.services(t), b.services(t)
		if !reflect.DeepEqual(fromA, fromB) {
			t.Errorf("servers disagree:\nA %v\nB %v", fromA, fromB)
		}
		// A write through B is visible through A, allocations included.
		b.mustKubectl("create", "service", "nodeport", "via-b", "--tcp", "82:82")
		ctx := context.Background()
		svc, err := a.clientset().CoreV1().Services("default").Get(ctx, "via-b", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("service created through B, read through A: %v", err)
		}
		if svc.Spec.ClusterIP == "" || svc.Spec.Ports[0].NodePort == 0 {
			t.Errorf("via-b not allocated: %+v", svc.Spec)
		}
		for k, v := range fromA {
			if v.ClusterIP == svc.Spec.ClusterIP && v.ClusterIP != "None" && v.ClusterIP != "" {
				t.Errorf("via-b got %s's ClusterIP %s", k, v.ClusterIP)
			}
		}
	})
}
