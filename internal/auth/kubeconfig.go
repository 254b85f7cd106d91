package auth

import (
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ClusterName is the cluster and context name in the kubeconfigs svcnet writes.
const ClusterName = "svcnet"

// Credentials say how to reach the API server and who to be.
type Credentials struct {
	// Server is the API server URL, e.g. https://127.0.0.1:6443.
	Server string
	// CAData is the PEM CA certificate that signed the serving certificate.
	CAData []byte
	// UserName names the kubeconfig user entry ("admin", "node").
	UserName string
	// ClientCertData and ClientKeyData are a PEM client certificate and key.
	ClientCertData, ClientKeyData []byte
	// Token is a bearer token (used when no client certificate is given).
	Token string
}

func (c Credentials) validate() error {
	if c.Server == "" {
		return errors.New("auth: kubeconfig: server not set")
	}
	if len(c.CAData) == 0 {
		return errors.New("auth: kubeconfig: CA data not set")
	}
	if len(c.ClientCertData) == 0 && c.Token == "" {
		return errors.New("auth: kubeconfig: neither client certificate nor token set")
	}
	return nil
}

// Kubeconfig returns a kubeconfig with one cluster, user and context (all
// named after ClusterName, the user after c.UserName), selected as current.
func Kubeconfig(c Credentials) (*clientcmdapi.Config, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	user := c.UserName
	if user == "" {
		user = ClusterName
	}
	cfg := clientcmdapi.NewConfig()
	cluster := clientcmdapi.NewCluster()
	cluster.Server = c.Server
	cluster.CertificateAuthorityData = c.CAData
	cfg.Clusters[ClusterName] = cluster

	ai := clientcmdapi.NewAuthInfo()
	if len(c.ClientCertData) > 0 {
		ai.ClientCertificateData = c.ClientCertData
		ai.ClientKeyData = c.ClientKeyData
	} else {
		ai.Token = c.Token
	}
	cfg.AuthInfos[user] = ai

	ctx := clientcmdapi.NewContext()
	ctx.Cluster = ClusterName
	ctx.AuthInfo = user
	ctx.Namespace = "default"
	cfg.Contexts[ClusterName] = ctx
	cfg.CurrentContext = ClusterName
	return cfg, nil
}

// WriteKubeconfig writes the kubeconfig for c to path (mode 0600, atomically).
func WriteKubeconfig(path string, c Credentials) error {
	cfg, err := Kubeconfig(c)
	if err != nil {
		return err
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("auth: encode kubeconfig: %w", err)
	}
	return WriteFileAtomic(path, data, privateFileMode)
}

// RESTConfig returns a client-go configuration for c.
func RESTConfig(c Credentials) (*rest.Config, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	rc := &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.CAData,
			CertData: c.ClientCertData,
			KeyData:  c.ClientKeyData,
		},
	}
	if len(c.ClientCertData) == 0 {
		rc.BearerToken = c.Token // same precedence as Kubeconfig
	}
	return rc, nil
}
