package openapi

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"github.com/svcnet/svcnet/internal/apiserver/discovery"
)

// TestKubectl runs the real kubectl command tree against discovery and
// OpenAPI served by these packages (nothing else: no resource endpoints).
func TestKubectl(t *testing.T) {
	openAPI, err := NewHandler(testKinds())
	if err != nil {
		t.Fatal(err)
	}
	disc := discovery.NewHandler(testKinds())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/openapi/") {
			openAPI.ServeHTTP(w, r)
			return
		}
		disc.ServeHTTP(w, r)
	}))
	defer srv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	// kubectl exits the process on errors; make that a test failure.
	type fatal struct{ msg string }
	cmdutil.BehaviorOnFatal(func(msg string, code int) { panic(fatal{msg}) })
	defer cmdutil.DefaultBehaviorOnFatal()

	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"explain", "svc.spec.sessionAffinity"},
			[]string{"KIND:       Service", "FIELD: sessionAffinity <string>"}},
		{[]string{"explain", "deploy.spec.template.spec.containers.ports.protocol"},
			[]string{"GROUP:      apps", "FIELD: protocol <string>"}},
		{[]string{"explain", "endpointslices", "--recursive"},
			[]string{"KIND:       EndpointSlice", "addressType\t<string> -required-"}},
		{[]string{"api-resources", "--api-group=apps"},
			[]string{"deployments", "deploy", "apps/v1", "Deployment"}},
		{[]string{"api-resources", "--namespaced=false"},
			[]string{"namespaces", "ns", "Namespace", "nodes", "no"}},
		{[]string{"api-versions"},
			[]string{"apps/v1", "discovery.k8s.io/v1", "v1"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := kubectlcmd.NewKubectlCommand(kubectlcmd.KubectlOptions{
				IOStreams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
			})
			cmd.SetArgs(append([]string{"--server", srv.URL, "--cache-dir", t.TempDir()}, tt.args...))
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						f, ok := r.(fatal)
						if !ok {
							panic(r)
						}
						err = errors.New(f.msg)
					}
				}()
				return cmd.Execute()
			}()
			if err != nil {
				t.Fatalf("kubectl %v: %v\n%s", tt.args, err, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if errOut.Len() > 0 {
				t.Errorf("stderr: %s", errOut.String())
			}
		})
	}
}
