package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKubectlServiceWorkflow is acceptance point 1 of issue 2: the seed's
// walk-through with the real kubectl command tree.
func TestKubectlServiceWorkflow(t *testing.T) {
	s := startServer(t, serverOptions{})

	t.Run("version", func(t *testing.T) {
		out := s.mustKubectl("version", "-o", "json")
		var v struct {
			ClientVersion struct{ GitVersion string }
			ServerVersion struct{ GitVersion, Major, Minor string }
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("kubectl version -o json: %v\n%s", err, out)
		}
		if v.ClientVersion.GitVersion != "v1.37.2" || v.ServerVersion.Major != "1" || v.ServerVersion.Minor != "37" ||
			!strings.HasPrefix(v.ServerVersion.GitVersion, "v1.37.2") {
			t.Errorf("versions = %+v", v)
		}
	})

	t.Run("create seed ClusterIP service", func(t *testing.T) {
		out := s.mustKubectl("create", "-f", example("service-clusterip.yaml"))
		if strings.TrimSpace(out) != "service/service-clusterip created" {
			t.Errorf("create printed %q", out)
		}
	})

	t.Run("get svc -o wide", func(t *testing.T) {
		out := s.mustKubectl("get", "svc", "-n", "default", "-o", "wide")
		rows := tableRows(out)
		wantHeader := []string{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"}
		if len(rows) == 0 || strings.Join(rows[0], " ") != strings.Join(wantHeader, " ") {
			t.Fatalf("header: got\n%s\nwant columns %v", out, wantHeader)
		}
		want := map[string][]string{
			// name: TYPE CLUSTER-IP EXTERNAL-IP PORT(S) (AGE skipped) SELECTOR
			"kubernetes":        {"ClusterIP", "10.96.0.1", "<none>", "443/TCP", "<none>"},
			"service-clusterip": {"ClusterIP", "10.97.1.1", "<none>", "80/TCP", "app=service-env"},
		}
		for _, row := range rows[1:] {
			w, ok := want[row[0]]
			if !ok {
				continue
			}
			delete(want, row[0])
			if len(row) != 7 {
				t.Errorf("row %v: want 7 columns", row)
				continue
			}
			got := []string{row[1], row[2], row[3], row[4], row[6]}
			if strings.Join(got, " ") != strings.Join(w, " ") {
				t.Errorf("row %s = %v, want %v", row[0], got, w)
			}
		}
		for name := range want {
			t.Errorf("no row for %s in\n%s", name, out)
		}
	})

	t.Run("describe svc", func(t *testing.T) {
		out := s.mustKubectl("describe", "svc", "service-clusterip", "-n", "default")
		for _, re := range []string{
			`(?m)^Name:\s+service-clusterip$`,
			`(?m)^Namespace:\s+default$`,
			`(?m)^Selector:\s+app=service-env$`,
			`(?m)^Type:\s+ClusterIP$`,
			`(?m)^IP Family Policy:\s+SingleStack$`,
			`(?m)^IP Families:\s+IPv4$`,
			`(?m)^IP:\s+10\.97\.1\.1$`,
			`(?m)^IPs:\s+10\.97\.1\.1$`,
			`(?m)^Port:\s+<unset>\s+80/TCP$`,
			`(?m)^TargetPort:\s+80/TCP$`,
			`(?m)^Endpoints:`,
			`(?m)^Session Affinity:\s+None$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("describe output lacks %s:\n%s", re, out)
			}
		}
	})

	t.Run("edit via EDITOR", func(t *testing.T) {
		editor := filepath.Join(t.TempDir(), "editor.sh")
		// Add a label under metadata (the object has none yet).
		script := "#!/bin/sh\nsed -i 's/^metadata:$/metadata:\\n  labels:\\n    edited: \"yes\"/' \"$1\"\n"
		if err := os.WriteFile(editor, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		out, errOut, err := s.kubectlEnv([]string{"EDITOR=" + editor, "KUBE_EDITOR=" + editor},
			"edit", "svc", "service-clusterip", "-n", "default")
		if err != nil {
			t.Fatalf("edit: %v\n%s\n%s", err, out, errOut)
		}
		if !strings.Contains(out, "service/service-clusterip edited") {
			t.Errorf("edit printed %q %q", out, errOut)
		}
		if got := s.mustKubectl("get", "svc", "service-clusterip", "-o", "jsonpath={.metadata.labels.edited}"); got != "yes" {
			t.Errorf("label after edit = %q, want yes", got)
		}
	})

	t.Run("label", func(t *testing.T) {
		out := s.mustKubectl("label", "svc", "service-clusterip", "tier=web")
		if !strings.Contains(out, "service/service-clusterip labeled") {
			t.Errorf("label printed %q", out)
		}
		if got := s.mustKubectl("get", "svc", "-l", "tier=web", "-o", "name"); strings.TrimSpace(got) != "service/service-clusterip" {
			t.Errorf("get -l tier=web = %q", got)
		}
	})

	t.Run("patch", func(t *testing.T) {
		tests := []struct {
			typ, patch, jsonpath, want string
		}{
			{"json", `[{"op":"add","path":"/metadata/annotations","value":{"patched-by":"json"}}]`,
				"{.metadata.annotations.patched-by}", "json"},
			{"merge", `{"metadata":{"labels":{"merge":"yes"}}}`, "{.metadata.labels.merge}", "yes"},
			// Strategic merge keys ports by port: this changes port 80's
			// targetPort instead of replacing the list.
			{"strategic", `{"spec":{"ports":[{"port":80,"targetPort":8080}]}}`,
				"{.spec.ports[*].port}/{.spec.ports[*].targetPort}/{.spec.ports[*].protocol}", "80/8080/TCP"},
		}
		for _, tt := range tests {
			out := s.mustKubectl("patch", "svc", "service-clusterip", "--type", tt.typ, "-p", tt.patch)
			if !strings.Contains(out, "service/service-clusterip patched") {
				t.Errorf("%s patch printed %q", tt.typ, out)
			}
			if got := s.mustKubectl("get", "svc", "service-clusterip", "-o", "jsonpath="+tt.jsonpath); got != tt.want {
				t.Errorf("after %s patch %s = %q, want %q", tt.typ, tt.jsonpath, got, tt.want)
			}
		}
		if got := s.mustKubectl("get", "svc", "service-clusterip", "-o", "jsonpath={.spec.clusterIP}"); got != "10.97.1.1" {
			t.Errorf("clusterIP after patches = %q", got)
		}
	})

	t.Run("apply client-side", func(t *testing.T) {
		out := s.mustKubectl("apply", "-f", example("service-nodeport.yaml"))
		if strings.TrimSpace(out) != "service/service-nodeport created" {
			t.Errorf("first apply printed %q", out)
		}
		if got := s.mustKubectl("get", "svc", "service-nodeport", "-o", "jsonpath={.spec.ports[0].nodePort}"); got != "30002" {
			t.Errorf("nodePort = %q, want 30002", got)
		}
		changed := writeModified(t, example("service-nodeport.yaml"), "  selector:\n", "  sessionAffinity: ClientIP\n  selector:\n")
		out = s.mustKubectl("apply", "-f", changed)
		if strings.TrimSpace(out) != "service/service-nodeport configured" {
			t.Errorf("second apply printed %q", out)
		}
		if got := s.mustKubectl("get", "svc", "service-nodeport", "-o", "jsonpath={.spec.sessionAffinity}"); got != "ClientIP" {
			t.Errorf("sessionAffinity = %q, want ClientIP", got)
		}
		out = s.mustKubectl("apply", "-f", changed)
		if strings.TrimSpace(out) != "service/service-nodeport unchanged" {
			t.Errorf("third apply printed %q", out)
		}
	})

	t.Run("apply server-side", func(t *testing.T) {
		out := s.mustKubectl("apply", "--server-side", "-f", example("service-headless.yaml"))
		if strings.TrimSpace(out) != "service/service-headliness serverside-applied" {
			t.Errorf("server-side apply printed %q", out)
		}
		changed := writeModified(t, example("service-headless.yaml"), "  selector:\n", "  publishNotReadyAddresses: true\n  selector:\n")
		s.mustKubectl("apply", "--server-side", "-f", changed)
		if got := s.mustKubectl("get", "svc", "service-headliness", "-o", "jsonpath={.spec.publishNotReadyAddresses}/{.spec.clusterIP}"); got != "true/None" {
			t.Errorf("after server-side apply = %q, want true/None", got)
		}
		managers := s.mustKubectl("get", "svc", "service-headliness", "--show-managed-fields",
			"-o", `jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation}{"\n"}{end}`)
		if !strings.Contains(managers, "kubectl:Apply") {
			t.Errorf("managedFields managers = %q, want kubectl:Apply", managers)
		}
		// And the same object through a patch of type apply (what
		// --server-side sends), from a second field manager.
		out = s.mustKubectl("apply", "--server-side", "--field-manager", "other", "-f", example("service-externalname.yaml"))
		if !strings.Contains(out, "serverside-applied") {
			t.Errorf("apply printed %q", out)
		}
	})

	t.Run("get -w", func(t *testing.T) {
		cmd := exec.Command(svcnetBin, "kubectl", "get", "svc", "-w", "--output-watch-events")
		cmd.Env = s.kubectlBaseEnv()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		lines := lineReader(stdout)
		expect := func(re string) {
			t.Helper()
			r := regexp.MustCompile(re)
			deadline := time.After(commandTimeout)
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("watch ended before a line matching %s; stderr: %s", re, stderr.String())
					}
					if r.MatchString(l) {
						return
					}
				case <-deadline:
					t.Fatalf("no watch line matching %s; stderr: %s", re, stderr.String())
				}
			}
		}
		// The initial state arrives as ADDED events.
		expect(`^ADDED\s+service-clusterip\s+ClusterIP\s+10\.97\.1\.1\s`)
		s.mustKubectl("create", "service", "clusterip", "watched", "--tcp", "8080:80")
		expect(`^ADDED\s+watched\s+ClusterIP\s+10\.`)
		s.mustKubectl("label", "svc", "watched", "changed=yes")
		expect(`^MODIFIED\s+watched\s`)
		s.mustKubectl("delete", "svc", "watched")
		expect(`^DELETED\s+watched\s`)
	})

	t.Run("delete", func(t *testing.T) {
		out := s.mustKubectl("delete", "svc", "service-clusterip")
		if !strings.Contains(out, `service "service-clusterip" deleted`) {
			t.Errorf("delete printed %q", out)
		}
		_, errOut, err := s.kubectl("get", "svc", "service-clusterip")
		if err == nil || !strings.Contains(errOut, `Error from server (NotFound): services "service-clusterip" not found`) {
			t.Errorf("get after delete: err=%v stderr=%q", err, errOut)
		}
		// The IP is free again: the seed manifest can be created anew.
		s.mustKubectl("create", "-f", example("service-clusterip.yaml"))
	})
}

// tableRows splits kubectl's table output into whitespace-separated cells.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows = append(rows, f)
		}
	}
	return rows
}

// writeModified writes a copy of the manifest at path with old replaced by new.
func writeModified(t *testing.T, path, old, new string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s lacks %q", path, old)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
