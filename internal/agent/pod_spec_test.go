package agent

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"plain":         "plain",
		"$(A)":          "1",
		"x$(A)y$(B)z":   "x1ytwoz",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"$$":            "$",
		"cost $5":       "cost $5",
		"$(A":           "$(A",
		"trailing $":    "trailing $",
		"$(A)$(A)$$(B)": "11$(B)",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerArgv(t *testing.T) {
	a := &Agent{cfg: Config{Exe: "/usr/local/bin/svcnet"}}
	for _, tc := range []struct {
		name      string
		image     string
		cmd, args []string
		want      []string
		wantErr   bool
	}{
		{name: "command and args", image: "busybox", cmd: []string{"sh", "-c"}, args: []string{"echo hi"}, want: []string{"sh", "-c", "echo hi"}},
		{name: "agnhost image, args only", image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: []string{"netexec", "--http-port=8080"},
			want: []string{"/usr/local/bin/svcnet", "agnhost", "netexec", "--http-port=8080"}},
		{name: "agnhost image, /agnhost command", image: "registry.k8s.io/e2e-test-images/agnhost:2.53", cmd: []string{"/agnhost", "serve-hostname"},
			want: []string{"/usr/local/bin/svcnet", "agnhost", "serve-hostname"}},
		{name: "pause image", image: "registry.k8s.io/pause:3.10", want: []string{"/usr/local/bin/svcnet", "agnhost", "pause"}},
		{name: "svcnet command", image: "nginx", cmd: []string{"svcnet", "agnhost", "netexec"}, want: []string{"/usr/local/bin/svcnet", "agnhost", "netexec"}},
		{name: "image without command", image: "nginx:1.17.1", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.containerArgv(&v1.Container{Name: "c", Image: tc.image}, tc.cmd, tc.args)
			var ce *configError
			if tc.wantErr {
				if !errors.As(err, &ce) || !strings.Contains(ce.msg, "has no command") || ce.reason != "CreateContainerConfigError" {
					t.Fatalf("err = %v, want a CreateContainerConfigError saying the container has no command", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("argv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{ClusterDNS: []netip.Addr{DefaultClusterDNS}, ClusterDomain: "cluster.local"}}
	pod := func(policy v1.DNSPolicy, hostNet bool, dc *v1.PodDNSConfig) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web"},
			Spec: v1.PodSpec{DNSPolicy: policy, HostNetwork: hostNet, DNSConfig: dc}}
	}
	five := "2"
	for _, tc := range []struct {
		name string
		pod  *v1.Pod
		want string // "" = the node's file (nil)
	}{
		{"ClusterFirst", pod("", false, nil),
			"search web.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"ClusterFirst on hostNetwork is Default", pod(v1.DNSClusterFirst, true, nil), ""},
		{"ClusterFirstWithHostNet", pod(v1.DNSClusterFirstWithHostNet, true, nil),
			"search web.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"},
		{"Default", pod(v1.DNSDefault, false, nil), ""},
		{"None with dnsConfig", pod(v1.DNSNone, false, &v1.PodDNSConfig{Nameservers: []string{"192.0.2.1"}, Searches: []string{"a.example"},
			Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &five}}}),
			"search a.example\nnameserver 192.0.2.1\noptions ndots:2\n"},
		{"ClusterFirst + dnsConfig overrides ndots", pod("", false, &v1.PodDNSConfig{Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &five}, {Name: "edns0"}}}),
			"search web.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(a.resolvConf(tc.pod, host)); got != tc.want {
				t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestHostsFile(t *testing.T) {
	a := &Agent{cfg: Config{ClusterDomain: "cluster.local"}}
	ip := netip.MustParseAddr("10.244.1.5")
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns"},
		Spec: v1.PodSpec{Hostname: "web-0", Subdomain: "web", HostAliases: []v1.HostAlias{{IP: "192.0.2.9", Hostnames: []string{"foo", "bar"}}}}}
	got := string(a.hostsFile(p, ip))
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "10.244.1.5\tweb-0.web.ns.svc.cluster.local\tweb-0\n", "192.0.2.9\tfoo\tbar\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
	p.Spec.HostNetwork = true
	if a.hostsFile(p, ip) != nil {
		t.Error("hostNetwork pods must see the node's /etc/hosts")
	}
}

func TestPodPhase(t *testing.T) {
	running := v1.ContainerStatus{State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
	ok := v1.ContainerStatus{State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0}}}
	failed := v1.ContainerStatus{State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1}}}
	creating := v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	backoff := v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: failed.State}
	for _, tc := range []struct {
		policy   v1.RestartPolicy
		statuses []v1.ContainerStatus
		want     v1.PodPhase
	}{
		{v1.RestartPolicyAlways, []v1.ContainerStatus{creating}, v1.PodPending},
		{v1.RestartPolicyAlways, []v1.ContainerStatus{running, creating}, v1.PodPending},
		{v1.RestartPolicyAlways, []v1.ContainerStatus{running, ok}, v1.PodRunning},
		{v1.RestartPolicyAlways, []v1.ContainerStatus{backoff}, v1.PodRunning},
		{v1.RestartPolicyAlways, []v1.ContainerStatus{ok}, v1.PodRunning},
		{v1.RestartPolicyOnFailure, []v1.ContainerStatus{ok, ok}, v1.PodSucceeded},
		{v1.RestartPolicyOnFailure, []v1.ContainerStatus{ok, failed}, v1.PodRunning},
		{v1.RestartPolicyNever, []v1.ContainerStatus{ok, failed}, v1.PodFailed},
		{v1.RestartPolicyNever, []v1.ContainerStatus{ok}, v1.PodSucceeded},
		{v1.RestartPolicyNever, []v1.ContainerStatus{running, failed}, v1.PodRunning},
	} {
		pod := &v1.Pod{Spec: v1.PodSpec{RestartPolicy: tc.policy}}
		if got := podPhase(pod, tc.statuses, true); got != tc.want {
			t.Errorf("%s %v: phase %s, want %s", tc.policy, tc.statuses, got, tc.want)
		}
	}
	if got := podPhase(&v1.Pod{}, []v1.ContainerStatus{creating}, false); got != v1.PodPending {
		t.Errorf("init not done: %s, want Pending", got)
	}
}
