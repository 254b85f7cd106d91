package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// TestAuthentication is acceptance point 6 of issue 2: unauthenticated
// requests get 401, and the node credential reads but cannot write Services.
func TestAuthentication(t *testing.T) {
	s := startServer(t, serverOptions{})
	caPEM, err := os.ReadFile(filepath.Join(s.opts.dataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	// Verifying the serving certificate for 127.0.0.1 also checks its SANs.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	t.Run("anonymous requests", func(t *testing.T) {
		tests := []struct {
			path     string
			wantCode int
		}{
			{"/api/v1/namespaces/default/services", 401},
			{"/api/v1/services?watch=true", 401},
			{"/api", 401},
			{"/apis/apps/v1/deployments", 401},
			{"/healthz", 200},
			{"/readyz", 200},
			{"/version", 200},
		}
		for _, tt := range tests {
			resp, err := anon.Get(s.url() + tt.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("GET %s = %d %s, want %d", tt.path, resp.StatusCode, body, tt.wantCode)
				continue
			}
			if tt.wantCode != 401 {
				continue
			}
			var st map[string]any
			if err := json.Unmarshal(body, &st); err != nil {
				t.Errorf("GET %s: 401 body is not JSON: %s", tt.path, body)
				continue
			}
			want := map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
				"message": "Unauthorized", "reason": "Unauthorized", "code": float64(401)}
			for k, v := range want {
				if st[k] != v {
					t.Errorf("GET %s: 401 body %s = %v, want %v", tt.path, k, st[k], v)
				}
			}
		}
	})

	t.Run("bad token", func(t *testing.T) {
		req, _ := http.NewRequest("GET", s.url()+"/api/v1/services", nil)
		req.Header.Set("Authorization", "Bearer not-a-token")
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
	})

	// node.kubeconfig names the advertise address; this server listens on
	// loopback only, so point a copy of it at 127.0.0.1. Its token and CA
	// are what is being tested.
	nodeKubeconfig := filepath.Join(t.TempDir(), "node.kubeconfig")
	cfg, err := clientcmd.LoadFromFile(filepath.Join(s.opts.dataDir, "node.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(s.opts.dataDir, "node-token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = s.url()
	}
	for _, ai := range cfg.AuthInfos {
		if ai.Token != strings.TrimSpace(string(token)) || len(ai.ClientCertificateData) != 0 {
			t.Errorf("node.kubeconfig user is not the node-token bearer token")
		}
	}
	if err := clientcmd.WriteToFile(*cfg, nodeKubeconfig); err != nil {
		t.Fatal(err)
	}
	node := func(args ...string) (string, string, error) {
		return s.kubectlEnv(nil, append([]string{"--kubeconfig", nodeKubeconfig}, args...)...)
	}

	t.Run("node credential", func(t *testing.T) {
		s.mustKubectl("create", "-f", example("service-clusterip.yaml"))

		if out, errOut, err := node("get", "svc", "-A"); err != nil || !strings.Contains(out, "service-clusterip") {
			t.Errorf("node get svc: err=%v\n%s\n%s", err, out, errOut)
		}
		denied := []struct {
			args []string
			want string
		}{
			{[]string{"create", "-f", example("service-nodeport.yaml")},
				`services is forbidden: User "system:nodes:join" cannot create resource "services" in API group "" in the namespace "default"`},
			{[]string{"delete", "svc", "service-clusterip"},
				`services "service-clusterip" is forbidden: User "system:nodes:join" cannot delete resource "services" in API group "" in the namespace "default"`},
			{[]string{"delete", "svc", "kubernetes"},
				`services "kubernetes" is forbidden: User "system:nodes:join" cannot delete resource "services"`},
			{[]string{"label", "svc", "service-clusterip", "x=y"},
				`services "service-clusterip" is forbidden: User "system:nodes:join" cannot patch resource "services"`},
			// kubectl's generator commands print "error: failed to create
			// configmap: <message>" instead of "Error from server".
			{[]string{"create", "configmap", "c", "--from-literal", "a=b"},
				`configmaps is forbidden: User "system:nodes:join" cannot create resource "configmaps" in API group "" in the namespace "default"`},
		}
		for _, d := range denied {
			out, errOut, err := node(d.args...)
			if err == nil {
				t.Errorf("node %v succeeded (%s), want Forbidden", d.args, out)
				continue
			}
			generator := d.args[0] == "create" && d.args[1] != "-f"
			if (!generator && !strings.Contains(errOut, "Error from server (Forbidden)")) || !strings.Contains(errOut, d.want) {
				t.Errorf("node %v: stderr %q, want Forbidden with %q", d.args, errOut, d.want)
			}
		}
		if got := s.mustKubectl("get", "svc", "service-clusterip", "-o", "jsonpath={.metadata.name}"); got != "service-clusterip" {
			t.Errorf("service gone after the node's denied delete")
		}

		// What a node agent writes is allowed.
		nodeYAML := filepath.Join(t.TempDir(), "node.yaml")
		if err := os.WriteFile(nodeYAML, []byte("apiVersion: v1\nkind: Node\nmetadata:\n  name: e2e-node\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, errOut, err := node("create", "-f", nodeYAML); err != nil {
			t.Errorf("node create Node: %v\n%s\n%s", err, out, errOut)
		}
		if out, errOut, err := node("label", "node", "e2e-node", "ready=yes"); err != nil {
			t.Errorf("node label own Node: %v\n%s\n%s", err, out, errOut)
		}
		leaseYAML := filepath.Join(t.TempDir(), "lease.yaml")
		lease := "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: e2e-node\n  namespace: kube-node-lease\nspec:\n  holderIdentity: e2e-node\n  leaseDurationSeconds: 40\n"
		if err := os.WriteFile(leaseYAML, []byte(lease), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, errOut, err := node("create", "-f", leaseYAML); err != nil {
			t.Errorf("node create Lease: %v\n%s\n%s", err, out, errOut)
		}
	})

	t.Run("admin token from tokens.csv", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(s.opts.dataDir, "tokens.csv"))
		if err != nil {
			t.Fatal(err)
		}
		var adminToken string
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Split(l, ","); len(f) >= 4 && f[1] == "admin" {
				adminToken = f[0]
			}
		}
		if adminToken == "" {
			t.Fatalf("no admin line in tokens.csv:\n%s", data)
		}
		req, _ := http.NewRequest("GET", s.url()+"/api/v1/namespaces/default/services", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"kind":"ServiceList"`) {
			t.Errorf("admin token list = %d %s", resp.StatusCode, body)
		}
	})
}
