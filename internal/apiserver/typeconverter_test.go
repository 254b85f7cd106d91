package apiserver

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
)

// TestTypeConverterKeepsManagedFields checks that skipping the validation
// walk for typed objects (structTypeConverter) changes no managedFields:
// field managers on the stock converter and on ours give the same entries
// for creates and updates of the kinds svcnet serves, duplicates included,
// and the same error for an apply configuration with an unknown field.
func TestTypeConverterKeepsManagedFields(t *testing.T) {
	stock := applyconfigurations.NewTypeConverter(scheme.Scheme)
	ours := newTypeConverter(scheme.Scheme)

	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"}},
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeLoadBalancer,
			Selector:                 map[string]string{"app": "web"},
			Ports:                    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)}},
			LoadBalancerSourceRanges: []string{"10.0.0.0/8"},
			SessionAffinity:          corev1.ServiceAffinityClientIP,
		},
	}
	svc2 := svc.DeepCopy()
	svc2.Spec.Ports = append(svc2.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	svc2.Labels["tier"] = "front"
	delete(svc2.Annotations, "a")

	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "c",
			Image: "netexec",
			// Duplicate env names and ports: the field manager allows them.
			Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "A", Value: "2"}},
			Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}, {ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
	}
	pod2 := pod.DeepCopy()
	pod2.Spec.Containers[0].Env = pod2.Spec.Containers[0].Env[:1]

	replicas := int32(3)
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "d"}}, Spec: pod.Spec},
		},
	}
	dep2 := dep.DeepCopy()
	replicas2 := int32(5)
	dep2.Spec.Replicas = &replicas2

	for _, c := range []struct {
		name      string
		old, next runtime.Object
	}{
		{"service", svc, svc2},
		{"pod with duplicates", pod, pod2},
		{"deployment", dep, dep2},
	} {
		t.Run(c.name, func(t *testing.T) {
			gvk := c.old.GetObjectKind().GroupVersionKind()
			// The first conversion of a kind is validated (it learns the
			// kind's type); make every conversion below a skipping one.
			if _, err := ours.ObjectToTyped(c.old.DeepCopyObject(), typed.AllowDuplicates); err != nil {
				t.Fatal(err)
			}
			fieldsOf := func(tc managedfields.TypeConverter) []metav1.ManagedFieldsEntry {
				fm, err := managedfields.NewDefaultFieldManager(tc, scheme.Scheme, scheme.Scheme, scheme.Scheme, gvk, gvk.GroupVersion(), "", nil)
				if err != nil {
					t.Fatal(err)
				}
				created, err := fm.Update(emptyLike(c.old), c.old.DeepCopyObject(), "creator")
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				next := c.next.DeepCopyObject()
				objectMeta(next).SetManagedFields(objectMeta(created).GetManagedFields())
				updated, err := fm.Update(created, next, "updater")
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				entries := objectMeta(updated).GetManagedFields()
				for i := range entries {
					entries[i].Time = nil // set from the clock
				}
				return entries
			}
			want, got := fieldsOf(stock), fieldsOf(ours)
			if len(want) != 2 {
				t.Fatalf("stock converter gave %d managedFields entries, want 2 (creator, updater): %+v", len(want), want)
			}
			if !equality.Semantic.DeepEqual(want, got) {
				t.Errorf("managedFields differ\nstock: %+v\nours:  %+v", want, got)
			}
		})
	}

	t.Run("apply configuration with an unknown field", func(t *testing.T) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"name": "web", "namespace": "default"},
			"spec":     map[string]any{"portz": []any{}},
		}}
		_, errStock := stock.ObjectToTyped(u)
		_, errOurs := ours.ObjectToTyped(u)
		if errStock == nil || errOurs == nil || errStock.Error() != errOurs.Error() {
			t.Fatalf("errors differ: stock %v, ours %v", errStock, errOurs)
		}
		if !strings.Contains(errOurs.Error(), "portz") {
			t.Errorf("error does not name the field: %v", errOurs)
		}
	})

	t.Run("strict conversion of a typed object with duplicates", func(t *testing.T) {
		if _, err := ours.ObjectToTyped(pod.DeepCopyObject(), typed.AllowDuplicates); err != nil {
			t.Fatal(err)
		}
		if _, err := ours.ObjectToTyped(pod.DeepCopyObject()); err == nil || !strings.Contains(err.Error(), "duplicate entries") {
			t.Errorf("strict conversion of a pod with duplicate env names: got %v, want the duplicate-entries error", err)
		}
	})
}

// emptyLike returns a new, empty object of obj's kind (the "live" object of
// a create).
func emptyLike(obj runtime.Object) runtime.Object {
	o, err := scheme.Scheme.New(obj.GetObjectKind().GroupVersionKind())
	if err != nil {
		panic(err)
	}
	return o
}
