package endpoints

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func addr(ip, uid string) corev1.EndpointAddress {
	a := corev1.EndpointAddress{IP: ip}
	if uid != "" {
		a.TargetRef = &corev1.ObjectReference{Kind: "Pod", UID: types.UID(uid)}
	}
	return a
}

func port(name string, n int32) corev1.EndpointPort {
	return corev1.EndpointPort{Name: name, Port: n, Protocol: corev1.ProtocolTCP}
}

// render prints subsets one per line: "[ports] ready: ips | notready: ips".
func render(subsets []corev1.EndpointSubset) string {
	var lines []string
	for _, ss := range subsets {
		var ps, rs, ns []string
		for _, p := range ss.Ports {
			ps = append(ps, fmt.Sprintf("%s:%d", p.Name, p.Port))
		}
		for _, a := range ss.Addresses {
			rs = append(rs, a.IP)
		}
		for _, a := range ss.NotReadyAddresses {
			ns = append(ns, a.IP)
		}
		lines = append(lines, fmt.Sprintf("[%s] ready: %s | notready: %s",
			strings.Join(ps, ","), strings.Join(rs, ","), strings.Join(ns, ",")))
	}
	return strings.Join(lines, "\n")
}

func TestRepackSubsets(t *testing.T) {
	tests := []struct {
		name string
		in   []corev1.EndpointSubset
		want string
	}{
		{name: "empty", want: ""},
		{
			name: "one address per port merges into one subset",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.2", "b")}, Ports: []corev1.EndpointPort{port("http", 80)}},
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("http", 80)}},
			},
			want: "[http:80] ready: 10.0.0.1,10.0.0.2 | notready: ",
		},
		{
			name: "addresses offering different ports split",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("portname1", 100)}},
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.2", "b")}, Ports: []corev1.EndpointPort{port("portname2", 101)}},
			},
			want: "[portname1:100] ready: 10.0.0.1 | notready: \n[portname2:101] ready: 10.0.0.2 | notready: ",
		},
		{
			name: "ports with the same addresses merge",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("b", 2)}},
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("a", 1)}},
			},
			want: "[a:1,b:2] ready: 10.0.0.1 | notready: ",
		},
		{
			name: "not ready wins over ready for the same address and port",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("p", 1)}},
				{NotReadyAddresses: []corev1.EndpointAddress{addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("p", 1)}},
			},
			want: "[p:1] ready:  | notready: 10.0.0.1",
		},
		{
			name: "same IP, different pods stay distinct",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a"), addr("10.0.0.1", "b")}, Ports: []corev1.EndpointPort{port("p", 1)}},
			},
			want: "[p:1] ready: 10.0.0.1,10.0.0.1 | notready: ",
		},
		{
			name: "duplicates collapse",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1", "a"), addr("10.0.0.1", "a")}, Ports: []corev1.EndpointPort{port("p", 1), port("p", 1)}},
			},
			want: "[p:1] ready: 10.0.0.1 | notready: ",
		},
		{
			name: "no ports kept (headless)",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.9", "")}},
				{NotReadyAddresses: []corev1.EndpointAddress{addr("10.0.0.3", "")}},
			},
			want: "[] ready: 10.0.0.9 | notready: 10.0.0.3",
		},
		{
			name: "numeric IP order",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.10", ""), addr("10.0.0.9", "")}, Ports: []corev1.EndpointPort{port("p", 1)}},
			},
			want: "[p:1] ready: 10.0.0.9,10.0.0.10 | notready: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RepackSubsets(tt.in)
			if r := render(got); r != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", r, tt.want)
			}
			// Canonical: repacking again changes nothing.
			if again := render(RepackSubsets(got)); again != tt.want {
				t.Errorf("not idempotent:\n%s", again)
			}
		})
	}
}

func TestTruncateEndpoints(t *testing.T) {
	many := func(prefix string, n int) []corev1.EndpointAddress {
		out := make([]corev1.EndpointAddress, n)
		for i := range out {
			out[i] = addr(fmt.Sprintf("%s.%d.%d", prefix, i/250, i%250), "")
		}
		return out
	}
	count := func(ep *corev1.Endpoints) (r, n int) {
		for _, ss := range ep.Subsets {
			r += len(ss.Addresses)
			n += len(ss.NotReadyAddresses)
		}
		return
	}
	tests := []struct {
		name                 string
		subsets              []corev1.EndpointSubset
		truncated            bool
		wantReady, wantNotRd int
	}{
		{"under capacity", []corev1.EndpointSubset{{Addresses: many("10.0", 600), NotReadyAddresses: many("10.1", 400)}}, false, 600, 400},
		{"not ready cut first", []corev1.EndpointSubset{{Addresses: many("10.0", 900), NotReadyAddresses: many("10.1", 300)}}, true, 900, 100},
		{"ready over capacity drops not ready", []corev1.EndpointSubset{
			{Addresses: many("10.0", 800), NotReadyAddresses: many("10.1", 10)},
			{Addresses: many("10.2", 800)},
		}, true, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := &corev1.Endpoints{Subsets: tt.subsets}
			if got := truncateEndpoints(ep); got != tt.truncated {
				t.Errorf("truncated = %v, want %v", got, tt.truncated)
			}
			if r, n := count(ep); r != tt.wantReady || n != tt.wantNotRd {
				t.Errorf("kept %d ready, %d not ready; want %d, %d", r, n, tt.wantReady, tt.wantNotRd)
			}
		})
	}
}
