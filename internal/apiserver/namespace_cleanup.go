package apiserver

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcnet/svcnet/internal/storage"
)

// Namespace deletion, a small stand-in for kube-controller-manager's
// namespace controller. Deleting a Namespace sets deletionTimestamp, phase
// Terminating and the "kubernetes" spec finalizer; the cleaner then deletes
// every namespaced object in it (pods gracefully, objects with finalizers
// waiting for them) and, once nothing is left, drops the spec finalizer and
// removes the namespace (or leaves it to its metadata finalizers).
//
// The cleaner runs inside Server.Run, woken by each namespace deletion and
// every cleanerInterval. Without Run, a deletion starts a one-off goroutine
// that polls until the namespace is gone or cleanerGiveUp passes.

const (
	cleanerInterval = 30 * time.Second
	cleanerRetry    = time.Second
	cleanerGiveUp   = 10 * time.Minute
)

// markNamespaceTerminating handles DELETE of a Namespace.
func (s *Server) markNamespaceTerminating(ctx context.Context, res *resource, cur runtime.Object, kv *storage.KV, dryRun bool) (runtime.Object, error) {
	ns, ok := cur.(*corev1.Namespace)
	if !ok {
		return nil, apierrors.NewInternalError(errNotNamespace)
	}
	if ns.DeletionTimestamp != nil {
		return ns, nil
	}
	upd := ns.DeepCopy()
	t := now()
	zero := int64(0)
	upd.DeletionTimestamp = &t
	upd.DeletionGracePeriodSeconds = &zero
	upd.Status.Phase = corev1.NamespaceTerminating
	if !slices.Contains(upd.Spec.Finalizers, corev1.FinalizerKubernetes) {
		upd.Spec.Finalizers = append(upd.Spec.Finalizers, corev1.FinalizerKubernetes)
	}
	if dryRun {
		return upd, nil
	}
	s.nsCache.markTerminating(upd.Name)
	out, err := s.putOver(ctx, res, upd, kv)
	if err != nil {
		return nil, err
	}
	s.kickNamespaceCleaner(upd.Name)
	return out, nil
}

var errNotNamespace = errorString("apiserver: stored namespace is not a *v1.Namespace")

type errorString string

func (e errorString) Error() string { return string(e) }

// kickNamespaceCleaner wakes the cleaner, or starts a one-off cleanup when
// Run is not active.
func (s *Server) kickNamespaceCleaner(name string) {
	if s.nsRunning.Load() {
		select {
		case s.nsKick <- struct{}{}:
		default:
		}
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanerGiveUp)
		defer cancel()
		for {
			done, err := s.cleanupNamespace(ctx, name)
			if err != nil {
				s.log.Warn("namespace cleanup", "namespace", name, "err", err)
			}
			if done {
				return
			}
			select {
			case <-ctx.Done():
				s.log.Warn("gave up cleaning namespace", "namespace", name)
				return
			case <-time.After(cleanerRetry):
			}
		}
	}()
}

// runNamespaceCleaner finishes every Terminating namespace until ctx ends.
func (s *Server) runNamespaceCleaner(ctx context.Context) {
	nsRes := s.byGR[corev1.Resource("namespaces")]
	if nsRes == nil {
		<-ctx.Done()
		return
	}
	for {
		pending := false
		kvs, _, err := s.store.List(ctx, nsRes.listPrefix(""), 0)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("namespace cleaner: list namespaces", "err", err)
			pending = true
		}
		for i := range kvs {
			obj, err := s.decodeKV(nsRes, &kvs[i])
			if err != nil || objectMeta(obj).GetDeletionTimestamp() == nil {
				continue
			}
			done, err := s.cleanupNamespace(ctx, objectMeta(obj).GetName())
			if err != nil && ctx.Err() == nil {
				s.log.Warn("namespace cleanup", "namespace", objectMeta(obj).GetName(), "err", err)
			}
			pending = pending || !done
		}
		wait := cleanerInterval
		if pending {
			wait = cleanerRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-s.nsKick:
		case <-time.After(wait):
		}
	}
}

// cleanupNamespace deletes what is left in a Terminating namespace and, when
// it is empty, the namespace itself. done is true once the namespace is
// gone or only waits for its own metadata finalizers.
func (s *Server) cleanupNamespace(ctx context.Context, name string) (done bool, err error) {
	nsRes := s.byGR[corev1.Resource("namespaces")]
	remaining := 0
	opts := &metav1.DeleteOptions{}
	for _, res := range s.resources {
		if !res.kind.Namespaced {
			continue
		}
		kvs, _, err := s.store.List(ctx, res.listPrefix(name), 0)
		if err != nil {
			return false, err
		}
		for i := range kvs {
			obj, err := s.decodeKV(res, &kvs[i])
			if err != nil {
				return false, err
			}
			_, deleted, err := s.deleteObject(ctx, res, name, objectMeta(obj).GetName(), opts)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return false, err
			case !deleted:
				remaining++
			}
		}
	}
	if remaining > 0 {
		return false, nil
	}
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		kv, err := s.store.Get(ctx, nsRes.key("", name))
		if storage.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		obj, err := s.decodeKV(nsRes, kv)
		if err != nil {
			return false, err
		}
		ns, ok := obj.(*corev1.Namespace)
		if !ok {
			return false, errNotNamespace
		}
		if ns.DeletionTimestamp == nil {
			return true, nil // recreated meanwhile
		}
		ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool {
			return f == corev1.FinalizerKubernetes
		})
		if len(ns.Spec.Finalizers) == 0 && len(ns.Finalizers) == 0 {
			_, err = s.removeFromStorage(ctx, nsRes, ns, kv, false)
		} else {
			_, err = s.putOver(ctx, nsRes, ns, kv)
		}
		if isRetryable(err) {
			continue
		}
		return err == nil, err
	}
	return false, nil
}
