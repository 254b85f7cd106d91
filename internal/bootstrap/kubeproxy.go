package bootstrap

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The kube-proxy ConfigMap, named and keyed as kubeadm names it, so the
// seed's `kubectl edit cm kube-proxy -n kube-system` finds it. Node proxies
// read key config.conf (a KubeProxyConfiguration).
const (
	KubeProxyConfigMapNamespace = metav1.NamespaceSystem
	KubeProxyConfigMapName      = "kube-proxy"
	KubeProxyConfigKey          = "config.conf"
)

// DefaultKubeProxyConfig is the KubeProxyConfiguration written at bootstrap:
// nftables mode and kube-proxy's usual listeners. Everything else takes the
// proxy's defaults, so the file stays short enough to edit by hand.
const DefaultKubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
# nftables (default) | iptables | ipvs | userspace
mode: "nftables"
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
`

// EnsureKubeProxyConfigMap creates kube-system/kube-proxy with the default
// configuration when it does not exist. An existing ConfigMap is never
// changed: it is the user's to edit.
func EnsureKubeProxyConfigMap(ctx context.Context, client kubernetes.Interface) error {
	cms := client.CoreV1().ConfigMaps(KubeProxyConfigMapNamespace)
	_, err := cms.Get(ctx, KubeProxyConfigMapName, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("bootstrap: get configmap %s/%s: %w", KubeProxyConfigMapNamespace, KubeProxyConfigMapName, err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      KubeProxyConfigMapName,
			Namespace: KubeProxyConfigMapNamespace,
			Labels:    map[string]string{"app": "kube-proxy"},
		},
		Data: map[string]string{KubeProxyConfigKey: DefaultKubeProxyConfig},
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bootstrap: create configmap %s/%s: %w", KubeProxyConfigMapNamespace, KubeProxyConfigMapName, err)
	}
	return nil
}
