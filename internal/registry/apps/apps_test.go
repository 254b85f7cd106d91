package apps

import (
	"context"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic/generictest"
)

var ctx = context.Background()

var threeDaysAgo = metav1.NewTime(time.Now().Add(-72 * time.Hour))

func template() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"}}},
	}
}

func newDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template(),
		},
	}
}

func TestDeploymentDefaults(t *testing.T) {
	k := Deployments()
	d := newDeployment()
	d.Status.Replicas = 5
	k.Strategy.Default(d)
	k.Strategy.PrepareForCreate(ctx, d)

	ru := d.Spec.Strategy.RollingUpdate
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		ru == nil || *ru.MaxSurge != intstr.FromString("25%") || *ru.MaxUnavailable != intstr.FromString("25%") ||
		*d.Spec.RevisionHistoryLimit != 10 || *d.Spec.ProgressDeadlineSeconds != 600 {
		t.Errorf("deployment defaults: %+v", d.Spec)
	}
	ps := d.Spec.Template.Spec
	if ps.RestartPolicy != corev1.RestartPolicyAlways || ps.DNSPolicy != corev1.DNSClusterFirst ||
		ps.Containers[0].ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("template defaults: %+v", ps)
	}
	if d.Status.Replicas != 0 || d.Generation != 1 {
		t.Errorf("create must reset status and start at generation 1: %+v gen %d", d.Status, d.Generation)
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, d))

	// Recreate gets no rollingUpdate.
	r := newDeployment()
	r.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
	k.Strategy.Default(r)
	if r.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("Recreate got rollingUpdate defaults")
	}
}

func TestDeploymentValidate(t *testing.T) {
	k := Deployments()
	tests := []struct {
		name   string
		mutate func(*appsv1.Deployment)
		want   []string
	}{
		// Upstream reports the mismatch too: a nil selector selects nothing.
		{"no selector", func(d *appsv1.Deployment) { d.Spec.Selector = nil }, []string{"spec.selector: Required value",
			"spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"}},
		{"empty selector", func(d *appsv1.Deployment) { d.Spec.Selector = &metav1.LabelSelector{} },
			[]string{"spec.selector: Invalid value: {}: empty selector is invalid for deployment"}},
		{"selector mismatch", func(d *appsv1.Deployment) { d.Spec.Template.Labels = map[string]string{"app": "other"} },
			[]string{"spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`"}},
		{"no containers", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil },
			[]string{"spec.template.spec.containers: Required value"}},
		{"container without name and image", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0] = corev1.Container{} },
			[]string{"spec.template.spec.containers[0].image: Required value", "spec.template.spec.containers[0].name: Required value"}},
		{"bad name", func(d *appsv1.Deployment) { d.Name = "Web" },
			[]string{`metadata.name: Invalid value: "Web": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`}},
		{"negative replicas", func(d *appsv1.Deployment) { n := int32(-1); d.Spec.Replicas = &n },
			[]string{"spec.replicas: Invalid value: -1: must be greater than or equal to 0"}},
		{"zero surge and unavailable", func(d *appsv1.Deployment) {
			zero := intstr.FromInt32(0)
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &zero, MaxUnavailable: &zero}
		}, []string{"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"}},
		{"restartPolicy Never", func(d *appsv1.Deployment) { d.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever },
			[]string{`spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDeployment()
			tt.mutate(d)
			k.Strategy.Default(d)
			k.Strategy.PrepareForCreate(ctx, d)
			generictest.ExpectErrors(t, k.Strategy.Validate(ctx, d), tt.want...)
		})
	}
}

func TestDeploymentUpdate(t *testing.T) {
	k := Deployments()
	old := newDeployment()
	k.Strategy.Default(old)
	k.Strategy.PrepareForCreate(ctx, old)
	old.ResourceVersion = "9"
	old.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, UpdatedReplicas: 1}

	tests := []struct {
		name    string
		mutate  func(*appsv1.Deployment)
		wantGen int64
		want    []string
	}{
		{"labels only", func(d *appsv1.Deployment) { d.Labels = map[string]string{"x": "y"} }, 1, nil},
		{"annotation", func(d *appsv1.Deployment) {
			d.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "now"}
		}, 2, nil},
		{"image", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "busybox" }, 2, nil},
		{"scale", func(d *appsv1.Deployment) { n := int32(3); d.Spec.Replicas = &n }, 2, nil},
		{"selector is immutable", func(d *appsv1.Deployment) {
			d.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "v": "2"}}
			d.Spec.Template.Labels = map[string]string{"app": "web", "v": "2"}
		}, 2, []string{`spec.selector: Invalid value: {"matchLabels":{"app":"web","v":"2"}}: field is immutable`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := old.DeepCopy()
			d.Status = appsv1.DeploymentStatus{}
			tt.mutate(d)
			k.Strategy.Default(d)
			k.Strategy.PrepareForUpdate(ctx, d, old)
			if d.Generation != tt.wantGen {
				t.Errorf("generation %d, want %d", d.Generation, tt.wantGen)
			}
			if d.Status.ReadyReplicas != 1 {
				t.Errorf("update must keep the stored status")
			}
			generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, d, old), tt.want...)
		})
	}

	// /status keeps spec and labels.
	ss := k.Strategy.(registry.StatusStrategy)
	st := old.DeepCopy()
	st.Labels = map[string]string{"x": "y"}
	st.Spec.Replicas = nil
	st.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 2, UpdatedReplicas: 3}
	ss.PrepareForStatusUpdate(ctx, st, old)
	if st.Spec.Replicas == nil || st.Labels != nil {
		t.Errorf("status update changed spec or labels: %+v", st.ObjectMeta)
	}
	generictest.ExpectErrors(t, ss.ValidateStatusUpdate(ctx, st, old),
		"status.updatedReplicas: Invalid value: 3: cannot be greater than status.replicas",
		"status.availableReplicas: Invalid value: 2: cannot be greater than status.replicas",
		"status.availableReplicas: Invalid value: 2: cannot be greater than readyReplicas",
	)
}

func TestDeploymentScaleAndTable(t *testing.T) {
	k := Deployments()
	d := newDeployment()
	k.Strategy.Default(d)
	d.CreationTimestamp = threeDaysAgo
	d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "side", Image: "busybox"})
	k.Scale.Set(d, 3)
	d.Status = appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}

	spec, status, sel := k.Scale.Get(d)
	if spec != 3 || status != 3 || sel != "app=web" {
		t.Errorf("scale = %d %d %q", spec, status, sel)
	}
	var names []string
	for _, c := range k.Table.Columns {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"}) {
		t.Errorf("columns %v", names)
	}
	want := []interface{}{"web", "3/3", int64(3), int64(3), "3d", "app,side", "registry.k8s.io/e2e-test-images/agnhost:2.53,busybox", "app=web"}
	if got := k.Table.Cells(d); !reflect.DeepEqual(got, want) {
		t.Errorf("cells\n got %#v\nwant %#v", got, want)
	}
	d.Status.ReadyReplicas = 1
	if got := k.Table.Cells(d)[1]; got != "1/3" {
		t.Errorf("READY = %v", got)
	}
	if k.Categories[0] != "all" || k.ShortNames[0] != "deploy" || !k.Status {
		t.Errorf("discovery names: %+v", k)
	}
}

func newReplicaSet() *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d4f8b", Namespace: "default"},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template(),
		},
	}
}

func TestReplicaSet(t *testing.T) {
	k := ReplicaSets()
	rs := newReplicaSet()
	rs.Status.Replicas = 4
	k.Strategy.Default(rs)
	k.Strategy.PrepareForCreate(ctx, rs)
	if *rs.Spec.Replicas != 1 || rs.Status.Replicas != 0 || rs.Generation != 1 {
		t.Errorf("create: replicas %d status %+v gen %d", *rs.Spec.Replicas, rs.Status, rs.Generation)
	}
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, rs))

	bad := newReplicaSet()
	bad.Spec.Template.Labels = nil
	k.Strategy.Default(bad)
	generictest.ExpectErrors(t, k.Strategy.Validate(ctx, bad),
		"spec.template.metadata.labels: Invalid value: null: `selector` does not match template `labels`")

	// Scale and generation.
	rs.ResourceVersion = "2"
	up := rs.DeepCopy()
	k.Scale.Set(up, 4)
	k.Strategy.PrepareForUpdate(ctx, up, rs)
	if up.Generation != 2 {
		t.Errorf("scale must bump generation, got %d", up.Generation)
	}
	if spec, _, sel := k.Scale.Get(up); spec != 4 || sel != "app=web" {
		t.Errorf("scale get %d %q", spec, sel)
	}

	// Table and fields.
	up.CreationTimestamp = threeDaysAgo
	up.Status = appsv1.ReplicaSetStatus{Replicas: 4, ReadyReplicas: 2}
	want := []interface{}{"web-5d4f8b", int64(4), int64(4), int64(2), "3d", "app", "registry.k8s.io/e2e-test-images/agnhost:2.53", "app=web"}
	if got := k.Table.Cells(up); !reflect.DeepEqual(got, want) {
		t.Errorf("cells\n got %#v\nwant %#v", got, want)
	}
	if got := k.Fields(up); !reflect.DeepEqual(got, fields.Set{"status.replicas": "4"}) {
		t.Errorf("fields %v", got)
	}

	// /status keeps spec, not labels.
	ss := k.Strategy.(registry.StatusStrategy)
	st := up.DeepCopy()
	st.Labels = map[string]string{"pod-template-hash": "5d4f8b"}
	st.Spec.Replicas = nil
	st.Status = appsv1.ReplicaSetStatus{Replicas: 4, ReadyReplicas: 5, ObservedGeneration: -1}
	ss.PrepareForStatusUpdate(ctx, st, up)
	if st.Spec.Replicas == nil || st.Labels["pod-template-hash"] != "5d4f8b" {
		t.Errorf("status update: spec %v labels %v", st.Spec.Replicas, st.Labels)
	}
	generictest.ExpectErrors(t, ss.ValidateStatusUpdate(ctx, st, up),
		"status.readyReplicas: Invalid value: 5: cannot be greater than status.replicas",
		"status.observedGeneration: Invalid value: -1: must be greater than or equal to 0",
	)
}

// svcnet's apiserver runs PrepareForUpdate before Default: replacing a
// deployment with its original manifest must not bump generation.
func TestDeploymentReplaceSameManifest(t *testing.T) {
	k := Deployments()
	old := newDeployment()
	k.Strategy.PrepareForCreate(ctx, old)
	k.Strategy.Default(old)
	old.ResourceVersion = "5"

	d := newDeployment()
	d.ResourceVersion = "5"
	k.Strategy.PrepareForUpdate(ctx, d, old)
	k.Strategy.Default(d)
	if d.Generation != 1 {
		t.Errorf("generation %d, want 1", d.Generation)
	}
	generictest.ExpectErrors(t, k.Strategy.ValidateUpdate(ctx, d, old))
}
