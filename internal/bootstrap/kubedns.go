package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// The cluster DNS Service, as kubeadm and the CoreDNS addon name it.
const (
	KubeDNSNamespace = metav1.NamespaceSystem
	KubeDNSName      = "kube-dns"
	KubeDNSLabel     = "k8s-app"
)

// kubeDNSPorts are the ports of kube-system/kube-dns.
func kubeDNSPorts() []corev1.ServicePort {
	return []corev1.ServicePort{
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
		{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
		{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9153, TargetPort: intstr.FromInt32(9153)},
	}
}

// EnsureKubeDNS creates or repairs Service kube-system/kube-dns with
// ClusterIP ip, ports dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP and the
// labels k8s-app=kube-dns, kubernetes.io/name=CoreDNS (as the CoreDNS addon
// labels it). The Service has no selector: each node agent publishes its
// own DNS listener in an EndpointSlice of this Service (svcnet runs DNS per
// node, not as pods). An existing Service keeps its ClusterIP (immutable);
// a different one is reported as an error, as is a type other than ClusterIP
// that cannot be repaired.
func EnsureKubeDNS(ctx context.Context, client kubernetes.Interface, ip net.IP) error {
	if ip == nil || ip.IsUnspecified() {
		return errors.New("bootstrap: EnsureKubeDNS: no ClusterIP given")
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, KubeDNSNamespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: KubeDNSNamespace}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("bootstrap: create namespace %s: %w", KubeDNSNamespace, err)
		}
	} else if err != nil {
		return fmt.Errorf("bootstrap: get namespace %s: %w", KubeDNSNamespace, err)
	}
	svcs := client.CoreV1().Services(KubeDNSNamespace)
	labels := map[string]string{KubeDNSLabel: KubeDNSName, "kubernetes.io/name": "CoreDNS"}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := svcs.Get(ctx, KubeDNSName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			svc = &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: KubeDNSName, Namespace: KubeDNSNamespace, Labels: labels},
				Spec: corev1.ServiceSpec{
					Type:      corev1.ServiceTypeClusterIP,
					ClusterIP: ip.String(),
					Ports:     kubeDNSPorts(),
				},
			}
			_, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("services"), KubeDNSName, errors.New("created concurrently"))
			}
			if err != nil {
				return fmt.Errorf("bootstrap: create service %s/%s: %w", KubeDNSNamespace, KubeDNSName, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("bootstrap: get service %s/%s: %w", KubeDNSNamespace, KubeDNSName, err)
		}
		if svc.Spec.ClusterIP != ip.String() {
			return fmt.Errorf("bootstrap: service %s/%s has ClusterIP %s, want %s (ClusterIP is immutable: delete the Service to change it)",
				KubeDNSNamespace, KubeDNSName, svc.Spec.ClusterIP, ip)
		}
		changed := false
		for k, v := range labels {
			if svc.Labels[k] != v {
				if svc.Labels == nil {
					svc.Labels = map[string]string{}
				}
				svc.Labels[k] = v
				changed = true
			}
		}
		want := kubeDNSPorts()
		if !portsEqual(svc.Spec.Ports, want) {
			svc.Spec.Ports = want
			changed = true
		}
		if !changed {
			return nil
		}
		if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("bootstrap: update service %s/%s: %w", KubeDNSNamespace, KubeDNSName, err)
		}
		return nil
	})
}

// portsEqual compares the fields EnsureKubeDNS owns (not NodePort or
// AppProtocol set by others).
func portsEqual(have, want []corev1.ServicePort) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range want {
		h, w := have[i], want[i]
		if h.Name != w.Name || h.Protocol != w.Protocol || h.Port != w.Port || !apiequality.Semantic.DeepEqual(h.TargetPort, w.TargetPort) {
			return false
		}
	}
	return true
}
