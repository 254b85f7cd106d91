package service

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// fuzzAlloc is an allocator whose mirror is empty and never synced from a
// store; its clock jumps past the reservation TTL on every call so picks made
// by earlier inputs do not fill it up.
var fuzzAlloc = func() *Allocations {
	_, cidr, _ := net.ParseCIDR("10.96.0.0/12")
	a, err := newAllocations(newMemStore(), cidr, DefaultNodePortRange, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	close(a.synced)
	var now time.Time
	a.now = func() time.Time {
		now = now.Add(2 * reservationTTL)
		return now
	}
	return a
}()

// allocate runs svc (prepared for create, or for update against old) through
// the allocator, then conflicts on every key it wants to write and releases.
func allocate(svc, old *v1.Service) {
	ctx := context.Background()
	ops, err := fuzzAlloc.Allocate(ctx, svc, old)
	if err != nil {
		return
	}
	for _, op := range ops {
		_ = fuzzAlloc.Conflict(svc, op.Key)
	}
	_ = fuzzAlloc.Release(svc)
}

// exercise runs everything the registry does with a Service that needs no
// storage: defaults, create and update preparation and validation (against
// itself and against a typical stored Service), status validation, the table
// row, the field set and the allocation keys.
func exercise(svc *v1.Service) {
	ctx := context.Background()
	s := Strategy{}
	s.Default(svc)
	c := svc.DeepCopy()
	s.PrepareForCreate(ctx, c)
	_ = s.Validate(ctx, c)
	_ = keysOf(c)
	allocate(c.DeepCopy(), nil)
	_ = Cells(c, c.CreationTimestamp.Time)
	_ = Fields(c)
	old := &v1.Service{}
	old.Name, old.Namespace, old.ResourceVersion = svc.Name, svc.Namespace, "1"
	old.Spec = v1.ServiceSpec{Type: v1.ServiceTypeNodePort, ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5"},
		IPFamilies: []v1.IPFamily{v1.IPv4Protocol}, Ports: []v1.ServicePort{{Port: 80, NodePort: 30080, TargetPort: intstr.FromInt32(80)}}}
	s.Default(old)
	for _, o := range []*v1.Service{old, svc.DeepCopy()} {
		u := svc.DeepCopy()
		s.PrepareForUpdate(ctx, u, o)
		_ = s.ValidateUpdate(ctx, u, o)
		_ = keysOf(u)
		allocate(u, o)
		st := svc.DeepCopy()
		s.PrepareForStatusUpdate(ctx, st, o)
		_ = s.ValidateStatusUpdate(ctx, st, o)
	}
}

// seedManifests are the invalid and valid manifests of the other tests.
func seedManifests(f *testing.F) [][]byte {
	var out [][]byte
	for _, c := range loadInvalidCases(f) {
		b, err := yaml.Marshal(c.Service)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	out = append(out, []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"service-clusterip","namespace":"default"},"spec":{"selector":{"app":"service-env"},"clusterIP":"10.97.1.1","type":"ClusterIP","ports":[{"port":80,"targetPort":80}]}}`))
	return out
}

// FuzzDecodeService decodes arbitrary bytes as the apiserver would (JSON,
// YAML or protobuf through the universal deserializer) and runs whatever
// Service comes out through the registry. Nothing may panic.
func FuzzDecodeService(f *testing.F) {
	for _, m := range seedManifests(f) {
		js, err := yaml.YAMLToJSON(m)
		if err != nil {
			f.Fatal(err)
		}
		svc := &v1.Service{}
		if err := yaml.Unmarshal(js, svc); err != nil {
			f.Fatal(err)
		}
		svc.APIVersion, svc.Kind = "v1", "Service"
		f.Add(js)
		f.Add(encodeService(f, svc))
	}
	if data, err := os.ReadFile("testdata/invalid_services.yaml"); err == nil {
		f.Add(data)
	}
	dec := scheme.Codecs.UniversalDeserializer()
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, _, err := dec.Decode(data, nil, &v1.Service{})
		if err != nil {
			return
		}
		if svc, ok := obj.(*v1.Service); ok {
			exercise(svc)
		}
	})
}

// FuzzValidateService builds Services from fuzzed field values, concentrating
// on the fields the validation rules look at.
func FuzzValidateService(f *testing.F) {
	f.Add("s", "ClusterIP", "10.96.0.5", "", int32(80), int32(0), "TCP", "80", "None", int32(0), "", "", "", "", "", int32(0), "")
	f.Add("s", "NodePort", "", "", int32(80), int32(30002), "UDP", "http", "ClientIP", int32(10800), "", "IPv4", "SingleStack", "Cluster", "", int32(0), "app=a")
	f.Add("s", "LoadBalancer", "None", "10.0.0.0/8", int32(443), int32(0), "SCTP", "0", "ClientIP", int32(0), "", "IPv6", "RequireDualStack", "Local", "PreferClose", int32(30100), "")
	f.Add("s", "ExternalName", "", "", int32(0), int32(0), "", "", "", int32(-1), "example.com.", "IPv4", "PreferDualStack", "", "", int32(0), "")
	f.Add("-", "Foo", "abc", "::/0", int32(70000), int32(-5), "HTTP", "-x", "Sticky", int32(86401), "foo_bar", "IPv5", "Sometimes", "Nearby", "PreferFar", int32(70000), "a b")
	f.Fuzz(func(t *testing.T, name, typ, clusterIP, sourceRange string, port, nodePort int32, proto, targetPort, affinity string,
		timeout int32, externalName, family, policy, etp, td string, hc int32, selector string) {
		svc := &v1.Service{}
		svc.Name, svc.Namespace = name, "default"
		svc.Annotations = map[string]string{v1.AnnotationLoadBalancerSourceRangesKey: sourceRange}
		sp := &svc.Spec
		sp.Type = v1.ServiceType(typ)
		sp.ClusterIP = clusterIP
		if clusterIP != "" && port%3 == 0 {
			sp.ClusterIPs = []string{clusterIP, externalName}
		}
		sp.Ports = []v1.ServicePort{{Name: targetPort, Port: port, NodePort: nodePort, Protocol: v1.Protocol(proto), TargetPort: intstr.Parse(targetPort)}}
		if port%2 == 0 {
			sp.Ports = append(sp.Ports, v1.ServicePort{Port: port, NodePort: nodePort, Protocol: v1.Protocol(proto), AppProtocol: &typ})
		}
		sp.SessionAffinity = v1.ServiceAffinity(affinity)
		if timeout >= 0 {
			sp.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}
		sp.ExternalName = externalName
		if family != "" {
			sp.IPFamilies = []v1.IPFamily{v1.IPFamily(family)}
		}
		if policy != "" {
			p := v1.IPFamilyPolicy(policy)
			sp.IPFamilyPolicy = &p
		}
		sp.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicy(etp)
		if td != "" {
			sp.TrafficDistribution = &td
			sp.LoadBalancerClass = &td
		}
		sp.HealthCheckNodePort = hc
		sp.LoadBalancerSourceRanges = []string{sourceRange}
		sp.ExternalIPs = []string{clusterIP}
		sp.Selector = map[string]string{"k": selector}
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: clusterIP, Hostname: externalName}}
		exercise(svc)
		// Validation must be deterministic.
		a, b := svc.DeepCopy(), svc.DeepCopy()
		if fmt.Sprint(Strategy{}.Validate(context.Background(), a)) != fmt.Sprint(Strategy{}.Validate(context.Background(), b)) {
			t.Fatal("validation is not deterministic")
		}
	})
}
