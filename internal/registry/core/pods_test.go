package core

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

func newPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"}}},
	}
}

func TestPodCreateDefaults(t *testing.T) {
	k := Pods()
	in := newPod("web")
	in.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5"}
	pod := create(k, in).(*corev1.Pod)

	s := pod.Spec
	if s.RestartPolicy != corev1.RestartPolicyAlways || s.DNSPolicy != corev1.DNSClusterFirst ||
		*s.TerminationGracePeriodSeconds != 30 || s.SchedulerName != "default-scheduler" ||
		s.EnableServiceLinks == nil || !*s.EnableServiceLinks {
		t.Errorf("spec defaults: %+v", s)
	}
	c := s.Containers[0]
	if c.ImagePullPolicy != corev1.PullIfNotPresent || c.TerminationMessagePath != "/dev/termination-log" ||
		c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
		t.Errorf("container defaults: %+v", c)
	}
	if pod.Status.Phase != corev1.PodPending || pod.Status.PodIP != "" {
		t.Errorf("status must start Pending and empty, got %+v", pod.Status)
	}
	if pod.Status.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("qosClass %q", pod.Status.QOSClass)
	}
	if pod.Generation != 1 {
		t.Errorf("generation %d", pod.Generation)
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, pod))
}

func TestPodQOS(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	tests := []struct {
		name string
		res  corev1.ResourceRequirements
		want corev1.PodQOSClass
	}{
		{"none", corev1.ResourceRequirements{}, corev1.PodQOSBestEffort},
		{"limits only (requests defaulted)", corev1.ResourceRequirements{Limits: rl("100m", "64Mi")}, corev1.PodQOSGuaranteed},
		{"requests below limits", corev1.ResourceRequirements{Requests: rl("50m", "64Mi"), Limits: rl("100m", "64Mi")}, corev1.PodQOSBurstable},
		{"cpu request only", corev1.ResourceRequirements{Requests: rl("50m", "")}, corev1.PodQOSBurstable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPod("p")
			p.Spec.Containers[0].Resources = tt.res
			p = create(Pods(), p).(*corev1.Pod)
			if p.Status.QOSClass != tt.want {
				t.Errorf("qos %q, want %q", p.Status.QOSClass, tt.want)
			}
		})
	}
}

func TestPodValidate(t *testing.T) {
	k := Pods()
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   []string
	}{
		{"no containers", func(p *corev1.Pod) { p.Spec.Containers = nil }, []string{"spec.containers: Required value"}},
		{"bad name", func(p *corev1.Pod) { p.Name = "Web_1" },
			[]string{`metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`}},
		{"container without image", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "" },
			[]string{"spec.containers[0].image: Required value"}},
		{"ephemeral on create", func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "busybox"}}}
		}, []string{"spec.ephemeralContainers: Forbidden: cannot be set on create"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPod("web")
			tt.mutate(p)
			p = create(k, p).(*corev1.Pod)
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, p), tt.want...)
		})
	}
}

func TestPodUpdate(t *testing.T) {
	k := Pods()
	old := create(k, newPod("web")).(*corev1.Pod)
	old.ResourceVersion = "7"
	old.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}}

	forbidden := "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
	tests := []struct {
		name    string
		old     func() *corev1.Pod
		mutate  func(*corev1.Pod)
		wantGen int64
		want    []string
	}{
		{"image change bumps generation", old.DeepCopy, func(p *corev1.Pod) { p.Spec.Containers[0].Image = "busybox" }, 2, nil},
		{"labels only", old.DeepCopy, func(p *corev1.Pod) { p.Labels = map[string]string{"a": "b"} }, 1, nil},
		{"command is immutable", old.DeepCopy, func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"sh"} }, 2, []string{forbidden}},
		{"bind once", old.DeepCopy, func(p *corev1.Pod) { p.Spec.NodeName = "node-1" }, 2, nil},
		{"rebind", func() *corev1.Pod { p := old.DeepCopy(); p.Spec.NodeName = "node-1"; return p },
			func(p *corev1.Pod) { p.Spec.NodeName = "node-2" }, 2, []string{forbidden}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.old()
			p := o.DeepCopy()
			p.Status = corev1.PodStatus{} // a client sending a stale/empty status
			tt.mutate(p)
			update(k, p, o)
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "10.244.0.5" {
				t.Errorf("update must keep the stored status, got %+v", p.Status)
			}
			if p.Generation != tt.wantGen {
				t.Errorf("generation %d, want %d", p.Generation, tt.wantGen)
			}
			generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, p, o), tt.want...)
		})
	}
}

func TestPodStatusUpdate(t *testing.T) {
	k := Pods()
	old := create(k, newPod("web")).(*corev1.Pod)
	old.ResourceVersion = "7"
	ss := k.Strategy.(registry.StatusStrategy)

	p := old.DeepCopy()
	p.Spec.Containers[0].Image = "evil"
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}}
	statusUpdate(k, p, old)
	if p.Spec.Containers[0].Image == "evil" {
		t.Errorf("status update changed spec")
	}
	if p.Status.PodIP != "10.244.0.5" || p.Status.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("podIP not synced or qosClass not kept: %+v", p.Status)
	}
	generictest.ExpectErrors(t, ss.ValidateStatusUpdate(ctx, p, old))

	bad := old.DeepCopy()
	bad.Status.PodIP = "10.244.0.300"
	bad.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.300"}}
	statusUpdate(k, bad, old)
	generictest.ExpectErrors(t, ss.ValidateStatusUpdate(ctx, bad, old),
		`status.podIPs[0]: Invalid value: "10.244.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)`)
}

func TestPodTable(t *testing.T) {
	k := Pods()
	expectColumns(t, k, "Name", "Ready", "Status", "Restarts", "Age",
		"IP(wide)", "Node(wide)", "Nominated Node(wide)", "Readiness Gates(wide)")

	running := func() *corev1.Pod {
		p := newPod("web")
		p.CreationTimestamp = threeDaysAgo
		p.Spec.NodeName = "node-1"
		p.Status = corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIPs:     []corev1.PodIP{{IP: "10.244.1.7"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		}
		return p
	}
	threeHoursAgo := metav1.NewTime(time.Now().Add(-3 * time.Hour))
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []interface{}
	}{
		{"running", running(), []interface{}{"web", "1/1", "Running", "0", "3d", "10.244.1.7", "node-1", "<none>", "<none>"}},
		{"pending", func() *corev1.Pod {
			p := newPod("web")
			p.CreationTimestamp = threeDaysAgo
			p.Status.Phase = corev1.PodPending
			return p
		}(), []interface{}{"web", "0/1", "Pending", "0", "3d", "<none>", "<none>", "<none>", "<none>"}},
		{"crashloop", func() *corev1.Pod {
			p := running()
			p.Status.ContainerStatuses[0] = corev1.ContainerStatus{Name: "app", RestartCount: 4,
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: threeHoursAgo}}}
			return p
		}(), []interface{}{"web", "0/1", "CrashLoopBackOff", "4 (3h ago)", "3d", "10.244.1.7", "node-1", "<none>", "<none>"}},
		{"terminating", func() *corev1.Pod {
			p := running()
			p.DeletionTimestamp = &threeHoursAgo
			return p
		}(), []interface{}{"web", "1/1", "Terminating", "0", "3d", "10.244.1.7", "node-1", "<none>", "<none>"}},
		{"completed", func() *corev1.Pod {
			p := running()
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses[0] = corev1.ContainerStatus{Name: "app",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}
			return p
		}(), []interface{}{"web", "0/1", "Completed", "0", "3d", "10.244.1.7", "node-1", "<none>", "<none>"}},
		{"init running", func() *corev1.Pod {
			p := running()
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
			p.Status.Phase = corev1.PodPending
			p.Status.Conditions = nil
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
			p.Status.ContainerStatuses[0] = corev1.ContainerStatus{Name: "app",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}
			return p
		}(), []interface{}{"web", "0/1", "Init:0/1", "0", "3d", "10.244.1.7", "node-1", "<none>", "<none>"}},
		{"readiness gates", func() *corev1.Pod {
			p := running()
			p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}, {ConditionType: "example.com/fw"}}
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: "example.com/lb", Status: corev1.ConditionTrue})
			p.Status.NominatedNodeName = "node-9"
			return p
		}(), []interface{}{"web", "1/1", "Running", "0", "3d", "10.244.1.7", "node-1", "node-9", "1/2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectCells(t, k, tt.pod, tt.want...) })
	}
}

func TestPodFields(t *testing.T) {
	p := newPod("web")
	p.Spec.NodeName = "node-1"
	p.Spec.HostNetwork = true
	p = create(Pods(), p).(*corev1.Pod)
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.7"}}
	expectFields(t, Pods(), p, fields.Set{
		"spec.nodeName":            "node-1",
		"spec.restartPolicy":       "Always",
		"spec.schedulerName":       "default-scheduler",
		"spec.serviceAccountName":  "",
		"spec.hostNetwork":         "true",
		"status.phase":             "Running",
		"status.podIP":             "10.244.1.7",
		"status.podIPs":            "",
		"status.nominatedNodeName": "",
	})
	// CoreDNS's selector must be expressible over these fields.
	sel := fields.ParseSelectorOrDie("status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown")
	if !sel.Matches(Pods().Fields(p)) {
		t.Errorf("running pod should match %s", sel)
	}
	if !strings.Contains(Pods().Table.Columns[5].Description, "IP") {
		t.Errorf("IP column description: %q", Pods().Table.Columns[5].Description)
	}
}

// svcnet's apiserver runs PrepareForCreate/PrepareForUpdate before Default;
// the results must not depend on that order.
func TestPodApiserverOrder(t *testing.T) {
	k := Pods()
	p := newPod("web")
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	k.Strategy.PrepareForCreate(ctx, p)
	k.Strategy.Default(p)
	if p.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("qos %q, want Guaranteed", p.Status.QOSClass)
	}

	// A PUT of the original (undefaulted) manifest changes nothing.
	p.ResourceVersion = "3"
	again := newPod("web")
	again.Spec.Containers[0].Resources.Limits = p.Spec.Containers[0].Resources.Limits.DeepCopy()
	again.ResourceVersion = "3"
	k.Strategy.PrepareForUpdate(ctx, again, p)
	k.Strategy.Default(again)
	if again.Generation != p.Generation {
		t.Errorf("generation bumped by an unchanged manifest: %d -> %d", p.Generation, again.Generation)
	}
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, again, p))
}
