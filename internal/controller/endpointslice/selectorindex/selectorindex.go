// Package selectorindex finds the pods a Service selects, the Services that
// select a pod, and the EndpointSlices of a Service, through informer
// indexes instead of scanning a whole namespace.
//
// Upstream's endpoint controllers list every pod of the namespace and test
// the Service's selector on each (and, for a pod event, every Service of the
// namespace against the pod's labels). With 10k Services and 100k pods in a
// namespace that is 10^9 label matches at cold start. Here both informers
// get an index keyed by "<namespace>/<key>=<value>":
//
//   - pods are indexed under each of their labels;
//   - Services are indexed under each pair of their selector (an empty,
//     non-nil selector, which selects every pod, under "<namespace>/*").
//
// EndpointSlices are indexed by their kubernetes.io/service-name label.
//
// A selector lookup reads the smallest bucket among its pairs and then checks
// the whole selector, so the result is exactly what labels.Selector.Matches
// over the namespace would give, in time proportional to the candidates.
// The indexes are added idempotently, so several controllers sharing one
// SharedInformerFactory can each call AddPodIndex/AddServiceIndex.
package selectorindex

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
	endpointsliceutil "k8s.io/endpointslice/util"
)

const (
	// PodLabelIndex is the name of the pod informer index.
	PodLabelIndex = "svcnet.io/pod-label"
	// ServiceSelectorIndex is the name of the Service informer index.
	ServiceSelectorIndex = "svcnet.io/service-selector"
	// SliceServiceIndex is the name of the EndpointSlice informer index,
	// keyed by "<namespace>/<kubernetes.io/service-name label>".
	SliceServiceIndex = "svcnet.io/slice-service"
)

// pairKey is the index value for one label pair in a namespace.
func pairKey(namespace, key, value string) string {
	return namespace + "/" + key + "=" + value
}

// everyPodKey is the Service index value of an empty (select-all) selector.
func everyPodKey(namespace string) string { return namespace + "/*" }

func podLabelIndexFunc(obj interface{}) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	out := make([]string, 0, len(pod.Labels))
	for k, v := range pod.Labels {
		out = append(out, pairKey(pod.Namespace, k, v))
	}
	return out, nil
}

func serviceSelectorIndexFunc(obj interface{}) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Spec.Selector == nil {
		// A nil selector selects nothing: not indexed at all.
		return nil, nil
	}
	if len(svc.Spec.Selector) == 0 {
		return []string{everyPodKey(svc.Namespace)}, nil
	}
	out := make([]string, 0, len(svc.Spec.Selector))
	for k, v := range svc.Spec.Selector {
		out = append(out, pairKey(svc.Namespace, k, v))
	}
	return out, nil
}

func sliceServiceIndexFunc(obj interface{}) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name, ok := s.Labels[discoveryv1.LabelServiceName]
	if !ok {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

// AddSliceIndex adds SliceServiceIndex to an EndpointSlice informer unless
// it is there.
func AddSliceIndex(inf cache.SharedIndexInformer) error {
	return addIndex(inf, SliceServiceIndex, sliceServiceIndexFunc)
}

// SlicesFor returns the EndpointSlices labelled for Service namespace/name
// and managed by managedBy, as a label-selector List would, without scanning
// the namespace. The indexer must carry SliceServiceIndex.
func SlicesFor(indexer cache.Indexer, namespace, name, managedBy string) ([]*discoveryv1.EndpointSlice, error) {
	objs, err := indexer.ByIndex(SliceServiceIndex, namespace+"/"+name)
	if err != nil {
		return nil, fmt.Errorf("selectorindex: slices of %s/%s: %w", namespace, name, err)
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelManagedBy] == managedBy {
			out = append(out, s)
		}
	}
	return out, nil
}

// AddPodIndex adds PodLabelIndex to a pod informer unless it is there.
func AddPodIndex(inf cache.SharedIndexInformer) error {
	return addIndex(inf, PodLabelIndex, podLabelIndexFunc)
}

// AddServiceIndex adds ServiceSelectorIndex to a Service informer unless it
// is there.
func AddServiceIndex(inf cache.SharedIndexInformer) error {
	return addIndex(inf, ServiceSelectorIndex, serviceSelectorIndexFunc)
}

func addIndex(inf cache.SharedIndexInformer, name string, fn cache.IndexFunc) error {
	if _, ok := inf.GetIndexer().GetIndexers()[name]; ok {
		return nil
	}
	if err := inf.AddIndexers(cache.Indexers{name: fn}); err != nil {
		return fmt.Errorf("selectorindex: add index %s: %w", name, err)
	}
	return nil
}

// PodsForSelector returns the pods of namespace that selector selects, as
// labels.SelectorFromSet(selector) would over a full list. A nil selector
// selects nothing; an empty one selects every pod of the namespace. The
// indexer must carry PodLabelIndex (and the factory's namespace index).
func PodsForSelector(indexer cache.Indexer, namespace string, selector map[string]string) ([]*corev1.Pod, error) {
	if selector == nil {
		return nil, nil
	}
	var candidates []interface{}
	var err error
	if len(selector) == 0 {
		candidates, err = indexer.ByIndex(cache.NamespaceIndex, namespace)
	} else {
		candidates, err = smallestBucket(indexer, namespace, selector)
	}
	if err != nil {
		return nil, fmt.Errorf("selectorindex: pods for selector: %w", err)
	}
	sel := labels.ValidatedSetSelector(selector)
	out := make([]*corev1.Pod, 0, len(candidates))
	for _, o := range candidates {
		pod, ok := o.(*corev1.Pod)
		if ok && sel.Matches(labels.Set(pod.Labels)) {
			out = append(out, pod)
		}
	}
	return out, nil
}

// smallestBucket reads the pod index bucket of the selector pair with the
// fewest pods; every selected pod is in each pair's bucket.
func smallestBucket(indexer cache.Indexer, namespace string, selector map[string]string) ([]interface{}, error) {
	keys := make([]string, 0, len(selector))
	for k := range selector {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic choice among equal sizes
	best := ""
	bestLen := -1
	if len(keys) == 1 {
		best = pairKey(namespace, keys[0], selector[keys[0]])
	} else {
		for _, k := range keys {
			ik := pairKey(namespace, k, selector[k])
			names, err := indexer.IndexKeys(PodLabelIndex, ik)
			if err != nil {
				return nil, err
			}
			if bestLen < 0 || len(names) < bestLen {
				best, bestLen = ik, len(names)
			}
			if bestLen == 0 {
				return nil, nil
			}
		}
	}
	return indexer.ByIndex(PodLabelIndex, best)
}

// ServiceKeysForLabels returns the "namespace/name" keys of the Services in
// namespace whose (non-nil) selector selects a pod with podLabels. The
// indexer must carry ServiceSelectorIndex.
func ServiceKeysForLabels(indexer cache.Indexer, namespace string, podLabels map[string]string) (sets.Set[string], error) {
	out := sets.New[string]()
	seen := map[string]bool{}
	check := func(indexValue string) error {
		objs, err := indexer.ByIndex(ServiceSelectorIndex, indexValue)
		if err != nil {
			return fmt.Errorf("selectorindex: services for labels: %w", err)
		}
		for _, o := range objs {
			svc, ok := o.(*corev1.Service)
			if !ok {
				continue
			}
			key := svc.Namespace + "/" + svc.Name
			if seen[key] {
				continue
			}
			seen[key] = true
			if svc.Spec.Selector != nil && labels.ValidatedSetSelector(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
				out.Insert(key)
			}
		}
		return nil
	}
	if err := check(everyPodKey(namespace)); err != nil {
		return nil, err
	}
	for k, v := range podLabels {
		if err := check(pairKey(namespace, k, v)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ServicesToUpdate is endpointsliceutil.GetServicesToUpdate over the
// Service index: the keys of the Services a pod change may affect.
func ServicesToUpdate(serviceIndexer cache.Indexer, key *endpointsliceutil.PodProjectionKey) (sets.Set[string], error) {
	if key == nil {
		return nil, nil
	}
	services, err := ServiceKeysForLabels(serviceIndexer, key.Namespace, key.Labels)
	if err != nil {
		return nil, err
	}
	if key.OldLabels == nil {
		return services, nil
	}
	old, err := ServiceKeysForLabels(serviceIndexer, key.Namespace, key.OldLabels)
	if err != nil {
		return nil, err
	}
	if key.PodChanged {
		// The pod's endpoint changed too: every Service before or after.
		return services.Union(old), nil
	}
	// Only the labels changed: the Services it joined or left.
	return services.Difference(old).Union(old.Difference(services)), nil
}
