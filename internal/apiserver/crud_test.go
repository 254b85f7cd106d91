package apiserver

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

func webService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func TestCRUD(t *testing.T) { testCRUD(t, newTestEnv(t)) }

func testCRUD(t *testing.T, env *testEnv) {
	for _, tc := range []struct {
		name string
		cs   kubernetes.Interface
	}{
		{"protobuf", env.cs},
		{"json", env.csJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			svcs := tc.cs.CoreV1().Services("default")
			name := "web-" + tc.name

			created, err := svcs.Create(ctx, webService(name), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if created.UID == "" || created.CreationTimestamp.IsZero() || created.ResourceVersion == "" || created.Generation != 1 {
				t.Errorf("create did not set system metadata: uid=%q ts=%v rv=%q gen=%d", created.UID, created.CreationTimestamp, created.ResourceVersion, created.Generation)
			}
			if created.Spec.Type != corev1.ServiceTypeClusterIP || created.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
				t.Errorf("defaults not applied: %+v", created.Spec)
			}
			if !strings.HasPrefix(created.Spec.ClusterIP, "10.0.0.") {
				t.Errorf("allocator did not run: clusterIP %q", created.Spec.ClusterIP)
			}
			if len(created.ManagedFields) == 0 || created.ManagedFields[0].Operation != metav1.ManagedFieldsOperationUpdate {
				t.Errorf("managedFields not set on create: %+v", created.ManagedFields)
			}

			got, err := svcs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if got.ResourceVersion != created.ResourceVersion || got.Spec.ClusterIP != created.Spec.ClusterIP {
				t.Errorf("get = rv %s ip %s, want rv %s ip %s", got.ResourceVersion, got.Spec.ClusterIP, created.ResourceVersion, created.Spec.ClusterIP)
			}

			list, err := svcs.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			if !containsService(list.Items, name) {
				t.Errorf("list with label selector misses %s", name)
			}
			if rv, _ := strconv.ParseInt(list.ResourceVersion, 10, 64); rv < mustRV(t, created.ResourceVersion) {
				t.Errorf("list RV %s older than created RV %s", list.ResourceVersion, created.ResourceVersion)
			}

			got.Labels["tier"] = "front"
			updated, err := svcs.Update(ctx, got, metav1.UpdateOptions{})
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if updated.Labels["tier"] != "front" || mustRV(t, updated.ResourceVersion) <= mustRV(t, got.ResourceVersion) {
				t.Errorf("update: labels %v rv %s (was %s)", updated.Labels, updated.ResourceVersion, got.ResourceVersion)
			}
			if updated.Spec.ClusterIP != created.Spec.ClusterIP {
				t.Errorf("update changed clusterIP %s -> %s", created.Spec.ClusterIP, updated.Spec.ClusterIP)
			}

			// A no-op update writes nothing.
			same, err := svcs.Update(ctx, updated, metav1.UpdateOptions{})
			if err != nil {
				t.Fatalf("no-op update: %v", err)
			}
			if same.ResourceVersion != updated.ResourceVersion {
				t.Errorf("no-op update changed RV %s -> %s", updated.ResourceVersion, same.ResourceVersion)
			}

			if err := svcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if _, err := svcs.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("get after delete: %v, want NotFound", err)
			}
			if _, err := env.store.Get(ctx, ipPrefix+created.Spec.ClusterIP); err == nil {
				t.Errorf("allocation key of %s not released on delete", created.Spec.ClusterIP)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	if _, err := svcs.Create(ctx, webService("dup"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	withRV := webService("with-rv")
	withRV.ResourceVersion = "5"
	badPort := webService("bad-port")
	badPort.Spec.Ports[0].Port = 0
	noName := webService("")

	for _, tc := range []struct {
		name    string
		ns      string
		svc     *corev1.Service
		code    int32
		message string
	}{
		{"already exists", "default", webService("dup"), 409, `services "dup" already exists`},
		{"missing namespace", "nope", webService("x"), 404, `namespaces "nope" not found`},
		{"resourceVersion set", "default", withRV, 400, "resourceVersion should not be set on objects to be created"},
		{"invalid", "default", badPort, 422, `Service "bad-port" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive`},
		{"no name", "default", noName, 422, "metadata.name: Required value: name or generateName is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := env.cs.CoreV1().Services(tc.ns).Create(ctx, tc.svc, metav1.CreateOptions{})
			var se *apierrors.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a Status error", err)
			}
			if se.ErrStatus.Code != tc.code || !strings.Contains(se.ErrStatus.Message, tc.message) {
				t.Errorf("got %d %q, want %d containing %q", se.ErrStatus.Code, se.ErrStatus.Message, tc.code, tc.message)
			}
		})
	}

	t.Run("invalid has field causes", func(t *testing.T) {
		_, err := svcs.Create(ctx, badPort, metav1.CreateOptions{})
		var se *apierrors.StatusError
		if !errors.As(err, &se) || se.ErrStatus.Details == nil || len(se.ErrStatus.Details.Causes) != 1 {
			t.Fatalf("err = %#v, want one cause", err)
		}
		c := se.ErrStatus.Details.Causes[0]
		if c.Field != "spec.ports[0].port" || c.Type != metav1.CauseTypeFieldValueInvalid {
			t.Errorf("cause = %+v", c)
		}
		if _, err := svcs.Get(ctx, "bad-port", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("invalid object was stored: %v", err)
		}
	})

	t.Run("generateName", func(t *testing.T) {
		svc := webService("")
		svc.GenerateName = "gen-"
		out, err := svcs.Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out.Name, "gen-") || len(out.Name) != len("gen-")+5 {
			t.Errorf("generated name %q", out.Name)
		}
	})

	t.Run("dry run writes nothing", func(t *testing.T) {
		before, _ := env.store.CurrentRevision(ctx)
		out, err := svcs.Create(ctx, webService("dry"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if out.Spec.ClusterIP == "" {
			t.Errorf("dry run did not run the allocator")
		}
		after, _ := env.store.CurrentRevision(ctx)
		if before != after {
			t.Errorf("dry run wrote to storage: rev %d -> %d", before, after)
		}
		if _, err := env.store.Get(ctx, ipPrefix+out.Spec.ClusterIP); err == nil {
			t.Errorf("dry run wrote the allocation key")
		}
	})
}

func TestUpdateConflict(t *testing.T) { testUpdateConflict(t, newTestEnv(t)) }

func testUpdateConflict(t *testing.T, env *testEnv) {
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	first, err := svcs.Create(ctx, webService("web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second := first.DeepCopy()
	first.Labels["a"] = "1"
	if _, err := svcs.Update(ctx, first, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	second.Labels["b"] = "2"
	_, err = svcs.Update(ctx, second, metav1.UpdateOptions{})
	const want = `Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again`
	if !apierrors.IsConflict(err) || err.Error() != want {
		t.Fatalf("stale update: %v, want 409 %q", err, want)
	}

	// An empty resourceVersion is an unconditional update.
	second.ResourceVersion = ""
	out, err := svcs.Update(ctx, second, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("unconditional update: %v", err)
	}
	if out.Labels["b"] != "2" {
		t.Errorf("unconditional update lost: %v", out.Labels)
	}

	// PUT of a missing Service creates it (AllowCreateOnUpdate).
	created, err := svcs.Update(ctx, webService("put-created"), metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("create on update: %v", err)
	}
	if created.UID == "" || created.Spec.ClusterIP == "" {
		t.Errorf("create on update did not run the create path: %+v", created.ObjectMeta)
	}

	// Pods do not allow it.
	_, err = env.cs.CoreV1().Pods("default").Update(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, metav1.UpdateOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("PUT of missing pod: %v, want NotFound", err)
	}

	// The body's name must match the URL's.
	res := env.cs.CoreV1().RESTClient().Put().Namespace("default").Resource("services").Name("other").Body(webService("web")).Do(ctx)
	if err := res.Error(); !apierrors.IsBadRequest(err) {
		t.Errorf("PUT with mismatched name: %v, want BadRequest", err)
	}
}

func TestStatusSubresource(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	svc, err := svcs.Create(ctx, webService("lb"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ingress := []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}

	// The main resource ignores .status.
	svc.Status.LoadBalancer.Ingress = ingress
	svc, err = svcs.Update(ctx, svc, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("main resource update wrote status: %+v", svc.Status)
	}

	// /status writes only .status.
	svc.Status.LoadBalancer.Ingress = ingress
	svc.Spec.Selector = map[string]string{"changed": "yes"}
	out, err := svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Status.LoadBalancer.Ingress) != 1 || out.Spec.Selector["changed"] == "yes" {
		t.Errorf("status update: status %+v selector %v", out.Status, out.Spec.Selector)
	}
	var statusManager bool
	for _, mf := range out.ManagedFields {
		if mf.Subresource == "status" {
			statusManager = true
		}
	}
	if !statusManager {
		t.Errorf("no managedFields entry for the status subresource: %+v", out.ManagedFields)
	}
}

func TestUnknownPathsAndVerbs(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	rc := env.cs.CoreV1().RESTClient()
	err := rc.Get().AbsPath("/api/v1/namespaces/default/widgets").Do(ctx).Error()
	if !apierrors.IsNotFound(err) {
		t.Errorf("unknown resource: %v, want NotFound", err)
	}
	err = rc.Post().AbsPath("/api/v1/namespaces/default/services/x").Body([]byte("{}")).Do(ctx).Error()
	if !apierrors.IsMethodNotSupported(err) {
		t.Errorf("POST to a named object: %v, want MethodNotSupported", err)
	}
	// pods/log of a missing pod (the proxy to node agents is tested in
	// podproxy_test.go).
	err = rc.Get().AbsPath("/api/v1/namespaces/default/pods/p/log").Do(ctx).Error()
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Code != 404 || !strings.Contains(se.ErrStatus.Message, `pods "p" not found`) {
		t.Errorf("pods/log: %v", err)
	}
}

func containsService(items []corev1.Service, name string) bool {
	for _, s := range items {
		if s.Name == name {
			return true
		}
	}
	return false
}

func mustRV(t *testing.T, rv string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}
