//lint:file-ignore SA1019 the server still serves core/v1 Endpoints, as kube-apiserver does.

package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/svcnet/svcnet/internal/apiserver/internal/memstore"
	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// Minimal kinds for the tests; the real registries live in
// internal/registry/<kind>.

type testStrategy struct {
	createOnUpdate bool
	defaults       func(obj runtime.Object)
	validate       func(obj runtime.Object) field.ErrorList
}

func (testStrategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {}
func (t testStrategy) Default(obj runtime.Object) {
	if t.defaults != nil {
		t.defaults(obj)
	}
}
func (t testStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	if t.validate != nil {
		return t.validate(obj)
	}
	return nil
}

// PrepareForUpdate bumps generation when anything but metadata and status changed.
func (testStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	a, b := obj.DeepCopyObject(), old.DeepCopyObject()
	objectMeta(a).SetManagedFields(nil)
	for _, o := range []runtime.Object{a, b} {
		m := objectMeta(o)
		m.SetResourceVersion("")
		m.SetGeneration(0)
		m.SetManagedFields(nil)
		m.SetLabels(nil)
		m.SetAnnotations(nil)
		m.SetFinalizers(nil)
		m.SetDeletionTimestamp(nil)
		m.SetDeletionGracePeriodSeconds(nil)
		if f := statusField(o); f.IsValid() {
			f.SetZero()
		}
	}
	if !apiequality.Semantic.DeepEqual(a, b) {
		m := objectMeta(obj)
		m.SetGeneration(m.GetGeneration() + 1)
	}
}
func (t testStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return t.Validate(ctx, obj)
}
func (t testStrategy) AllowCreateOnUpdate() bool { return t.createOnUpdate }

func serviceDefaults(obj runtime.Object) {
	svc := obj.(*corev1.Service)
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Protocol == "" {
			svc.Spec.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
}

func serviceValidate(obj runtime.Object) field.ErrorList {
	svc := obj.(*corev1.Service)
	var errs field.ErrorList
	for i, p := range svc.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("port"), p.Port, "must be between 1 and 65535, inclusive"))
		}
	}
	return errs
}

// testAllocator hands out ClusterIPs 10.0.0.1..10.0.0.N; each allocation is a
// key under ipPrefix created in the Service's transaction.
type testAllocator struct {
	mu sync.Mutex
	// picks counts Allocate calls; next is the next IP to try.
	picks, next int
}

const ipPrefix = "/registry/test-ips/"

func (a *testAllocator) Allocate(ctx context.Context, obj, old runtime.Object) ([]storage.Op, error) {
	svc := obj.(*corev1.Service)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.picks++
	if old != nil {
		svc.Spec.ClusterIP = old.(*corev1.Service).Spec.ClusterIP
		return nil, nil
	}
	if svc.Spec.ClusterIP == "None" {
		return nil, nil
	}
	if svc.Spec.ClusterIP == "" {
		a.next++
		svc.Spec.ClusterIP = fmt.Sprintf("10.0.0.%d", a.next)
	}
	return []storage.Op{storage.Put(ipPrefix+svc.Spec.ClusterIP, []byte(svc.Namespace+"/"+svc.Name), 0)}, nil
}

func (a *testAllocator) Conflict(obj runtime.Object, key string) error {
	svc := obj.(*corev1.Service)
	if svc.Annotations["test/fixed-ip"] == "true" {
		return fmt.Errorf("test: %s is already allocated: %w", strings.TrimPrefix(key, ipPrefix), errAllocated)
	}
	return nil
}

var errAllocated = fmt.Errorf("allocated")

func (a *testAllocator) Release(obj runtime.Object) []storage.Op {
	svc := obj.(*corev1.Service)
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == "None" {
		return nil
	}
	return []storage.Op{storage.Delete(ipPrefix+svc.Spec.ClusterIP, storage.Any)}
}

func testKinds(alloc registry.Allocator) []*registry.Kind {
	return []*registry.Kind{
		{
			Resource: corev1.SchemeGroupVersion.WithResource("namespaces"), Kind: "Namespace", SingularName: "namespace",
			New: func() runtime.Object { return &corev1.Namespace{} }, NewList: func() runtime.Object { return &corev1.NamespaceList{} },
			Strategy: testStrategy{defaults: func(obj runtime.Object) {
				ns := obj.(*corev1.Namespace)
				if ns.Status.Phase == "" {
					ns.Status.Phase = corev1.NamespaceActive
				}
			}},
			Status: true,
			Fields: func(obj runtime.Object) fields.Set {
				return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
			},
		},
		{
			Resource: corev1.SchemeGroupVersion.WithResource("configmaps"), Kind: "ConfigMap", Namespaced: true,
			New: func() runtime.Object { return &corev1.ConfigMap{} }, NewList: func() runtime.Object { return &corev1.ConfigMapList{} },
			Strategy: testStrategy{createOnUpdate: true},
		},
		{
			Resource: corev1.SchemeGroupVersion.WithResource("services"), Kind: "Service", Namespaced: true, ShortNames: []string{"svc"},
			New: func() runtime.Object { return &corev1.Service{} }, NewList: func() runtime.Object { return &corev1.ServiceList{} },
			Strategy: testStrategy{createOnUpdate: true, defaults: serviceDefaults, validate: serviceValidate},
			Status:   true,
			Fields: func(obj runtime.Object) fields.Set {
				svc := obj.(*corev1.Service)
				return fields.Set{"spec.clusterIP": svc.Spec.ClusterIP, "spec.type": string(svc.Spec.Type)}
			},
			Table: &registry.TableConvertor{
				Columns: []metav1.TableColumnDefinition{
					{Name: "Name", Type: "string", Format: "name"},
					{Name: "Type", Type: "string"},
					{Name: "Cluster-IP", Type: "string"},
					{Name: "Age", Type: "string"},
					{Name: "Selector", Type: "string", Priority: 1},
				},
				Cells: func(obj runtime.Object) []interface{} {
					svc := obj.(*corev1.Service)
					return []interface{}{svc.Name, string(svc.Spec.Type), svc.Spec.ClusterIP,
						translateTimestampSince(svc.CreationTimestamp), fmt.Sprint(svc.Spec.Selector)}
				},
			},
			Allocator: alloc,
		},
		{
			Resource: corev1.SchemeGroupVersion.WithResource("pods"), Kind: "Pod", Namespaced: true,
			New: func() runtime.Object { return &corev1.Pod{} }, NewList: func() runtime.Object { return &corev1.PodList{} },
			Strategy: testStrategy{},
			Status:   true,
			Fields: func(obj runtime.Object) fields.Set {
				pod := obj.(*corev1.Pod)
				return fields.Set{"spec.nodeName": pod.Spec.NodeName, "status.phase": string(pod.Status.Phase)}
			},
		},
		{
			Resource: corev1.SchemeGroupVersion.WithResource("endpoints"), Kind: "Endpoints", Namespaced: true,
			New: func() runtime.Object { return &corev1.Endpoints{} }, NewList: func() runtime.Object { return &corev1.EndpointsList{} },
			Strategy: testStrategy{createOnUpdate: true},
		},
		{
			Resource: discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), Kind: "EndpointSlice", Namespaced: true,
			New: func() runtime.Object { return &discoveryv1.EndpointSlice{} }, NewList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
			Strategy: testStrategy{},
		},
		{
			Resource: corev1.SchemeGroupVersion.WithResource("nodes"), Kind: "Node",
			New: func() runtime.Object { return &corev1.Node{} }, NewList: func() runtime.Object { return &corev1.NodeList{} },
			Strategy: testStrategy{}, Status: true,
		},
		{
			Resource: appsv1.SchemeGroupVersion.WithResource("deployments"), Kind: "Deployment", Namespaced: true,
			New: func() runtime.Object { return &appsv1.Deployment{} }, NewList: func() runtime.Object { return &appsv1.DeploymentList{} },
			Strategy: testStrategy{}, Status: true,
			Scale: &registry.ScaleAccess{
				Get: func(obj runtime.Object) (int32, int32, string) {
					d := obj.(*appsv1.Deployment)
					spec := int32(1)
					if d.Spec.Replicas != nil {
						spec = *d.Spec.Replicas
					}
					sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
					s := ""
					if sel != nil {
						s = sel.String()
					}
					return spec, d.Status.Replicas, s
				},
				Set: func(obj runtime.Object, n int32) { obj.(*appsv1.Deployment).Spec.Replicas = &n },
			},
		},
	}
}

// testEnv is a server on a memstore with real clients.
type testEnv struct {
	t      testing.TB
	s      *Server
	store  storage.Interface
	srv    *httptest.Server
	alloc  *testAllocator
	cs     kubernetes.Interface // protobuf (client-go's default for typed clients)
	csJSON kubernetes.Interface
	dyn    dynamic.Interface
	cfg    *rest.Config
	ctx    context.Context
}

type envOption func(*envConfig)

// withWrap puts a middleware in front of the server.
func withWrap(wrap func(http.Handler) http.Handler) envOption {
	return func(c *envConfig) { c.wrap = wrap }
}

// withConfig changes the server Config.
func withConfig(f func(*Config)) envOption {
	return func(c *envConfig) { f(&c.cfg) }
}

// withStore uses store instead of a fresh memstore.
func withStore(store storage.Interface) envOption {
	return func(c *envConfig) { c.cfg.Store = store }
}

type envConfig struct {
	cfg  Config
	wrap func(http.Handler) http.Handler
}

func newTestEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	alloc := &testAllocator{}
	ec := envConfig{cfg: Config{
		Store:  memstore.New(),
		Kinds:  testKinds(alloc),
		Logger: slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}}
	for _, o := range opts {
		o(&ec)
	}
	store := ec.cfg.Store
	s, err := newServer(ec.cfg)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	var h http.Handler = s
	if ec.wrap != nil {
		h = ec.wrap(s)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Run(ctx)

	rc := &rest.Config{Host: srv.URL, QPS: -1}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	jc := rest.CopyConfig(rc)
	jc.ContentType = "application/json"
	csJSON, err := kubernetes.NewForConfig(jc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, s: s, store: store, srv: srv, alloc: alloc, cs: cs, csJSON: csJSON, dyn: dyn, cfg: rc, ctx: ctx}
	for _, ns := range []string{"default", "other"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	return env
}

// testWriter logs through t until the test ends (server goroutines may
// outlive it briefly).
type testWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func newTestWriter(t testing.TB) testWriter {
	w := testWriter{t: t, done: &atomic.Bool{}}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
