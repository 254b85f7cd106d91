package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// subKind says which part of an object a write addresses.
type subKind int

const (
	subMain   subKind = iota // the resource itself
	subStatus                // /status
	subScale                 // /scale (writes the parent's spec.replicas)
)

// maxWriteAttempts bounds the optimistic-concurrency retries of one write.
const maxWriteAttempts = 32

// handleCreate serves POST to a collection.
func (s *Server) handleCreate(rq *request) {
	o, err := rq.parseWriteOptions("create", "")
	if err != nil {
		rq.writeError(err)
		return
	}
	obj, err := rq.decodeObject(rq.res, o)
	if err != nil {
		rq.writeError(err)
		return
	}
	obj = rq.res.fieldManager.UpdateNoErrors(rq.res.kind.New(), obj, o.manager)
	out, err := s.createObject(rq, obj, o)
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeObject(http.StatusCreated, out, shapeObject)
}

// createObject runs the create pipeline on obj (managed fields already set)
// and stores it: system metadata, generateName, PrepareForCreate, Default,
// Validate, namespace checks, then the allocator loop.
func (s *Server) createObject(rq *request, obj runtime.Object, o writeOpts) (runtime.Object, error) {
	res := rq.res
	if err := rq.ensureNamespace(obj); err != nil {
		return nil, err
	}
	m := objectMeta(obj)
	if m.GetResourceVersion() != "" {
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	generated := m.GetName() == "" && m.GetGenerateName() != ""
	if generated {
		m.SetName(generateName(m.GetGenerateName()))
	}
	m.SetUID(uuid.NewUUID())
	m.SetCreationTimestamp(now())
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetSelfLink("")
	m.SetGeneration(1)

	ctx := rq.ctx
	res.kind.Strategy.PrepareForCreate(ctx, obj)
	res.kind.Strategy.Default(obj)
	errs := res.kind.Strategy.Validate(ctx, obj)
	if len(errs) == 0 {
		errs = validateCreateMeta(res, obj)
	}
	if len(errs) > 0 {
		return nil, invalid(res, obj, errs)
	}
	if err := s.checkNamespaceForCreate(ctx, res, m.GetNamespace(), m.GetName()); err != nil {
		return nil, err
	}

	for attempt := 0; ; attempt++ {
		out, err := s.storeNew(ctx, res, obj, o)
		if apierrors.IsAlreadyExists(err) && generated && attempt < 5 {
			m.SetName(generateName(m.GetGenerateName()))
			continue
		}
		return out, err
	}
}

// storeNew writes a fully prepared new object, running the allocator on a
// fresh copy per attempt.
func (s *Server) storeNew(ctx context.Context, res *resource, obj runtime.Object, o writeOpts) (runtime.Object, error) {
	m := objectMeta(obj)
	key := res.key(m.GetNamespace(), m.GetName())
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		cur := obj.DeepCopyObject()
		var allocOps []storage.Op
		if res.kind.Allocator != nil {
			var err error
			if allocOps, err = res.kind.Allocator.Allocate(ctx, cur, nil); err != nil {
				return nil, err
			}
		}
		if o.dryRun {
			if _, err := s.store.Get(ctx, key); err == nil {
				return nil, apierrors.NewAlreadyExists(res.groupResource(), m.GetName())
			} else if !storage.IsNotFound(err) {
				return nil, err
			}
			return cur, nil
		}
		data, err := res.encodeForStorage(cur)
		if err != nil {
			return nil, err
		}
		ops := append([]storage.Op{storage.Put(key, data, 0)}, allocOps...)
		rev, err := s.store.Txn(ctx, ops...)
		if pe, ok := storage.AsPrecondition(err); ok {
			if pe.Key == key {
				return nil, apierrors.NewAlreadyExists(res.groupResource(), m.GetName())
			}
			if res.kind.Allocator == nil {
				return nil, err
			}
			if cerr := res.kind.Allocator.Conflict(cur, pe.Key); cerr != nil {
				return nil, cerr
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := setRV(cur, rev); err != nil {
			return nil, err
		}
		return cur, nil
	}
	return nil, apierrors.NewConflict(res.groupResource(), m.GetName(), fmt.Errorf("gave up after %d allocation conflicts", maxWriteAttempts))
}

// checkNamespaceForCreate is kube-apiserver's NamespaceLifecycle admission:
// a namespaced object needs an existing, non-terminating namespace. It only
// applies when the server serves namespaces.
func (s *Server) checkNamespaceForCreate(ctx context.Context, res *resource, ns, name string) error {
	nsRes := s.byGR[corev1.Resource("namespaces")]
	if !res.kind.Namespaced || nsRes == nil || s.nsCache.isActive(ns) {
		return nil
	}
	kv, err := s.store.Get(ctx, nsRes.key("", ns))
	if storage.IsNotFound(err) {
		return apierrors.NewNotFound(corev1.Resource("namespaces"), ns)
	}
	if err != nil {
		return err
	}
	nsObj, err := s.decodeKV(nsRes, kv)
	if err != nil {
		return err
	}
	if objectMeta(nsObj).GetDeletionTimestamp() != nil {
		se := apierrors.NewForbidden(res.groupResource(), name,
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
		se.ErrStatus.Details.Causes = append(se.ErrStatus.Details.Causes, metav1.StatusCause{
			Type:    corev1.NamespaceTerminatingCause,
			Message: fmt.Sprintf("namespace %s is being terminated", ns),
			Field:   "metadata.namespace",
		})
		return se
	}
	return nil
}

// generateName appends 5 random characters to base, as kube-apiserver does.
func generateName(base string) string {
	if len(base) > maxGenerateNameBase {
		base = base[:maxGenerateNameBase]
	}
	return base + rand.String(generatedSuffixLength)
}

// generatedSuffixLength is the random part generateName appends, and
// maxGenerateNameBase how much of generateName it keeps before it, so the
// name stays within 63 characters (upstream's SimpleNameGenerator).
const (
	generatedSuffixLength = 5
	maxGenerateNameBase   = 63 - generatedSuffixLength
)

// now is the creation/deletion timestamp, at the second precision it is
// stored and served with.
func now() metav1.Time {
	return metav1.NewTime(time.Now().Truncate(time.Second))
}

// handleUpdate serves PUT of an object or its /status.
func (s *Server) handleUpdate(rq *request, sub subKind) {
	o, err := rq.parseWriteOptions("update", "")
	if err != nil {
		rq.writeError(err)
		return
	}
	body, err := rq.decodeObject(rq.res, o)
	if err != nil {
		rq.writeError(err)
		return
	}
	fm := rq.res.fieldManager
	if sub == subStatus {
		fm = rq.res.statusFieldManager
	}
	name := rq.info.name
	if got := objectMeta(body).GetName(); got != name {
		rq.writeError(apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", got, name)))
		return
	}
	allowCreate := sub == subMain && rq.res.kind.Strategy.AllowCreateOnUpdate()
	result, err := s.updateObject(rq, name, sub, o, allowCreate, func(cur runtime.Object) (runtime.Object, error) {
		obj := body.DeepCopyObject()
		if cur == nil {
			return fm.UpdateNoErrors(rq.res.kind.New(), obj, o.manager), nil
		}
		return fm.UpdateNoErrors(cur, obj, o.manager), nil
	})
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeObject(httpStatusFor(result.created), result.obj, shapeObject)
}

// updateFunc returns the object to write given a private copy of the
// current one (nil when it does not exist yet). It must set managedFields.
type updateFunc func(cur runtime.Object) (runtime.Object, error)

type updateResult struct {
	obj     runtime.Object
	created bool
	// deleted is set when the update removed the last finalizer of an
	// object being deleted, which removed it from storage.
	deleted bool
}

// updateObject is kube-apiserver's GuaranteedUpdate: read, compute the new
// object, check the resourceVersion precondition, run the strategy, and
// compare-and-swap on the ModRevision; retry when someone else wrote first.
func (s *Server) updateObject(rq *request, name string, sub subKind, o writeOpts, allowCreate bool, fn updateFunc) (updateResult, error) {
	res, ctx := rq.res, rq.ctx
	key := res.key(rq.namespace, name)
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		kv, err := s.store.Get(ctx, key)
		if storage.IsNotFound(err) {
			if !allowCreate {
				return updateResult{}, apierrors.NewNotFound(res.groupResource(), name)
			}
			obj, err := fn(nil)
			if err != nil {
				return updateResult{}, err
			}
			if objectMeta(obj).GetResourceVersion() != "" {
				return updateResult{}, apierrors.NewNotFound(res.groupResource(), name)
			}
			if err := checkName(obj, name); err != nil {
				return updateResult{}, err
			}
			out, err := s.createObject(rq, obj, o)
			if apierrors.IsAlreadyExists(err) {
				continue // created meanwhile: update it instead
			}
			return updateResult{obj: out, created: true}, err
		}
		if err != nil {
			return updateResult{}, err
		}
		cur, err := s.decodeKV(res, kv)
		if err != nil {
			return updateResult{}, err
		}
		obj, err := fn(cur.DeepCopyObject())
		if err != nil {
			return updateResult{}, err
		}
		if err := checkName(obj, name); err != nil {
			return updateResult{}, err
		}
		if err := rq.ensureNamespace(obj); err != nil {
			return updateResult{}, err
		}
		m, cm := objectMeta(obj), objectMeta(cur)
		switch rv := m.GetResourceVersion(); {
		case rv == "":
			m.SetResourceVersion(cm.GetResourceVersion())
		case rv != cm.GetResourceVersion():
			return updateResult{}, conflictModified(res.groupResource(), name)
		}
		if uid := m.GetUID(); uid != "" && uid != cm.GetUID() {
			return updateResult{}, apierrors.NewConflict(res.groupResource(), name, preconditionFailed("UID", string(uid), string(cm.GetUID())))
		}
		obj, err = s.prepareUpdate(rq, sub, obj, cur)
		if err != nil {
			return updateResult{}, err
		}

		if shouldDeleteDuringUpdate(obj, cur) {
			// Release what storage records (cur), answer with the update.
			removed, err := s.removeFromStorage(ctx, res, cur, kv, o.dryRun)
			if isRetryable(err) {
				continue
			}
			if err != nil {
				return updateResult{}, err
			}
			objectMeta(obj).SetResourceVersion(objectMeta(removed).GetResourceVersion())
			return updateResult{obj: obj, deleted: true}, nil
		}

		out, retry, err := s.storeUpdate(ctx, res, obj, cur, kv, o)
		if retry {
			continue
		}
		return updateResult{obj: out}, err
	}
	return updateResult{}, conflictModified(res.groupResource(), name)
}

// prepareUpdate is BeforeUpdate plus the strategy: system metadata from the
// stored object, status handling by subresource, PrepareForUpdate, Default,
// ValidateUpdate.
func (s *Server) prepareUpdate(rq *request, sub subKind, obj, cur runtime.Object) (runtime.Object, error) {
	res, ctx := rq.res, rq.ctx
	m, cm := objectMeta(obj), objectMeta(cur)
	m.SetGeneration(cm.GetGeneration())
	if m.GetUID() == "" {
		m.SetUID(cm.GetUID())
	}
	m.SetCreationTimestamp(cm.GetCreationTimestamp())
	if cm.GetDeletionTimestamp() != nil {
		m.SetDeletionTimestamp(cm.GetDeletionTimestamp())
	} else {
		m.SetDeletionTimestamp(nil)
	}
	if cm.GetDeletionGracePeriodSeconds() != nil && m.GetDeletionGracePeriodSeconds() == nil {
		m.SetDeletionGracePeriodSeconds(cm.GetDeletionGracePeriodSeconds())
	}
	m.SetSelfLink("")

	strategy := res.kind.Strategy
	var errs field.ErrorList
	switch sub {
	case subStatus:
		if ss, ok := strategy.(registry.StatusStrategy); ok {
			strategy.Default(obj)
			ss.PrepareForStatusUpdate(ctx, obj, cur)
			errs = ss.ValidateStatusUpdate(ctx, obj, cur)
		} else {
			obj = genericStatusUpdate(obj, cur)
			strategy.Default(obj)
		}
	default:
		if res.kind.Status {
			copyStatus(obj, cur)
		}
		strategy.PrepareForUpdate(ctx, obj, cur)
		strategy.Default(obj)
		errs = strategy.ValidateUpdate(ctx, obj, cur)
	}
	errs = mergeErrors(errs, validateUpdateMeta(res, obj, cur))
	if len(errs) > 0 {
		return nil, invalid(res, obj, errs)
	}
	ignoreManagedFieldsTimestamps(obj, cur)
	return obj, nil
}

// genericStatusUpdate keeps the stored object and takes .status, labels,
// annotations and managedFields from the request (the upstream status
// strategies reset spec, not metadata).
func genericStatusUpdate(obj, cur runtime.Object) runtime.Object {
	out := cur.DeepCopyObject()
	copyStatus(out, obj)
	m, om := objectMeta(obj), objectMeta(out)
	om.SetLabels(m.GetLabels())
	om.SetAnnotations(m.GetAnnotations())
	om.SetManagedFields(m.GetManagedFields())
	om.SetResourceVersion(m.GetResourceVersion())
	return out
}

// ignoreManagedFieldsTimestamps restores the stored managedFields when the
// update changed nothing in them but timestamps, so that a no-op update stays
// a no-op (kube-apiserver's IgnoreManagedFieldsTimestampsTransformer).
func ignoreManagedFieldsTimestamps(obj, cur runtime.Object) {
	m, cm := objectMeta(obj), objectMeta(cur)
	a, b := m.GetManagedFields(), cm.GetManagedFields()
	if len(a) != len(b) {
		return
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Time, y.Time = nil, nil
		if !reflect.DeepEqual(x, y) {
			return
		}
	}
	m.SetManagedFields(b)
}

// storeUpdate writes obj over cur (stored as kv) with the allocator loop.
// retry reports that the object changed meanwhile.
func (s *Server) storeUpdate(ctx context.Context, res *resource, obj, cur runtime.Object, kv *storage.KV, o writeOpts) (out runtime.Object, retry bool, err error) {
	m := objectMeta(obj)
	key := kv.Key
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		next := obj.DeepCopyObject()
		var allocOps []storage.Op
		if res.kind.Allocator != nil {
			if allocOps, err = res.kind.Allocator.Allocate(ctx, next, cur); err != nil {
				return nil, false, err
			}
		}
		data, err := res.encodeForStorage(next)
		if err != nil {
			return nil, false, err
		}
		if len(allocOps) == 0 && bytes.Equal(data, kv.Value) {
			return cur, false, nil // no-op: no write, no event
		}
		if o.dryRun {
			return next, false, nil
		}
		ops := append([]storage.Op{storage.Put(key, data, kv.ModRevision)}, allocOps...)
		rev, err := s.store.Txn(ctx, ops...)
		if pe, ok := storage.AsPrecondition(err); ok {
			if pe.Key == key {
				return nil, true, nil
			}
			if res.kind.Allocator == nil {
				return nil, false, err
			}
			if cerr := res.kind.Allocator.Conflict(next, pe.Key); cerr != nil {
				return nil, false, cerr
			}
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if err := setRV(next, rev); err != nil {
			return nil, false, err
		}
		return next, false, nil
	}
	return nil, false, apierrors.NewConflict(res.groupResource(), m.GetName(), fmt.Errorf("gave up after %d allocation conflicts", maxWriteAttempts))
}

// checkName rejects a body whose name differs from the URL's.
func checkName(obj runtime.Object, name string) error {
	if got := objectMeta(obj).GetName(); got != name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", got, name))
	}
	return nil
}
