package deployment

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestComputeHash(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "service-env"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "docker.io/library/nginx:1.23.1"}}},
	}
	one, two := int32(1), int32(2)
	h := ComputeHash(tmpl, nil)
	if len(h) == 0 || len(h) > 10 {
		t.Fatalf("hash %q: want 1-10 characters (the decimal FNV sum)", h)
	}
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	for _, r := range h {
		if !strings.ContainsRune(alphabet, r) {
			t.Fatalf("hash %q has %q outside the SafeEncodeString alphabet", h, r)
		}
	}
	if ComputeHash(tmpl.DeepCopy(), nil) != h {
		t.Fatal("hash not deterministic")
	}
	if a, b := ComputeHash(tmpl, &one), ComputeHash(tmpl, &two); a == b || a == h {
		t.Fatalf("collisionCount does not change the hash: %s %s %s", h, a, b)
	}
	other := tmpl.DeepCopy()
	other.Spec.Containers[0].Image = "nginx:1.25"
	if ComputeHash(other, nil) == h {
		t.Fatal("template change does not change the hash")
	}
}

func TestReplicaSetName(t *testing.T) {
	long := strings.Repeat("a", 260)
	tests := []struct{ d, hash, want string }{
		{"service-env", "77bd9f74d4", "service-env-77bd9f74d4"},
		{long, "77bd9f74d4", long[:253-11] + "-77bd9f74d4"},
	}
	for _, tc := range tests {
		if got := replicaSetName(tc.d, tc.hash); got != tc.want || len(got) > 253 {
			t.Errorf("replicaSetName(%d chars) = %d chars %q…", len(tc.d), len(got), got[:20])
		}
	}
}

func TestResolveFenceposts(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt(n); return &v }
	tests := []struct {
		surge, unavail *intstr.IntOrString
		desired        int32
		wantS, wantU   int32
	}{
		{pct("25%"), pct("25%"), 3, 1, 0}, // surge rounds up, unavailable down
		{pct("25%"), pct("25%"), 4, 1, 1},
		{pct("25%"), pct("25%"), 10, 3, 2},
		{num(0), num(0), 5, 0, 1}, // both 0: one unavailable
		{num(2), num(1), 5, 2, 1},
		{pct("100%"), pct("0%"), 2, 2, 0},
	}
	for _, tc := range tests {
		s, u := resolveFenceposts(tc.surge, tc.unavail, tc.desired)
		if s != tc.wantS || u != tc.wantU {
			t.Errorf("resolveFenceposts(%v, %v, %d) = %d, %d; want %d, %d", tc.surge, tc.unavail, tc.desired, s, u, tc.wantS, tc.wantU)
		}
	}
}

func rsOf(name string, spec int32, annotations map[string]string) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}, Spec: appsv1.ReplicaSetSpec{Replicas: &spec}}
}

func rolling(replicas int32, surge, unavail int) *appsv1.Deployment {
	s, u := intstr.FromInt(surge), intstr.FromInt(unavail)
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &s, MaxUnavailable: &u}},
	}}
}

func TestNewRSNewReplicas(t *testing.T) {
	tests := []struct {
		name      string
		d         *appsv1.Deployment
		old, newN int32
		want      int32
	}{
		{"fresh deployment", rolling(3, 1, 0), 0, 0, 3},
		{"surge room of one", rolling(3, 1, 0), 3, 0, 1},
		{"no room", rolling(3, 1, 0), 3, 1, 1},
		{"old shrank, grow", rolling(3, 1, 0), 2, 1, 2},
		{"capped at replicas", rolling(3, 5, 0), 1, 2, 3},
		{"no surge", rolling(4, 0, 1), 4, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			newRS := rsOf("new", tc.newN, nil)
			all := []*appsv1.ReplicaSet{rsOf("old", tc.old, nil), newRS}
			if got := newRSNewReplicas(tc.d, all, newRS); got != tc.want {
				t.Fatalf("newRSNewReplicas = %d, want %d", got, tc.want)
			}
		})
	}
	recreate := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(4)), Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}}}
	if got := newRSNewReplicas(recreate, nil, rsOf("new", 0, nil)); got != 4 {
		t.Fatalf("Recreate newRSNewReplicas = %d, want 4", got)
	}
}

func ptr[T any](v T) *T { return &v }

func TestRSProportion(t *testing.T) {
	// A 10-replica deployment (max 13 with surge 3) mid-rollout: old 8,
	// new 5; scaled to 20 (max 25): the old one gets 8*25/13 ≈ 15.
	d := rolling(20, 5, 0)
	old := rsOf("old", 8, map[string]string{MaxReplicasAnnotation: "13"})
	if got := rsProportion(old, d, 12, 0); got != 7 {
		t.Fatalf("proportion = %d, want 7", got)
	}
	// Never more than what is left to add.
	if got := rsProportion(old, d, 12, 10); got != 2 {
		t.Fatalf("proportion capped = %d, want 2", got)
	}
	// Scaling to zero takes everything away.
	if got := rsProportion(old, rolling(0, 0, 1), -8, 0); got != -8 {
		t.Fatalf("proportion to zero = %d, want -8", got)
	}
}

func TestSetNewRSAnnotations(t *testing.T) {
	d := rolling(3, 1, 0)
	d.Annotations = map[string]string{"team": "a", corev1.LastAppliedConfigAnnotation: "{}", RevisionAnnotation: "9"}
	rs := rsOf("x", 3, map[string]string{RevisionAnnotation: "1"})

	if !setNewRSAnnotations(d, rs, 3, true) {
		t.Fatal("no change reported")
	}
	want := map[string]string{"team": "a", RevisionAnnotation: "3", RevisionHistoryAnnotation: "1"}
	for k, v := range want {
		if rs.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, rs.Annotations[k], v)
		}
	}
	if _, ok := rs.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		t.Error("last-applied-configuration copied to the ReplicaSet")
	}
	// A rollback brings it to 5: history 1,3.
	setNewRSAnnotations(d, rs, 5, true)
	if got := rs.Annotations[RevisionHistoryAnnotation]; got != "1,3" {
		t.Errorf("revision-history = %q, want 1,3", got)
	}
	if setNewRSAnnotations(d, rs, 5, true) {
		t.Error("second identical call reported a change")
	}
	// A new ReplicaSet also gets desired/max replicas.
	fresh := rsOf("y", 0, nil)
	setNewRSAnnotations(d, fresh, 1, false)
	if fresh.Annotations[DesiredReplicasAnnotation] != "3" || fresh.Annotations[MaxReplicasAnnotation] != "4" {
		t.Errorf("replicas annotations = %v", fresh.Annotations)
	}
}

func TestCalculateStatusConditions(t *testing.T) {
	c := &Controller{now: nowFixed}
	d := rolling(3, 1, 0)
	d.Generation = 4
	avail := func(n int32) *appsv1.ReplicaSet {
		rs := rsOf("new", 3, nil)
		rs.Status = appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 3, AvailableReplicas: n}
		return rs
	}
	for _, tc := range []struct {
		available int32
		want      corev1.ConditionStatus
		reason    string
	}{
		{3, corev1.ConditionTrue, MinimumReplicasAvailable},
		{2, corev1.ConditionFalse, MinimumReplicasUnavailable},
	} {
		rs := avail(tc.available)
		st := c.calculateStatus(d, []*appsv1.ReplicaSet{rs}, rs)
		cond := getCondition(st, appsv1.DeploymentAvailable)
		if cond == nil || cond.Status != tc.want || cond.Reason != tc.reason {
			t.Errorf("available %d: Available = %+v, want %s/%s", tc.available, cond, tc.want, tc.reason)
		}
		if st.ObservedGeneration != 4 || st.UpdatedReplicas != 3 || st.UnavailableReplicas != 3-tc.available {
			t.Errorf("status = %+v", st)
		}
	}
}

func nowFixed() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
