package proxy

import (
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func TestServicePorts(t *testing.T) {
	base := func(mod func(*v1.Service)) *v1.Service {
		s := testService("ns", "web", "10.96.0.10")
		mod(s)
		return s
	}
	cases := []struct {
		name  string
		svc   *v1.Service
		ports int
		check func(t *testing.T, sp *ServicePort)
	}{
		{name: "clusterip", svc: base(func(*v1.Service) {}), ports: 1, check: func(t *testing.T, sp *ServicePort) {
			if sp.NodePort != 0 || sp.AffinityTimeout != 0 || sp.ExternalPolicyLocal || sp.ClusterIPs[0] != netip.MustParseAddr("10.96.0.10") {
				t.Errorf("%+v", sp)
			}
		}},
		{name: "proxy-name label", svc: base(func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "x"} })},
		{name: "headless", svc: base(func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ClusterIPNone, []string{v1.ClusterIPNone}
		})},
		{name: "externalname", svc: base(func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeExternalName })},
		{name: "affinity default timeout", svc: base(func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP }), ports: 1,
			check: func(t *testing.T, sp *ServicePort) {
				if sp.AffinityTimeout != 3*time.Hour {
					t.Errorf("timeout %v", sp.AffinityTimeout)
				}
			}},
		{name: "affinity timeout", svc: base(func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](5)}}
		}), ports: 1, check: func(t *testing.T, sp *ServicePort) {
			if sp.AffinityTimeout != 5*time.Second {
				t.Errorf("timeout %v", sp.AffinityTimeout)
			}
		}},
		{name: "loadbalancer etp local", svc: base(func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24", " 198.51.100.7/32"}
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.168.1.1"}, {Hostname: "lb.example"},
				{IP: "192.168.1.2", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)}}
		}), ports: 1, check: func(t *testing.T, sp *ServicePort) {
			if !sp.ExternalPolicyLocal || sp.HealthCheckNodePort != 32000 || sp.NodePort != 30080 ||
				len(sp.LoadBalancerIPs) != 1 || len(sp.LoadBalancerSourceRanges) != 2 {
				t.Errorf("%+v", sp)
			}
		}},
		{name: "multi port udp itp local", svc: base(func(s *v1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP})
		}), ports: 2, check: func(t *testing.T, sp *ServicePort) {
			if !sp.InternalPolicyLocal {
				t.Errorf("%+v", sp)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ServicePorts(tc.svc)
			if len(got) != tc.ports {
				t.Fatalf("got %d ports, want %d", len(got), tc.ports)
			}
			for _, sp := range got {
				if tc.check != nil {
					tc.check(t, sp)
				}
			}
		})
	}
}

func TestMergeEndpointsAndCategorize(t *testing.T) {
	nn := types.NamespacedName{Namespace: "ns", Name: "web"}
	s1 := testSlice("ns", "web", "a", "10.244.1.2", "10.244.0.3")
	s1.Endpoints[1].NodeName = ptr.To("node-a")
	s2 := testSlice("ns", "web", "b", "10.244.1.2", "10.244.2.4", "10.244.0.5")
	s2.Endpoints[1].Conditions = discovery.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	s2.Endpoints[2].Conditions = discovery.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	s2.Endpoints[2].NodeName = ptr.To("node-a")
	got := MergeEndpoints(nn, []*discovery.EndpointSlice{s1, s2}, "node-a")
	name := ServicePortName{NamespacedName: nn, Port: "http", Protocol: v1.ProtocolTCP}
	eps := got[name]
	if len(eps) != 4 {
		t.Fatalf("merged %d endpoints, want 4 (duplicate removed): %v", len(eps), eps)
	}
	if eps[0].IP != netip.MustParseAddr("10.244.0.3") || !eps[0].IsLocal {
		t.Errorf("not sorted or local not marked: %v", eps)
	}

	sp := &ServicePort{Name: name}
	cluster, local, all, hasAny := CategorizeEndpoints(eps, sp)
	if len(cluster) != 2 || local != nil || len(all) != 2 || !hasAny {
		t.Errorf("cluster policy: cluster=%v local=%v all=%v hasAny=%v", cluster, local, all, hasAny)
	}
	sp.InternalPolicyLocal = true
	cluster, local, _, hasAny = CategorizeEndpoints(eps, sp)
	if cluster != nil || len(local) != 1 || local[0].IP != netip.MustParseAddr("10.244.0.3") || !hasAny {
		t.Errorf("ITP local: cluster=%v local=%v", cluster, local)
	}
	// No ready endpoints anywhere: fall back to serving-terminating ones.
	var term []Endpoint
	for _, e := range eps {
		if e.Terminating {
			term = append(term, e)
		}
	}
	sp.InternalPolicyLocal = false
	cluster, _, _, hasAny = CategorizeEndpoints(term, sp)
	if len(cluster) != 2 || !hasAny {
		t.Errorf("terminating fallback: %v", cluster)
	}
	// ETP local with remote-only ready endpoints and a local terminating one.
	// (eps[0] is the local ready one: leave it out.)
	sp.ExternalPolicyLocal, sp.NodePort = true, 30000
	cluster, local, all, _ = CategorizeEndpoints(eps[1:], sp)
	if len(cluster) != 1 || len(local) != 1 || !local[0].Terminating || len(all) != 2 {
		t.Errorf("ETP local fallback: cluster=%v local=%v all=%v", cluster, local, all)
	}
}

func TestSliceService(t *testing.T) {
	s := testSlice("ns", "web", "a")
	if nn, ok := SliceService(s); !ok || nn.Name != "web" {
		t.Errorf("normal slice skipped")
	}
	s.Labels[LabelHeadless] = ""
	if _, ok := SliceService(s); ok {
		t.Errorf("headless slice not skipped")
	}
	f := testSlice("ns", "web", "b")
	f.AddressType = discovery.AddressTypeFQDN
	if _, ok := SliceService(f); ok {
		t.Errorf("FQDN slice not skipped")
	}
	n := &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	if _, ok := SliceService(n); ok {
		t.Errorf("slice without service label not skipped")
	}
}
