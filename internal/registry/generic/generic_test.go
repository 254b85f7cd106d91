package generic_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry/generic"
	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

const dns1123SubdomainMsg = `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`

func TestBaseValidate(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		base generic.Base
		meta metav1.ObjectMeta
		want []string
	}{
		{"valid namespaced", generic.Base{Namespaced: true}, metav1.ObjectMeta{Name: "web.v1", Namespace: "default"}, nil},
		{"valid cluster-scoped", generic.Base{}, metav1.ObjectMeta{Name: "node-1"}, nil},
		{"missing name", generic.Base{Namespaced: true}, metav1.ObjectMeta{Namespace: "default"},
			[]string{"metadata.name: Required value: name or generateName is required"}},
		{"missing namespace", generic.Base{Namespaced: true}, metav1.ObjectMeta{Name: "web"},
			[]string{"metadata.namespace: Required value"}},
		{"namespace on cluster-scoped", generic.Base{}, metav1.ObjectMeta{Name: "n", Namespace: "default"},
			[]string{"metadata.namespace: Forbidden: not allowed on this type"}},
		{"subdomain rule", generic.Base{Namespaced: true}, metav1.ObjectMeta{Name: "Web", Namespace: "default"},
			[]string{`metadata.name: Invalid value: "Web": ` + dns1123SubdomainMsg}},
		{"label rule rejects dots", generic.Base{ValidateName: apivalidation.ValidateNamespaceName}, metav1.ObjectMeta{Name: "a.b"},
			[]string{`metadata.name: Invalid value: "a.b": must not contain dots`}},
		{"unqualified finalizer", generic.Base{}, metav1.ObjectMeta{Name: "n", Finalizers: []string{"kubernetes", "foo", "example.com/foo"}},
			[]string{`metadata.finalizers[1]: Invalid value: "foo": name is neither a standard finalizer name nor is it fully qualified`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &corev1.ConfigMap{ObjectMeta: tt.meta}
			generictest.ExpectErrors(t, tt.base.Validate(ctx, obj), tt.want...)
		})
	}
}

func TestBaseUpdate(t *testing.T) {
	ctx := context.Background()
	b := generic.Base{Namespaced: true}
	old := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "u1", ResourceVersion: "5", Generation: 3}}

	// Generation can't be set by clients; an empty resourceVersion (an
	// unconditional update) is not an error here.
	obj := old.DeepCopy()
	obj.Generation = 99
	obj.ResourceVersion = ""
	b.PrepareForUpdate(ctx, obj, old)
	if obj.Generation != 3 {
		t.Errorf("generation = %d, want the stored 3", obj.Generation)
	}
	generictest.ExpectErrors(t, b.ValidateUpdate(ctx, obj, old))

	obj = old.DeepCopy()
	obj.Name = "b"
	obj.UID = "u2"
	generictest.ExpectErrors(t, b.ValidateUpdate(ctx, obj, old),
		`metadata.name: Invalid value: "b": field is immutable`,
		`metadata.uid: Invalid value: "u2": field is immutable`,
	)
}

func TestGeneration(t *testing.T) {
	old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Generation: 4}}
	obj := &corev1.Pod{}
	generic.InitGeneration(obj)
	if obj.Generation != 1 {
		t.Fatalf("InitGeneration: %d", obj.Generation)
	}
	generic.UpdateGeneration(obj, old, false)
	if obj.Generation != 4 {
		t.Errorf("unchanged: %d, want 4", obj.Generation)
	}
	generic.UpdateGeneration(obj, old, true)
	if obj.Generation != 5 {
		t.Errorf("changed: %d, want 5", obj.Generation)
	}
	st := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"}
	generic.ResetStatus(&st)
	if st.Phase != "" || st.PodIP != "" {
		t.Errorf("ResetStatus left %+v", st)
	}
}

func TestAgeAt(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{30 * time.Second, "30s"},
		{5*time.Minute + 3*time.Second, "5m3s"},
		{3 * time.Hour, "3h"},
		{50 * time.Hour, "2d2h"},
		{-10 * time.Second, "<invalid>"},
	}
	for _, tt := range tests {
		if got := generic.AgeAt(now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("AgeAt(-%v) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := generic.AgeAt(time.Time{}, now); got != "<unknown>" {
		t.Errorf("zero time: %q", got)
	}
}

func TestListWithMore(t *testing.T) {
	tests := []struct {
		items []string
		total int
		want  string
	}{
		{nil, 0, ""},
		{[]string{"a", "b"}, 2, "a,b"},
		{[]string{"a", "b", "c"}, 3, "a,b,c"},
		{[]string{"a", "b", "c", "d", "e"}, 5, "a,b,c + 2 more..."},
		{[]string{"a", "b", "c"}, 7, "a,b,c + 4 more..."},
	}
	for _, tt := range tests {
		if got := generic.ListWithMore(tt.items, tt.total, 3); got != tt.want {
			t.Errorf("ListWithMore(%v, %d) = %q, want %q", tt.items, tt.total, got, tt.want)
		}
	}
}

func TestSelectors(t *testing.T) {
	sel := &metav1.LabelSelector{
		MatchLabels:      map[string]string{"app": "web"},
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}},
	}
	if got := generic.SelectorString(sel); got != "app=web,tier in (a,b)" {
		t.Errorf("SelectorString = %q", got)
	}
	if got := generic.SelectorString(nil); got != "" {
		t.Errorf("SelectorString(nil) = %q", got)
	}
	if got := generic.FormatSelector(nil); got != "<none>" {
		t.Errorf("FormatSelector(nil) = %q", got)
	}
	names, images := generic.ContainerCells([]corev1.Container{{Name: "a", Image: "x:1"}, {Name: "b", Image: "y"}})
	if names != "a,b" || images != "x:1,y" {
		t.Errorf("ContainerCells = %q %q", names, images)
	}
}

func TestValidateEndpointIP(t *testing.T) {
	p := field.NewPath("ip")
	tests := []struct {
		ip   string
		want []string
	}{
		{"10.1.2.3", nil},
		{"2001:db8::1", nil},
		{"127.0.0.1", []string{`ip: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)`}},
		{"0.0.0.0", []string{`ip: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)`}},
		{"169.254.1.1", []string{`ip: Invalid value: "169.254.1.1": may not be in the link-local range (169.254.0.0/16, fe80::/10)`}},
		{"224.0.0.5", []string{`ip: Invalid value: "224.0.0.5": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)`}},
		{"nope", []string{`ip: Invalid value: "nope": must be a valid IP address`}},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			generictest.ExpectErrors(t, generic.ValidateEndpointIP(tt.ip, p), tt.want...)
		})
	}
}

func TestDefaultPodSpec(t *testing.T) {
	spec := corev1.PodSpec{
		DeprecatedServiceAccount: "old-sa",
		Containers: []corev1.Container{
			{Name: "a", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{}}}},
			{Name: "b", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"},
			{Name: "c", Image: "localhost:5000/app"},
			{Name: "d", Image: "busybox@sha256:0123"},
			{Name: "e", Image: "busybox:latest", ImagePullPolicy: corev1.PullNever},
		},
		Volumes: []corev1.Volume{{Name: "scratch"}},
	}
	generic.DefaultPodSpec(&spec)

	if spec.RestartPolicy != corev1.RestartPolicyAlways || spec.DNSPolicy != corev1.DNSClusterFirst ||
		spec.SchedulerName != "default-scheduler" || spec.TerminationGracePeriodSeconds == nil ||
		*spec.TerminationGracePeriodSeconds != 30 || spec.SecurityContext == nil {
		t.Errorf("pod spec defaults wrong: %+v", spec)
	}
	if spec.ServiceAccountName != "old-sa" || spec.DeprecatedServiceAccount != "old-sa" {
		t.Errorf("service account not synced: %q", spec.ServiceAccountName)
	}
	wantPull := []corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}
	for i, c := range spec.Containers {
		if c.ImagePullPolicy != wantPull[i] {
			t.Errorf("container %s (%s): imagePullPolicy %s, want %s", c.Name, c.Image, c.ImagePullPolicy, wantPull[i])
		}
		if c.TerminationMessagePath != "/dev/termination-log" || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
			t.Errorf("container %s: termination message defaults %q %q", c.Name, c.TerminationMessagePath, c.TerminationMessagePolicy)
		}
	}
	if p := spec.Containers[0].Ports[0].Protocol; p != corev1.ProtocolTCP {
		t.Errorf("port protocol %q", p)
	}
	rp := spec.Containers[0].ReadinessProbe
	if rp.TimeoutSeconds != 1 || rp.PeriodSeconds != 10 || rp.SuccessThreshold != 1 || rp.FailureThreshold != 3 ||
		rp.HTTPGet.Path != "/" || rp.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("probe defaults: %+v %+v", rp, rp.HTTPGet)
	}
	if spec.Volumes[0].EmptyDir == nil {
		t.Errorf("volume without source should default to emptyDir")
	}
}

func TestValidatePodSpec(t *testing.T) {
	valid := func() corev1.PodSpec {
		s := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}
		generic.DefaultPodSpec(&s)
		return s
	}
	tests := []struct {
		name   string
		mutate func(*corev1.PodSpec)
		want   []string
	}{
		{"valid", func(*corev1.PodSpec) {}, nil},
		{"no containers", func(s *corev1.PodSpec) { s.Containers = nil }, []string{"spec.containers: Required value"}},
		{"container name and image", func(s *corev1.PodSpec) { s.Containers[0].Name = ""; s.Containers[0].Image = "" },
			[]string{"spec.containers[0].image: Required value", "spec.containers[0].name: Required value"}},
		{"duplicate container", func(s *corev1.PodSpec) { s.Containers = append(s.Containers, s.Containers[0]) },
			[]string{`spec.containers[1].name: Duplicate value: "app"`}},
		{"bad restartPolicy", func(s *corev1.PodSpec) { s.RestartPolicy = "Sometimes" },
			[]string{`spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"`}},
		{"bad port", func(s *corev1.PodSpec) {
			s.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 70000, Protocol: "TCP"}, {Protocol: "ICMP", ContainerPort: 1}}
		}, []string{
			`spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive`,
			`spec.containers[0].ports[1].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"`,
		}},
		{"unknown volume mount", func(s *corev1.PodSpec) {
			s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		}, []string{`spec.containers[0].volumeMounts[0].name: Not found: "data"`}},
		{"bad node name", func(s *corev1.PodSpec) { s.NodeName = "Node_1" },
			[]string{`spec.nodeName: Invalid value: "Node_1": ` + dns1123SubdomainMsg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.mutate(&s)
			generictest.ExpectErrors(t, generic.ValidatePodSpec(&s, field.NewPath("spec")), tt.want...)
		})
	}
}

func TestValidatePodTemplate(t *testing.T) {
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}, RestartPolicy: corev1.RestartPolicyNever},
	}
	generic.DefaultPodSpec(&tmpl.Spec)
	errs := generic.ValidatePodTemplate(&tmpl, false, field.NewPath("spec", "template"))
	got := strings.Join(generictest.Errors(errs), "\n")
	for _, want := range []string{
		"spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`",
		`spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}
