package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcnet/svcnet/internal/storage"
)

// Deletion follows kube-apiserver's store:
//
//   - An object with finalizers is not removed: it gets deletionTimestamp
//     (and deletionGracePeriodSeconds 0) and is removed by the update that
//     clears its last finalizer.
//   - A Pod bound to a node is deleted gracefully: deletionTimestamp = now +
//     grace period; the node agent removes it with a delete of grace 0. Pods
//     not bound to a node, or finished, go at once.
//   - A Namespace turns Terminating; the namespace cleaner (namespace_cleanup.go)
//     deletes its content and then the namespace.
//   - Removing an object deletes, in the same transaction, its allocation keys
//     (Allocator.Release) and, for a Service, its Endpoints and EndpointSlices.
//
// propagationPolicy is accepted; Foreground and Orphan behave as Background
// (there is no garbage collector in this package).

// immortalNamespaces may not be deleted (kube-apiserver's NamespaceLifecycle).
var immortalNamespaces = map[string]bool{
	metav1.NamespaceDefault: true,
	metav1.NamespaceSystem:  true,
	metav1.NamespacePublic:  true,
}

// errRetry reports that the object changed under a delete; the caller
// re-reads and tries again.
var errRetry = errors.New("apiserver: object changed, retry")

func isRetryable(err error) bool { return errors.Is(err, errRetry) }

// handleDelete serves DELETE of one object.
func (s *Server) handleDelete(rq *request) {
	opts, err := rq.deleteOptions()
	if err != nil {
		rq.writeError(err)
		return
	}
	out, deleted, err := s.deleteObject(rq.ctx, rq.res, rq.namespace, rq.info.name, opts)
	if err != nil {
		rq.writeError(err)
		return
	}
	if deleted {
		rq.writeRaw(http.StatusOK, deletedStatus(rq.res, out), shapeOther)
		return
	}
	code := http.StatusOK
	//lint:ignore SA1019 deprecated, but kube-apiserver still answers 202 for it.
	if opts.OrphanDependents != nil && !*opts.OrphanDependents {
		code = http.StatusAccepted
	}
	rq.writeObject(code, out, shapeObject)
}

// deletedStatus is the Success Status kube-apiserver returns for a removed object.
func deletedStatus(res *resource, obj runtime.Object) *metav1.Status {
	m := objectMeta(obj)
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusSuccess,
		Details: &metav1.StatusDetails{
			Name:  m.GetName(),
			Group: res.gvr.Group,
			Kind:  res.gvr.Resource,
			UID:   m.GetUID(),
		},
	}
}

// deleteOptions reads DeleteOptions from the body, or from the query when
// the body is empty.
func (rq *request) deleteOptions() (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	body, err := rq.readBody()
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		info, err := rq.s.inputSerializer(rq.r)
		if err != nil {
			return nil, err
		}
		sinfo, ok := runtime.SerializerInfoForMediaType(metainternalversionscheme.Codecs.SupportedMediaTypes(), info.MediaType)
		if !ok {
			return nil, unsupportedMediaType(rq.s.codecs, info.MediaType)
		}
		defaultGVK := metav1.SchemeGroupVersion.WithKind("DeleteOptions")
		dec := metainternalversionscheme.Codecs.DecoderToVersion(sinfo.Serializer, defaultGVK.GroupVersion())
		obj, gvk, err := dec.Decode(body, &defaultGVK, opts)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		if obj != opts {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decoded object of type %T (%v) is not DeleteOptions", obj, gvk))
		}
	} else if err := metainternalversionscheme.ParameterCodec.DecodeParameters(rq.r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if errs := metav1validation.ValidateDeleteOptions(opts); len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "DeleteOptions"}, "", errs)
	}
	return opts, nil
}

// deleteObject deletes one object. It returns the object and whether it is
// gone from storage (false: it is now being deleted, waiting for finalizers,
// a pod's grace period or a namespace's cleanup).
func (s *Server) deleteObject(ctx context.Context, res *resource, ns, name string, opts *metav1.DeleteOptions) (runtime.Object, bool, error) {
	dryRun := len(opts.DryRun) > 0
	key := res.key(ns, name)
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		kv, err := s.store.Get(ctx, key)
		if storage.IsNotFound(err) {
			return nil, false, apierrors.NewNotFound(res.groupResource(), name)
		}
		if err != nil {
			return nil, false, err
		}
		cur, err := s.decodeKV(res, kv)
		if err != nil {
			return nil, false, err
		}
		if err := checkDeletePreconditions(res, cur, opts.Preconditions); err != nil {
			return nil, false, err
		}
		if isCoreNamespaces(res) {
			if immortalNamespaces[name] {
				return nil, false, apierrors.NewForbidden(res.groupResource(), name, errors.New("this namespace may not be deleted"))
			}
			out, err := s.markNamespaceTerminating(ctx, res, cur, kv, dryRun)
			if isRetryable(err) {
				continue
			}
			return out, false, err
		}

		upd, keep, changed := planDelete(res, cur, opts)
		if !keep {
			out, err := s.removeFromStorage(ctx, res, upd, kv, dryRun)
			if isRetryable(err) {
				continue
			}
			return out, err == nil, err
		}
		if !changed || dryRun {
			return upd, false, nil
		}
		out, err := s.putOver(ctx, res, upd, kv)
		if isRetryable(err) {
			continue
		}
		return out, false, err
	}
	return nil, false, conflictModified(res.groupResource(), name)
}

func checkDeletePreconditions(res *resource, cur runtime.Object, p *metav1.Preconditions) error {
	if p == nil {
		return nil
	}
	m := objectMeta(cur)
	if p.UID != nil && *p.UID != m.GetUID() {
		return apierrors.NewConflict(res.groupResource(), m.GetName(), preconditionFailed("UID", string(*p.UID), string(m.GetUID())))
	}
	if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
		return apierrors.NewConflict(res.groupResource(), m.GetName(), preconditionFailed("ResourceVersion", *p.ResourceVersion, m.GetResourceVersion()))
	}
	return nil
}

// planDelete decides what a delete does to cur. It returns the object to
// keep or remove, whether it stays in storage, and whether it changed.
func planDelete(res *resource, cur runtime.Object, opts *metav1.DeleteOptions) (upd runtime.Object, keep, changed bool) {
	upd = cur.DeepCopyObject()
	m := objectMeta(upd)
	grace, graceful := podGracePeriod(res, upd, opts)
	hasFinalizers := len(m.GetFinalizers()) > 0

	if ts := m.GetDeletionTimestamp(); ts != nil {
		old := m.GetDeletionGracePeriodSeconds()
		if graceful && old != nil && *old > 0 && grace < *old {
			// A delete may only shorten a pending grace period.
			t := metav1.NewTime(ts.Add(-time.Duration(*old) * time.Second).Add(time.Duration(grace) * time.Second))
			m.SetDeletionTimestamp(&t)
			m.SetDeletionGracePeriodSeconds(&grace)
			changed = true
		}
	} else {
		switch {
		case graceful && grace > 0:
			t := metav1.NewTime(now().Add(time.Duration(grace) * time.Second))
			m.SetDeletionTimestamp(&t)
			m.SetDeletionGracePeriodSeconds(&grace)
			if g := m.GetGeneration(); g > 0 {
				m.SetGeneration(g + 1)
			}
			changed = true
		case hasFinalizers:
			t := now()
			zero := int64(0)
			m.SetDeletionTimestamp(&t)
			m.SetDeletionGracePeriodSeconds(&zero)
			changed = true
		}
	}
	if hasFinalizers {
		return upd, true, changed
	}
	if g := m.GetDeletionGracePeriodSeconds(); m.GetDeletionTimestamp() != nil && g != nil && *g > 0 {
		return upd, true, changed
	}
	return upd, false, changed
}

// podGracePeriod is the pod strategy's CheckGracefulDelete: the requested
// grace period, else the pod's terminationGracePeriodSeconds; 0 for pods not
// bound to a node or already finished. graceful is false for other kinds.
func podGracePeriod(res *resource, obj runtime.Object, opts *metav1.DeleteOptions) (grace int64, graceful bool) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !isCorePods(res) {
		return 0, false
	}
	switch {
	case opts.GracePeriodSeconds != nil:
		grace = *opts.GracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		grace = *pod.Spec.TerminationGracePeriodSeconds
	default:
		grace = corev1.DefaultTerminationGracePeriodSeconds
	}
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		grace = 0
	}
	if grace < 0 {
		grace = 1
	}
	return grace, true
}

// putOver writes obj over the stored kv (compare-and-swap).
func (s *Server) putOver(ctx context.Context, res *resource, obj runtime.Object, kv *storage.KV) (runtime.Object, error) {
	data, err := res.encodeForStorage(obj)
	if err != nil {
		return nil, err
	}
	rev, err := s.store.Txn(ctx, storage.Put(kv.Key, data, kv.ModRevision))
	if _, ok := storage.AsPrecondition(err); ok {
		return nil, errRetry
	}
	if err != nil {
		return nil, err
	}
	return obj, setRV(obj, rev)
}

// shouldDeleteDuringUpdate is true when an update of an object being deleted
// (grace period over) leaves it without finalizers: it is removed instead.
func shouldDeleteDuringUpdate(obj, cur runtime.Object) bool {
	m, cm := objectMeta(obj), objectMeta(cur)
	if len(m.GetFinalizers()) > 0 || cm.GetDeletionTimestamp() == nil {
		return false
	}
	if g := cm.GetDeletionGracePeriodSeconds(); g == nil || *g != 0 {
		return false
	}
	if ns, ok := obj.(*corev1.Namespace); ok && len(ns.Spec.Finalizers) > 0 {
		return false
	}
	return true
}

// removeFromStorage deletes obj (stored as kv) together with its allocation
// keys and dependent objects, in one transaction. It returns obj with the
// deletion's resourceVersion.
func (s *Server) removeFromStorage(ctx context.Context, res *resource, obj runtime.Object, kv *storage.KV, dryRun bool) (runtime.Object, error) {
	ops := []storage.Op{storage.Delete(kv.Key, kv.ModRevision)}
	if res.kind.Allocator != nil {
		ops = append(ops, res.kind.Allocator.Release(obj)...)
	}
	if isCoreServices(res) {
		cascade, err := s.serviceDependents(ctx, objectMeta(obj))
		if err != nil {
			return nil, err
		}
		ops = append(ops, cascade...)
	}
	if dryRun {
		return obj, nil
	}
	rev, err := s.store.Txn(ctx, ops...)
	if _, ok := storage.AsPrecondition(err); ok {
		return nil, errRetry
	}
	if err != nil {
		return nil, err
	}
	return obj, setRV(obj, rev)
}

// serviceDependents returns the ops deleting a Service's Endpoints (same
// name, as the endpoints controller would) and the EndpointSlices the
// endpointslice and mirroring controllers made for it, in the Service's own
// delete transaction, so no client sees slices outlive their Service.
//
// Those slices are named by generateName "<service>-" (at most
// maxGenerateNameBase characters before the random suffix), so one prefix scan finds them
// whatever the number of slices in the namespace; a slice is taken when it
// is labelled kubernetes.io/service-name=<service> and owned by the Service
// or by the Endpoints deleted with it. Anything else — a hand-made slice
// with the label but no owner, an owned slice named otherwise — is left as
// kube-apiserver leaves it: to the garbage collector, through its owner
// references.
func (s *Server) serviceDependents(ctx context.Context, svc metav1.Object) ([]storage.Op, error) {
	var ops []storage.Op
	owners := []types.UID{svc.GetUID()}
	if ep := s.byGR[corev1.Resource("endpoints")]; ep != nil {
		kv, err := s.store.Get(ctx, ep.key(svc.GetNamespace(), svc.GetName()))
		switch {
		case err == nil:
			ops = append(ops, storage.Delete(kv.Key, kv.ModRevision))
			obj, err := s.decodeKV(ep, kv)
			if err != nil {
				return nil, err
			}
			owners = append(owners, objectMeta(obj).GetUID())
		case !storage.IsNotFound(err):
			return nil, err
		}
	}
	if eps := s.byGR[discoveryv1.Resource("endpointslices")]; eps != nil {
		kvs, _, err := s.store.List(ctx, eps.listPrefix(svc.GetNamespace())+sliceNamePrefix(svc.GetName()), 0)
		if err != nil {
			return nil, err
		}
		for i := range kvs {
			slice, err := s.decodeKV(eps, &kvs[i])
			if err != nil {
				return nil, err
			}
			m := objectMeta(slice)
			if m.GetLabels()[discoveryv1.LabelServiceName] != svc.GetName() {
				continue
			}
			if slices.ContainsFunc(m.GetOwnerReferences(), func(o metav1.OwnerReference) bool { return slices.Contains(owners, o.UID) }) {
				ops = append(ops, storage.Delete(kvs[i].Key, kvs[i].ModRevision))
			}
		}
	}
	return ops, nil
}

// sliceNamePrefix is how the names of the EndpointSlices the controllers
// make for Service name begin: generateName "<name>-", cut as generateName
// cuts it.
func sliceNamePrefix(name string) string {
	p := name + "-"
	if len(p) > maxGenerateNameBase {
		p = p[:maxGenerateNameBase]
	}
	return p
}

// handleDeleteCollection serves DELETE of a collection: every object that
// matches the selectors is deleted as by handleDelete. The response is the
// list of deleted (or now deleting) objects.
func (s *Server) handleDeleteCollection(rq *request) {
	opts, err := rq.deleteOptions()
	if err != nil {
		rq.writeError(err)
		return
	}
	listOpts, pred, err := s.listOptions(rq)
	if err != nil {
		rq.writeError(err)
		return
	}
	rev, err := s.listRevision(rq, listOpts)
	if err != nil {
		rq.writeError(err)
		return
	}
	list, err := s.list(rq, rq.res, rq.namespace, pred, rev)
	if err != nil {
		rq.writeError(err)
		return
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		rq.writeError(err)
		return
	}
	var out []runtime.Object
	for _, item := range items {
		m := objectMeta(item)
		obj, _, err := s.deleteObject(rq.ctx, rq.res, m.GetNamespace(), m.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			rq.writeError(err)
			return
		}
		out = append(out, obj)
	}
	result := rq.res.kind.NewList()
	if err := meta.SetList(result, out); err != nil {
		rq.writeError(err)
		return
	}
	if lm, err := meta.ListAccessor(list); err == nil {
		if rm, err := meta.ListAccessor(result); err == nil {
			rm.SetResourceVersion(lm.GetResourceVersion())
		}
	}
	rq.writeObject(http.StatusOK, result, shapeList)
}
