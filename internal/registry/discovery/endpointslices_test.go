package discovery

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

var ctx = context.Background()

func ptr[T any](v T) *T { return &v }

func slice(addrType discoveryv1.AddressType, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc12", Namespace: "default", ResourceVersion: "4"},
		AddressType: addrType,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}

func TestEndpointSliceDefaultsAndCreate(t *testing.T) {
	k := EndpointSlices()
	s := &discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Port: ptr[int32](80)}}}
	k.Strategy.Default(s)
	k.Strategy.PrepareForCreate(ctx, s)
	if s.Ports[0].Name == nil || *s.Ports[0].Name != "" || s.Ports[0].Protocol == nil || *s.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("port defaults: %+v", s.Ports[0])
	}
	if s.Generation != 1 {
		t.Errorf("generation %d", s.Generation)
	}
	if len(k.ShortNames) != 0 || k.SingularName != "endpointslice" || !k.Namespaced {
		t.Errorf("names: %+v", k)
	}
}

func TestEndpointSliceValidate(t *testing.T) {
	k := EndpointSlices()
	tests := []struct {
		name string
		s    *discoveryv1.EndpointSlice
		want []string
	}{
		{"valid v4", slice(discoveryv1.AddressTypeIPv4, "10.244.1.5"), nil},
		{"valid fqdn", slice(discoveryv1.AddressTypeFQDN, "db.example.com"), nil},
		{"missing addressType", slice("", "10.244.1.5"), []string{"addressType: Required value"}},
		{"unsupported addressType", slice("IP", "10.244.1.5"),
			[]string{`addressType: Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"`}},
		{"v6 address in v4 slice", slice(discoveryv1.AddressTypeIPv4, "2001:db8::1"),
			[]string{`endpoints[0].addresses: Invalid value: "2001:db8::1": must be an IPv4 address`}},
		{"loopback", slice(discoveryv1.AddressTypeIPv4, "127.0.0.1"),
			[]string{`endpoints[0].addresses[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)`}},
		{"endpoint without address", func() *discoveryv1.EndpointSlice {
			s := slice(discoveryv1.AddressTypeIPv4)
			s.Endpoints = []discoveryv1.Endpoint{{}}
			return s
		}(), []string{"endpoints[0].addresses: Required value: must contain at least 1 address"}},
		{"duplicate port name", func() *discoveryv1.EndpointSlice {
			s := slice(discoveryv1.AddressTypeIPv4, "10.0.0.1")
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr("http"), Port: ptr[int32](9090)})
			return s
		}(), []string{`ports[1].name: Duplicate value: "http"`}},
		{"bad protocol", func() *discoveryv1.EndpointSlice {
			s := slice(discoveryv1.AddressTypeIPv4, "10.0.0.1")
			s.Ports[0].Protocol = ptr(corev1.Protocol("ICMP"))
			return s
		}(), []string{`ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k.Strategy.Default(tt.s)
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, tt.s), tt.want...)
		})
	}
}

func TestEndpointSliceUpdate(t *testing.T) {
	k := EndpointSlices()
	old := slice(discoveryv1.AddressTypeIPv4, "10.244.1.5")
	k.Strategy.Default(old)
	old.Generation = 3

	// addressType is immutable.
	obj := old.DeepCopy()
	obj.AddressType = discoveryv1.AddressTypeIPv6
	obj.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"2001:db8::5"}}}
	k.Strategy.PrepareForUpdate(ctx, obj, old)
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, obj, old),
		`addressType: Invalid value: "IPv6": field is immutable`)

	tests := []struct {
		name    string
		mutate  func(*discoveryv1.EndpointSlice)
		wantGen int64
	}{
		{"annotation only", func(s *discoveryv1.EndpointSlice) { s.Annotations = map[string]string{"a": "b"} }, 3},
		{"label", func(s *discoveryv1.EndpointSlice) { s.Labels = map[string]string{"a": "b"} }, 4},
		{"endpoints", func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses[0] = "10.244.1.6" }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := old.DeepCopy()
			obj.Generation = 0
			tt.mutate(obj)
			k.Strategy.PrepareForUpdate(ctx, obj, old)
			if obj.Generation != tt.wantGen {
				t.Errorf("generation %d, want %d", obj.Generation, tt.wantGen)
			}
			generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, obj, old))
		})
	}
}

func TestEndpointSliceTable(t *testing.T) {
	k := EndpointSlices()
	var names []string
	for _, c := range k.Table.Columns {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"Name", "AddressType", "Ports", "Endpoints", "Age"}) {
		t.Errorf("columns %v", names)
	}
	ago := metav1.NewTime(time.Now().Add(-72 * time.Hour))
	tests := []struct {
		name string
		s    *discoveryv1.EndpointSlice
		want []interface{}
	}{
		{"one", slice(discoveryv1.AddressTypeIPv4, "10.244.1.5"), []interface{}{"web-abc12", "IPv4", "8080", "10.244.1.5", "3d"}},
		{"many", func() *discoveryv1.EndpointSlice {
			s := slice(discoveryv1.AddressTypeIPv4, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
			s.Ports = []discoveryv1.EndpointPort{{Port: ptr[int32](80)}, {Name: ptr("metrics")}, {}, {Port: ptr[int32](443)}}
			return s
		}(), []interface{}{"web-abc12", "IPv4", "80,metrics,* + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...", "3d"}},
		{"empty", func() *discoveryv1.EndpointSlice {
			s := slice(discoveryv1.AddressTypeIPv4)
			s.Ports = nil
			return s
		}(), []interface{}{"web-abc12", "IPv4", "<unset>", "<unset>", "3d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.CreationTimestamp = ago
			if got := k.Table.Cells(tt.s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("cells %#v, want %#v", got, tt.want)
			}
		})
	}
}
