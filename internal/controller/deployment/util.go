package deployment

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/dump"
)

// Annotations the controller writes (upstream deployment/util).
const (
	RevisionAnnotation        = "deployment.kubernetes.io/revision"
	RevisionHistoryAnnotation = "deployment.kubernetes.io/revision-history"
	DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	MaxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
)

// Condition reasons (upstream deployment/util), as kubectl and users see them.
const (
	ReplicaSetUpdatedReason    = "ReplicaSetUpdated"
	FailedRSCreateReason       = "ReplicaSetCreateError"
	NewReplicaSetReason        = "NewReplicaSetCreated"
	FoundNewRSReason           = "FoundNewReplicaSet"
	NewRSAvailableReason       = "NewReplicaSetAvailable"
	TimedOutReason             = "ProgressDeadlineExceeded"
	PausedDeployReason         = "DeploymentPaused"
	ResumedDeployReason        = "DeploymentResumed"
	MinimumReplicasAvailable   = "MinimumReplicasAvailable"
	MinimumReplicasUnavailable = "MinimumReplicasUnavailable"
)

// maxRevHistoryLengthInChars bounds the revision-history annotation.
const maxRevHistoryLengthInChars = 2000

// ComputeHash is the pod-template-hash of a template: FNV-32a over the
// template's deep-printed value (k8s.io/utils/dump.ForHash, as upstream's
// hashutil.DeepHashObject), then the collision count as 8 little-endian
// bytes, then the decimal sum mapped through rand.SafeEncodeString. For
// the same stored template it equals kube-controller-manager's value, so
// names look like service-env-77bd9f74d4.
func ComputeHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// replicaSetName is "<deployment>-<hash>", the deployment name cut so the
// whole fits a DNS subdomain.
func replicaSetName(deployment, hash string) string {
	maxLen := validation.DNS1123SubdomainMaxLength - 1 - len(hash)
	if len(deployment) > maxLen && maxLen > 0 {
		deployment = deployment[:maxLen]
	}
	return deployment + "-" + hash
}

// equalIgnoreHash compares two pod templates, ignoring pod-template-hash.
func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(b.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return apiequality.Semantic.DeepEqual(a, b)
}

func cloneAndAdd(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func selectorWithHash(sel *metav1.LabelSelector, hash string) *metav1.LabelSelector {
	out := sel.DeepCopy()
	out.MatchLabels = cloneAndAdd(out.MatchLabels, appsv1.DefaultDeploymentUniqueLabelKey, hash)
	return out
}

// --- replica counts -------------------------------------------------------

func specReplicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func dReplicas(d *appsv1.Deployment) int32   { return specReplicas(d.Spec.Replicas) }
func rsReplicas(rs *appsv1.ReplicaSet) int32 { return specReplicas(rs.Spec.Replicas) }

func sumSpec(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += rsReplicas(rs)
		}
	}
	return n
}

func sumStatus(rss []*appsv1.ReplicaSet, f func(*appsv1.ReplicaSetStatus) int32) int32 {
	var n int32
	for _, rs := range rss {
		if rs != nil {
			n += f(&rs.Status)
		}
	}
	return n
}

func actual(s *appsv1.ReplicaSetStatus) int32    { return s.Replicas }
func ready(s *appsv1.ReplicaSetStatus) int32     { return s.ReadyReplicas }
func available(s *appsv1.ReplicaSetStatus) int32 { return s.AvailableReplicas }

// terminating sums status.terminatingReplicas; nil when a ReplicaSet that
// has been observed does not report it (upstream: unknown).
func terminating(rss []*appsv1.ReplicaSet) *int32 {
	var n int32
	for _, rs := range rss {
		switch {
		case rs == nil:
		case rs.Status.ObservedGeneration == 0 && rs.Status.TerminatingReplicas == nil:
		case rs.Status.TerminatingReplicas == nil:
			return nil
		default:
			n += *rs.Status.TerminatingReplicas
		}
	}
	return &n
}

func activeRSs(rss []*appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for _, rs := range rss {
		if rs != nil && rsReplicas(rs) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

// --- rolling update fenceposts -------------------------------------------

func isRollingUpdate(d *appsv1.Deployment) bool {
	return d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType
}

// resolveFenceposts turns maxSurge (rounded up) and maxUnavailable
// (rounded down) into counts; both 0 means maxUnavailable 1.
func resolveFenceposts(maxSurge, maxUnavailable *intstr.IntOrString, desired int32) (int32, int32) {
	zero := intstr.FromInt32(0)
	surge, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxSurge, zero), int(desired), true)
	if err != nil {
		surge = 0 // validation rejects such values
	}
	unavail, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxUnavailable, zero), int(desired), false)
	if err != nil {
		unavail = 0
	}
	if surge == 0 && unavail == 0 {
		unavail = 1
	}
	return int32(surge), int32(unavail)
}

func maxSurge(d *appsv1.Deployment) int32 {
	if !isRollingUpdate(d) || d.Spec.Strategy.RollingUpdate == nil {
		return 0
	}
	s, _ := resolveFenceposts(d.Spec.Strategy.RollingUpdate.MaxSurge, d.Spec.Strategy.RollingUpdate.MaxUnavailable, dReplicas(d))
	return s
}

func maxUnavailable(d *appsv1.Deployment) int32 {
	if !isRollingUpdate(d) || dReplicas(d) == 0 || d.Spec.Strategy.RollingUpdate == nil {
		return 0
	}
	_, u := resolveFenceposts(d.Spec.Strategy.RollingUpdate.MaxSurge, d.Spec.Strategy.RollingUpdate.MaxUnavailable, dReplicas(d))
	return min(u, dReplicas(d))
}

// newRSNewReplicas is the size the new ReplicaSet may grow to now.
func newRSNewReplicas(d *appsv1.Deployment, all []*appsv1.ReplicaSet, newRS *appsv1.ReplicaSet) int32 {
	if !isRollingUpdate(d) {
		return dReplicas(d) // Recreate
	}
	maxTotal := dReplicas(d) + maxSurge(d)
	current := sumSpec(all)
	if current >= maxTotal {
		return rsReplicas(newRS)
	}
	up := min(maxTotal-current, dReplicas(d)-rsReplicas(newRS))
	return rsReplicas(newRS) + up
}

// --- revisions and annotations -------------------------------------------

func revision(m metav1.Object) int64 {
	v, ok := m.GetAnnotations()[RevisionAnnotation]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func maxRevision(rss []*appsv1.ReplicaSet) int64 {
	var m int64
	for _, rs := range rss {
		m = max(m, revision(rs))
	}
	return m
}

// skipCopy lists the Deployment annotations not copied to its ReplicaSets.
var skipCopy = map[string]bool{
	corev1.LastAppliedConfigAnnotation: true,
	RevisionAnnotation:                 true,
	RevisionHistoryAnnotation:          true,
	DesiredReplicasAnnotation:          true,
	MaxReplicasAnnotation:              true,
	appsv1.DeprecatedRollbackTo:        true,
}

// setNewRSAnnotations copies the Deployment's annotations to rs, moves it
// to newRevision (recording the old one in revision-history) and, for a
// new ReplicaSet, sets the replicas annotations. It reports a change.
func setNewRSAnnotations(d *appsv1.Deployment, rs *appsv1.ReplicaSet, newRevision int64, exists bool) bool {
	changed := false
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	for k, v := range d.Annotations {
		if cur, ok := rs.Annotations[k]; skipCopy[k] || (ok && cur == v) {
			continue
		}
		rs.Annotations[k] = v
		changed = true
	}
	oldText, had := rs.Annotations[RevisionAnnotation]
	old, err := strconv.ParseInt(oldText, 10, 64)
	if err != nil {
		if oldText != "" {
			return false
		}
		old = 0
	}
	if old < newRevision {
		rs.Annotations[RevisionAnnotation] = strconv.FormatInt(newRevision, 10)
		changed = true
		if had {
			hist := rs.Annotations[RevisionHistoryAnnotation]
			if hist == "" {
				rs.Annotations[RevisionHistoryAnnotation] = oldText
			} else {
				parts := strings.Split(hist, ",")
				total := len(hist) + len(oldText) + 1
				start := 0
				for total > maxRevHistoryLengthInChars && start < len(parts) {
					total -= len(parts[start]) + 1
					start++
				}
				if total <= maxRevHistoryLengthInChars {
					rs.Annotations[RevisionHistoryAnnotation] = strings.Join(append(parts[start:], oldText), ",")
				}
			}
		}
	}
	if !exists && setReplicasAnnotations(rs, dReplicas(d), dReplicas(d)+maxSurge(d)) {
		changed = true
	}
	return changed
}

func setReplicasAnnotations(rs *appsv1.ReplicaSet, desired, maxReplicas int32) bool {
	if rs.Annotations == nil {
		rs.Annotations = map[string]string{}
	}
	changed := false
	for k, v := range map[string]string{DesiredReplicasAnnotation: strconv.Itoa(int(desired)), MaxReplicasAnnotation: strconv.Itoa(int(maxReplicas))} {
		if rs.Annotations[k] != v {
			rs.Annotations[k] = v
			changed = true
		}
	}
	return changed
}

func replicasAnnotationsNeedUpdate(rs *appsv1.ReplicaSet, desired, maxReplicas int32) bool {
	return rs.Annotations[DesiredReplicasAnnotation] != strconv.Itoa(int(desired)) ||
		rs.Annotations[MaxReplicasAnnotation] != strconv.Itoa(int(maxReplicas))
}

func int32Annotation(rs *appsv1.ReplicaSet, key string) (int32, bool) {
	v, ok := rs.Annotations[key]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > math.MaxInt32 {
		return 0, false
	}
	return int32(n), true
}

// setDeploymentRevision sets the Deployment's revision annotation.
func setDeploymentRevision(d *appsv1.Deployment, rev string) bool {
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	if d.Annotations[RevisionAnnotation] == rev {
		return false
	}
	d.Annotations[RevisionAnnotation] = rev
	return true
}

// isSaturated: rs is the full, fully available new ReplicaSet.
func isSaturated(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	if rs == nil {
		return false
	}
	desired, ok := int32Annotation(rs, DesiredReplicasAnnotation)
	return ok && rsReplicas(rs) == dReplicas(d) && desired == dReplicas(d) && rs.Status.AvailableReplicas == dReplicas(d)
}

// rsProportion is how many of toAdd (which may be negative) rs gets in a
// proportional scale, bounded by what is left (toAdd - added).
func rsProportion(rs *appsv1.ReplicaSet, d *appsv1.Deployment, toAdd, added int32) int32 {
	if rs == nil || rsReplicas(rs) == 0 || toAdd == 0 || toAdd == added {
		return 0
	}
	frac := rsFraction(rs, d)
	allowed := toAdd - added
	if toAdd > 0 {
		return min(frac, allowed)
	}
	return max(frac, allowed)
}

func rsFraction(rs *appsv1.ReplicaSet, d *appsv1.Deployment) int32 {
	if dReplicas(d) == 0 {
		return -rsReplicas(rs)
	}
	maxNow := dReplicas(d) + maxSurge(d)
	before, ok := int32Annotation(rs, MaxReplicasAnnotation)
	if !ok || before == 0 {
		before = d.Status.Replicas
		if before == 0 {
			return 0
		}
	}
	size := float64(rsReplicas(rs)*maxNow) / float64(before)
	return int32(math.Round(size)) - rsReplicas(rs)
}

// --- conditions ------------------------------------------------------------

func newCondition(t appsv1.DeploymentConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) appsv1.DeploymentCondition {
	ts := metav1.NewTime(now)
	return appsv1.DeploymentCondition{Type: t, Status: s, LastUpdateTime: ts, LastTransitionTime: ts, Reason: reason, Message: msg}
}

func getCondition(st appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			c := st.Conditions[i]
			return &c
		}
	}
	return nil
}

// setCondition replaces the condition of c's type unless status and
// reason are unchanged; an unchanged status keeps its transition time.
func setCondition(st *appsv1.DeploymentStatus, c appsv1.DeploymentCondition) {
	cur := getCondition(*st, c.Type)
	if cur != nil && cur.Status == c.Status && cur.Reason == c.Reason {
		return
	}
	if cur != nil && cur.Status == c.Status {
		c.LastTransitionTime = cur.LastTransitionTime
	}
	removeCondition(st, c.Type)
	st.Conditions = append(st.Conditions, c)
}

func removeCondition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) {
	var out []appsv1.DeploymentCondition
	for _, c := range st.Conditions {
		if c.Type != t {
			out = append(out, c)
		}
	}
	st.Conditions = out
}

func hasProgressDeadline(d *appsv1.Deployment) bool {
	return d.Spec.ProgressDeadlineSeconds != nil && *d.Spec.ProgressDeadlineSeconds != math.MaxInt32
}

func hasRevisionHistoryLimit(d *appsv1.Deployment) bool {
	return d.Spec.RevisionHistoryLimit != nil && *d.Spec.RevisionHistoryLimit != math.MaxInt32
}

// deploymentComplete: every replica is updated and available, and the
// status describes the current generation.
func deploymentComplete(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	n := dReplicas(d)
	return st.UpdatedReplicas == n && st.Replicas == n && st.AvailableReplicas == n && st.ObservedGeneration >= d.Generation
}

// deploymentProgressing: the new status moved the rollout forward.
func deploymentProgressing(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	old := d.Status
	return st.UpdatedReplicas > old.UpdatedReplicas ||
		st.Replicas-st.UpdatedReplicas < old.Replicas-old.UpdatedReplicas ||
		st.ReadyReplicas > old.ReadyReplicas ||
		st.AvailableReplicas > old.AvailableReplicas
}

func deploymentTimedOut(d *appsv1.Deployment, st *appsv1.DeploymentStatus, now time.Time) bool {
	if !hasProgressDeadline(d) {
		return false
	}
	c := getCondition(*st, appsv1.DeploymentProgressing)
	if c == nil || c.Reason == NewRSAvailableReason {
		return false
	}
	if c.Reason == TimedOutReason {
		return true
	}
	return c.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second).Before(now)
}

// --- ordering --------------------------------------------------------------

func olderRS(a, b *appsv1.ReplicaSet) bool {
	if a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.Name < b.Name
	}
	return a.CreationTimestamp.Before(&b.CreationTimestamp)
}

// byCreation sorts oldest first.
func byCreation(a, b *appsv1.ReplicaSet) int { return boolCmp(olderRS(a, b), olderRS(b, a)) }

// bySizeNewer: larger first, then newer first.
func bySizeNewer(a, b *appsv1.ReplicaSet) int {
	if rsReplicas(a) != rsReplicas(b) {
		return boolCmp(rsReplicas(a) > rsReplicas(b), rsReplicas(b) > rsReplicas(a))
	}
	return boolCmp(olderRS(b, a), olderRS(a, b))
}

// bySizeOlder: larger first, then older first.
func bySizeOlder(a, b *appsv1.ReplicaSet) int {
	if rsReplicas(a) != rsReplicas(b) {
		return boolCmp(rsReplicas(a) > rsReplicas(b), rsReplicas(b) > rsReplicas(a))
	}
	return byCreation(a, b)
}

// byRevision: lower revision first, then older first.
func byRevision(a, b *appsv1.ReplicaSet) int {
	ra, rb := revision(a), revision(b)
	if ra == rb {
		return byCreation(a, b)
	}
	return boolCmp(ra < rb, rb < ra)
}

func boolCmp(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}
