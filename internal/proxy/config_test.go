package proxy

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcnet/svcnet/internal/bootstrap"
)

func TestDecodeConfig(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		wantErr bool
		check   func(t *testing.T, mode string, sync time.Duration, masqAll bool, npa []string)
	}{
		{name: "defaults", in: "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
			check: func(t *testing.T, mode string, sync time.Duration, _ bool, _ []string) {
				if mode != "nftables" || sync != 30*time.Second {
					t.Errorf("mode %q sync %v", mode, sync)
				}
			}},
		{name: "fields", in: "kind: KubeProxyConfiguration\nmode: nftables\nnodePortAddresses: [192.168.0.0/24]\nnftables:\n  masqueradeAll: true\n  syncPeriod: 10s\n",
			check: func(t *testing.T, _ string, sync time.Duration, masqAll bool, npa []string) {
				if sync != 10*time.Second || !masqAll || len(npa) != 1 {
					t.Errorf("sync %v masqAll %v npa %v", sync, masqAll, npa)
				}
			}},
		{name: "typo", in: "kind: KubeProxyConfiguration\nmasqueradeAl: true\n", wantErr: true},
		{name: "wrong kind", in: "kind: Pod\n", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeConfig([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && tc.check != nil {
				tc.check(t, string(c.Mode), c.NFTables.SyncPeriod.Duration, c.NFTables.MasqueradeAll, c.NodePortAddresses)
			}
		})
	}
}

func TestLoadConfigMap(t *testing.T) {
	ctx := context.Background()
	c := fake.NewSimpleClientset()
	got, err := LoadConfigMap(ctx, c)
	if err != nil || got.Mode != "nftables" {
		t.Fatalf("missing ConfigMap: %v %v, want defaults", got, err)
	}
	_, err = c.CoreV1().ConfigMaps("kube-system").Create(ctx, &v1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy"},
		Data:       map[string]string{"config.conf": "kind: KubeProxyConfiguration\nmode: ipvs\n"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err = LoadConfigMap(ctx, c)
	if err != nil || got.Mode != "ipvs" {
		t.Fatalf("ConfigMap: mode %v err %v, want ipvs", got.Mode, err)
	}
}

// The ConfigMap the server bootstraps decodes strictly and selects nftables.
func TestBootstrapKubeProxyConfigDecodes(t *testing.T) {
	c, err := DecodeConfig([]byte(bootstrap.DefaultKubeProxyConfig))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Mode) != "nftables" {
		t.Fatalf("mode %q, want nftables", c.Mode)
	}
	if c.HealthzBindAddress != "0.0.0.0:10256" || c.MetricsBindAddress != "127.0.0.1:10249" {
		t.Fatalf("listeners %q %q", c.HealthzBindAddress, c.MetricsBindAddress)
	}
}
