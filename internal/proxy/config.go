package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"
)

// Where the cluster-wide proxy configuration lives (as kubeadm puts it).
const (
	ConfigMapNamespace = "kube-system"
	ConfigMapName      = "kube-proxy"
	ConfigMapKey       = "config.conf"

	// ModeNFTables is the default (and for now the only) proxy mode.
	ModeNFTables = "nftables"
)

// DefaultConfig returns a KubeProxyConfiguration with svcnet's defaults:
// nftables mode, kube-proxy's ports and periods.
func DefaultConfig() *kpconfig.KubeProxyConfiguration {
	c := &kpconfig.KubeProxyConfiguration{}
	c.APIVersion = "kubeproxy.config.k8s.io/v1alpha1"
	c.Kind = "KubeProxyConfiguration"
	ApplyDefaults(c)
	return c
}

// ApplyDefaults fills unset fields of c.
func ApplyDefaults(c *kpconfig.KubeProxyConfiguration) {
	if c.Mode == "" {
		c.Mode = ModeNFTables
	}
	if c.HealthzBindAddress == "" {
		c.HealthzBindAddress = "0.0.0.0:10256"
	}
	if c.MetricsBindAddress == "" {
		c.MetricsBindAddress = "127.0.0.1:10249"
	}
	if c.NFTables.SyncPeriod.Duration == 0 {
		c.NFTables.SyncPeriod.Duration = 30 * time.Second
	}
	if c.NFTables.MinSyncPeriod.Duration == 0 {
		// svcnet uses this as the burst interval, not a floor on lone changes.
		c.NFTables.MinSyncPeriod.Duration = 100 * time.Millisecond
	}
	if c.ConfigSyncPeriod.Duration == 0 {
		c.ConfigSyncPeriod.Duration = 15 * time.Minute
	}
}

// DecodeConfig parses a KubeProxyConfiguration (YAML or JSON) and applies
// defaults. Unknown fields are errors, so typos are not silently ignored.
func DecodeConfig(data []byte) (*kpconfig.KubeProxyConfiguration, error) {
	c := &kpconfig.KubeProxyConfiguration{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("proxy: decode KubeProxyConfiguration: %w", err)
	}
	if c.Kind != "" && c.Kind != "KubeProxyConfiguration" {
		return nil, fmt.Errorf("proxy: config kind is %q, want KubeProxyConfiguration", c.Kind)
	}
	ApplyDefaults(c)
	return c, nil
}

// LoadConfigFile reads a KubeProxyConfiguration from path.
func LoadConfigFile(path string) (*kpconfig.KubeProxyConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxy: read config: %w", err)
	}
	return DecodeConfig(data)
}

// LoadConfigMap reads the configuration from ConfigMap kube-system/kube-proxy
// key config.conf; a missing ConfigMap yields DefaultConfig.
func LoadConfigMap(ctx context.Context, c kubernetes.Interface) (*kpconfig.KubeProxyConfiguration, error) {
	cm, err := c.CoreV1().ConfigMaps(ConfigMapNamespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: get ConfigMap %s/%s: %w", ConfigMapNamespace, ConfigMapName, err)
	}
	data, ok := cm.Data[ConfigMapKey]
	if !ok {
		return nil, fmt.Errorf("proxy: ConfigMap %s/%s has no key %q", ConfigMapNamespace, ConfigMapName, ConfigMapKey)
	}
	return DecodeConfig([]byte(data))
}

// ParsePrefixes parses comma-separated (or repeated) CIDRs and the
// nodePortAddresses keywords: "primary" and empty entries are skipped
// (primary = the node IPs, the default), "all" is 0.0.0.0/0 and ::/0, and
// "localhost" is skipped because svcnet never serves NodePorts on loopback.
func ParsePrefixes(ss ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		for _, part := range strings.Split(s, ",") {
			part = strings.TrimSpace(part)
			switch part {
			case "", "primary", "localhost":
				continue
			case "all":
				out = append(out, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
				continue
			}
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return nil, fmt.Errorf("proxy: bad CIDR %q: %w", part, err)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}
