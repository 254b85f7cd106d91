package list_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/list"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// TestMain runs the package's tests inside a private network namespace when
// root (see proxytest.Main); the conntrack test skips otherwise.
func TestMain(m *testing.M) { os.Exit(proxytest.Main(m)) }

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const node = "node-a"

// port is a Service port: "name:port/PROTO->target[:nodePort]".
type port struct {
	name     string
	port     int32
	proto    v1.Protocol
	target   int32
	nodePort int32
}

func service(ns, name string, clusterIPs []string, ports []port, mutate ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIPs[0], ClusterIPs: clusterIPs,
			SessionAffinity: v1.ServiceAffinityNone,
		},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: p.name, Port: p.port, Protocol: p.proto, NodePort: p.nodePort})
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// ep is one endpoint: address, node and conditions.
type ep struct {
	ip          string
	node        string
	notReady    bool
	terminating bool
}

func slice(svc *v1.Service, family discovery.AddressType, eps []ep, ports []port, mutate ...func(*discovery.EndpointSlice)) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-" + strings.ToLower(string(family)),
			Labels: map[string]string{discovery.LabelServiceName: svc.Name},
		},
		AddressType: family,
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses: []string{e.ip},
			NodeName:  ptr.To(e.node),
			Conditions: discovery.EndpointConditions{
				Ready:       ptr.To(!e.notReady && !e.terminating),
				Serving:     ptr.To(!e.notReady),
				Terminating: ptr.To(e.terminating),
			},
		})
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr.To(p.name), Port: ptr.To(p.target), Protocol: ptr.To(p.proto)})
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func nodeObj(ips ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	return n
}

// seedObjects are the Services of the seed's `ipvsadm -Ln` listings
// (kubernetes, kube-dns, and the nginx Service 10.97.1.1).
func seedObjects() []runtime.Object {
	k8s := service("default", "kubernetes", []string{"10.96.0.1"}, []port{{"https", 443, v1.ProtocolTCP, 6443, 0}})
	dnsPorts := []port{{"dns", 53, v1.ProtocolUDP, 53, 0}, {"dns-tcp", 53, v1.ProtocolTCP, 53, 0}, {"metrics", 9153, v1.ProtocolTCP, 9153, 0}}
	dns := service("kube-system", "kube-dns", []string{"10.96.0.10"}, dnsPorts)
	web := service("dev", "service-clusterip", []string{"10.97.1.1"}, []port{{"", 80, v1.ProtocolTCP, 80, 0}})
	return []runtime.Object{
		k8s, slice(k8s, discovery.AddressTypeIPv4, []ep{{ip: "192.16.1.10", node: "master"}}, []port{{"https", 443, v1.ProtocolTCP, 6443, 0}}),
		dns, slice(dns, discovery.AddressTypeIPv4, []ep{{ip: "10.244.52.213", node: "node1"}, {ip: "10.244.52.218", node: "node1"}}, dnsPorts),
		web, slice(web, discovery.AddressTypeIPv4, []ep{{ip: "10.244.67.84", node: "node2"}, {ip: "10.244.52.222", node: "node1"}, {ip: "10.244.67.79", node: "node2"}},
			[]port{{"", 80, v1.ProtocolTCP, 80, 0}}),
	}
}

// shapeObjects is one Service of every shape the proxy handles.
func shapeObjects() []runtime.Object {
	var objs []runtime.Object
	add := func(svc *v1.Service, slices ...*discovery.EndpointSlice) {
		objs = append(objs, svc)
		for _, s := range slices {
			objs = append(objs, s)
		}
	}
	v4 := discovery.AddressTypeIPv4
	http := []port{{"http", 80, v1.ProtocolTCP, 8080, 0}}
	three := []ep{{ip: "10.244.1.2", node: node}, {ip: "10.244.2.2", node: "node-b"}, {ip: "10.244.2.3", node: "node-b"}}

	// Plain ClusterIP, two ports (TCP and UDP) with different targets.
	multi := []port{{"dns", 53, v1.ProtocolUDP, 5353, 0}, {"dns-tcp", 53, v1.ProtocolTCP, 5353, 0}}
	svc := service("ns", "multi", []string{"10.96.0.20"}, multi)
	add(svc, slice(svc, v4, three, multi))

	// ClientIP affinity: default timeout and an explicit one.
	svc = service("ns", "sticky", []string{"10.96.0.30"}, http, func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP })
	add(svc, slice(svc, v4, three, http))
	svc = service("ns", "sticky-60", []string{"10.96.0.31"}, http, func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}}
	})
	add(svc, slice(svc, v4, three, http))

	// NodePort on every node IP (sorted the ipvsadm way: 172.17 and 192.168
	// before 10.96).
	np := []port{{"http", 80, v1.ProtocolTCP, 8080, 30080}}
	svc = service("ns", "nodeport", []string{"10.96.0.40"}, np, func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort })
	add(svc, slice(svc, v4, three, np))

	// LoadBalancer, externalTrafficPolicy Local: external entry points get
	// only the local endpoint, the ClusterIP all of them.
	lb := []port{{"http", 80, v1.ProtocolTCP, 8080, 30081}}
	svc = service("ns", "lb-local", []string{"10.96.0.50"}, lb, func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "198.51.100.10"}, {Hostname: "lb.example"}}
	})
	add(svc, slice(svc, v4, three, lb))

	// LoadBalancer ingress with ipMode Proxy is not programmed.
	svc = service("ns", "lb-proxy-mode", []string{"10.96.0.51"}, lb[:1:1], func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30082
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "198.51.100.11", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)}}
	})
	add(svc, slice(svc, v4, three[:1], lb))

	// ExternalIPs.
	svc = service("ns", "external", []string{"10.96.0.60"}, http, func(s *v1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.5", "203.0.113.6"} })
	add(svc, slice(svc, v4, three[1:], http))

	// internalTrafficPolicy Local.
	svc = service("ns", "itp-local", []string{"10.96.0.70"}, http, func(s *v1.Service) {
		s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
	})
	add(svc, slice(svc, v4, three, http))

	// No endpoints at all: the virtual service is there, empty.
	svc = service("ns", "empty", []string{"10.96.0.80"}, http)
	add(svc)

	// Not-ready endpoints are left out; with no ready one anywhere, the
	// serving-terminating ones are used.
	svc = service("ns", "partly-ready", []string{"10.96.0.90"}, http)
	add(svc, slice(svc, v4, []ep{{ip: "10.244.1.5", node: node}, {ip: "10.244.1.6", node: node, notReady: true}, {ip: "10.244.1.7", node: node, terminating: true}}, http))
	svc = service("ns", "terminating", []string{"10.96.0.91"}, http)
	add(svc, slice(svc, v4, []ep{{ip: "10.244.1.8", node: node, terminating: true}, {ip: "10.244.1.9", node: node, notReady: true, terminating: true}}, http))

	// Dual stack: one virtual service per family, each with its family's
	// endpoints.
	svc = service("ns", "dual", []string{"10.96.0.100", "fd00:96::100"}, http)
	add(svc, slice(svc, v4, three[:2], http),
		slice(svc, discovery.AddressTypeIPv6, []ep{{ip: "fd00:244:1::2", node: node}, {ip: "fd00:244:2::2", node: "node-b"}}, http))

	// Dual stack NodePort: node IPs of each family.
	dnp := []port{{"http", 80, v1.ProtocolTCP, 8080, 30090}}
	svc = service("ns", "dual-np", []string{"fd00:96::101", "10.96.0.101"}, dnp, func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort })
	add(svc, slice(svc, v4, three[2:], dnp),
		slice(svc, discovery.AddressTypeIPv6, []ep{{ip: "fd00:244:2::3", node: "node-b"}}, dnp))

	// SCTP.
	sctp := []port{{"sctp", 9999, v1.ProtocolSCTP, 9999, 0}}
	svc = service("ns", "sctp", []string{"10.96.0.110"}, sctp)
	add(svc, slice(svc, v4, three[:1], sctp))

	// The userspace balancer's algorithm annotation.
	svc = service("ns", "annotated-lc", []string{"10.96.0.120"}, http, func(s *v1.Service) {
		s.Annotations = map[string]string{proxy.AnnotationLBAlgorithm: "least-connections"}
	})
	add(svc, slice(svc, v4, three[:2], http))

	// Not proxied: headless, ExternalName, another proxy's Service, and a
	// headless-labelled slice.
	svc = service("ns", "headless", []string{v1.ClusterIPNone}, http)
	add(svc, slice(svc, v4, three, http))
	svc = service("ns", "extname", []string{"10.96.0.130"}, http, func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeExternalName
		s.Spec.ExternalName = "example.com"
	})
	add(svc)
	svc = service("ns", "other-proxy", []string{"10.96.0.140"}, http, func(s *v1.Service) {
		s.Labels = map[string]string{proxy.LabelServiceProxyName: "someone-else"}
	})
	add(svc, slice(svc, v4, three, http))
	svc = service("ns", "headless-slice", []string{"10.96.0.150"}, http)
	add(svc, slice(svc, v4, three, http, func(s *discovery.EndpointSlice) { s.Labels[proxy.LabelHeadless] = "" }))

	objs = append(objs, nodeObj("192.168.0.2", "172.17.0.1", "fd00:1::2"))
	return objs
}

// TestGolden renders the table for the seed's Services and for every
// service shape, in every mode, and compares with testdata/*.golden
// (go test -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	cases := []struct {
		name  string
		objs  []runtime.Object
		opts  list.Options
		flows []list.Flow
	}{
		{name: "seed-ipvs", objs: seedObjects(), opts: list.Options{Mode: list.ModeIPVS}},
		{name: "seed-nftables", objs: seedObjects(), opts: list.Options{Mode: list.ModeNFTables}},
		{name: "shapes-nftables", objs: shapeObjects(), opts: list.Options{Mode: list.ModeNFTables, NodeIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
		{name: "shapes-iptables", objs: shapeObjects(), opts: list.Options{Mode: list.ModeIPTables}},
		{name: "shapes-userspace", objs: shapeObjects(), opts: list.Options{Mode: list.ModeUserspace, Scheduler: "source-hash"}},
		{name: "shapes-ipvs-wlc", objs: shapeObjects(), opts: list.Options{Mode: list.ModeIPVS, Scheduler: "wlc"}},
		{name: "shapes-nodeport-addresses", objs: shapeObjects(), opts: list.Options{
			Mode:              list.ModeNFTables,
			NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")},
			InterfaceAddrs: func() ([]netip.Addr, error) {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.0.2")}, nil
			},
		}},
		{name: "seed-counts", objs: seedObjects(), opts: list.Options{Mode: list.ModeNFTables}, flows: []list.Flow{
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.97.1.1:80"), ReplySrc: ap("10.244.67.84:80"), Active: true},
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.97.1.1:80"), ReplySrc: ap("10.244.67.84:80"), Active: true},
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.97.1.1:80"), ReplySrc: ap("10.244.67.79:80")},
			// A former endpoint still draining: listed with weight 0.
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.97.1.1:80"), ReplySrc: ap("10.244.9.9:80"), Active: true},
			// Not translated (e.g. refused): not counted.
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.97.1.1:80"), ReplySrc: ap("10.97.1.1:80")},
			// UDP is always inactive; protocols are kept apart.
			{Protocol: v1.ProtocolUDP, OrigDst: ap("10.96.0.10:53"), ReplySrc: ap("10.244.52.218:53")},
			{Protocol: v1.ProtocolUDP, OrigDst: ap("10.96.0.10:53"), ReplySrc: ap("10.244.52.218:53")},
			// Not a virtual service.
			{Protocol: v1.ProtocolTCP, OrigDst: ap("10.244.52.218:53"), ReplySrc: ap("10.244.52.218:53"), Active: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.objs...)
			tc.opts.NodeName = node
			tbl, err := list.Build(context.Background(), client, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := tbl.CountConnections(context.Background(), list.Flows(tc.flows)); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := tbl.Render(&buf); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("%s differs:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// seedListing is the seed's `ipvsadm -Ln` output for its Services (the
// two listings joined). The seed's copy lost ipvsadm's trailing padding.
const seedListing = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.16.1.10:6443             Masq    1      0          0
TCP  10.96.0.10:53 rr
  -> 10.244.52.213:53             Masq    1      0          0
  -> 10.244.52.218:53             Masq    1      0          0
TCP  10.96.0.10:9153 rr
  -> 10.244.52.213:9153           Masq    1      0          0
  -> 10.244.52.218:9153           Masq    1      0          0
TCP  10.97.1.1:80 rr
  -> 10.244.52.222:80             Masq    1      0          0
  -> 10.244.67.79:80              Masq    1      0          0
  -> 10.244.67.84:80              Masq    1      0          0
UDP  10.96.0.10:53 rr
  -> 10.244.52.213:53             Masq    1      0          0
  -> 10.244.52.218:53             Masq    1      0          0
`

// TestSeedListing: in ipvs mode, the seed's Services render as the seed's
// ipvsadm output, line for line (ipvsadm pads the last column; the seed's
// copy lost that padding, so trailing spaces are ignored here and checked
// by the golden files).
func TestSeedListing(t *testing.T) {
	client := fake.NewClientset(seedObjects()...)
	tbl, err := list.Build(context.Background(), client, list.Options{NodeName: node, Mode: list.ModeIPVS})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tbl.Render(&buf); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		got = append(got, strings.TrimRight(l, " \n"))
	}
	if g, w := strings.Join(got, "\n"), strings.TrimSuffix(seedListing, "\n")+"\n"; g != w {
		t.Errorf("got\n%s\nwant\n%s", g, w)
	}
	// ipvsadm's exact line: "%-28s %-7s %-6d %-10u %-10u".
	if line := "  -> 192.16.1.10:6443             Masq    1      0          0         \n"; !strings.Contains(buf.String(), line) {
		t.Errorf("output lacks ipvsadm's padded real-server line %q:\n%s", line, buf.String())
	}
}

// TestSortLikeIPVSAdm checks ipvsadm's order, including its signed 32-bit
// address difference (observed in real output: NodePorts on 172.17.0.1 and
// 192.168.x before ClusterIPs in 10.96/12, 10.244.0.0 after 10.96.x).
func TestSortLikeIPVSAdm(t *testing.T) {
	mk := func(proto v1.Protocol, addr string, dests ...string) *list.VirtualService {
		vs := &list.VirtualService{Protocol: proto, Address: ap(addr), Scheduler: "rr"}
		for _, d := range dests {
			vs.RealServers = append(vs.RealServers, list.RealServer{Address: ap(d), Forward: list.ForwardMasq, Weight: 1})
		}
		return vs
	}
	tbl := &list.Table{Services: []*list.VirtualService{
		mk(v1.ProtocolUDP, "10.96.0.10:53"),
		mk(v1.ProtocolTCP, "10.244.0.0:30716"),
		mk(v1.ProtocolTCP, "[fd00::1]:80", "[fd00::20]:80", "[fd00::3]:80"),
		mk(v1.ProtocolSCTP, "10.96.0.5:9"),
		mk(v1.ProtocolTCP, "10.96.0.10:9153"),
		mk(v1.ProtocolTCP, "192.168.50.200:30716", "10.244.2.197:80", "192.168.1.1:80", "10.244.1.200:80"),
		mk(v1.ProtocolTCP, "10.96.0.10:53"),
		mk(v1.ProtocolTCP, "172.17.0.1:30716"),
		mk(v1.ProtocolTCP, "10.96.0.1:443"),
	}}
	tbl.Sort()
	var got []string
	for _, vs := range tbl.Services {
		s := fmt.Sprintf("%s %s", vs.Protocol, vs.Address)
		for _, rs := range vs.RealServers {
			s += " " + rs.Address.String()
		}
		got = append(got, s)
	}
	want := []string{
		"TCP 172.17.0.1:30716",
		"TCP 192.168.50.200:30716 192.168.1.1:80 10.244.1.200:80 10.244.2.197:80",
		"TCP 10.96.0.1:443",
		"TCP 10.96.0.10:53",
		"TCP 10.96.0.10:9153",
		"TCP 10.244.0.0:30716",
		"UDP 10.96.0.10:53",
		"SCTP 10.96.0.5:9",
		"TCP [fd00::1]:80 [fd00::3]:80 [fd00::20]:80",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRunningMode asks a proxy's /proxyMode, and fails without one.
func TestRunningMode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/proxyMode" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "userspace")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	mode, err := list.RunningMode(context.Background(), addr)
	if err != nil || mode != "userspace" {
		t.Errorf("RunningMode(%s) = %q, %v; want userspace", addr, mode, err)
	}
	// An unspecified host means loopback.
	_, p, _ := strings.Cut(addr, ":")
	if mode, err := list.RunningMode(context.Background(), "0.0.0.0:"+p); err != nil || mode != "userspace" {
		t.Errorf("RunningMode(0.0.0.0:%s) = %q, %v; want userspace", p, mode, err)
	}
	srv.Close()
	if mode, err := list.RunningMode(context.Background(), addr); err == nil {
		t.Errorf("RunningMode on a closed server = %q, want an error", mode)
	}
}

// TestUnknownMode: a mode the list does not know is an error, not a guess.
func TestUnknownMode(t *testing.T) {
	if _, err := list.FromState(proxy.NewState(node), list.Options{Mode: "kernelspace"}); err == nil {
		t.Error("FromState with mode kernelspace: want an error")
	}
	if _, err := list.FromState(proxy.NewState(node), list.Options{Mode: list.ModeUserspace, Scheduler: "fastest"}); err == nil {
		t.Error("FromState with userspace algorithm fastest: want an error")
	}
}
