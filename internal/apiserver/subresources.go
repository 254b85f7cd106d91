package apiserver

import (
	"fmt"
	"net/http"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
)

// The /scale subresource (autoscaling/v1 Scale over the kind's ScaleAccess)
// and pods/binding.

// scaleOf builds the Scale view of a parent object.
func scaleOf(res *resource, obj runtime.Object) *autoscalingv1.Scale {
	spec, status, selector := res.kind.Scale.Get(obj)
	m := objectMeta(obj)
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{
			Name:              m.GetName(),
			Namespace:         m.GetNamespace(),
			UID:               m.GetUID(),
			ResourceVersion:   m.GetResourceVersion(),
			CreationTimestamp: m.GetCreationTimestamp(),
		},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: selector},
	}
}

var scaleGroupKind = autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind()

// handleGetScale serves GET …/scale.
func (s *Server) handleGetScale(rq *request) {
	obj, _, err := s.getObject(rq, rq.info.name)
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeRaw(http.StatusOK, scaleOf(rq.res, obj), shapeOther)
}

// handleUpdateScale serves PUT …/scale.
func (s *Server) handleUpdateScale(rq *request) {
	o, err := rq.parseWriteOptions("update", "")
	if err != nil {
		rq.writeError(err)
		return
	}
	body, err := rq.readBody()
	if err != nil {
		rq.writeError(err)
		return
	}
	info, err := s.inputSerializer(rq.r)
	if err != nil {
		rq.writeError(err)
		return
	}
	scale := &autoscalingv1.Scale{}
	gvk := autoscalingv1.SchemeGroupVersion.WithKind("Scale")
	if _, _, err := info.Serializer.Decode(body, &gvk, scale); err != nil {
		rq.writeError(apierrors.NewBadRequest(err.Error()))
		return
	}
	s.writeScale(rq, o, func(cur runtime.Object) (*autoscalingv1.Scale, error) { return scale, nil })
}

// handlePatchScale serves PATCH …/scale (kubectl scale sends a merge patch).
func (s *Server) handlePatchScale(rq *request) {
	pt, err := rq.patchType()
	if err != nil {
		rq.writeError(err)
		return
	}
	if pt == types.ApplyYAMLPatchType {
		rq.writeError(apierrors.NewBadRequest("server-side apply is not supported on the scale subresource"))
		return
	}
	o, err := rq.parseWriteOptions("patch", pt)
	if err != nil {
		rq.writeError(err)
		return
	}
	body, err := rq.readBody()
	if err != nil {
		rq.writeError(err)
		return
	}
	s.writeScale(rq, o, func(cur runtime.Object) (*autoscalingv1.Scale, error) {
		return s.patchScale(rq, pt, body, o, scaleOf(rq.res, cur))
	})
}

// patchScale applies a patch to a Scale.
func (s *Server) patchScale(rq *request, pt types.PatchType, body []byte, o writeOpts, scale *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
	scaleRes := &resource{
		kind:        &scaleKind,
		gvk:         autoscalingv1.SchemeGroupVersion.WithKind("Scale"),
		jsonEncoder: s.codecs.EncoderForVersion(s.jsonInfo.Serializer, autoscalingv1.SchemeGroupVersion),
	}
	p := &patcher{rq: rq, res: scaleRes, patchType: pt, body: body, opts: o}
	var (
		obj runtime.Object
		err error
	)
	if pt == types.StrategicMergePatchType {
		obj, err = p.strategicMerge(scale)
	} else {
		obj, err = p.jsonPatch(scale)
	}
	if err != nil {
		return nil, err
	}
	return obj.(*autoscalingv1.Scale), nil
}

// scaleKind lets the patcher build Scale objects.
var scaleKind = registry.Kind{
	Resource: autoscalingv1.SchemeGroupVersion.WithResource("scale"),
	Kind:     "Scale",
	New:      func() runtime.Object { return &autoscalingv1.Scale{} },
}

// writeScale runs an update of the parent that sets spec.replicas from the
// Scale produced by next, then answers with the new Scale.
func (s *Server) writeScale(rq *request, o writeOpts, next func(cur runtime.Object) (*autoscalingv1.Scale, error)) {
	res := rq.res
	name := rq.info.name
	result, err := s.updateObject(rq, name, subScale, o, false, func(cur runtime.Object) (runtime.Object, error) {
		scale, err := next(cur)
		if err != nil {
			return nil, err
		}
		if scale.Name != name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", scale.Name, name))
		}
		cm := objectMeta(cur)
		if rv := scale.ResourceVersion; rv != "" && rv != cm.GetResourceVersion() {
			return nil, conflictModified(res.groupResource(), name)
		}
		if scale.Spec.Replicas < 0 {
			return nil, apierrors.NewInvalid(scaleGroupKind, name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "replicas"), scale.Spec.Replicas, "must be greater than or equal to 0"),
			})
		}
		obj := cur.DeepCopyObject()
		res.kind.Scale.Set(obj, scale.Spec.Replicas)
		return res.scaleFieldManager.UpdateNoErrors(cur, obj, o.manager), nil
	})
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeRaw(http.StatusOK, scaleOf(res, result.obj), shapeOther)
}

// handleBinding serves POST pods/<name>/binding: it sets spec.nodeName and
// the PodScheduled condition, as kube-apiserver's BindingREST does (without
// the pod strategy, which forbids changing spec.nodeName).
func (s *Server) handleBinding(rq *request) {
	body, err := rq.readBody()
	if err != nil {
		rq.writeError(err)
		return
	}
	info, err := s.inputSerializer(rq.r)
	if err != nil {
		rq.writeError(err)
		return
	}
	binding := &corev1.Binding{}
	gvk := corev1.SchemeGroupVersion.WithKind("Binding")
	if _, _, err := info.Serializer.Decode(body, &gvk, binding); err != nil {
		rq.writeError(apierrors.NewBadRequest(err.Error()))
		return
	}
	name := rq.info.name
	if binding.Name != "" && binding.Name != name {
		rq.writeError(apierrors.NewBadRequest("name in URL does not match name in Binding object"))
		return
	}
	if binding.Target.Kind != "" && binding.Target.Kind != "Node" {
		rq.writeError(apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), name, field.ErrorList{
			field.NotSupported(field.NewPath("target", "kind"), binding.Target.Kind, []string{"Node", "<empty>"}),
		}))
		return
	}
	if binding.Target.Name == "" {
		rq.writeError(apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), name, field.ErrorList{
			field.Required(field.NewPath("target", "name"), ""),
		}))
		return
	}
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		obj, kv, err := s.getObject(rq, name)
		if err != nil {
			rq.writeError(err)
			return
		}
		pod := obj.(*corev1.Pod)
		if uid := binding.UID; uid != "" && uid != pod.UID {
			rq.writeError(apierrors.NewConflict(rq.res.groupResource(), name, preconditionFailed("UID", string(uid), string(pod.UID))))
			return
		}
		if pod.DeletionTimestamp != nil {
			rq.writeError(apierrors.NewConflict(rq.res.groupResource(), name, fmt.Errorf("pod %s is being deleted, cannot be assigned to a host", name)))
			return
		}
		if pod.Spec.NodeName != "" {
			rq.writeError(apierrors.NewConflict(rq.res.groupResource(), name, fmt.Errorf("pod %v is already assigned to node %q", name, pod.Spec.NodeName)))
			return
		}
		for k, v := range binding.Annotations {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[k] = v
		}
		pod.Spec.NodeName = binding.Target.Name
		setPodScheduled(pod)
		if len(rq.r.URL.Query()["dryRun"]) > 0 {
			rq.writeRaw(http.StatusCreated, &metav1.Status{TypeMeta: statusTypeMeta, Status: metav1.StatusSuccess, Code: http.StatusCreated}, shapeOther)
			return
		}
		_, err = s.putOver(rq.ctx, rq.res, pod, kv)
		if isRetryable(err) {
			continue
		}
		if err != nil {
			rq.writeError(err)
			return
		}
		rq.writeRaw(http.StatusCreated, &metav1.Status{TypeMeta: statusTypeMeta, Status: metav1.StatusSuccess, Code: http.StatusCreated}, shapeOther)
		return
	}
	rq.writeError(conflictModified(rq.res.groupResource(), name))
}

var statusTypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}

func setPodScheduled(pod *corev1.Pod) {
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now()}
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodScheduled {
			pod.Status.Conditions[i] = cond
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, cond)
}
