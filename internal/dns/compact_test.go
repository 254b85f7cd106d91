package dns

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	toolscache "k8s.io/client-go/tools/cache"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestTrimObject checks that the informer transform keeps exactly what the
// record builder reads, in the form it reads it.
func TestTrimObject(t *testing.T) {
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "n", ResourceVersion: "7", UID: "u",
		Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"x": "y"}}
	tolerant := meta
	tolerant.Annotations = map[string]string{tolerateUnreadyAnnotation: "true"}
	sliceMeta := meta
	sliceMeta.Labels = map[string]string{discoveryv1.LabelServiceName: "web", "other": "x"}
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"ClusterIP dual stack, ports lower-cased, protocol defaulted", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5", "fd00::5"},
			Selector: map[string]string{"app": "x"}, SessionAffinity: corev1.ServiceAffinityClientIP,
			Ports: []corev1.ServicePort{{Name: "HTTP", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}, {Port: 53}}}},
			&svcObj{ns: "ns", name: "n", rv: "7", typ: corev1.ServiceTypeClusterIP, clusterIPs: addrs("10.96.0.5", "fd00::5"),
				ports: []portObj{{name: "http", proto: "tcp", port: 80}, {proto: "tcp", port: 53}}}},
		{"clusterIP only, IPv4-mapped address unmapped, bad address dropped", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
			ClusterIP: "::ffff:10.96.0.6"}},
			&svcObj{ns: "ns", name: "n", rv: "7", clusterIPs: addrs("10.96.0.6")}},
		{"unparsable clusterIPs", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{ClusterIPs: []string{"nope"}}},
			&svcObj{ns: "ns", name: "n", rv: "7"}},
		{"headless, tolerate-unready", &corev1.Service{ObjectMeta: tolerant, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}}},
			&svcObj{ns: "ns", name: "n", rv: "7", headless: true, tolerate: true}},
		{"ExternalName", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "www.example.com"}},
			&svcObj{ns: "ns", name: "n", rv: "7", typ: corev1.ServiceTypeExternalName, externalName: "www.example.com"}},
		{"EndpointSlice", &discoveryv1.EndpointSlice{ObjectMeta: sliceMeta, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: ptr("Web"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(81))}, {}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.0.0.1"}, Hostname: ptr("web-0"), NodeName: ptr("node")},
				{Addresses: []string{"10.0.0.2", "bad"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
				{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true)}},
			}},
			&sliceObj{ns: "ns", name: "n", rv: "7", service: "web",
				ports: []portObj{{name: "web", proto: "udp", port: 81}, {proto: "tcp"}},
				endpoints: []endpointObj{
					{addrs: addrs("10.0.0.1"), hostname: "web-0", ready: true},
					{addrs: addrs("10.0.0.2"), ready: true},
					{addrs: addrs("10.0.0.3"), ready: false},
				}}},
		{"FQDN EndpointSlice keeps nothing", &discoveryv1.EndpointSlice{ObjectMeta: sliceMeta, AddressType: discoveryv1.AddressTypeFQDN,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"example.com"}}}},
			&sliceObj{ns: "ns", name: "n", rv: "7", service: "web", fqdn: true}},
		{"Pod", &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{NodeName: "x"}, Status: corev1.PodStatus{
			PodIP: "10.244.0.9", PodIPs: []corev1.PodIP{{IP: "10.244.0.9"}, {IP: "fd00::9"}}}},
			&podObj{ns: "ns", name: "n", rv: "7", ips: addrs("10.244.0.9", "fd00::9")}},
		{"Pod with podIP only", &corev1.Pod{ObjectMeta: meta, Status: corev1.PodStatus{PodIP: "10.244.0.9"}},
			&podObj{ns: "ns", name: "n", rv: "7", ips: addrs("10.244.0.9")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := trimObject(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tc.want)
			}
			// A compact object passes the transform unchanged (client-go
			// may apply it twice, e.g. after a WatchList).
			again, _ := trimObject(got)
			if again != got {
				t.Fatalf("transform of a compact object changed it")
			}
			// client-go's key functions and our handlers read its metadata.
			if k, err := toolscache.DeletionHandlingMetaNamespaceKeyFunc(got); err != nil || k != "ns/n" {
				t.Fatalf("key %q, %v; want ns/n", k, err)
			}
			if !sameVersion(got, got) {
				t.Fatalf("sameVersion(x, x) = false")
			}
		})
	}
}

func TestSliceServiceIndex(t *testing.T) {
	tests := []struct {
		obj  any
		want []string
	}{
		{&sliceObj{ns: "ns", name: "web-abc", service: "web"}, []string{"ns/web"}},
		{&sliceObj{ns: "ns", name: "orphan"}, nil},
		{&svcObj{ns: "ns", name: "web"}, nil},
	}
	for _, tc := range tests {
		got, err := sliceServiceIndex(tc.obj)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("sliceServiceIndex(%v) = %v, %v; want %v", tc.obj, got, err, tc.want)
		}
	}
	if sameVersion(&svcObj{rv: "1"}, &svcObj{rv: "2"}) || sameVersion(&svcObj{}, &svcObj{}) {
		t.Errorf("sameVersion: different or empty versions reported the same")
	}
}
