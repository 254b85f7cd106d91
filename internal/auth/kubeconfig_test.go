package auth

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestKubeconfigAuthenticates writes kubeconfigs, loads them the way kubectl
// does, and checks that they reach the server as the intended user.
func TestKubeconfigAuthenticates(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name     string
		creds    Credentials
		wantBody string
	}{
		{
			name: "admin client certificate",
			creds: Credentials{Server: s.URL, CAData: s.pki.CAPEM, UserName: "admin",
				ClientCertData: s.pki.AdminCertPEM, ClientKeyData: s.pki.AdminKeyPEM},
			wantBody: "admin|system:masters,system:authenticated|",
		},
		{
			name:     "join token",
			creds:    Credentials{Server: s.URL, CAData: s.pki.CAPEM, UserName: "node", Token: s.tokens.Join},
			wantBody: "system:nodes:join|system:nodes,system:authenticated|",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.kubeconfig")
			if err := WriteKubeconfig(path, tt.creds); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("kubeconfig mode = %v, want 0600", st.Mode().Perm())
			}
			loaded, err := clientcmd.LoadFromFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if loaded.CurrentContext != ClusterName || loaded.Contexts[ClusterName].Namespace != "default" {
				t.Errorf("context = %q %+v", loaded.CurrentContext, loaded.Contexts[ClusterName])
			}
			fromFile, err := clientcmd.BuildConfigFromFlags("", path)
			if err != nil {
				t.Fatal(err)
			}
			direct, err := RESTConfig(tt.creds)
			if err != nil {
				t.Fatal(err)
			}
			for name, cfg := range map[string]*rest.Config{"kubeconfig": fromFile, "RESTConfig": direct} {
				hc, err := rest.HTTPClientFor(cfg)
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequestWithContext(context.Background(), "GET", s.URL+"/api", nil)
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != tt.wantBody {
					t.Errorf("%s: server saw %q, want %q", name, body, tt.wantBody)
				}
			}
		})
	}
}

func TestKubeconfigValidation(t *testing.T) {
	tests := []struct {
		name  string
		creds Credentials
	}{
		{"no server", Credentials{CAData: []byte("x"), Token: "t"}},
		{"no CA", Credentials{Server: "https://x", Token: "t"}},
		{"no credentials", Credentials{Server: "https://x", CAData: []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := WriteKubeconfig(filepath.Join(t.TempDir(), "k"), tt.creds); err == nil {
				t.Error("want an error")
			}
		})
	}
}
