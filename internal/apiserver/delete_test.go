//lint:file-ignore SA1019 the server still serves core/v1 Endpoints, as kube-apiserver does.

package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestDeleteFinalizers(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Finalizers: []string{"example.com/hold"}}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The raw response is the object, not a Status, while it is kept.
	out, err := cms.Get(ctx, "held", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prop := metav1.DeletePropagationBackground
	if err := cms.Delete(ctx, "held", metav1.DeleteOptions{PropagationPolicy: &prop}); err != nil {
		t.Fatal(err)
	}
	got, err := cms.Get(ctx, "held", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("object with finalizer removed: %v", err)
	}
	if got.DeletionTimestamp == nil || got.DeletionGracePeriodSeconds == nil || *got.DeletionGracePeriodSeconds != 0 {
		t.Fatalf("deletion not recorded: %+v", got.ObjectMeta)
	}
	if got.ResourceVersion == out.ResourceVersion {
		t.Errorf("deletion did not write")
	}
	// A finalizer cannot be added now.
	got.Finalizers = append(got.Finalizers, "example.com/other")
	if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("adding a finalizer while deleting: %v, want Invalid", err)
	}
	// Removing the last finalizer removes the object.
	if _, err := cms.Patch(ctx, "held", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "held", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the last finalizer went: %v, want NotFound", err)
	}
}

func TestDeletePods(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	pods := env.cs.CoreV1().Pods("default")
	grace := int64(30)
	bound := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound"}, Spec: corev1.PodSpec{NodeName: "n1", TerminationGracePeriodSeconds: &grace}}
	unbound := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unbound"}}
	for _, p := range []*corev1.Pod{bound, unbound} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	if err := pods.Delete(ctx, "unbound", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "unbound", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("unbound pod: %v, want deleted at once", err)
	}

	if err := pods.Delete(ctx, "bound", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := pods.Get(ctx, "bound", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("bound pod deleted at once: %v", err)
	}
	if got.DeletionTimestamp == nil || got.DeletionGracePeriodSeconds == nil || *got.DeletionGracePeriodSeconds != 30 {
		t.Fatalf("graceful deletion: %+v", got.ObjectMeta)
	}
	// A status update by the node agent does not remove it.
	got.Status.Phase = corev1.PodRunning
	if _, err := pods.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The node agent deletes with grace 0.
	if err := pods.Delete(ctx, "bound", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "bound", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after grace-0 delete: %v, want NotFound", err)
	}
}

func TestDeletePreconditionsAndDryRun(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wrongUID := types.UID("nope")
	if err := cms.Delete(ctx, "c", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrongUID}}); !apierrors.IsConflict(err) {
		t.Errorf("wrong uid precondition: %v, want Conflict", err)
	}
	staleRV := "1"
	if err := cms.Delete(ctx, "c", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &staleRV}}); !apierrors.IsConflict(err) {
		t.Errorf("stale rv precondition: %v, want Conflict", err)
	}
	if err := cms.Delete(ctx, "c", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "c", metav1.GetOptions{}); err != nil {
		t.Errorf("dry-run delete removed the object: %v", err)
	}
	if err := cms.Delete(ctx, "c", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cm.UID, ResourceVersion: &cm.ResourceVersion}}); err != nil {
		t.Errorf("delete with matching preconditions: %v", err)
	}
	if err := cms.Delete(ctx, "c", metav1.DeleteOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}

// TestDeleteServiceRemovesEndpoints: a Service's delete takes its
// Endpoints and the EndpointSlices the controllers made for it (named
// "<service>-…", labelled with it, owned by the Service or by its
// Endpoints); other slices are left to the garbage collector, as
// kube-apiserver leaves them.
func TestDeleteServiceRemovesEndpoints(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	svc, err := env.cs.CoreV1().Services("default").Create(ctx, webService("web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := env.cs.CoreV1().Endpoints("default").Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byService := metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))
	byEndpoints := metav1.NewControllerRef(ep, corev1.SchemeGroupVersion.WithKind("Endpoints"))
	stranger := metav1.OwnerReference{APIVersion: "v1", Kind: "Service", Name: "web", UID: "not-this-one"}
	slices := env.cs.DiscoveryV1().EndpointSlices("default")
	for _, s := range []struct {
		name, svc string
		owner     *metav1.OwnerReference
		gone      bool
	}{
		{"web-abc", "web", byService, true},          // the endpointslice controller's
		{"web-mirror", "web", byEndpoints, true},     // the mirroring controller's
		{"web-handmade", "web", nil, false},          // labelled, no owner: upstream keeps it too
		{"web-stale", "web", &stranger, false},       // owned by an earlier Service of that name: the GC's
		{"web-api-abc", "web-api", byService, false}, // same name prefix, another service's label
		{"other-abc", "other", nil, false},
	} {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: s.name, Labels: map[string]string{discoveryv1.LabelServiceName: s.svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		if s.owner != nil {
			es.OwnerReferences = []metav1.OwnerReference{*s.owner}
		}
		if _, err := slices.Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_, err := slices.Get(ctx, s.name, metav1.GetOptions{})
			switch {
			case s.gone && !apierrors.IsNotFound(err):
				t.Errorf("endpointslice %s after the service's delete: %v, want NotFound", s.name, err)
			case !s.gone && err != nil:
				t.Errorf("endpointslice %s was deleted with service web: %v", s.name, err)
			}
		}()
	}
	if err := env.cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cs.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("endpoints after service delete: %v", err)
	}
}

func TestDeleteCollection(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	for i := 0; i < 4; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("cm", i), Labels: map[string]string{"even": fmt.Sprint(i%2 == 0)}}}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cms.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "even=true"}); err != nil {
		t.Fatal(err)
	}
	list, err := cms.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0].Labels["even"] != "false" || list.Items[1].Labels["even"] != "false" {
		t.Errorf("left after deletecollection: %+v", list.Items)
	}
}

func TestDeleteNamespace(t *testing.T) { testDeleteNamespace(t, newTestEnv(t)) }

func testDeleteNamespace(t *testing.T, env *testEnv) {
	ctx := context.Background()
	err := env.cs.CoreV1().Namespaces().Delete(ctx, "default", metav1.DeleteOptions{})
	if !apierrors.IsForbidden(err) || err.Error() != `namespaces "default" is forbidden: this namespace may not be deleted` {
		t.Errorf("delete default namespace: %v", err)
	}
	if _, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := env.cs.CoreV1().ConfigMaps("doomed").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("cm", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.cs.CoreV1().Services("doomed").Create(ctx, webService("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod on a node keeps the namespace Terminating until its node agent
	// removes it.
	pods := env.cs.CoreV1().Pods("doomed")
	if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace content deleted", func() bool {
		cms, err := env.cs.CoreV1().ConfigMaps("doomed").List(ctx, metav1.ListOptions{})
		pod, perr := pods.Get(ctx, "p", metav1.GetOptions{})
		return err == nil && len(cms.Items) == 0 && perr == nil && pod.DeletionTimestamp != nil
	})
	ns, err := env.cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace gone while a pod is terminating: %v", err)
	}
	if ns.Status.Phase != corev1.NamespaceTerminating || ns.DeletionTimestamp == nil {
		t.Errorf("namespace after delete: %+v", ns)
	}
	_, err = env.cs.CoreV1().ConfigMaps("doomed").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "because it is being terminated") {
		t.Errorf("create in terminating namespace: %v, want Forbidden", err)
	}

	if err := pods.Delete(ctx, "p", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace removed", func() bool {
		_, err := env.cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	for _, prefix := range []string{"/registry/core/configmaps/doomed/", "/registry/core/services/doomed/", "/registry/core/pods/doomed/"} {
		kvs, _, err := env.store.List(ctx, prefix, 0)
		if err != nil || len(kvs) != 0 {
			t.Errorf("left in %s: %d objects (%v)", prefix, len(kvs), err)
		}
	}
}
