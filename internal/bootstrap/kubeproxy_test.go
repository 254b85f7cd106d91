package bootstrap

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestEnsureKubeProxyConfigMap(t *testing.T) {
	ctx := context.Background()
	c := fake.NewSimpleClientset()
	if err := EnsureKubeProxyConfigMap(ctx, c); err != nil {
		t.Fatal(err)
	}
	cms := c.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["config.conf"] != DefaultKubeProxyConfig {
		t.Fatalf("config.conf = %q", cm.Data["config.conf"])
	}
	// A user's edit (the seed's `kubectl edit cm kube-proxy`) survives a
	// restart's bootstrap.
	cm.Data["config.conf"] = "kind: KubeProxyConfiguration\nmode: \"ipvs\"\n"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureKubeProxyConfigMap(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, _ := cms.Get(ctx, "kube-proxy", metav1.GetOptions{})
	if got.Data["config.conf"] != cm.Data["config.conf"] {
		t.Fatalf("bootstrap overwrote the user's configuration: %q", got.Data["config.conf"])
	}
}
