package replicaset

import (
	"math"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/kubectl/pkg/util/podutils"
)

// PodDeletionCostAnnotation ranks pods for scale-down: lower cost goes first.
const PodDeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// isPodActive: not finished and not being deleted (upstream IsPodActive).
func isPodActive(p *corev1.Pod) bool {
	return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil
}

// isPodTerminating: being deleted and not finished.
func isPodTerminating(p *corev1.Pod) bool {
	return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp != nil
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// podFromTemplate builds the pod a ReplicaSet creates: the template's
// labels, annotations, finalizers and spec, generateName "<rs>-", and the
// controller reference.
func podFromTemplate(rs *appsv1.ReplicaSet, ref *metav1.OwnerReference) *corev1.Pod {
	t := &rs.Spec.Template
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    rs.Name + "-",
			Labels:          copyMap(t.Labels),
			Annotations:     copyMap(t.Annotations),
			Finalizers:      append([]string(nil), t.Finalizers...),
			OwnerReferences: []metav1.OwnerReference{*ref},
		},
		Spec: *t.Spec.DeepCopy(),
	}
	return pod
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// podPhaseOrdinal orders phases for deletion: earlier phases go first.
var podPhaseOrdinal = map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}

// rankedPods sorts pods so that the ones to delete first come first
// (upstream ActivePodsWithRanks). rank[i] is the number of active pods of
// the same owner family on pods[i]'s node.
type rankedPods struct {
	pods []*corev1.Pod
	rank []int
	now  metav1.Time
}

func (s rankedPods) Len() int { return len(s.pods) }
func (s rankedPods) Swap(i, j int) {
	s.pods[i], s.pods[j] = s.pods[j], s.pods[i]
	s.rank[i], s.rank[j] = s.rank[j], s.rank[i]
}

func (s rankedPods) Less(i, j int) bool {
	pi, pj := s.pods[i], s.pods[j]
	// 1. Unassigned < assigned.
	if pi.Spec.NodeName != pj.Spec.NodeName && (pi.Spec.NodeName == "" || pj.Spec.NodeName == "") {
		return pi.Spec.NodeName == ""
	}
	// 2. Pending < Unknown < Running.
	if a, b := podPhaseOrdinal[pi.Status.Phase], podPhaseOrdinal[pj.Status.Phase]; a != b {
		return a < b
	}
	// 3. Not ready < ready.
	ri, rj := podutils.IsPodReady(pi), podutils.IsPodReady(pj)
	if ri != rj {
		return !ri
	}
	// 4. Lower deletion cost < higher.
	if ci, cj := deletionCost(pi), deletionCost(pj); ci != cj {
		return ci < cj
	}
	// 5. More pods of the family on the same node first.
	if s.rank[i] != s.rank[j] {
		return s.rank[i] > s.rank[j]
	}
	// 6. Ready for less time first (logarithmic buckets).
	if ri && rj {
		ti, tj := podReadyTime(pi), podReadyTime(pj)
		if !ti.Equal(tj) {
			if s.now.IsZero() || ti.IsZero() || tj.IsZero() {
				return afterOrZero(ti, tj)
			}
			if d := logRankDiff(*ti, *tj, s.now); d != 0 {
				return d < 0
			}
			return pi.UID < pj.UID
		}
	}
	// 7. More restarts first.
	if a, b := maxRestarts(pi), maxRestarts(pj); a != b {
		return a > b
	}
	// 8. Newer first (logarithmic buckets).
	if !pi.CreationTimestamp.Equal(&pj.CreationTimestamp) {
		if s.now.IsZero() || pi.CreationTimestamp.IsZero() || pj.CreationTimestamp.IsZero() {
			return afterOrZero(&pi.CreationTimestamp, &pj.CreationTimestamp)
		}
		if d := logRankDiff(pi.CreationTimestamp, pj.CreationTimestamp, s.now); d != 0 {
			return d < 0
		}
		return pi.UID < pj.UID
	}
	return false
}

// podsToDelete picks diff pods to delete from pods, ranking them against
// related (the pods of all ReplicaSets with the same controller).
func podsToDelete(pods, related []*corev1.Pod, diff int, now time.Time) []*corev1.Pod {
	if diff >= len(pods) {
		return pods
	}
	onNode := map[string]int{}
	for _, p := range related {
		if isPodActive(p) {
			onNode[p.Spec.NodeName]++
		}
	}
	r := rankedPods{pods: append([]*corev1.Pod(nil), pods...), rank: make([]int, len(pods)), now: metav1.NewTime(now)}
	for i, p := range r.pods {
		r.rank[i] = onNode[p.Spec.NodeName]
	}
	sort.Sort(r)
	return r.pods[:diff]
}

func deletionCost(p *corev1.Pod) int32 {
	v, ok := p.Annotations[PodDeletionCostAnnotation]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0 // upstream rejects invalid values at admission; treat as default
	}
	return int32(n)
}

func afterOrZero(t1, t2 *metav1.Time) bool {
	if t1.Time.IsZero() || t2.Time.IsZero() {
		return t1.Time.IsZero()
	}
	return t1.After(t2.Time)
}

// logRankDiff compares the ages of t1 and t2 on a log2 scale, so that
// pods of similar age count as equally old.
func logRankDiff(t1, t2, now metav1.Time) int64 {
	r := func(t metav1.Time) int64 {
		if d := now.Sub(t.Time); d > 0 {
			return int64(math.Log2(float64(d)))
		}
		return -1
	}
	return r(t1) - r(t2)
}

func podReadyTime(p *corev1.Pod) *metav1.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return &c.LastTransitionTime
		}
	}
	return &metav1.Time{}
}

func maxRestarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n = max(n, c.RestartCount)
	}
	return n
}

// calculateStatus derives the ReplicaSet status from its active and
// terminating pods; manageErr sets or clears ReplicaFailure.
func calculateStatus(rs *appsv1.ReplicaSet, active, terminating []*corev1.Pod, manageErr error, now time.Time) appsv1.ReplicaSetStatus {
	st := *rs.Status.DeepCopy()
	tmpl := labels.SelectorFromSet(rs.Spec.Template.Labels)
	var full, ready, avail int32
	for _, p := range active {
		if tmpl.Matches(labels.Set(p.Labels)) {
			full++
		}
		if podutils.IsPodReady(p) {
			ready++
			if podutils.IsPodAvailable(p, rs.Spec.MinReadySeconds, metav1.NewTime(now)) {
				avail++
			}
		}
	}
	failure := condition(rs.Status, appsv1.ReplicaSetReplicaFailure)
	switch {
	case manageErr != nil && failure == nil:
		reason := ""
		if diff := len(active) - int(replicas(rs)); diff < 0 {
			reason = "FailedCreate"
		} else if diff > 0 {
			reason = "FailedDelete"
		}
		st.Conditions = append(st.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now), Reason: reason, Message: manageErr.Error(),
		})
	case manageErr == nil && failure != nil:
		var keep []appsv1.ReplicaSetCondition
		for _, c := range st.Conditions {
			if c.Type != appsv1.ReplicaSetReplicaFailure {
				keep = append(keep, c)
			}
		}
		st.Conditions = keep
	}
	st.Replicas = int32(len(active))
	st.FullyLabeledReplicas = full
	st.ReadyReplicas = ready
	st.AvailableReplicas = avail
	t := int32(len(terminating))
	st.TerminatingReplicas = &t
	return st
}

func condition(st appsv1.ReplicaSetStatus, t appsv1.ReplicaSetConditionType) *appsv1.ReplicaSetCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func replicas(rs *appsv1.ReplicaSet) int32 {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return *rs.Spec.Replicas
}

// nextAvailabilityCheck returns how long until the next ready pod has been
// ready for minReadySeconds, or false if none is waiting for that.
func nextAvailabilityCheck(pods []*corev1.Pod, minReadySeconds int32, now time.Time) (time.Duration, bool) {
	if minReadySeconds <= 0 {
		return 0, false
	}
	var best time.Duration
	found := false
	for _, p := range pods {
		if !podutils.IsPodReady(p) {
			continue
		}
		t := podReadyTime(p)
		if t.IsZero() {
			continue
		}
		d := t.Add(time.Duration(minReadySeconds) * time.Second).Sub(now)
		if d < 0 {
			continue
		}
		if !found || d < best {
			best, found = d, true
		}
	}
	return best, found
}
