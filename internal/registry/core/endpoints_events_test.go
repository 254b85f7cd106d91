package core

//lint:file-ignore SA1019 core/v1 Endpoints are deprecated, not removed: svcnet serves them and the kubernetes Service needs them

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

func addrs(ips ...string) []corev1.EndpointAddress {
	var out []corev1.EndpointAddress
	for _, ip := range ips {
		out = append(out, corev1.EndpointAddress{IP: ip})
	}
	return out
}

func TestEndpointsTable(t *testing.T) {
	k := Endpoints()
	expectColumns(t, k, "Name", "Endpoints", "Age")
	tests := []struct {
		name    string
		subsets []corev1.EndpointSubset
		want    string
	}{
		{"no subsets", nil, "<none>"},
		{"one", []corev1.EndpointSubset{{Addresses: addrs("10.244.1.5"), Ports: []corev1.EndpointPort{{Port: 8080}}}}, "10.244.1.5:8080"},
		{"headless without ports", []corev1.EndpointSubset{{Addresses: addrs("10.244.1.5", "10.244.1.6")}}, "10.244.1.5,10.244.1.6"},
		{"more than three", []corev1.EndpointSubset{{Addresses: addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"),
			Ports: []corev1.EndpointPort{{Name: "http", Port: 80}, {Name: "https", Port: 443}}}},
			"10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."},
		{"ipv6", []corev1.EndpointSubset{{Addresses: addrs("2001:db8::5"), Ports: []corev1.EndpointPort{{Port: 53}}}}, "[2001:db8::5]:53"},
		{"only not ready", []corev1.EndpointSubset{{NotReadyAddresses: addrs("10.0.0.1"), Ports: []corev1.EndpointPort{{Port: 80}}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web", CreationTimestamp: threeDaysAgo}, Subsets: tt.subsets}
			expectCells(t, k, ep, "web", tt.want, "3d")
		})
	}
}

func TestEndpointsValidate(t *testing.T) {
	k := Endpoints()
	tests := []struct {
		name    string
		subsets []corev1.EndpointSubset
		want    []string
	}{
		{"valid", []corev1.EndpointSubset{{Addresses: addrs("10.244.1.5"), Ports: []corev1.EndpointPort{{Port: 80}}}}, nil},
		{"no addresses", []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Port: 80}}}},
			[]string{"subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"}},
		{"loopback", []corev1.EndpointSubset{{Addresses: addrs("127.0.0.1")}},
			[]string{`subsets[0].addresses[0].ip: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)`}},
		{"bad ip", []corev1.EndpointSubset{{Addresses: addrs("10.0.0")}},
			[]string{
				`subsets[0].addresses[0].ip: Invalid value: "10.0.0": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)`,
				`subsets[0].addresses[0].ip: Invalid value: "10.0.0": must be a valid IP address`,
			}},
		{"unnamed port among several", []corev1.EndpointSubset{{Addresses: addrs("10.0.0.1"), Ports: []corev1.EndpointPort{{Port: 80}, {Name: "b", Port: 0}}}},
			[]string{
				"subsets[0].ports[0].name: Required value",
				"subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := create(k, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Subsets: tt.subsets})
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, ep), tt.want...)
		})
	}
	ep := create(k, &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Port: 80}}}}}).(*corev1.Endpoints)
	if ep.Subsets[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("port protocol not defaulted")
	}
	if !k.Strategy.AllowCreateOnUpdate() {
		t.Errorf("endpoints allow create on update upstream")
	}
}

func TestConfigMaps(t *testing.T) {
	k := ConfigMaps()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system", CreationTimestamp: threeDaysAgo, ResourceVersion: "2"},
		Data:       map[string]string{"config.conf": "x", "kubeconfig.conf": "y"},
		BinaryData: map[string][]byte{"blob": {1}},
	}
	expectColumns(t, k, "Name", "Data", "Age")
	expectCells(t, k, cm, "kube-proxy", int64(3), "3d")
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, cm))

	bad := cm.DeepCopy()
	bad.Data["bad key"] = "v"
	bad.BinaryData["config.conf"] = []byte("dup")
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, bad),
		`data[bad key]: Invalid value: "bad key": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')`,
		`data[config.conf]: Invalid value: "config.conf": duplicate of key present in binaryData`,
	)

	yes := true
	immutable := cm.DeepCopy()
	immutable.Immutable = &yes
	changed := immutable.DeepCopy()
	changed.Data["config.conf"] = "z"
	update(k, changed, immutable)
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, changed, immutable),
		"data: Forbidden: field is immutable when `immutable` is set")
	if k.Fields != nil {
		t.Errorf("configmaps have no extra field selectors")
	}
}

func TestEvents(t *testing.T) {
	k := Events()
	expectColumns(t, k, "Last Seen", "Type", "Reason", "Object", "Subobject(wide)", "Source(wide)",
		"Message", "First Seen(wide)", "Count(wide)", "Name(wide)")
	oneHourAgo := metav1.NewTime(time.Now().Add(-time.Hour))
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1.17a2b3c4d5e6f7a8", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-1", UID: "u1",
			APIVersion: "v1", ResourceVersion: "12", FieldPath: "spec.containers{app}"},
		Reason:         "Started",
		Message:        "Started container app \n",
		Source:         corev1.EventSource{Component: "kubelet", Host: "node-1"},
		FirstTimestamp: threeDaysAgo,
		LastTimestamp:  oneHourAgo,
		Count:          3,
		Type:           corev1.EventTypeNormal,
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, ev))
	expectCells(t, k, ev, "60m", "Normal", "Started", "pod/web-1", "spec.containers{app}", "kubelet, node-1",
		"Started container app", "3d", int64(3), "web-1.17a2b3c4d5e6f7a8")
	expectFields(t, k, ev, fields.Set{
		"involvedObject.kind":            "Pod",
		"involvedObject.namespace":       "default",
		"involvedObject.name":            "web-1",
		"involvedObject.uid":             "u1",
		"involvedObject.apiVersion":      "v1",
		"involvedObject.resourceVersion": "12",
		"involvedObject.fieldPath":       "spec.containers{app}",
		"reason":                         "Started",
		"reportingComponent":             "",
		"source":                         "kubelet",
		"type":                           "Normal",
	})

	// kubectl describe's selector.
	sel := fields.ParseSelectorOrDie("involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u1")
	if !sel.Matches(k.Fields(ev)) {
		t.Errorf("describe selector should match")
	}

	// New-style event (eventTime set): needs reporting fields.
	newStyle := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "e", Namespace: "other"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "node-1"},
		EventTime:      metav1.NewMicroTime(time.Now()),
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, newStyle),
		`involvedObject.namespace: Invalid value: "": does not match event.namespace`,
		"reportingComponent: Required value",
		// Upstream also runs the qualified-name check on the empty value.
		`reportingComponent: Invalid value: "": name part must be non-empty`,
		`reportingComponent: Invalid value: "": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
		"reportingInstance: Required value",
		"action: Required value",
		"reason: Required value",
	)
	// The series count wins over count; new-style events default to 1.
	newStyle.Series = nil
	cells := k.Table.Cells(newStyle)
	if cells[8] != int64(1) || !strings.HasSuffix(cells[0].(string), "s") {
		t.Errorf("new-style event cells %v", cells)
	}
	if !k.Strategy.AllowCreateOnUpdate() {
		t.Errorf("events allow create on update upstream")
	}
}
