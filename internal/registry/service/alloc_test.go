package service

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/svcnet/svcnet/internal/storage"
)

func newWriter(t *testing.T, cidr string) (*writer, *Allocations, *memStore) {
	t.Helper()
	store := newMemStore()
	kind, alloc := newTestKind(t, store, cidr)
	return &writer{kind: kind, store: store}, alloc, store
}

// TestCreateAllocation covers what a create allocates and the upstream
// messages for requests that cannot be honoured.
func TestCreateAllocation(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		// check inspects the created Service and the allocation keys.
		check func(t *testing.T, svc *v1.Service, keys []string)
		// wantErr is the whole apiserver error message.
		wantErr  string
		wantCode int32
	}{
		{
			name:     "dynamic ClusterIP from the upper band",
			manifest: `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				ip := netip.MustParseAddr(svc.Spec.ClusterIP)
				if !netip.MustParsePrefix("10.96.0.0/12").Contains(ip) || ip.Less(netip.MustParseAddr("10.96.1.1")) {
					t.Errorf("dynamic IP %s is not in the dynamic band", ip)
				}
				if !slices.Equal(svc.Spec.ClusterIPs, []string{svc.Spec.ClusterIP}) {
					t.Errorf("clusterIPs %v", svc.Spec.ClusterIPs)
				}
				if !slices.Equal(svc.Spec.IPFamilies, []v1.IPFamily{v1.IPv4Protocol}) || *svc.Spec.IPFamilyPolicy != v1.IPFamilyPolicySingleStack {
					t.Errorf("families %v policy %v", svc.Spec.IPFamilies, *svc.Spec.IPFamilyPolicy)
				}
				if !slices.Equal(keys, []string{ClusterIPKeyPrefix + svc.Spec.ClusterIP}) {
					t.Errorf("keys %v", keys)
				}
			},
		},
		{
			name:     "requested ClusterIP honoured",
			manifest: `{metadata: {name: service-clusterip}, spec: {clusterIP: 10.97.1.1, selector: {app: a}, ports: [{port: 80}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if svc.Spec.ClusterIP != "10.97.1.1" || !slices.Equal(keys, []string{"/registry/allocations/clusterips/10.97.1.1"}) {
					t.Errorf("clusterIP %s keys %v", svc.Spec.ClusterIP, keys)
				}
			},
		},
		{
			name:     "requested ClusterIP out of range",
			manifest: `{metadata: {name: s}, spec: {clusterIP: 192.168.1.1, selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Service "s" is invalid: spec.clusterIPs: Invalid value: ["192.168.1.1"]: failed to allocate IP 192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12`,
			wantCode: 422,
		},
		{
			name:     "network address is not allocatable",
			manifest: `{metadata: {name: s}, spec: {clusterIP: 10.96.0.0, selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Service "s" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.0"]: failed to allocate IP 10.96.0.0: the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12`,
			wantCode: 422,
		},
		{
			name:     "IPv6 ClusterIP on an IPv4 cluster",
			manifest: `{metadata: {name: s}, spec: {clusterIP: "fd00::1", selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Service "s" is invalid: spec.clusterIPs[0]: Invalid value: ["fd00::1"]: IPv6 is not configured on this cluster`,
			wantCode: 422,
		},
		{
			name:     "RequireDualStack on a single-stack cluster",
			manifest: `{metadata: {name: s}, spec: {ipFamilyPolicy: RequireDualStack, selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Service "s" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services`,
			wantCode: 422,
		},
		{
			name:     "invalid clusterIP is reported before allocation",
			manifest: `{metadata: {name: s}, spec: {clusterIP: abc, selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Service "s" is invalid: spec.clusterIPs[0]: Invalid value: "abc": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)`,
			wantCode: 422,
		},
		{
			name:     "PreferDualStack gets one family",
			manifest: `{metadata: {name: s}, spec: {ipFamilyPolicy: PreferDualStack, selector: {app: a}, ports: [{port: 80}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if len(svc.Spec.ClusterIPs) != 1 || len(svc.Spec.IPFamilies) != 1 || len(keys) != 1 {
					t.Errorf("clusterIPs %v families %v keys %v", svc.Spec.ClusterIPs, svc.Spec.IPFamilies, keys)
				}
			},
		},
		{
			name:     "dynamic NodePorts from the upper band",
			manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: a, port: 80}, {name: b, port: 81}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				for _, p := range svc.Spec.Ports {
					if p.NodePort < 30086 || p.NodePort > 32767 {
						t.Errorf("nodePort %d not in the dynamic band", p.NodePort)
					}
				}
				if len(keys) != 3 {
					t.Errorf("keys %v", keys)
				}
			},
		},
		{
			name:     "requested NodePort honoured",
			manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80, nodePort: 30002}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if svc.Spec.Ports[0].NodePort != 30002 || !slices.Contains(keys, "/registry/allocations/nodeports/30002") {
					t.Errorf("ports %v keys %v", svc.Spec.Ports, keys)
				}
			},
		},
		{
			name:     "requested NodePort out of range",
			manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80, nodePort: 8080}]}}`,
			wantErr:  `Service "s" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767`,
			wantCode: 422,
		},
		{
			name:     "one requested NodePort for two port numbers",
			manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: a, port: 80, nodePort: 30010}, {name: b, port: 81, protocol: UDP, nodePort: 30010}]}}`,
			wantErr:  `Service "s" is invalid: spec.ports[1].nodePort: Invalid value: 30010: provided port is already allocated`,
			wantCode: 422,
		},
		{
			name:     "TCP and UDP of one port share a NodePort",
			manifest: `{metadata: {name: dns}, spec: {type: NodePort, selector: {app: a}, ports: [{name: u, port: 53, protocol: UDP}, {name: t, port: 53, protocol: TCP}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				p := svc.Spec.Ports
				if p[0].NodePort == 0 || p[0].NodePort != p[1].NodePort || len(keys) != 2 {
					t.Errorf("ports %v keys %v", p, keys)
				}
			},
		},
		{
			name:     "LoadBalancer Local gets a healthCheckNodePort",
			manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: a}, ports: [{port: 80}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				hc := svc.Spec.HealthCheckNodePort
				if hc < 30000 || hc == svc.Spec.Ports[0].NodePort || !slices.Contains(keys, NodePortKey(int(hc))) || len(keys) != 3 {
					t.Errorf("healthCheckNodePort %d ports %v keys %v", hc, svc.Spec.Ports, keys)
				}
			},
		},
		{
			name:     "requested healthCheckNodePort out of range",
			manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 10250, selector: {app: a}, ports: [{port: 80}]}}`,
			wantErr:  `Internal error occurred: failed to allocate requested HealthCheck NodePort 10250: provided port is not in the valid range. The range of valid ports is 30000-32767`,
			wantCode: 500,
		},
		{
			name:     "LoadBalancer without node ports",
			manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, allocateLoadBalancerNodePorts: false, selector: {app: a}, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30081}]}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if svc.Spec.Ports[0].NodePort != 0 || svc.Spec.Ports[1].NodePort != 30081 || len(keys) != 2 {
					t.Errorf("ports %v keys %v", svc.Spec.Ports, keys)
				}
			},
		},
		{
			name:     "headless holds nothing",
			manifest: `{metadata: {name: s}, spec: {clusterIP: None, selector: {app: a}}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if len(keys) != 0 || !slices.Equal(svc.Spec.IPFamilies, []v1.IPFamily{v1.IPv4Protocol}) {
					t.Errorf("keys %v families %v", keys, svc.Spec.IPFamilies)
				}
			},
		},
		{
			name:     "headless selectorless lists both families",
			manifest: `{metadata: {name: s}, spec: {clusterIP: None}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if len(keys) != 0 || len(svc.Spec.IPFamilies) != 2 || *svc.Spec.IPFamilyPolicy != v1.IPFamilyPolicyRequireDualStack {
					t.Errorf("keys %v families %v", keys, svc.Spec.IPFamilies)
				}
			},
		},
		{
			name:     "ExternalName holds nothing",
			manifest: `{metadata: {name: s}, spec: {type: ExternalName, externalName: example.com}}`,
			check: func(t *testing.T, svc *v1.Service, keys []string) {
				if len(keys) != 0 || svc.Spec.ClusterIP != "" || svc.Spec.IPFamilyPolicy != nil {
					t.Errorf("keys %v spec %+v", keys, svc.Spec)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, _, store := newWriter(t, "10.96.0.0/12")
			svc, err := w.create(context.Background(), svcFromYAML(t, tt.manifest))
			if tt.wantErr != "" {
				if got := statusMessage(err); got != tt.wantErr {
					t.Fatalf("error:\n got %s\nwant %s", got, tt.wantErr)
				}
				if code := apiCode(err); code != tt.wantCode {
					t.Fatalf("code %d, want %d", code, tt.wantCode)
				}
				if keys := store.keys("/registry/"); len(keys) != 0 {
					t.Fatalf("a failed create stored %v", keys)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stored, _, err := w.get(context.Background(), svc.Namespace, svc.Name)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, stored, store.keys(AllocationsPrefix))
			for _, k := range store.keys(AllocationsPrefix) {
				kv, _ := store.Get(context.Background(), k)
				if want := fmt.Sprintf(`{"namespace":"default","name":%q}`, svc.Name); string(kv.Value) != want {
					t.Errorf("key %s = %s, want %s", k, kv.Value, want)
				}
			}
		})
	}
}

func apiCode(err error) int32 {
	if se, ok := err.(apierrors.APIStatus); ok {
		return se.Status().Code
	}
	return 0
}

// TestAlreadyAllocated: a requested value someone holds gives upstream's 422
// and stores nothing; once released it can be had at once.
func TestAlreadyAllocated(t *testing.T) {
	ctx := context.Background()
	w, _, store := newWriter(t, "10.96.0.0/12")
	first := `{metadata: {name: a}, spec: {type: NodePort, clusterIP: 10.97.1.1, selector: {app: a}, ports: [{port: 80, nodePort: 30002}]}}`
	if _, err := w.create(ctx, svcFromYAML(t, first)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ manifest, want string }{
		{`{metadata: {name: b}, spec: {clusterIP: 10.97.1.1, selector: {app: a}, ports: [{port: 80}]}}`,
			`Service "b" is invalid: spec.clusterIPs: Invalid value: ["10.97.1.1"]: failed to allocate IP 10.97.1.1: provided IP is already allocated`},
		{`{metadata: {name: b}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80, nodePort: 30002}]}}`,
			`Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30002: provided port is already allocated`},
		{`{metadata: {name: b}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 30002, selector: {app: a}, ports: [{port: 80}]}}`,
			`Internal error occurred: failed to allocate requested HealthCheck NodePort 30002: provided port is already allocated`},
	} {
		_, err := w.create(ctx, svcFromYAML(t, tt.manifest))
		if got := statusMessage(err); got != tt.want {
			t.Errorf("error:\n got %s\nwant %s", got, tt.want)
		}
	}
	if keys := store.keys(AllocationsPrefix); len(keys) != 2 {
		t.Fatalf("keys after failed creates: %v", keys)
	}
	// Delete and re-create with the same values straight away: the mirror
	// may not have seen the delete yet, which must not matter.
	if err := w.delete(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.create(ctx, svcFromYAML(t, strings.Replace(first, "name: a", "name: c", 1))); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateAllocation walks Services through updates and type changes and
// checks the stored fields and allocation keys after each step.
func TestUpdateAllocation(t *testing.T) {
	type step struct {
		manifest string
		wantErr  string
		check    func(t *testing.T, svc *v1.Service, keys []string)
	}
	hasKeys := func(ips, ports int) func(t *testing.T, svc *v1.Service, keys []string) {
		return func(t *testing.T, svc *v1.Service, keys []string) {
			var gotIPs, gotPorts int
			for _, k := range keys {
				if strings.HasPrefix(k, ClusterIPKeyPrefix) {
					gotIPs++
				} else {
					gotPorts++
				}
			}
			if gotIPs != ips || gotPorts != ports {
				t.Errorf("keys %v: want %d IPs and %d ports", keys, ips, ports)
			}
			if want := keysOf(svc); !slices.Equal(want, keys) {
				t.Errorf("stored keys %v differ from what the Service holds %v", keys, want)
			}
		}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"re-submitting the manifest keeps allocated values", []step{
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: http, port: 80}]}}`, check: hasKeys(1, 1)},
			{manifest: `{metadata: {name: s, labels: {x: y}}, spec: {type: NodePort, selector: {app: a}, ports: [{name: http, port: 80}]}}`, check: hasKeys(1, 1)},
		}},
		{"clusterIP may not change", []step{
			{manifest: `{metadata: {name: s}, spec: {clusterIP: 10.96.5.5, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 0)},
			{manifest: `{metadata: {name: s}, spec: {clusterIP: 10.96.5.6, selector: {app: a}, ports: [{port: 80}]}}`,
				wantErr: `Service "s" is invalid: spec.clusterIPs[0]: Invalid value: ["10.96.5.6"]: may not change once set`},
		}},
		{"ClusterIP to NodePort to ClusterIP", []step{
			{manifest: `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 0)},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80}, {name: b, port: 81, nodePort: 30005}]}}`,
				wantErr: `Service "s" is invalid: spec.ports[0].name: Required value`},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30005}]}}`, check: hasKeys(1, 2)},
			{manifest: `{metadata: {name: s}, spec: {type: ClusterIP, selector: {app: a}, ports: [{name: a, port: 80}, {name: b, port: 81}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 0)(t, svc, keys)
					if svc.Spec.ExternalTrafficPolicy != "" {
						t.Errorf("externalTrafficPolicy kept: %q", svc.Spec.ExternalTrafficPolicy)
					}
				}},
		}},
		{"NodePort to ClusterIP keeping nodePorts in the manifest", []step{
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80, nodePort: 30007}]}}`, check: hasKeys(1, 1)},
			{manifest: `{metadata: {name: s}, spec: {type: ClusterIP, selector: {app: a}, ports: [{port: 80, nodePort: 30007}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 0)(t, svc, keys)
					if svc.Spec.Ports[0].NodePort != 0 {
						t.Error("nodePort not dropped")
					}
				}},
		}},
		{"ClusterIP to ExternalName and back", []step{
			{manifest: `{metadata: {name: s}, spec: {clusterIP: 10.96.7.7, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 0)},
			{manifest: `{metadata: {name: s}, spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.7.7, ports: [{port: 80}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(0, 0)(t, svc, keys)
					if svc.Spec.ClusterIP != "" || svc.Spec.ClusterIPs != nil || svc.Spec.IPFamilies != nil || svc.Spec.IPFamilyPolicy != nil {
						t.Errorf("IP fields kept: %+v", svc.Spec)
					}
				}},
			{manifest: `{metadata: {name: s}, spec: {type: ClusterIP, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 0)},
		}},
		{"ExternalName to ClusterIP with a requested IP", []step{
			{manifest: `{metadata: {name: s}, spec: {type: ExternalName, externalName: example.com}}`, check: hasKeys(0, 0)},
			{manifest: `{metadata: {name: s}, spec: {clusterIP: 10.96.8.8, selector: {app: a}, ports: [{port: 80}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 0)(t, svc, keys)
					if svc.Spec.ClusterIP != "10.96.8.8" {
						t.Errorf("clusterIP %s", svc.Spec.ClusterIP)
					}
				}},
		}},
		{"LoadBalancer traffic policy Cluster to Local to Cluster", []step{
			{manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 1)},
			{manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: a}, ports: [{port: 80}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 2)(t, svc, keys)
					if svc.Spec.HealthCheckNodePort == 0 {
						t.Error("no healthCheckNodePort")
					}
				}},
			{manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 30099, selector: {app: a}, ports: [{port: 80}]}}`,
				wantErr: `Service "s" is invalid: spec.healthCheckNodePort: Forbidden: field is immutable`},
			{manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Cluster, selector: {app: a}, ports: [{port: 80}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 1)(t, svc, keys)
					if svc.Spec.HealthCheckNodePort != 0 {
						t.Error("healthCheckNodePort kept")
					}
				}},
		}},
		{"LoadBalancer Local to NodePort releases the healthCheckNodePort", []step{
			{manifest: `{metadata: {name: s}, spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 2)},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: a}, ports: [{port: 80}]}}`, check: hasKeys(1, 1)},
		}},
		{"adding and removing ports", []step{
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: a, port: 80}]}}`, check: hasKeys(1, 1)},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: a, port: 80}, {name: b, port: 81}, {name: c, port: 82, nodePort: 30050}]}}`, check: hasKeys(1, 3)},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: c, port: 82}]}}`,
				check: func(t *testing.T, svc *v1.Service, keys []string) {
					hasKeys(1, 1)(t, svc, keys)
					if svc.Spec.Ports[0].NodePort != 30050 {
						t.Errorf("nodePort of port c not kept: %d", svc.Spec.Ports[0].NodePort)
					}
				}},
			{manifest: `{metadata: {name: s}, spec: {type: NodePort, selector: {app: a}, ports: [{name: c, port: 82, nodePort: 8080}]}}`,
				wantErr: `Service "s" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w, _, store := newWriter(t, "10.96.0.0/12")
			for i, st := range tt.steps {
				in := svcFromYAML(t, st.manifest)
				var err error
				if i == 0 {
					_, err = w.create(ctx, in)
				} else {
					_, err = w.update(ctx, in)
				}
				if st.wantErr != "" {
					if got := statusMessage(err); got != st.wantErr {
						t.Fatalf("step %d error:\n got %s\nwant %s", i, got, st.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				stored, _, err := w.get(ctx, "default", "s")
				if err != nil {
					t.Fatal(err)
				}
				st.check(t, stored, store.keys(AllocationsPrefix))
				if errs := ValidateCreate(stored); len(errs) != 0 {
					t.Fatalf("step %d stored an invalid Service: %v", i, errs)
				}
			}
			if err := w.delete(ctx, "default", "s"); err != nil {
				t.Fatal(err)
			}
			if keys := store.keys(AllocationsPrefix); len(keys) != 0 {
				t.Fatalf("delete left %v", keys)
			}
		})
	}
}

// TestConflictOfDynamicPick: when a picked value turns out to be taken by
// another process, Conflict returns nil, marks it taken, and the retry picks
// another value.
func TestConflictOfDynamicPick(t *testing.T) {
	ctx := context.Background()
	// A /28 has 14 addresses and no static band.
	w, alloc, store := newWriter(t, "10.0.0.0/28")
	obj := svcFromYAML(t, `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
	Strategy{}.Default(obj)
	ops, err := alloc.Allocate(ctx, obj, nil)
	if err != nil {
		t.Fatal(err)
	}
	picked := ops[0].Key
	// Someone else stores the picked value first.
	if _, err := store.Txn(ctx, storage.Put(picked, []byte(`{"namespace":"x","name":"y"}`), 0)); err != nil {
		t.Fatal(err)
	}
	if err := alloc.Conflict(obj, picked); err != nil {
		t.Fatalf("Conflict on a dynamic pick = %v, want nil", err)
	}
	// The retry never offers the taken value again (12 picks, which stay
	// reserved, leave one of the 14 addresses for the create below).
	for i := 0; i < 12; i++ {
		again := svcFromYAML(t, `{metadata: {name: s2}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
		Strategy{}.Default(again)
		ops, err := alloc.Allocate(ctx, again, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ops[0].Key == picked {
			t.Fatalf("taken value %s offered again", picked)
		}
	}
	// And a full create through the writer still succeeds.
	if _, err := w.create(ctx, svcFromYAML(t, `{metadata: {name: s3}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)); err != nil {
		t.Fatal(err)
	}
}

// TestRangeFull: with every address taken, a create fails with upstream's
// internal error and stores nothing.
func TestRangeFull(t *testing.T) {
	ctx := context.Background()
	w, _, _ := newWriter(t, "10.0.0.0/30") // two addresses
	for i := 0; i < 2; i++ {
		if _, err := w.create(ctx, svcFromYAML(t, fmt.Sprintf(`{metadata: {name: s%d}, spec: {selector: {app: a}, ports: [{port: 80}]}}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	_, err := w.create(ctx, svcFromYAML(t, `{metadata: {name: full}, spec: {selector: {app: a}, ports: [{port: 80}]}}`))
	if want := `Internal error occurred: failed to allocate a serviceIP for Service "full": range is full`; statusMessage(err) != want {
		t.Fatalf("error %q, want %q", statusMessage(err), want)
	}
}

// TestReservationsExpire: values picked for writes that never happen come
// back after the TTL.
func TestReservationsExpire(t *testing.T) {
	ctx := context.Background()
	_, alloc, _ := newWriter(t, "10.0.0.0/28")
	now := time.Now()
	alloc.mu.Lock()
	alloc.now = func() time.Time { return now }
	alloc.mu.Unlock()
	for i := 0; i < 14; i++ {
		obj := svcFromYAML(t, `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
		Strategy{}.Default(obj)
		if _, err := alloc.Allocate(ctx, obj, nil); err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
	}
	obj := svcFromYAML(t, `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
	Strategy{}.Default(obj)
	if _, err := alloc.Allocate(ctx, obj, nil); err == nil {
		t.Fatal("15th pick in a /28 succeeded")
	}
	if ips, _ := alloc.Allocated(); ips != 0 {
		t.Fatalf("reservations counted as allocated: %d", ips)
	}
	alloc.mu.Lock()
	now = now.Add(reservationTTL + time.Second)
	alloc.mu.Unlock()
	obj = svcFromYAML(t, `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
	Strategy{}.Default(obj)
	if _, err := alloc.Allocate(ctx, obj, nil); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	alloc.mu.Lock()
	defer alloc.mu.Unlock()
	if alloc.ips.Used() != 1 || len(alloc.reserved) != 1 || len(alloc.attempts) != 1 {
		t.Fatalf("used %d reserved %d attempts %d after expiry", alloc.ips.Used(), len(alloc.reserved), len(alloc.attempts))
	}
}

// TestMirrorFollowsStorage: the mirror starts from the stored keys, follows
// writes by others, and survives a broken watch.
func TestMirrorFollowsStorage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	// Keys stored before the allocator starts: 13 of the 14 addresses of a
	// /28 and a NodePort.
	for i := 1; i <= 13; i++ {
		if _, err := store.Txn(ctx, storage.Put(fmt.Sprintf("%s10.0.0.%d", ClusterIPKeyPrefix, i), []byte(`{}`), 0)); err != nil {
			t.Fatal(err)
		}
	}
	_, alloc := newTestKind(t, store, "10.0.0.0/28")
	pick := func() string {
		t.Helper()
		obj := svcFromYAML(t, `{metadata: {name: s}, spec: {selector: {app: a}, ports: [{port: 80}]}}`)
		Strategy{}.Default(obj)
		if _, err := alloc.Allocate(ctx, obj, nil); err != nil {
			return "error: " + statusMessage(err)
		}
		alloc.mu.Lock()
		defer alloc.mu.Unlock()
		for k := range alloc.reserved { // release the pick again
			delete(alloc.reserved, k)
			alloc.setLocked(k, false)
		}
		return obj.Spec.ClusterIP
	}
	if got := pick(); got != "10.0.0.14" {
		t.Fatalf("pick = %s, want the only free address 10.0.0.14", got)
	}
	// Another process frees 10.0.0.5 and takes 10.0.0.14.
	if _, err := store.Txn(ctx, storage.Delete(ClusterIPKeyPrefix+"10.0.0.5", storage.Any), storage.Put(ClusterIPKeyPrefix+"10.0.0.14", []byte(`{}`), 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the mirror to see the swap", func() bool { return pick() == "10.0.0.5" })
	// The watch breaks; meanwhile 10.0.0.5 is taken and 10.0.0.9 freed.
	store.breakWatches()
	if _, err := store.Txn(ctx, storage.Delete(ClusterIPKeyPrefix+"10.0.0.9", storage.Any), storage.Put(ClusterIPKeyPrefix+"10.0.0.5", []byte(`{}`), 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the mirror to relist", func() bool { return pick() == "10.0.0.9" })
	if ips, _ := alloc.Allocated(); ips != 13 {
		t.Fatalf("Allocated = %d, want 13", ips)
	}
}

// TestIPv6Cluster: a single-stack IPv6 service CIDR.
func TestIPv6Cluster(t *testing.T) {
	ctx := context.Background()
	w, _, store := newWriter(t, "fd00:10:96::/112")
	svc, err := w.create(ctx, svcFromYAML(t, `{metadata: {name: a}, spec: {type: NodePort, selector: {app: a}, ports: [{port: 80}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(svc.Spec.ClusterIP)
	if !netip.MustParsePrefix("fd00:10:96::/112").Contains(ip) || ip.Less(netip.MustParseAddr("fd00:10:96::101")) ||
		!slices.Equal(svc.Spec.IPFamilies, []v1.IPFamily{v1.IPv6Protocol}) {
		t.Fatalf("clusterIP %s families %v", ip, svc.Spec.IPFamilies)
	}
	if _, err := w.create(ctx, svcFromYAML(t, `{metadata: {name: b}, spec: {clusterIP: "fd00:10:96::10", selector: {app: a}, ports: [{port: 80}]}}`)); err != nil {
		t.Fatal(err)
	}
	_, err = w.create(ctx, svcFromYAML(t, `{metadata: {name: c}, spec: {clusterIP: "fd00:10:97::10", selector: {app: a}, ports: [{port: 80}]}}`))
	want := `Service "c" is invalid: spec.clusterIPs: Invalid value: ["fd00:10:97::10"]: failed to allocate IP fd00:10:97::10: the provided IP (fd00:10:97::10) is not in the valid range. The range of valid IPs is fd00:10:96::/112`
	if statusMessage(err) != want {
		t.Fatalf("error %q\nwant  %q", statusMessage(err), want)
	}
	_, err = w.create(ctx, svcFromYAML(t, `{metadata: {name: d}, spec: {clusterIP: 10.96.0.10, selector: {app: a}, ports: [{port: 80}]}}`))
	if want := `Service "d" is invalid: spec.clusterIPs[0]: Invalid value: ["10.96.0.10"]: IPv4 is not configured on this cluster`; statusMessage(err) != want {
		t.Fatalf("error %q", statusMessage(err))
	}
	if keys := store.keys(ClusterIPKeyPrefix); !slices.Contains(keys, ClusterIPKeyPrefix+"fd00:10:96::10") || len(keys) != 2 {
		t.Fatalf("keys %v", keys)
	}
}
