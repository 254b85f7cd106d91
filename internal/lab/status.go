package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Status prints the lab's nodes, addresses, processes and host routes.
// It fails when the lab is not up or a process of it is gone.
func Status(ctx context.Context, dataDir string, w io.Writer) error {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	s, err := LoadState(dataDir)
	if err != nil {
		return err
	}
	marker := dataMarker(dataDir)
	ready := nodeConditions(ctx, s)
	var problems []string
	fmt.Fprintf(w, "API server: %s (pid %d, %s in %s)\n", s.ServerURL, s.ServerPID, state(alive(s.ServerPID, marker)), s.Master().NetNS)
	if !alive(s.ServerPID, marker) {
		problems = append(problems, "API server not running")
	}
	fmt.Fprintf(w, "kubeconfig: %s\n", s.Kubeconfig)
	fmt.Fprintf(w, "host:       %s on %s\n", s.HostIP, s.Bridge)
	if s.ProxyMode != "" {
		fmt.Fprintf(w, "proxy mode: %s\n", s.ProxyMode)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tINTERNAL-IP\tPOD-CIDR\tAGENT\tSTATUS")
	for _, n := range s.Nodes {
		a := alive(n.AgentPID, marker)
		if !a {
			problems = append(problems, "agent "+n.Name+" not running")
		}
		st := ready[n.Name]
		if st == "" {
			st = "Unknown"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d (%s)\t%s\n", n.Name, n.NetNS, n.IP, dash(n.PodCIDR), n.AgentPID, state(a), st)
	}
	_ = tw.Flush()
	if len(s.Routes) > 0 {
		fmt.Fprintln(w, "\nhost routes:")
		for _, r := range s.Routes {
			fmt.Fprintf(w, "  %s dev %s\n", r, s.Bridge)
		}
	}
	fmt.Fprintf(w, "\nlogs: %s\n", filepath.Join(dataDir, "logs"))
	if len(problems) > 0 {
		return fmt.Errorf("lab: %s", strings.Join(problems, "; "))
	}
	return nil
}

func state(alive bool) string {
	if alive {
		return "running"
	}
	return "gone"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeConditions asks the API server for each node's Ready condition
// ("Ready", "NotReady"); an empty map when it does not answer.
func nodeConditions(ctx context.Context, s *State) map[string]string {
	out := map[string]string{}
	rc, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return out
	}
	rc.Timeout = 5 * time.Second
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return out
	}
	list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return out
	}
	for i := range list.Items {
		if nodeReady(&list.Items[i]) {
			out[list.Items[i].Name] = "Ready"
		} else {
			out[list.Items[i].Name] = "NotReady"
		}
	}
	return out
}

// ExitError is the exit status of a command run by Exec.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Exec runs argv inside node's namespace with the caller's stdio and
// KUBECONFIG set to the lab's kubeconfig. A non-zero exit is an
// *ExitError.
func Exec(ctx context.Context, dataDir, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		return errors.New("lab exec: no command")
	}
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	s, err := LoadState(dataDir)
	if err != nil {
		return err
	}
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NetNS}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return &ExitError{Code: ee.ExitCode()}
		}
		return fmt.Errorf("lab exec: %w", err)
	}
	return nil
}
