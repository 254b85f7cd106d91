package apiserver

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

func TestPatchTypes(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	base, err := svcs.Create(ctx, webService("web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		typ   types.PatchType
		patch string
		check func(t *testing.T, svc *corev1.Service)
	}{
		{"json patch", types.JSONPatchType, `[{"op":"add","path":"/metadata/labels/json","value":"yes"}]`,
			func(t *testing.T, svc *corev1.Service) {
				if svc.Labels["json"] != "yes" {
					t.Errorf("labels %v", svc.Labels)
				}
			}},
		{"merge patch", types.MergePatchType, `{"metadata":{"labels":{"merge":"yes","app":null}}}`,
			func(t *testing.T, svc *corev1.Service) {
				if svc.Labels["merge"] != "yes" || svc.Labels["app"] != "" {
					t.Errorf("labels %v", svc.Labels)
				}
			}},
		{"strategic merge patch merges ports by port", types.StrategicMergePatchType,
			`{"spec":{"ports":[{"port":443,"name":"https"},{"port":80,"name":"http"}]}}`,
			func(t *testing.T, svc *corev1.Service) {
				if len(svc.Spec.Ports) != 2 {
					t.Fatalf("ports %+v", svc.Spec.Ports)
				}
				for _, p := range svc.Spec.Ports {
					if p.Port == 80 && (p.Name != "http" || p.TargetPort.IntVal != 8080) {
						t.Errorf("port 80 not merged: %+v", p)
					}
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := svcs.Patch(ctx, "web", tc.typ, []byte(tc.patch), metav1.PatchOptions{FieldManager: "test-" + string(tc.typ)})
			if err != nil {
				t.Fatalf("patch: %v", err)
			}
			tc.check(t, out)
			if out.Spec.ClusterIP != base.Spec.ClusterIP {
				t.Errorf("clusterIP changed %s -> %s", base.Spec.ClusterIP, out.Spec.ClusterIP)
			}
			found := false
			for _, mf := range out.ManagedFields {
				found = found || mf.Manager == "test-"+string(tc.typ)
			}
			if !found {
				t.Errorf("manager %q missing from managedFields", "test-"+string(tc.typ))
			}
		})
	}

	t.Run("resourceVersion in the patch is a precondition", func(t *testing.T) {
		_, err := svcs.Patch(ctx, "web", types.MergePatchType,
			[]byte(`{"metadata":{"resourceVersion":"`+base.ResourceVersion+`","labels":{"x":"y"}}}`), metav1.PatchOptions{})
		if !apierrors.IsConflict(err) {
			t.Errorf("stale patch: %v, want Conflict", err)
		}
	})
	t.Run("missing object", func(t *testing.T) {
		_, err := svcs.Patch(ctx, "nope", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("patch of missing object: %v", err)
		}
	})
	t.Run("bad json patch", func(t *testing.T) {
		_, err := svcs.Patch(ctx, "web", types.JSONPatchType, []byte(`[{"op":"test","path":"/metadata/name","value":"other"}]`), metav1.PatchOptions{})
		var se *apierrors.StatusError
		if !errors.As(err, &se) || se.ErrStatus.Code != 422 {
			t.Errorf("failing json patch test op: %v, want 422", err)
		}
	})
	t.Run("unsupported content type", func(t *testing.T) {
		err := env.cs.CoreV1().RESTClient().Patch("application/xml").Namespace("default").Resource("services").Name("web").
			Body([]byte(`<x/>`)).Do(ctx).Error()
		if !apierrors.IsUnsupportedMediaType(err) {
			t.Errorf("xml patch: %v, want 415", err)
		}
	})
}

func TestServerSideApply(t *testing.T) { testServerSideApply(t, newTestEnv(t)) }

func testServerSideApply(t *testing.T, env *testEnv) {
	ctx := context.Background()
	svcs := env.cs.CoreV1().Services("default")
	apply := func(manager string, force bool, yaml string) (*corev1.Service, error) {
		return svcs.Patch(ctx, "ssa", types.ApplyYAMLPatchType, []byte(yaml), metav1.PatchOptions{FieldManager: manager, Force: &force})
	}
	const v1 = `apiVersion: v1
kind: Service
metadata:
  name: ssa
spec:
  selector:
    app: ssa
  ports:
  - port: 80
    protocol: TCP
    targetPort: 8080
`
	created, err := apply("kubectl", false, v1)
	if err != nil {
		t.Fatalf("apply (create): %v", err)
	}
	if created.UID == "" || created.Spec.ClusterIP == "" || created.Spec.Ports[0].TargetPort.IntVal != 8080 {
		t.Fatalf("apply did not create the service: %+v", created)
	}
	if len(created.ManagedFields) == 0 || created.ManagedFields[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managedFields after apply: %+v", created.ManagedFields)
	}

	// Same manager: an update.
	again, err := apply("kubectl", false, strings.Replace(v1, "app: ssa", "app: ssa2", 1))
	if err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	if again.Spec.Selector["app"] != "ssa2" {
		t.Errorf("re-apply selector %v", again.Spec.Selector)
	}

	// Another manager changing an owned field conflicts.
	_, err = apply("other", false, strings.Replace(v1, "targetPort: 8080", "targetPort: 9090", 1))
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Code != 409 {
		t.Fatalf("conflicting apply: %v, want 409", err)
	}
	if !strings.Contains(se.ErrStatus.Message, `Apply failed with 2 conflicts: conflicts with "kubectl"`) || !strings.Contains(se.ErrStatus.Message, ".spec.ports[port=80,protocol=\"TCP\"].targetPort") {
		t.Errorf("conflict message %q", se.ErrStatus.Message)
	}
	if se.ErrStatus.Details == nil || len(se.ErrStatus.Details.Causes) == 0 || se.ErrStatus.Details.Causes[0].Type != metav1.CauseTypeFieldManagerConflict {
		t.Errorf("conflict causes %+v", se.ErrStatus.Details)
	}

	// force takes the field over.
	forced, err := apply("other", true, strings.Replace(v1, "targetPort: 8080", "targetPort: 9090", 1))
	if err != nil {
		t.Fatalf("forced apply: %v", err)
	}
	if forced.Spec.Ports[0].TargetPort.IntVal != 9090 {
		t.Errorf("forced apply targetPort %v", forced.Spec.Ports[0].TargetPort)
	}

	// fieldManager is required for apply.
	err = env.cs.CoreV1().RESTClient().Patch(types.ApplyYAMLPatchType).Namespace("default").Resource("services").Name("ssa").
		Body([]byte(v1)).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "fieldManager: Required value") {
		t.Errorf("apply without fieldManager: %v", err)
	}
}

func TestFieldValidation(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	body := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"strict"},"spec":{"foo":1,"ports":[{"port":80}]}}`)
	post := func(validation string) rest.Result {
		return env.csJSON.CoreV1().RESTClient().Post().Namespace("default").Resource("services").
			Param("fieldValidation", validation).SetHeader("Content-Type", "application/json").Body(body).Do(ctx)
	}

	res := post("Strict")
	err := res.Error()
	const want = `Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.foo"`
	if !apierrors.IsBadRequest(err) || err.Error() != want {
		t.Fatalf("strict: %v, want 400 %q", err, want)
	}

	res = post("Warn")
	if err := res.Error(); err != nil {
		t.Fatalf("warn: %v", err)
	}
	var warned bool
	for _, w := range res.Warnings() {
		warned = warned || w.Text == `unknown field "spec.foo"`
	}
	if !warned {
		t.Errorf("warn: warnings %+v, want unknown field \"spec.foo\"", res.Warnings())
	}
}

func TestScaleSubresource(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}},
		},
	}
	deps := env.cs.AppsV1().Deployments("default")
	created, err := deps.Create(ctx, dep, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale, err := deps.GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if scale.Spec.Replicas != 1 || scale.Status.Selector != "app=web" || scale.ResourceVersion != created.ResourceVersion {
		t.Errorf("scale = %+v", scale)
	}

	// kubectl scale sends a merge patch to /scale.
	out, err := env.cs.AppsV1().RESTClient().Patch(types.MergePatchType).Namespace("default").Resource("deployments").
		Name("web").SubResource("scale").Body([]byte(`{"spec":{"replicas":3}}`)).Do(ctx).Get()
	if err != nil {
		t.Fatalf("patch scale: %v", err)
	}
	if s := out.(interface{ GetResourceVersion() string }); s.GetResourceVersion() == created.ResourceVersion {
		t.Errorf("scale patch did not change the RV")
	}
	got, err := deps.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Spec.Replicas != 3 || got.Generation != 2 {
		t.Errorf("after scale: replicas %d generation %d, want 3 and 2", *got.Spec.Replicas, got.Generation)
	}

	// UpdateScale with a stale RV conflicts.
	scale.Spec.Replicas = 5
	if _, err := deps.UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("stale UpdateScale: %v, want Conflict", err)
	}
	scale.ResourceVersion = ""
	scale.Spec.Replicas = -1
	if _, err := deps.UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("negative replicas: %v, want Invalid", err)
	}
}
