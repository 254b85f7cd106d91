package service

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestKind(t *testing.T) {
	kind, alloc, err := NewKind(Config{ServiceCIDR: mustParseCIDR(t, "10.96.0.0/12"), Store: newMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	if kind.Resource.String() != "/v1, Resource=services" || kind.Kind != "Service" || kind.SingularName != "service" ||
		!slices.Equal(kind.ShortNames, []string{"svc"}) || !slices.Equal(kind.Categories, []string{"all"}) ||
		!kind.Namespaced || !kind.Status || kind.Allocator != alloc || !kind.Strategy.AllowCreateOnUpdate() {
		t.Fatalf("kind: %+v", kind)
	}
	if _, ok := kind.New().(*v1.Service); !ok {
		t.Fatal("New")
	}
	if _, ok := kind.NewList().(*v1.ServiceList); !ok {
		t.Fatal("NewList")
	}
	svc := &v1.Service{Spec: v1.ServiceSpec{ClusterIP: "None", Type: v1.ServiceTypeClusterIP}}
	if f := kind.Fields(svc); f["spec.clusterIP"] != "None" || f["spec.type"] != "ClusterIP" || len(f) != 2 {
		t.Fatalf("fields %v", f)
	}

	for _, bad := range []Config{
		{Store: newMemStore()},
		{ServiceCIDR: mustParseCIDR(t, "10.0.0.0/8"), Store: newMemStore()},
		{ServiceCIDR: mustParseCIDR(t, "fd00::/64"), Store: newMemStore()},
		{ServiceCIDR: mustParseCIDR(t, "10.96.0.0/12")},
	} {
		if _, _, err := NewKind(bad); err == nil {
			t.Errorf("NewKind(%+v) accepted", bad)
		}
	}
	if _, _, err := NewKind(Config{ServiceCIDR: mustParseCIDR(t, "10.0.0.0/8"), Store: newMemStore()}); err == nil ||
		!strings.Contains(err.Error(), "is too large; for 32-bit addresses, the mask must be >= 12") {
		t.Errorf("too large CIDR: %v", err)
	}
}

func TestTable(t *testing.T) {
	cols := Table().Columns
	var names []string
	for _, c := range cols {
		names = append(names, strings.ToUpper(c.Name))
		if c.Description == "" {
			t.Errorf("column %s has no description", c.Name)
		}
	}
	if got := strings.Join(names, " "); got != "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR" {
		t.Fatalf("columns %s", got)
	}
	if cols[0].Format != "name" || cols[6].Priority != 1 || cols[5].Priority != 0 {
		t.Fatalf("column definitions %+v", cols)
	}

	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	created := metav1.NewTime(now.Add(-5 * time.Minute))
	tests := []struct{ manifest, want string }{
		{`{metadata: {name: service-clusterip}, spec: {type: ClusterIP, clusterIP: 10.97.1.1, clusterIPs: [10.97.1.1], selector: {app: service-env}, ports: [{port: 80, protocol: TCP}]}}`,
			"service-clusterip|ClusterIP|10.97.1.1|<none>|80/TCP|5m|app=service-env"},
		{`{metadata: {name: np}, spec: {type: NodePort, clusterIPs: [10.96.0.20], ports: [{port: 80, nodePort: 30002, protocol: TCP}, {port: 53, nodePort: 30053, protocol: UDP}]}}`,
			"np|NodePort|10.96.0.20|<none>|80:30002/TCP,53:30053/UDP|5m|<none>"},
		{`{metadata: {name: lb}, spec: {type: LoadBalancer, clusterIPs: [10.96.0.21], ports: [{port: 443, nodePort: 31443, protocol: TCP}]}}`,
			"lb|LoadBalancer|10.96.0.21|<pending>|443:31443/TCP|5m|<none>"},
		{`{metadata: {name: lb2}, spec: {type: LoadBalancer, externalIPs: [198.51.100.7], clusterIPs: [10.96.0.22], ports: [{port: 80, protocol: TCP}]}, status: {loadBalancer: {ingress: [{hostname: lb.example.com}, {ip: 192.0.2.9}, {ip: 192.0.2.9}]}}}`,
			"lb2|LoadBalancer|10.96.0.22|192.0.2.9,lb.example.com,198.51.100.7|80/TCP|5m|<none>"},
		{`{metadata: {name: ext}, spec: {type: ExternalName, externalName: example.com}}`,
			"ext|ExternalName|<none>|example.com|<none>|5m|<none>"},
		{`{metadata: {name: hl}, spec: {type: ClusterIP, clusterIP: None, clusterIPs: [None], externalIPs: [192.0.2.1, 192.0.2.2], selector: {b: "2", a: "1"}}}`,
			"hl|ClusterIP|None|192.0.2.1,192.0.2.2|<none>|5m|a=1,b=2"},
	}
	for _, tt := range tests {
		svc := svcFromYAML(t, tt.manifest)
		svc.CreationTimestamp = created
		var cells []string
		for _, c := range Cells(svc, now) {
			cells = append(cells, fmt.Sprint(c))
		}
		if got := strings.Join(cells, "|"); got != tt.want {
			t.Errorf("row\n got %s\nwant %s", got, tt.want)
		}
	}
	if got := Cells(&v1.Service{}, now)[5]; got != "<unknown>" {
		t.Errorf("age of an object without creationTimestamp: %v", got)
	}
	if n := len(Table().Cells(svcFromYAML(t, tests[0].manifest))); n != len(cols) {
		t.Errorf("%d cells for %d columns", n, len(cols))
	}
}

func TestPrepareForCreate(t *testing.T) {
	svc := svcFromYAML(t, `{metadata: {name: s}, spec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}, status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}}`)
	Strategy{}.PrepareForCreate(context.Background(), svc)
	if len(svc.Status.LoadBalancer.Ingress) != 0 {
		t.Error("status kept on create")
	}
	if !slices.Equal(svc.Spec.ClusterIPs, []string{"10.96.0.9"}) {
		t.Errorf("clusterIPs %v", svc.Spec.ClusterIPs)
	}
}

// TestPrepareForUpdate checks the registry's update rules on their own:
// patchAllocatedValues, normalizeClusterIPs, dropTypeDependentFields.
func TestPrepareForUpdate(t *testing.T) {
	const lbLocal = `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 30100, allocateLoadBalancerNodePorts: true, loadBalancerClass: example.com/lb,
		clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5], ipFamilies: [IPv4], ipFamilyPolicy: SingleStack,
		ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30081}]},
		status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}}`
	tests := []struct {
		name      string
		old, in   string
		wantSpec  string // JSON of the spec fields checked
		fieldsOf  func(s *v1.Service) any
		wantState any
	}{
		{
			name: "omitted allocated values are restored",
			old:  lbLocal,
			in:   `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, allocateLoadBalancerNodePorts: true, loadBalancerClass: example.com/lb, ports: [{name: b, port: 81}, {name: a, port: 8080}, {name: c, port: 82}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.HealthCheckNodePort, s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort, len(s.Status.LoadBalancer.Ingress)}
			},
			wantState: []any{"10.96.0.5", []string{"10.96.0.5"}, int32(30100), int32(30081), int32(30080), int32(0), 1},
		},
		{
			name: "a nodePort reused by another port is not patched back",
			old:  lbLocal,
			in:   `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30080}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort}
			},
			wantState: []any{int32(0), int32(30080)},
		},
		{
			name: "to ClusterIP drops node ports, health check, traffic policy, class and status",
			old:  lbLocal,
			in: `{metadata: {name: s}, spec: {type: ClusterIP, externalTrafficPolicy: Local, healthCheckNodePort: 30100, allocateLoadBalancerNodePorts: true, loadBalancerClass: example.com/lb,
				clusterIP: 10.96.0.5, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30081}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.ClusterIP, s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.HealthCheckNodePort, string(s.Spec.ExternalTrafficPolicy),
					s.Spec.AllocateLoadBalancerNodePorts == nil, s.Spec.LoadBalancerClass == nil, len(s.Status.LoadBalancer.Ingress)}
			},
			wantState: []any{"10.96.0.5", int32(0), int32(0), int32(0), "", true, true, 0},
		},
		{
			name: "a changed nodePort is left for validation to judge",
			old:  lbLocal,
			in:   `{metadata: {name: s}, spec: {type: ClusterIP, ports: [{name: a, port: 80, nodePort: 30999}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.Ports[0].NodePort}
			},
			wantState: []any{int32(30999)},
		},
		{
			name: "to ExternalName drops the IP fields",
			old:  lbLocal,
			in:   `{metadata: {name: s}, spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.5, ipFamilies: [IPv4], ipFamilyPolicy: SingleStack, ports: [{name: a, port: 80}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.ClusterIP, s.Spec.ClusterIPs == nil, s.Spec.IPFamilies == nil, s.Spec.IPFamilyPolicy == nil}
			},
			wantState: []any{"", true, true, true},
		},
		{
			name: "clusterIP sets clusterIPs on update",
			old:  `{metadata: {name: s}, spec: {type: ExternalName, externalName: a.example}}`,
			in:   `{metadata: {name: s}, spec: {clusterIP: 10.96.0.7, ports: [{port: 80}]}}`,
			fieldsOf: func(s *v1.Service) any {
				return []any{s.Spec.ClusterIP, s.Spec.ClusterIPs}
			},
			wantState: []any{"10.96.0.7", []string{"10.96.0.7"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := svcFromYAML(t, tt.old)
			in := svcFromYAML(t, tt.in)
			s := Strategy{}
			s.Default(old)
			s.Default(in)
			s.PrepareForUpdate(context.Background(), in, old)
			if got := tt.fieldsOf(in); !reflect.DeepEqual(got, tt.wantState) {
				t.Errorf("got %#v\nwant %#v", got, tt.wantState)
			}
		})
	}
}

func TestStatusUpdateKeepsSpec(t *testing.T) {
	old := svcFromYAML(t, `{metadata: {name: s}, spec: {type: LoadBalancer, clusterIP: 10.96.0.5, ports: [{port: 80}]}}`)
	in := svcFromYAML(t, `{metadata: {name: s}, spec: {type: ClusterIP, ports: [{port: 81}]}, status: {loadBalancer: {ingress: [{ip: 192.0.2.1, ipMode: Proxy}]}}}`)
	Strategy{}.PrepareForStatusUpdate(context.Background(), in, old)
	if !reflect.DeepEqual(in.Spec, old.Spec) || len(in.Status.LoadBalancer.Ingress) != 1 {
		t.Fatalf("spec %+v status %+v", in.Spec, in.Status)
	}
}
