package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/lru"
)

// Name is the controller's name for --controllers.
const Name = "garbage-collector"

// DefaultIgnoredResources are not watched: high churn, never owners or
// owned in practice (kube-controller-manager's default).
var DefaultIgnoredResources = []schema.GroupResource{
	{Group: "", Resource: "events"},
	{Group: "events.k8s.io", Resource: "events"},
}

// absentCacheSize bounds the memory of owner uids known to be deleted.
const absentCacheSize = 10000

// Options tune a GarbageCollector; the zero value is the default.
type Options struct {
	// IgnoredResources are never watched (nil: DefaultIgnoredResources).
	IgnoredResources []schema.GroupResource
}

// GarbageCollector deletes objects whose owners are all gone.
type GarbageCollector struct {
	log     *slog.Logger
	md      metadata.Interface
	disco   discovery.DiscoveryInterface
	ignored map[schema.GroupResource]bool
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	graph   *graph
	absent  *lru.Cache // owner uid → struct{}: seen deleted, never coming back
	queue   workqueue.TypedRateLimitingInterface[types.UID]

	mu        sync.Mutex // guards resources
	resources []schema.GroupVersionResource
	synced    chan struct{} // closed once every informer has synced
}

// New returns a garbage collector that talks to the API through md and
// finds the resources to watch through disco.
func New(logger *slog.Logger, md metadata.Interface, disco discovery.DiscoveryInterface, opts Options) *GarbageCollector {
	ignored := opts.IgnoredResources
	if ignored == nil {
		ignored = DefaultIgnoredResources
	}
	gc := &GarbageCollector{
		log:     logger.With("component", "garbage-collector"),
		md:      md,
		disco:   disco,
		ignored: map[schema.GroupResource]bool{},
		mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco)),
		graph:   newGraph(),
		absent:  lru.New(absentCacheSize),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.UID](),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "garbage_collector"}),
		synced: make(chan struct{}),
	}
	for _, gr := range ignored {
		gc.ignored[gr] = true
	}
	return gc
}

// Synced is closed once the collector watches every resource and its
// caches are full.
func (gc *GarbageCollector) Synced() <-chan struct{} { return gc.synced }

// Resources returns the resources being watched (after Synced).
func (gc *GarbageCollector) Resources() []schema.GroupVersionResource {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return slices.Clone(gc.resources)
}

// Run discovers the deletable resources, watches them, and processes
// the work queue with workers goroutines until ctx is done.
func (gc *GarbageCollector) Run(ctx context.Context, workers int) {
	defer gc.queue.ShutDown()
	gc.log.Info("starting controller", "workers", workers)
	defer gc.log.Info("stopped controller")

	var gvrs []schema.GroupVersionResource
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		gvrs, err = gc.discover()
		if err != nil {
			gc.log.Warn("discovery failed, retrying", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return
	}
	factory := metadatainformer.NewSharedInformerFactory(gc.md, 0)
	for _, gvr := range gvrs {
		inf := factory.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(gc.handler(gvr)); err != nil {
			gc.log.Error("watching resource failed", "resource", gvr.String(), "err", err)
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for gvr, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			gc.log.Warn("cache not synced", "resource", gvr.String())
			return
		}
	}
	gc.mu.Lock()
	gc.resources = gvrs
	gc.mu.Unlock()
	close(gc.synced)
	gc.log.Info("graph synced", "resources", len(gvrs), "objects", gc.graph.size())

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for gc.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	gc.queue.ShutDown()
	wg.Wait()
}

// discover lists the preferred version of every resource that supports
// list, watch and delete, minus the ignored ones.
func (gc *GarbageCollector) discover() ([]schema.GroupVersionResource, error) {
	lists, err := discovery.ServerPreferredResources(gc.disco)
	if err != nil && len(lists) == 0 {
		return nil, fmt.Errorf("gc: discovery: %w", err)
	}
	lists = discovery.FilteredBy(discovery.SupportsAllVerbs{Verbs: []string{"list", "watch", "delete"}}, lists)
	set, err := discovery.GroupVersionResources(lists)
	if err != nil {
		return nil, fmt.Errorf("gc: discovery: %w", err)
	}
	var out []schema.GroupVersionResource
	for gvr := range set {
		if strings.Contains(gvr.Resource, "/") || gc.ignored[gvr.GroupResource()] {
			continue
		}
		out = append(out, gvr)
	}
	slices.SortFunc(out, func(a, b schema.GroupVersionResource) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

func (gc *GarbageCollector) handler(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { gc.observe(gvr, obj) },
		UpdateFunc: func(_, obj interface{}) { gc.observe(gvr, obj) },
		DeleteFunc: func(obj interface{}) { gc.forget(obj) },
	}
}

// observe records an added or updated object and queues it when it may be
// garbage (an owner not in the graph) or has deletion work of its own (the
// orphan or foregroundDeletion finalizer).
func (gc *GarbageCollector) observe(gvr schema.GroupVersionResource, obj interface{}) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	n := newNode(gvr, m)
	gc.graph.upsert(n)
	if n.orphan || n.foreground {
		gc.queue.Add(n.uid)
		return
	}
	for _, o := range n.owners {
		if gc.graph.get(o.UID) == nil {
			gc.queue.Add(n.uid)
			return
		}
	}
}

// forget removes a deleted object, remembers its uid as gone, and queues
// its dependents (their owner may be the last one) and its deleting owners
// (a foreground deletion may now be complete).
func (gc *GarbageCollector) forget(obj interface{}) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	gc.absent.Add(m.GetUID(), struct{}{})
	deps, owners := gc.graph.remove(m.GetUID())
	for _, d := range deps {
		gc.queue.Add(d)
	}
	for _, o := range owners {
		if on := gc.graph.get(o.UID); on != nil && on.foreground {
			gc.queue.Add(o.UID)
		}
	}
}

func (gc *GarbageCollector) processNext(ctx context.Context) bool {
	uid, quit := gc.queue.Get()
	if quit {
		return false
	}
	defer gc.queue.Done(uid)
	if err := gc.process(ctx, uid); err != nil {
		gc.log.Debug("processing failed, requeued", "uid", uid, "err", err)
		gc.queue.AddRateLimited(uid)
		return true
	}
	gc.queue.Forget(uid)
	return true
}

func (gc *GarbageCollector) process(ctx context.Context, uid types.UID) error {
	n := gc.graph.get(uid)
	if n == nil {
		return nil // gone already
	}
	switch {
	case n.orphan:
		return gc.orphanDependents(ctx, n)
	case n.foreground:
		return gc.deleteDependentsFirst(ctx, n)
	case n.deleting || len(n.owners) == 0:
		return nil
	}
	var absent, present []metav1.OwnerReference
	for _, o := range n.owners {
		gone, err := gc.ownerAbsent(ctx, n, o)
		if err != nil {
			return err
		}
		if gone {
			absent = append(absent, o)
		} else {
			present = append(present, o)
		}
	}
	switch {
	case len(absent) == 0:
		return nil
	case len(present) == 0:
		gc.log.Debug("deleting object whose owners are gone", "object", n.String(), "owners", refNames(absent))
		return gc.delete(ctx, n)
	default:
		gc.log.Debug("removing dangling owner references", "object", n.String(), "owners", refNames(absent))
		return gc.removeOwnerRefs(ctx, n, absent)
	}
}

// ownerAbsent reports whether the owner ref points at is gone: seen
// deleted, or, when the graph does not hold it, not found (or found with
// another uid) by a live GET. An owner whose kind cannot be resolved is
// treated as present: the collector never deletes on a guess.
func (gc *GarbageCollector) ownerAbsent(ctx context.Context, dep *node, ref metav1.OwnerReference) (bool, error) {
	if _, gone := gc.absent.Get(ref.UID); gone {
		return true, nil
	}
	if on := gc.graph.get(ref.UID); on != nil {
		// A namespaced owner must live in the dependent's namespace.
		return on.namespace != "" && on.namespace != dep.namespace, nil
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		gc.log.Warn("owner reference with a bad apiVersion, leaving the object alone", "object", dep.String(), "apiVersion", ref.APIVersion)
		return false, nil
	}
	mapping, err := gc.mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: ref.Kind}, gv.Version)
	if err != nil {
		gc.log.Info("owner kind unknown, leaving the object alone", "object", dep.String(), "owner", ref.APIVersion+"/"+ref.Kind, "err", err)
		return false, nil
	}
	ns := dep.namespace
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		ns = ""
	} else if ns == "" {
		return true, nil // a cluster-scoped object cannot have a namespaced owner
	}
	owner, err := gc.md.Resource(mapping.Resource).Namespace(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		gc.absent.Add(ref.UID, struct{}{})
		return true, nil
	case err != nil:
		return false, fmt.Errorf("gc: get owner %s %s/%s: %w", ref.Kind, ns, ref.Name, err)
	case owner.UID != ref.UID:
		gc.absent.Add(ref.UID, struct{}{})
		return true, nil
	}
	return false, nil
}

// delete removes n (Background propagation; the uid precondition keeps a
// recreated object with the same name safe).
func (gc *GarbageCollector) delete(ctx context.Context, n *node) error {
	bg := metav1.DeletePropagationBackground
	uid := n.uid
	err := gc.md.Resource(n.gvr).Namespace(n.namespace).Delete(ctx, n.name, metav1.DeleteOptions{
		Preconditions:     &metav1.Preconditions{UID: &uid},
		PropagationPolicy: &bg,
	})
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("gc: delete %s: %w", n, err)
}

// removeOwnerRefs drops the refs to the given owners from n, with a merge
// patch whose resourceVersion is the precondition.
func (gc *GarbageCollector) removeOwnerRefs(ctx context.Context, n *node, drop []metav1.OwnerReference) error {
	return gc.patchMeta(ctx, n, func(m *metav1.PartialObjectMetadata) (map[string]any, bool) {
		keep := slices.DeleteFunc(slices.Clone(m.OwnerReferences), func(r metav1.OwnerReference) bool {
			return slices.ContainsFunc(drop, func(d metav1.OwnerReference) bool { return d.UID == r.UID })
		})
		if len(keep) == len(m.OwnerReferences) {
			return nil, false
		}
		if keep == nil {
			keep = []metav1.OwnerReference{}
		}
		return map[string]any{"ownerReferences": keep}, true
	})
}

// removeFinalizer drops f from n's finalizers.
func (gc *GarbageCollector) removeFinalizer(ctx context.Context, n *node, f string) error {
	return gc.patchMeta(ctx, n, func(m *metav1.PartialObjectMetadata) (map[string]any, bool) {
		if !slices.Contains(m.Finalizers, f) {
			return nil, false
		}
		keep := slices.DeleteFunc(slices.Clone(m.Finalizers), func(s string) bool { return s == f })
		if keep == nil {
			keep = []string{}
		}
		return map[string]any{"finalizers": keep}, true
	})
}

// patchMeta reads n's metadata and, if edit asks for it, writes the edited
// fields with a merge patch conditioned on uid and resourceVersion.
func (gc *GarbageCollector) patchMeta(ctx context.Context, n *node, edit func(*metav1.PartialObjectMetadata) (map[string]any, bool)) error {
	api := gc.md.Resource(n.gvr).Namespace(n.namespace)
	cur, err := api.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gc: get %s: %w", n, err)
	}
	if cur.UID != n.uid {
		return nil
	}
	fields, ok := edit(cur)
	if !ok {
		return nil
	}
	fields["uid"] = cur.UID
	fields["resourceVersion"] = cur.ResourceVersion
	patch, err := json.Marshal(map[string]any{"metadata": fields})
	if err != nil {
		return err
	}
	if _, err := api.Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("gc: patch %s: %w", n, err)
	}
	return nil
}

// orphanDependents serves the orphan finalizer: every dependent loses its
// reference to n, then n loses the finalizer (and the server removes it).
func (gc *GarbageCollector) orphanDependents(ctx context.Context, n *node) error {
	var errs []error
	for _, d := range gc.graph.dependentsOf(n.uid) {
		ref := metav1.OwnerReference{UID: n.uid}
		if err := gc.removeOwnerRefs(ctx, d, []metav1.OwnerReference{ref}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return gc.removeFinalizer(ctx, n, finalizerOrphan)
}

// deleteDependentsFirst serves the foregroundDeletion finalizer: delete
// the dependents; once none is left, drop the finalizer. The last
// dependent's removal queues n again (see forget).
func (gc *GarbageCollector) deleteDependentsFirst(ctx context.Context, n *node) error {
	deps := gc.graph.dependentsOf(n.uid)
	if len(deps) == 0 {
		return gc.removeFinalizer(ctx, n, finalizerForeground)
	}
	var errs []error
	for _, d := range deps {
		if d.deleting {
			continue
		}
		if err := gc.delete(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func refNames(refs []metav1.OwnerReference) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Kind + "/" + r.Name
	}
	return out
}
