package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// behaviourManifest is every workload of the suite: agnhost pods pinned to
// nodes (so locality is known) and the Services the behaviours start from.
var behaviourManifest = strings.Join([]string{
	agnhostPod("web-master", "master", "{app: web}", "", "netexec", "--http-port=8080", "--udp-port=8081"),
	agnhostPod("web-work1", "work1", "{app: web, hairpin: \"yes\"}", "", "netexec", "--http-port=8080", "--udp-port=8081"),
	agnhostPod("web-work2", "work2", "{app: web}", "", "netexec", "--http-port=8080", "--udp-port=8081"),
	// The same port names on different numbers in each pod.
	agnhostPod("multi-a", "work1", "{app: multi}", `
    env: [{name: SERVE_PORT_8090, value: a-one}, {name: SERVE_PORT_8091, value: a-two}]
    ports: [{name: svc1, containerPort: 8090}, {name: svc2, containerPort: 8091}]`, "porter"),
	agnhostPod("multi-b", "work2", "{app: multi}", `
    env: [{name: SERVE_PORT_9090, value: b-one}, {name: SERVE_PORT_9091, value: b-two}]
    ports: [{name: svc1, containerPort: 9090}, {name: svc2, containerPort: 9091}]`, "porter"),
	agnhostPod("local-work1", "work1", "{itp: \"yes\"}", "", "netexec", "--http-port=8080"),
	agnhostPod("unready", "work2", "{app: unready}", `
    readinessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1}`, "netexec", "--http-port=8080"),
	agnhostPod("dual", "master", "{app: dual}", "", "netexec", "--http-port=8053", "--udp-port=8053"),
	agnhostPod("term", "work2", "{app: term}", "", "netexec", "--http-port=8080", "--delay-shutdown=60"),
	agnhostPod("udp-1", "work2", "{app: udpcycle}", "", "netexec", "--http-port=8080", "--udp-port=8081"),
	`apiVersion: v1
kind: Service
metadata: {name: multiport}
spec:
  selector: {app: multi}
  ports:
  - {name: portname1, port: 80, targetPort: svc1}
  - {name: portname2, port: 81, targetPort: svc2}
---
apiVersion: v1
kind: Service
metadata: {name: ports}
spec:
  selector: {app: multi}
  ports:
  - {name: p1, port: 80, targetPort: svc1}
---
apiVersion: v1
kind: Service
metadata: {name: noeps}
spec:
  selector: {app: nothing}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: hairpin}
spec:
  selector: {hairpin: "yes"}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext-to-cip}
spec: {type: ExternalName, externalName: foo.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: ext-to-np}
spec: {type: ExternalName, externalName: foo.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: unready}
spec:
  selector: {app: unready}
  publishNotReadyAddresses: true
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: proxyname, labels: {service.kubernetes.io/service-proxy-name: foo-bar}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: headless-label}
spec:
  ports: [{name: port80, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: itp}
spec:
  selector: {itp: "yes"}
  internalTrafficPolicy: Local
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: etp}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {itp: "yes"}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: term}
spec:
  selector: {app: term}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: dual}
spec:
  selector: {app: dual}
  ports:
  - {name: tcp, port: 53, targetPort: 8053, protocol: TCP}
  - {name: udp, port: 53, targetPort: 8053, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: udpcycle}
spec:
  type: NodePort
  selector: {app: udpcycle}
  ports: [{port: 80, targetPort: 8081, protocol: UDP}]
`,
	webServiceYAML("basic", "ClusterIP"),
	webServiceYAML("updown", "ClusterIP"),
	webServiceYAML("recreate", "ClusterIP"),
	webServiceYAML("cip-to-ext", "ClusterIP"),
	webServiceYAML("np-to-ext", "NodePort"),
	webServiceYAML("aff-cip", "ClusterIP", "sessionAffinity: ClientIP"),
	webServiceYAML("aff-np", "NodePort", "sessionAffinity: ClientIP"),
	webServiceYAML("aff-cip-timeout", "ClusterIP", "sessionAffinity: ClientIP", "sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}"),
	webServiceYAML("aff-np-timeout", "NodePort", "sessionAffinity: ClientIP", "sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}"),
}, "\n---\n")

// agnhostPod is a pod of the agnhost image with args on node; extra is
// more container fields (indented 4).
func agnhostPod(name, node, labels, extra string, args ...string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 90
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [%s]%s`, name, labels, node, quoteAll(args), extra)
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, ", ")
}

// webServiceYAML is a Service of the web pods; extra are more lines of
// its spec.
func webServiceYAML(name, typ string, extra ...string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  type: %s
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]`, name, typ) + strings.Join(append([]string{""}, extra...), "\n  ")
}

func testBasicEndpoint(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "basic")
	var want []string
	for _, p := range webPods {
		want = append(want, b.podIP(p)+":8080")
	}
	slices.Sort(want)
	eventually(t, "EndpointSlice of basic listing the 3 web pods", settle, func() error {
		list, err := b.c.DiscoveryV1().EndpointSlices("default").List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=basic"})
		if err != nil {
			return err
		}
		var got []string
		for _, sl := range list.Items {
			for _, e := range sl.Endpoints {
				for _, p := range sl.Ports {
					got = append(got, e.Addresses[0]+":"+strconv.Itoa(int(*p.Port)))
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("endpoints %v, want %v", got, want)
		}
		return nil
	})
	servesExactly(t, cip(s, 80), webPods...)
	// From a pod on each node too.
	for _, p := range webPods {
		eventually(t, p+" reaching basic", settle, func() error {
			h, err := podDial(b.podIP(p), cip(s, 80), "http")
			if err == nil && !slices.Contains(webPods, h) {
				err = fmt.Errorf("answer %q from no web pod", h)
			}
			return err
		})
	}
}

func testMultiport(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "multiport")
	servesExactly(t, cip(s, 80), "a-one", "b-one")
	servesExactly(t, cip(s, 81), "a-two", "b-two")
}

func testRejectNoEndpoints(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "noeps")
	eventually(t, "connect from a pod to a Service without endpoints REFUSED", settle, func() error {
		out, err := podConnect(b.podIP("web-work1"), cip(s, 80))
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "REFUSED") {
			return fmt.Errorf("agnhost connect printed %q, want REFUSED", out)
		}
		return nil
	})
	eventually(t, "connect from the host refused", settle, func() error { return refused(cip(s, 80)) })
}

func testHairpin(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "hairpin")
	eventually(t, "web-work1 reaching itself through its Service", settle, func() error {
		h, err := podDial(b.podIP("web-work1"), cip(s, 80), "http")
		if err == nil && h != "web-work1" {
			err = fmt.Errorf("answer %q, want web-work1", h)
		}
		return err
	})
}

func testUpDown(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "updown")
	servesExactly(t, cip(s, 80), webPods...)
	b.deleteSvc(t, "updown")
	eventually(t, "the deleted Service down", settle, func() error { return notServing(cip(s, 80)) })
	servesExactly(t, cip(b.svc(t, "basic"), 80), webPods...)
	s2 := b.createSvc(t, webService("updown-2", v1.ServiceTypeClusterIP))
	servesExactly(t, cip(s2, 80), webPods...)
}

func testRecreate(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "recreate")
	servesExactly(t, cip(s, 80), webPods...)
	b.deleteSvc(t, "recreate")
	eventually(t, "the deleted Service down", settle, func() error { return notServing(cip(s, 80)) })
	again := webService("recreate", v1.ServiceTypeClusterIP)
	again.Spec.ClusterIP = s.Spec.ClusterIP
	b.createSvc(t, again)
	servesExactly(t, cip(s, 80), webPods...)
}

func testUpdatePorts(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "ports")
	servesExactly(t, cip(s, 80), "a-one", "b-one")
	b.updateSvc(t, "ports", func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, tcpPort("p2", 81, intstr.FromString("svc2")))
	})
	servesExactly(t, cip(s, 81), "a-two", "b-two")
	servesExactly(t, cip(s, 80), "a-one", "b-one")
	b.updateSvc(t, "ports", func(s *v1.Service) { s.Spec.Ports = s.Spec.Ports[1:] })
	eventually(t, "the removed port down", settle, func() error { return notServing(cip(s, 80)) })
	servesExactly(t, cip(s, 81), "a-two", "b-two")
}

// nodePortYAML is a NodePort Service of the web pods on nodePort.
func nodePortYAML(name string, nodePort int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: %d}]
`, name, nodePort)
}

// Fixed nodePorts come from the static band (30000-30085), which the
// server never hands out dynamically, so other Services of the suite (a
// LoadBalancer, NodePorts without a fixed port) cannot take them first.
func testNodePortCollision(t *testing.T, b *behaviourLab) {
	b.mustKubectl(t, "create", "-f", writeManifest(t, nodePortYAML("np-collide-1", 30011)))
	out, err := b.kubectl("create", "-f", writeManifest(t, nodePortYAML("np-collide-2", 30011)))
	if err == nil || !strings.Contains(out, "provided port is already allocated") {
		t.Fatalf("second Service on nodePort 30011: %v, want an 'already allocated' error:\n%s", err, out)
	}
	t.Logf("kubectl: %s", strings.TrimSpace(out))
	b.deleteSvc(t, "np-collide-1")
	b.mustKubectl(t, "create", "-f", writeManifest(t, nodePortYAML("np-collide-2", 30011)))
	servesExactly(t, b.nodeIPs["work2"]+":30011", webPods...)
	b.deleteSvc(t, "np-collide-2")
}

func testNodePortRange(t *testing.T, b *behaviourLab) {
	const rangeErr = "provided port is not in the valid range. The range of valid ports is 30000-32767"
	b.mustKubectl(t, "create", "-f", writeManifest(t, nodePortYAML("np-range", 30012)))
	out, err := b.kubectl("patch", "svc", "np-range", "--type=json", "-p", `[{"op":"replace","path":"/spec/ports/0/nodePort","value":29999}]`)
	if err == nil || !strings.Contains(out, rangeErr) {
		t.Errorf("update to nodePort 29999: %v, want %q:\n%s", err, rangeErr, out)
	}
	b.deleteSvc(t, "np-range")
	out, err = b.kubectl("create", "-f", writeManifest(t, nodePortYAML("np-range", 32768)))
	if err == nil || !strings.Contains(out, rangeErr) {
		t.Errorf("create with nodePort 32768: %v, want %q:\n%s", err, rangeErr, out)
	}
	t.Logf("kubectl: %s", strings.TrimSpace(out))
}

func testReleaseNodePort(t *testing.T, b *behaviourLab) {
	const port = 30022
	b.mustKubectl(t, "create", "-f", writeManifest(t, nodePortYAML("np-release", port)))
	servesExactly(t, b.nodeIPs["work1"]+":30022", webPods...)
	if rules := b.nodeRules(t, "work1"); !strings.Contains(rules, "30022") {
		t.Fatalf("work1's rules do not mention nodePort 30022 while it serves:\n%s", rules)
	}
	b.deleteSvc(t, "np-release")
	for node, ip := range b.nodeIPs {
		eventually(t, node+" releasing nodePort 30022", settle, func() error {
			if rules := b.nodeRules(t, node); strings.Contains(rules, "30022") {
				return fmt.Errorf("rules still mention 30022:\n%s", grepLines(rules, "30022"))
			}
			if l := b.nodeListeners(t, node, port); l != "" {
				return fmt.Errorf("still listening: %s", l)
			}
			return notServing(ip + ":30022")
		})
	}
	// The port is free again.
	b.mustKubectl(t, "create", "-f", writeManifest(t, nodePortYAML("np-release", port)))
	b.deleteSvc(t, "np-release")
}

func grepLines(text, substr string) string {
	var r []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			r = append(r, l)
		}
	}
	return strings.Join(r, "\n")
}

// toWeb turns a Service into a ClusterIP (or NodePort) Service of the web
// pods.
func toWeb(typ v1.ServiceType) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = typ
		s.Spec.ExternalName = ""
		s.Spec.Selector = map[string]string{"app": "web"}
		s.Spec.Ports = []v1.ServicePort{tcpPort("http", 80, intstr.FromInt32(8080))}
	}
}

// toExternalName is the upstream tests' update: only type and name; the
// API drops the ClusterIPs and nodePorts.
func toExternalName(s *v1.Service) {
	s.Spec.Type = v1.ServiceTypeExternalName
	s.Spec.ExternalName = "foo.example.com"
}

func testExternalNameToClusterIP(t *testing.T, b *behaviourLab) {
	s := b.updateSvc(t, "ext-to-cip", toWeb(v1.ServiceTypeClusterIP))
	if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == v1.ClusterIPNone {
		t.Fatalf("ClusterIP %q after the change to ClusterIP", s.Spec.ClusterIP)
	}
	servesExactly(t, cip(s, 80), webPods...)
}

func testExternalNameToNodePort(t *testing.T, b *behaviourLab) {
	s := b.updateSvc(t, "ext-to-np", toWeb(v1.ServiceTypeNodePort))
	np := s.Spec.Ports[0].NodePort
	if np == 0 || s.Spec.ClusterIP == "" {
		t.Fatalf("nodePort %d, ClusterIP %q after the change to NodePort", np, s.Spec.ClusterIP)
	}
	servesExactly(t, cip(s, 80), webPods...)
	servesExactly(t, net.JoinHostPort(b.nodeIPs["work1"], strconv.Itoa(int(np))), webPods...)
}

func testClusterIPToExternalName(t *testing.T, b *behaviourLab) {
	before := b.svc(t, "cip-to-ext")
	servesExactly(t, cip(before, 80), webPods...)
	s := b.updateSvc(t, "cip-to-ext", toExternalName)
	if s.Spec.ClusterIP != "" || len(s.Spec.ClusterIPs) != 0 {
		t.Errorf("ClusterIPs %v after the change to ExternalName, want none", s.Spec.ClusterIPs)
	}
	eventually(t, "the old ClusterIP down", settle, func() error { return notServing(cip(before, 80)) })
}

func testNodePortToExternalName(t *testing.T, b *behaviourLab) {
	before := b.svc(t, "np-to-ext")
	np := net.JoinHostPort(b.nodeIPs["work2"], strconv.Itoa(int(before.Spec.Ports[0].NodePort)))
	servesExactly(t, np, webPods...)
	s := b.updateSvc(t, "np-to-ext", toExternalName)
	if s.Spec.ClusterIP != "" || s.Spec.Ports[0].NodePort != 0 {
		t.Errorf("ClusterIP %q, nodePort %d after the change to ExternalName, want none", s.Spec.ClusterIP, s.Spec.Ports[0].NodePort)
	}
	eventually(t, "the old nodePort down", settle, func() error { return notServing(np) })
	eventually(t, "the old ClusterIP down", settle, func() error { return notServing(cip(before, 80)) })
}

func testUnreadyEndpoints(t *testing.T, b *behaviourLab) {
	if p := b.pods["unready"]; podReady(&p) {
		t.Fatalf("pod unready is Ready: its readiness probe should fail")
	}
	servesExactly(t, cip(b.svc(t, "unready"), 80), "unready")
}

// sticky checks that n requests to addr all reach the same pod.
func sticky(addr string, n int) error {
	got, err := hostnames(addr, n)
	if err != nil {
		return err
	}
	if len(got) != 1 {
		return fmt.Errorf("answers %v, want one pod (ClientIP affinity)", got)
	}
	return nil
}

// spread checks that n requests to addr reach more than one pod.
func spread(addr string, n int) error {
	got, err := hostnames(addr, n)
	if err != nil {
		return err
	}
	if len(got) < 2 {
		return fmt.Errorf("answers %v, want several pods (no affinity)", got)
	}
	return nil
}

func (b *behaviourLab) nodePortAddr(t *testing.T, name, node string) string {
	return net.JoinHostPort(b.nodeIPs[node], strconv.Itoa(int(b.svc(t, name).Spec.Ports[0].NodePort)))
}

func testAffinityClusterIP(t *testing.T, b *behaviourLab) {
	addr := cip(b.svc(t, "aff-cip"), 80)
	eventually(t, "affinity on "+addr, settle, func() error { return sticky(addr, 15) })
}

func testAffinityNodePort(t *testing.T, b *behaviourLab) {
	addr := b.nodePortAddr(t, "aff-np", "work1")
	eventually(t, "affinity on "+addr, settle, func() error { return sticky(addr, 15) })
}

func testAffinitySwitch(t *testing.T, b *behaviourLab, name, addr string) {
	eventually(t, "affinity on "+addr, settle, func() error { return sticky(addr, 15) })
	b.updateSvc(t, name, func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityNone
		s.Spec.SessionAffinityConfig = nil
	})
	eventually(t, "no affinity on "+addr, settle, func() error { return spread(addr, 15) })
	b.updateSvc(t, name, func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP })
	eventually(t, "affinity again on "+addr, settle, func() error { return sticky(addr, 15) })
}

func testAffinitySwitchClusterIP(t *testing.T, b *behaviourLab) {
	testAffinitySwitch(t, b, "aff-cip", cip(b.svc(t, "aff-cip"), 80))
}

func testAffinitySwitchNodePort(t *testing.T, b *behaviourLab) {
	testAffinitySwitch(t, b, "aff-np", b.nodePortAddr(t, "aff-np", "work2"))
}

// testAffinityTimeout: sticky within the 2s timeout; after a pause longer
// than the timeout the client may land on another pod (upstream: within a
// few tries it does).
func testAffinityTimeout(t *testing.T, addr string) {
	eventually(t, "affinity on "+addr, settle, func() error { return sticky(addr, 10) })
	seen := map[string]bool{}
	for range 8 {
		h, err := fetch(addr, "/hostname")
		if err != nil {
			t.Fatal(err)
		}
		seen[h] = true
		if len(seen) > 1 {
			t.Logf("after the timeout the client moved: %v", seen)
			return
		}
		time.Sleep(3 * time.Second)
	}
	t.Fatalf("8 requests 3s apart (affinity timeout 2s) all reached %v", seen)
}

func testAffinityTimeoutClusterIP(t *testing.T, b *behaviourLab) {
	testAffinityTimeout(t, cip(b.svc(t, "aff-cip-timeout"), 80))
}

func testAffinityTimeoutNodePort(t *testing.T, b *behaviourLab) {
	testAffinityTimeout(t, b.nodePortAddr(t, "aff-np-timeout", "work1"))
}

// testServiceProxyName: a Service labelled for another proxy does not
// serve; without the label it does; with it again it stops.
func testServiceProxyName(t *testing.T, b *behaviourLab) {
	const label = "service.kubernetes.io/service-proxy-name"
	// The proxies have synced the Services created with it.
	servesExactly(t, cip(b.svc(t, "basic"), 80), webPods...)
	addr := cip(b.svc(t, "proxyname"), 80)
	for range 3 {
		if err := notServing(addr); err != nil {
			t.Fatalf("Service labelled %s: %v", label, err)
		}
	}
	b.updateSvc(t, "proxyname", func(s *v1.Service) { delete(s.Labels, label) })
	servesExactly(t, addr, webPods...)
	b.updateSvc(t, "proxyname", func(s *v1.Service) { s.Labels = map[string]string{label: "foo-bar"} })
	eventually(t, "the relabelled Service down", settle, func() error { return notServing(addr) })
}

// testHeadlessLabel is upstream v1.37's version: a selectorless Service
// with a hand-made EndpointSlice serves; once the slice carries the
// service.kubernetes.io/headless label the proxy ignores it.
func testHeadlessLabel(t *testing.T, b *behaviourLab) {
	addr := cip(b.svc(t, "headless-label"), 80)
	ctx := context.Background()
	slice, err := b.c.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "custom-slice", Labels: map[string]string{
			discoveryv1.LabelServiceName: "headless-label", discoveryv1.LabelManagedBy: "e2e-test",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{b.podIP("web-work1")},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("port80"), Port: ptr[int32](8080), Protocol: ptr(v1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	servesExactly(t, addr, "web-work1")
	slice.Labels[v1.IsHeadlessService] = ""
	if _, err := b.c.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Service down once its slice is labelled headless", settle, func() error { return notServing(addr) })
}

func ptr[T any](v T) *T { return &v }

func testInternalTrafficPolicyLocal(t *testing.T, b *behaviourLab) {
	addr := cip(b.svc(t, "itp"), 80)
	eventually(t, "a pod on work1 reaching the local endpoint", settle, func() error {
		h, err := podDial(b.podIP("web-work1"), addr, "http")
		if err == nil && h != "local-work1" {
			err = fmt.Errorf("answer %q, want local-work1", h)
		}
		return err
	})
	for _, p := range []string{"web-work2", "web-master"} {
		out, err := podConnect(b.podIP(p), addr)
		if err != nil {
			t.Fatal(err)
		}
		if out == "" {
			t.Errorf("%s (no local endpoint) connected to the internalTrafficPolicy=Local Service", p)
		}
		t.Logf("%s: agnhost connect: %s", p, out)
	}
}

func testExternalTrafficPolicyLocal(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "etp")
	np := strconv.Itoa(int(s.Spec.Ports[0].NodePort))
	eventually(t, "the node with the endpoint seeing the client's address", settle, func() error {
		ip, err := fetch(net.JoinHostPort(b.nodeIPs["work1"], np), "/clientip")
		if err == nil && !strings.HasPrefix(ip, "192.168.77.1:") {
			err = fmt.Errorf("/clientip %q, want the host's 192.168.77.1", ip)
		}
		return err
	})
	for _, node := range []string{"master", "work2"} {
		if err := notServing(net.JoinHostPort(b.nodeIPs[node], np)); err != nil {
			t.Errorf("node %s without a local endpoint: %v", node, err)
		}
	}
}

func testHealthCheckNodePort(t *testing.T, b *behaviourLab) {
	s := b.svc(t, "etp")
	hc := strconv.Itoa(int(s.Spec.HealthCheckNodePort))
	if s.Spec.HealthCheckNodePort == 0 {
		t.Fatal("no healthCheckNodePort on an externalTrafficPolicy=Local LoadBalancer")
	}
	want := map[string]int{"work1": http.StatusOK, "master": http.StatusServiceUnavailable, "work2": http.StatusServiceUnavailable}
	for node, code := range want {
		eventually(t, fmt.Sprintf("%s healthCheckNodePort %d", node, code), settle, func() error {
			resp, err := httpClient.Get("http://" + net.JoinHostPort(b.nodeIPs[node], hc) + "/")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var body struct {
				Service        struct{ Namespace, Name string }
				LocalEndpoints int
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				return fmt.Errorf("%s: %w", resp.Status, err)
			}
			if resp.StatusCode != code || body.LocalEndpoints != map[bool]int{true: 1}[code == http.StatusOK] {
				return fmt.Errorf("%s %+v, want %d", resp.Status, body, code)
			}
			return nil
		})
	}
}

func testTerminatingFallback(t *testing.T, b *behaviourLab) {
	addr := cip(b.svc(t, "term"), 80)
	servesExactly(t, addr, "term")
	// netexec --delay-shutdown=60 keeps serving after SIGTERM.
	if err := b.c.CoreV1().Pods("default").Delete(context.Background(), "term", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		zero := int64(0)
		_ = b.c.CoreV1().Pods("default").Delete(context.Background(), "term", metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}()
	eventually(t, "term's endpoint terminating and serving", settle, func() error {
		list, err := b.c.DiscoveryV1().EndpointSlices("default").List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=term"})
		if err != nil {
			return err
		}
		for _, sl := range list.Items {
			if len(sl.Endpoints) == 0 {
				continue
			}
			c := sl.Endpoints[0].Conditions // the Service has one pod
			if isTrue(c.Terminating) && isTrue(c.Serving) && !isTrue(c.Ready) {
				return nil
			}
			return fmt.Errorf("endpoint conditions ready=%v serving=%v terminating=%v", show(c.Ready), show(c.Serving), show(c.Terminating))
		}
		return fmt.Errorf("no endpoint")
	})
	servesExactly(t, addr, "term")
}

func isTrue(b *bool) bool { return b != nil && *b }

func show(b *bool) string {
	if b == nil {
		return "nil"
	}
	return strconv.FormatBool(*b)
}

// udpAsk sends "hostname" on conn and reads the reply.
func udpAsk(conn net.Conn) (string, error) {
	if _, err := conn.Write([]byte("hostname")); err != nil {
		return "", err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func testSamePortDifferentProtocols(t *testing.T, b *behaviourLab) {
	addr := cip(b.svc(t, "dual"), 53)
	eventually(t, "TCP "+addr, settle, func() error {
		h, err := fetch(addr, "/hostname")
		if err == nil && h != "dual" {
			err = fmt.Errorf("answer %q, want dual", h)
		}
		return err
	})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, "UDP "+addr, settle, func() error {
		h, err := udpAsk(conn)
		if err == nil && h != "dual" {
			err = fmt.Errorf("answer %q, want dual", h)
		}
		return err
	})
	eventually(t, "UDP "+addr+" from a pod", settle, func() error {
		h, err := podDial(b.podIP("web-work2"), addr, "udp")
		if err == nil && h != "dual" {
			err = fmt.Errorf("answer %q, want dual", h)
		}
		return err
	})
}

func testUDPServerCycles(t *testing.T, b *behaviourLab) {
	addr := b.nodePortAddr(t, "udpcycle", "work1")
	// One socket throughout: the flow's conntrack entry must follow the
	// endpoint change.
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	answers := func(pod string) func() error {
		return func() error {
			h, err := udpAsk(conn)
			if err == nil && h != pod {
				err = fmt.Errorf("answer %q, want %s", h, pod)
			}
			return err
		}
	}
	eventually(t, "udp-1 answering on "+addr, settle, answers("udp-1"))
	zero := int64(0)
	if err := b.c.CoreV1().Pods("default").Delete(context.Background(), "udp-1", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	b.mustKubectl(t, "create", "-f", writeManifest(t, agnhostPod("udp-2", "master", "{app: udpcycle}", "", "netexec", "--http-port=8080", "--udp-port=8081")))
	eventually(t, "udp-2 ready", podTimeout, func() error {
		_, _ = udpAsk(conn) // the client keeps sending, as upstream's
		p, err := b.c.CoreV1().Pods("default").Get(context.Background(), "udp-2", metav1.GetOptions{})
		if err == nil && !podReady(p) {
			err = fmt.Errorf("udp-2 not ready")
		}
		return err
	})
	eventually(t, "udp-2 answering on the same flow", settle, answers("udp-2"))
}

// testLoadBalancerIP: a LoadBalancer Service gets an IP from the lab's pool
// (the server's service-lb controller), one node announces it on the
// segment (it holds the IP and answers ARP), and the host reaches the pods
// through it, as the seed's external load balancer would.
func testLoadBalancerIP(t *testing.T, b *behaviourLab) {
	ctx := context.Background()
	b.mustKubectl(t, "create", "-f", writeManifest(t, webServiceYAML("lb", "LoadBalancer")))
	t.Cleanup(func() { _ = b.c.CoreV1().Services("default").Delete(ctx, "lb", metav1.DeleteOptions{}) })
	var ip string
	eventually(t, "an ingress IP from the pool", settle, func() error {
		s := b.svc(t, "lb")
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no ingress IP yet")
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	if !strings.HasPrefix(ip, "192.168.77.2") {
		t.Fatalf("ingress IP %s is not from the pool 192.168.77.200-220", ip)
	}
	servesExactly(t, net.JoinHostPort(ip, "80"), webPods...)
}
