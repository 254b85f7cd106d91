package service

import (
	"context"
	"os"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

type invalidCase struct {
	Name    string      `json:"name"`
	Op      string      `json:"op"`
	Old     *v1.Service `json:"old"`
	Service v1.Service  `json:"service"`
	Want    []string    `json:"want"`
}

func loadInvalidCases(t testing.TB) []invalidCase {
	t.Helper()
	data, err := os.ReadFile("testdata/invalid_services.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []invalidCase
	if err := yaml.UnmarshalStrict(data, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

// errorsFor runs a case through the strategy as the apiserver does and
// returns the validation errors as text.
func errorsFor(c invalidCase) []string {
	ctx := context.Background()
	s := Strategy{}
	svc := c.Service.DeepCopy()
	if svc.Namespace == "" {
		svc.Namespace = "default"
	}
	s.Default(svc)
	var errs []string
	switch c.Op {
	case "", "create":
		s.PrepareForCreate(ctx, svc)
		for _, e := range s.Validate(ctx, svc) {
			errs = append(errs, e.Error())
		}
	case "update":
		old := c.Old.DeepCopy()
		s.Default(old)
		s.PrepareForUpdate(ctx, svc, old)
		for _, e := range s.ValidateUpdate(ctx, svc, old) {
			errs = append(errs, e.Error())
		}
	case "status":
		old := c.Old.DeepCopy()
		s.Default(old)
		s.PrepareForStatusUpdate(ctx, svc, old)
		for _, e := range s.ValidateStatusUpdate(ctx, svc, old) {
			errs = append(errs, e.Error())
		}
	default:
		errs = append(errs, "unknown op "+c.Op)
	}
	return errs
}

// TestInvalidServices checks each invalid manifest of the table against the
// exact errors kube-apiserver v1.37.2 gives (see the testdata file header).
func TestInvalidServices(t *testing.T) {
	cases := loadInvalidCases(t)
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if len(c.Want) == 0 {
				t.Fatal("case wants no error")
			}
			got := errorsFor(c)
			if strings.Join(got, "\n") != strings.Join(c.Want, "\n") {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(c.Want, "\n      "))
			}
		})
	}
}

// TestValidServices: manifests users write pass validation untouched.
func TestValidServices(t *testing.T) {
	manifests := map[string]string{
		"seed Service-Clusterip.yaml": `
metadata: {name: service-clusterip, namespace: default}
spec:
  selector: {app: service-env}
  clusterIP: 10.97.1.1
  type: ClusterIP
  ports: [{port: 80, targetPort: 80}]`,
		"NodePort with named ports": `
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: https, port: 443, nodePort: 30443}]`,
		"LoadBalancer Local": `
metadata: {name: lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  loadBalancerSourceRanges: [10.0.0.0/8, " 192.168.0.0/16 "]
  selector: {app: lb}
  ports: [{port: 80}]`,
		"ExternalName with trailing dot": `
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com.}`,
		"headless without ports": `
metadata: {name: hl}
spec: {clusterIP: None, selector: {app: db}}`,
		"ClientIP affinity": `
metadata: {name: sticky}
spec:
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}
  selector: {app: a}
  ports: [{port: 80}]`,
		"DNS on TCP and UDP": `
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}, {name: metrics, port: 9153}]`,
		"externalIPs and trafficDistribution": `
metadata: {name: ext-ips}
spec:
  externalIPs: [192.0.2.10]
  externalTrafficPolicy: Local
  trafficDistribution: PreferSameNode
  selector: {app: a}
  ports: [{port: 80, appProtocol: kubernetes.io/h2c}]`,
	}
	for name, m := range manifests {
		t.Run(name, func(t *testing.T) {
			svc := svcFromYAML(t, m)
			if got := errorsFor(invalidCase{Service: *svc}); len(got) != 0 {
				t.Fatalf("unexpected errors: %v", got)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name, in string
		check    func(t *testing.T, s *v1.Service)
	}{
		{"ClusterIP", `{metadata: {name: s}, spec: {ports: [{port: 80}]}}`, func(t *testing.T, s *v1.Service) {
			sp := s.Spec
			if sp.Type != v1.ServiceTypeClusterIP || sp.SessionAffinity != v1.ServiceAffinityNone || sp.SessionAffinityConfig != nil {
				t.Errorf("type/affinity: %+v", sp)
			}
			if p := sp.Ports[0]; p.Protocol != v1.ProtocolTCP || p.TargetPort.IntVal != 80 {
				t.Errorf("port: %+v", p)
			}
			if sp.InternalTrafficPolicy == nil || *sp.InternalTrafficPolicy != v1.ServiceInternalTrafficPolicyCluster {
				t.Errorf("internalTrafficPolicy: %v", sp.InternalTrafficPolicy)
			}
			if sp.ExternalTrafficPolicy != "" || sp.AllocateLoadBalancerNodePorts != nil {
				t.Errorf("external fields set on an internal Service: %+v", sp)
			}
		}},
		{"ClientIP", `{metadata: {name: s}, spec: {sessionAffinity: ClientIP, ports: [{port: 80}]}}`, func(t *testing.T, s *v1.Service) {
			c := s.Spec.SessionAffinityConfig
			if c == nil || c.ClientIP == nil || *c.ClientIP.TimeoutSeconds != 10800 {
				t.Errorf("affinity config: %+v", c)
			}
		}},
		{"None drops config", `{metadata: {name: s}, spec: {sessionAffinity: None, sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}, ports: [{port: 80}]}}`, func(t *testing.T, s *v1.Service) {
			if s.Spec.SessionAffinityConfig != nil {
				t.Error("config kept")
			}
		}},
		{"LoadBalancer", `{metadata: {name: s}, spec: {type: LoadBalancer, ports: [{port: 80, targetPort: web}]}, status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: a.example}]}}}`, func(t *testing.T, s *v1.Service) {
			sp := s.Spec
			if sp.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyCluster || sp.AllocateLoadBalancerNodePorts == nil || !*sp.AllocateLoadBalancerNodePorts {
				t.Errorf("LB defaults: %+v", sp)
			}
			if sp.Ports[0].TargetPort.StrVal != "web" {
				t.Errorf("named targetPort changed: %v", sp.Ports[0].TargetPort)
			}
			ing := s.Status.LoadBalancer.Ingress
			if ing[0].IPMode == nil || *ing[0].IPMode != v1.LoadBalancerIPModeVIP || ing[1].IPMode != nil {
				t.Errorf("ipMode defaults: %+v", ing)
			}
		}},
		{"ClusterIP with externalIPs", `{metadata: {name: s}, spec: {externalIPs: [192.0.2.1], ports: [{port: 80}]}}`, func(t *testing.T, s *v1.Service) {
			if s.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyCluster {
				t.Errorf("externalTrafficPolicy %q", s.Spec.ExternalTrafficPolicy)
			}
		}},
		{"ExternalName", `{metadata: {name: s}, spec: {type: ExternalName, externalName: a.example}}`, func(t *testing.T, s *v1.Service) {
			if s.Spec.InternalTrafficPolicy != nil || s.Spec.ExternalTrafficPolicy != "" {
				t.Errorf("traffic policies on ExternalName: %+v", s.Spec)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := svcFromYAML(t, tt.in)
			Strategy{}.Default(s)
			tt.check(t, s)
			again := s.DeepCopy()
			Strategy{}.Default(again)
			if !equalJSON(t, s, again) {
				t.Error("defaulting is not idempotent")
			}
		})
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err1 := yaml.Marshal(a)
	y, err2 := yaml.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return string(x) == string(y)
}
