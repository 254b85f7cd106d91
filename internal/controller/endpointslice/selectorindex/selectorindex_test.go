package selectorindex

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	endpointsliceutil "k8s.io/endpointslice/util"
)

func newIndexers(t *testing.T) (pods, svcs cache.Indexer) {
	t.Helper()
	pods = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
		PodLabelIndex:        podLabelIndexFunc,
	})
	svcs = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{
		ServiceSelectorIndex: serviceSelectorIndexFunc,
	})
	return pods, svcs
}

func pod(ns, name string, l map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}}
}

func svc(ns, name string, sel map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
}

func podNames(pods []*corev1.Pod) string {
	var n []string
	for _, p := range pods {
		n = append(n, p.Name)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

func TestPodsForSelector(t *testing.T) {
	pods, _ := newIndexers(t)
	for _, p := range []*corev1.Pod{
		pod("a", "web-1", map[string]string{"app": "web", "tier": "fe"}),
		pod("a", "web-2", map[string]string{"app": "web", "tier": "be"}),
		pod("a", "db-1", map[string]string{"app": "db", "tier": "be"}),
		pod("a", "bare", nil),
		pod("b", "web-3", map[string]string{"app": "web", "tier": "fe"}),
	} {
		if err := pods.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		ns   string
		sel  map[string]string
		want string
	}{
		{"a", nil, ""},
		{"a", map[string]string{}, "bare,db-1,web-1,web-2"},
		{"a", map[string]string{"app": "web"}, "web-1,web-2"},
		{"a", map[string]string{"app": "web", "tier": "be"}, "web-2"},
		{"a", map[string]string{"tier": "be"}, "db-1,web-2"},
		{"a", map[string]string{"app": "none", "tier": "be"}, ""},
		{"b", map[string]string{"app": "web"}, "web-3"},
		{"c", map[string]string{"app": "web"}, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.ns, tt.sel), func(t *testing.T) {
			got, err := PodsForSelector(pods, tt.ns, tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if n := podNames(got); n != tt.want {
				t.Errorf("got %q, want %q", n, tt.want)
			}
		})
	}
}

// TestAgainstFullScan checks both lookups against upstream's scan over
// random pods and Services, including updates that move index entries.
func TestAgainstFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	pods, svcs := newIndexers(t)
	randLabels := func(allowNil bool) map[string]string {
		if allowNil && rng.IntN(8) == 0 {
			return nil
		}
		m := map[string]string{}
		for _, k := range []string{"app", "tier", "zone"} {
			if rng.IntN(2) == 0 {
				m[k] = fmt.Sprint(rng.IntN(3))
			}
		}
		return m
	}
	for round := range 3 {
		for i := range 200 {
			p := pod(fmt.Sprint("ns", i%2), fmt.Sprint("p", i), randLabels(false))
			if err := pods.Update(p); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 40 {
			s := svc(fmt.Sprint("ns", i%2), fmt.Sprint("s", i), randLabels(true))
			if err := svcs.Update(s); err != nil {
				t.Fatal(err)
			}
		}
		for _, o := range svcs.List() {
			s := o.(*corev1.Service)
			got, err := PodsForSelector(pods, s.Namespace, s.Spec.Selector)
			if err != nil {
				t.Fatal(err)
			}
			var want []*corev1.Pod
			for _, po := range pods.List() {
				p := po.(*corev1.Pod)
				if s.Spec.Selector != nil && p.Namespace == s.Namespace && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
					want = append(want, p)
				}
			}
			if podNames(got) != podNames(want) {
				t.Fatalf("round %d, service %s %v: got %s, want %s", round, s.Name, s.Spec.Selector, podNames(got), podNames(want))
			}
		}
		for _, po := range pods.List() {
			p := po.(*corev1.Pod)
			got, err := ServiceKeysForLabels(svcs, p.Namespace, p.Labels)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{}
			for _, o := range svcs.List() {
				s := o.(*corev1.Service)
				if s.Spec.Selector != nil && s.Namespace == p.Namespace && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
					want[s.Namespace+"/"+s.Name] = true
				}
			}
			if len(got) != len(want) {
				t.Fatalf("pod %s %v: got %v, want %v", p.Name, p.Labels, got, want)
			}
			for k := range got {
				if !want[k] {
					t.Fatalf("pod %s: extra service %s", p.Name, k)
				}
			}
		}
	}
}

func TestServicesToUpdate(t *testing.T) {
	_, svcs := newIndexers(t)
	for _, s := range []*corev1.Service{
		svc("a", "web", map[string]string{"app": "web"}),
		svc("a", "db", map[string]string{"app": "db"}),
		svc("a", "all", map[string]string{}),
		svc("a", "none", nil),
	} {
		if err := svcs.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	web, db := labels.Set{"app": "web"}, labels.Set{"app": "db"}
	tests := []struct {
		name string
		key  *endpointsliceutil.PodProjectionKey
		want string
	}{
		{"added", &endpointsliceutil.PodProjectionKey{Namespace: "a", Labels: web}, "a/all,a/web"},
		{"relabelled only: services joined and left", &endpointsliceutil.PodProjectionKey{Namespace: "a", Labels: db, OldLabels: web}, "a/db,a/web"},
		{"relabelled and changed: all before and after", &endpointsliceutil.PodProjectionKey{Namespace: "a", Labels: db, OldLabels: web, PodChanged: true}, "a/all,a/db,a/web"},
		{"other namespace", &endpointsliceutil.PodProjectionKey{Namespace: "b", Labels: web}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ServicesToUpdate(svcs, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			keys := got.UnsortedList()
			sort.Strings(keys)
			if s := strings.Join(keys, ","); s != tt.want {
				t.Errorf("got %q, want %q", s, tt.want)
			}
		})
	}
}

func TestSlicesFor(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{SliceServiceIndex: sliceServiceIndexFunc})
	slice := func(ns, name, svc, by string) *discoveryv1.EndpointSlice {
		l := map[string]string{discoveryv1.LabelManagedBy: by}
		if svc != "" {
			l[discoveryv1.LabelServiceName] = svc
		}
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}}
	}
	for _, s := range []*discoveryv1.EndpointSlice{
		slice("a", "web-1", "web", "us"),
		slice("a", "web-2", "web", "us"),
		slice("a", "web-x", "web", "someone-else"),
		slice("a", "db-1", "db", "us"),
		slice("b", "web-3", "web", "us"),
		slice("a", "nolabel", "", "us"),
	} {
		if err := idx.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := SlicesFor(idx, "a", "web", "us")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "web-1,web-2" {
		t.Errorf("got %v, want web-1,web-2", names)
	}
}
