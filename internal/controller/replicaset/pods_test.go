package replicaset

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

type podOpt func(*corev1.Pod)

func onNode(n string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func phase(ph corev1.PodPhase) podOpt {
	return func(p *corev1.Pod) { p.Status.Phase = ph }
}
func readySince(t time.Time) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(t)})
	}
}
func created(t time.Time) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t) }
}
func cost(c string) podOpt {
	return func(p *corev1.Pod) { p.Annotations = map[string]string{PodDeletionCostAnnotation: c} }
}
func restarts(n int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", RestartCount: n}}
	}
}
func labelled(l map[string]string) podOpt { return func(p *corev1.Pod) { p.Labels = l } }
func deleting() podOpt {
	return func(p *corev1.Pod) { ts := metav1.NewTime(t0); p.DeletionTimestamp = &ts }
}

func mkPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func TestPodsToDeleteRanking(t *testing.T) {
	now := t0
	running := func(extra ...podOpt) []podOpt {
		return append([]podOpt{onNode("n1"), phase(corev1.PodRunning), readySince(now.Add(-time.Hour))}, extra...)
	}
	tests := []struct {
		name    string
		pods    []*corev1.Pod
		related []*corev1.Pod
		diff    int
		want    []string
	}{
		{
			name: "unscheduled before scheduled",
			pods: []*corev1.Pod{mkPod("a", running()...), mkPod("b", phase(corev1.PodPending))},
			diff: 1, want: []string{"b"},
		},
		{
			name: "pending before unknown before running",
			pods: []*corev1.Pod{mkPod("run", running()...), mkPod("unk", onNode("n1"), phase(corev1.PodUnknown)), mkPod("pend", onNode("n1"), phase(corev1.PodPending))},
			diff: 2, want: []string{"pend", "unk"},
		},
		{
			name: "not ready before ready",
			pods: []*corev1.Pod{mkPod("ready", running()...), mkPod("notready", onNode("n1"), phase(corev1.PodRunning))},
			diff: 1, want: []string{"notready"},
		},
		{
			name: "lower deletion cost first",
			pods: []*corev1.Pod{mkPod("hi", running(cost("100"))...), mkPod("lo", running(cost("-5"))...), mkPod("zero", running()...)},
			diff: 2, want: []string{"lo", "zero"},
		},
		{
			name: "crowded node first",
			pods: []*corev1.Pod{
				mkPod("alone", onNode("n2"), phase(corev1.PodRunning), readySince(now.Add(-time.Hour))),
				mkPod("crowd", running()...),
			},
			related: []*corev1.Pod{mkPod("x1", onNode("n1")), mkPod("x2", onNode("n1")), mkPod("x3", onNode("n2"))},
			diff:    1, want: []string{"crowd"},
		},
		{
			name: "recently ready first",
			pods: []*corev1.Pod{
				mkPod("old", onNode("n1"), phase(corev1.PodRunning), readySince(now.Add(-10*time.Hour))),
				mkPod("new", onNode("n1"), phase(corev1.PodRunning), readySince(now.Add(-time.Minute))),
			},
			diff: 1, want: []string{"new"},
		},
		{
			name: "more restarts first",
			pods: []*corev1.Pod{mkPod("calm", running()...), mkPod("crashy", running(restarts(7))...)},
			diff: 1, want: []string{"crashy"},
		},
		{
			name: "newer first",
			pods: []*corev1.Pod{
				mkPod("older", onNode("n1"), phase(corev1.PodRunning), created(now.Add(-48*time.Hour))),
				mkPod("newer", onNode("n1"), phase(corev1.PodRunning), created(now.Add(-time.Minute))),
			},
			diff: 1, want: []string{"newer"},
		},
		{
			name: "diff covers all",
			pods: []*corev1.Pod{mkPod("a"), mkPod("b")},
			diff: 3, want: []string{"a", "b"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := names(podsToDelete(tc.pods, tc.related, tc.diff, now))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("podsToDelete = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCalculateStatus(t *testing.T) {
	three := int32(3)
	rs := func(minReady int32, conds ...appsv1.ReplicaSetCondition) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{
			Spec: appsv1.ReplicaSetSpec{Replicas: &three, MinReadySeconds: minReady,
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a", "pod-template-hash": "h"}}}},
			Status: appsv1.ReplicaSetStatus{Conditions: conds},
		}
	}
	full := map[string]string{"app": "a", "pod-template-hash": "h"}
	partial := map[string]string{"app": "a"}
	tests := []struct {
		name                         string
		rs                           *appsv1.ReplicaSet
		active, terminating          []*corev1.Pod
		err                          error
		replicas, full, ready, avail int32
		terminatingN                 int32
		failureReason                string
	}{
		{
			name:        "counts",
			rs:          rs(0),
			active:      []*corev1.Pod{mkPod("a", labelled(full), readySince(t0.Add(-time.Second))), mkPod("b", labelled(partial), readySince(t0)), mkPod("c", labelled(full))},
			terminating: []*corev1.Pod{mkPod("d", deleting())},
			replicas:    3, full: 2, ready: 2, avail: 2, terminatingN: 1,
		},
		{
			name:     "minReadySeconds holds back availability",
			rs:       rs(10),
			active:   []*corev1.Pod{mkPod("a", labelled(full), readySince(t0.Add(-time.Minute))), mkPod("b", labelled(full), readySince(t0.Add(-time.Second)))},
			replicas: 2, full: 2, ready: 2, avail: 1,
		},
		{
			name:     "failed create",
			rs:       rs(0),
			active:   []*corev1.Pod{mkPod("a", labelled(full))},
			err:      errors.New("quota"),
			replicas: 1, full: 1, failureReason: "FailedCreate",
		},
		{
			name:     "clean sync clears failure",
			rs:       rs(0, appsv1.ReplicaSetCondition{Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue, Reason: "FailedCreate"}),
			active:   []*corev1.Pod{mkPod("a", labelled(full)), mkPod("b", labelled(full)), mkPod("c", labelled(full))},
			replicas: 3, full: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := calculateStatus(tc.rs, tc.active, tc.terminating, tc.err, t0)
			if st.Replicas != tc.replicas || st.FullyLabeledReplicas != tc.full || st.ReadyReplicas != tc.ready || st.AvailableReplicas != tc.avail {
				t.Fatalf("status = replicas %d full %d ready %d avail %d, want %d %d %d %d",
					st.Replicas, st.FullyLabeledReplicas, st.ReadyReplicas, st.AvailableReplicas, tc.replicas, tc.full, tc.ready, tc.avail)
			}
			if st.TerminatingReplicas == nil || *st.TerminatingReplicas != tc.terminatingN {
				t.Fatalf("terminatingReplicas = %v, want %d", st.TerminatingReplicas, tc.terminatingN)
			}
			c := condition(st, appsv1.ReplicaSetReplicaFailure)
			switch {
			case tc.failureReason == "" && c != nil:
				t.Fatalf("unexpected ReplicaFailure %+v", c)
			case tc.failureReason != "" && (c == nil || c.Reason != tc.failureReason):
				t.Fatalf("ReplicaFailure = %+v, want reason %s", c, tc.failureReason)
			}
		})
	}
}

func TestExpectations(t *testing.T) {
	e := newExpectations()
	now := t0
	e.now = func() time.Time { return now }
	const k = "ns/rs"
	steps := []struct {
		do   func()
		want bool
	}{
		{func() {}, true},
		{func() { e.expectCreations(k, 2) }, false},
		{func() { e.creationObserved(k) }, false},
		{func() { e.creationObserved(k) }, true},
		{func() { e.expectDeletions(k, []string{"ns/a", "ns/b"}) }, false},
		{func() { e.deletionObserved(k, "ns/a"); e.deletionObserved(k, "ns/a") }, false}, // counted once
		{func() { e.deletionObserved(k, "ns/other") }, false},                            // not ours
		{func() { e.deletionObserved(k, "ns/b") }, true},
		{func() { e.expectCreations(k, 1); now = now.Add(ExpectationsTimeout + time.Second) }, true}, // expired
		{func() { e.expectCreations(k, 1); e.forget(k) }, true},
	}
	for i, s := range steps {
		s.do()
		if got := e.satisfied(k); got != s.want {
			a, d := e.pending(k)
			t.Fatalf("step %d: satisfied = %v, want %v (pending adds %d dels %d)", i, got, s.want, a, d)
		}
	}
}

func TestSlowStartBatch(t *testing.T) {
	tests := []struct {
		name      string
		count     int
		failAfter int32 // calls after which fn fails; -1 never
		wantOK    int
		wantCalls int32
	}{
		{"all succeed", 10, -1, 10, 10},
		{"first fails", 10, 0, 0, 1},
		{"fails in third batch", 10, 3, 3, 7}, // batches 1,2,4: the 4-batch runs fully
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			ok, err := slowStartBatch(tc.count, 1, func() error {
				if n := calls.Add(1); tc.failAfter >= 0 && n > tc.failAfter {
					return errors.New("boom")
				}
				return nil
			})
			if ok != tc.wantOK || calls.Load() != tc.wantCalls || (err == nil) != (tc.failAfter < 0) {
				t.Fatalf("ok=%d calls=%d err=%v, want ok=%d calls=%d", ok, calls.Load(), err, tc.wantOK, tc.wantCalls)
			}
		})
	}
}
