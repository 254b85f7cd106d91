package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/svcnet/svcnet/internal/agent/runtime"
)

// writeStatus computes the pod's status from the runtime and the probes and
// writes it when it differs from what the API has.
func (a *Agent) writeStatus(ctx context.Context, pod *v1.Pod, rec *podRecord, ip netip.Addr, initDone bool) error {
	status := a.computeStatus(pod, rec, ip, initDone)
	if apiequality.Semantic.DeepEqual(&pod.Status, status) {
		return nil
	}
	p := pod.DeepCopy()
	p.Status = *status
	_, err := a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// The informer brings the newer object (or the deletion) and
		// another sync.
		return nil
	}
	return err
}

// computeStatus is the kubelet's status logic for process pods.
func (a *Agent) computeStatus(pod *v1.Pod, rec *podRecord, ip netip.Addr, initDone bool) *v1.PodStatus {
	old := &pod.Status
	s := old.DeepCopy()
	s.HostIP = a.cfg.NodeIP.String()
	s.HostIPs = []v1.HostIP{{IP: s.HostIP}}
	if ip.IsValid() {
		s.PodIP = ip.String()
		s.PodIPs = []v1.PodIP{{IP: s.PodIP}}
	}
	if s.StartTime == nil {
		now := metav1.Now()
		s.StartTime = &now
	}
	s.QOSClass = qosClass(pod)

	uid := string(pod.UID)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	containerStatus := func(c *v1.Container) v1.ContainerStatus {
		cs := v1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "svcnet://" + c.Image}
		st, ok := a.rt.ContainerStatus(uid, c.Name)
		if w, waiting := rec.waiting[c.Name]; waiting || !ok {
			if !waiting {
				w = v1.ContainerStateWaiting{Reason: "ContainerCreating"}
				if !initDone {
					w.Reason = "PodInitializing"
				}
			}
			cs.State.Waiting = &w
			if ok {
				cs.RestartCount = int32(st.Attempt)
				cs.LastTerminationState = terminatedState(uid, st)
			}
			return cs
		}
		cs.RestartCount = int32(st.Attempt)
		cs.ContainerID = containerID(uid, c.Name, st.Attempt)
		switch st.State {
		case runtime.StateRunning:
			cs.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}
			cp := rec.probes[c.Name]
			started := cp == nil || cp.attempt != st.Attempt || cp.started()
			if cp != nil && cp.attempt == st.Attempt {
				cs.Ready = cp.ready()
			} else {
				cs.Ready = c.ReadinessProbe == nil && c.StartupProbe == nil
			}
			cs.Started = &started
			if prev, ok := rec.last[c.Name]; ok && prev.State == runtime.StateExited {
				cs.LastTerminationState = terminatedState(uid, prev)
			}
		default:
			cs.State = terminatedState(uid, st)
			cs.Started = new(bool)
			if prev, ok := rec.last[c.Name]; ok && prev.Attempt != st.Attempt {
				cs.LastTerminationState = terminatedState(uid, prev)
			}
		}
		return cs
	}
	s.InitContainerStatuses = nil
	for i := range pod.Spec.InitContainers {
		s.InitContainerStatuses = append(s.InitContainerStatuses, containerStatus(&pod.Spec.InitContainers[i]))
	}
	s.ContainerStatuses = nil
	for i := range pod.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, containerStatus(&pod.Spec.Containers[i]))
	}
	s.Phase = podPhase(pod, s.ContainerStatuses, initDone)

	allReady := len(s.ContainerStatuses) > 0
	for _, cs := range s.ContainerStatuses {
		allReady = allReady && cs.Ready
	}
	if s.Phase == v1.PodSucceeded {
		allReady = false
	}
	setCondition(s, old, v1.PodReadyToStartContainers, true, "", "")
	setCondition(s, old, v1.PodInitialized, initDone, "ContainersNotInitialized",
		"containers with incomplete status: [init]")
	notReady := notReadyMessage(s.ContainerStatuses)
	setCondition(s, old, v1.ContainersReady, allReady, "ContainersNotReady", notReady)
	setCondition(s, old, v1.PodReady, allReady, "ContainersNotReady", notReady)
	setCondition(s, old, v1.PodScheduled, true, "", "")
	return s
}

func containerID(uid, name string, attempt int) string {
	return fmt.Sprintf("svcnet://%s/%s/%d", uid, name, attempt)
}

func terminatedState(uid string, st runtime.ContainerStatus) v1.ContainerState {
	if st.State != runtime.StateExited {
		return v1.ContainerState{}
	}
	reason := st.Reason
	if reason == "" {
		reason = "Error"
		if st.ExitCode == 0 && st.Signal == 0 {
			reason = "Completed"
		}
	}
	return v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
		ExitCode:    int32(st.ExitCode),
		Signal:      int32(st.Signal),
		Reason:      reason,
		Message:     st.Message,
		StartedAt:   metav1.NewTime(st.StartedAt),
		FinishedAt:  metav1.NewTime(st.FinishedAt),
		ContainerID: containerID(uid, st.Name, st.Attempt),
	}}
}

// podPhase follows the kubelet's getPhase for the containers' states.
func podPhase(pod *v1.Pod, statuses []v1.ContainerStatus, initDone bool) v1.PodPhase {
	if !initDone {
		if pod.Spec.RestartPolicy == v1.RestartPolicyNever {
			for _, ic := range pod.Status.InitContainerStatuses {
				if t := ic.State.Terminated; t != nil && t.ExitCode != 0 {
					return v1.PodFailed
				}
			}
		}
		return v1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for _, cs := range statuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil:
			if cs.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		}
	}
	switch {
	case waiting > 0:
		return v1.PodPending
	case running > 0:
		return v1.PodRunning
	case stopped == len(statuses) && stopped > 0:
		switch pod.Spec.RestartPolicy {
		case v1.RestartPolicyAlways:
			return v1.PodRunning
		case v1.RestartPolicyOnFailure:
			if succeeded == stopped {
				return v1.PodSucceeded
			}
			return v1.PodRunning
		}
		if succeeded == stopped {
			return v1.PodSucceeded
		}
		return v1.PodFailed
	}
	return v1.PodPending
}

func notReadyMessage(statuses []v1.ContainerStatus) string {
	var names []string
	for _, cs := range statuses {
		if !cs.Ready {
			names = append(names, cs.Name)
		}
	}
	return fmt.Sprintf("containers with unready status: %v", names)
}

// setCondition sets condition t to status, keeping the transition time of
// an unchanged condition from old.
func setCondition(s, old *v1.PodStatus, t v1.PodConditionType, ok bool, reason, msg string) {
	c := v1.PodCondition{Type: t, Status: v1.ConditionTrue}
	if !ok {
		c.Status, c.Reason, c.Message = v1.ConditionFalse, reason, msg
	}
	c.LastTransitionTime = metav1.Now()
	for _, oc := range old.Conditions {
		if oc.Type == t && oc.Status == c.Status {
			c.LastTransitionTime = oc.LastTransitionTime
			if t == v1.PodScheduled {
				c = oc
			}
		}
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			s.Conditions[i] = c
			return
		}
	}
	s.Conditions = append(s.Conditions, c)
}

// qosClass is the pod's QoS class from its requests and limits.
func qosClass(pod *v1.Pod) v1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range pod.Spec.Containers {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
			l, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if q, ok := c.Resources.Requests[r]; ok && q.Cmp(l) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return v1.PodQOSBestEffort
	case guaranteed:
		return v1.PodQOSGuaranteed
	}
	return v1.PodQOSBurstable
}

// execCapture runs cmd in a container for an exec probe and returns its
// exit code and combined output.
func (a *Agent) execCapture(ctx context.Context, uid, container string, cmd []string) (int, []byte, error) {
	var out bytes.Buffer
	err := a.rt.Exec(ctx, uid, container, cmd, nil, &out, &out, false, nil)
	var ee utilexec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), out.Bytes(), nil
	}
	if err != nil {
		return -1, out.Bytes(), err
	}
	return 0, out.Bytes(), nil
}
