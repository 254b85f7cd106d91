package lab

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantErr   string
		wantNodes []string
		wantIPs   []string
		wantHost  string
	}{
		{
			name:      "seed's three nodes",
			cfg:       Config{DataDir: "/d", Nodes: 3, Subnet: DefaultSubnet},
			wantNodes: []string{"master", "work1", "work2"},
			wantIPs:   []string{"192.168.77.10", "192.168.77.11", "192.168.77.12"},
			wantHost:  "192.168.77.1/24",
		},
		{
			name:      "one node",
			cfg:       Config{DataDir: "/d", Nodes: 1, Subnet: netip.MustParsePrefix("10.10.0.0/16")},
			wantNodes: []string{"master"},
			wantIPs:   []string{"10.10.0.10"},
			wantHost:  "10.10.0.1/16",
		},
		{name: "no nodes", cfg: Config{DataDir: "/d", Nodes: 0, Subnet: DefaultSubnet}, wantErr: "want 1 to 50"},
		{name: "too many nodes", cfg: Config{DataDir: "/d", Nodes: 51, Subnet: DefaultSubnet}, wantErr: "want 1 to 50"},
		{name: "subnet too small", cfg: Config{DataDir: "/d", Nodes: 2, Subnet: netip.MustParsePrefix("192.168.1.0/28")}, wantErr: "/24 or larger"},
		{name: "subnet in the pod CIDR", cfg: Config{DataDir: "/d", Nodes: 2, Subnet: netip.MustParsePrefix("10.244.9.0/24")}, wantErr: "overlaps"},
		{name: "IPv6 subnet", cfg: Config{DataDir: "/d", Nodes: 2, Subnet: netip.MustParsePrefix("fd00::/64")}, wantErr: "IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := plan(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("plan = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names, ips []string
			for _, n := range s.Nodes {
				names = append(names, n.Name)
				ips = append(ips, n.IP.String())
				if n.NetNS != NetNSPrefix+n.Name || n.HostLink != HostLinkPrefix+n.Name || len(n.HostLink) > 15 {
					t.Errorf("node %s: netns %q, host link %q", n.Name, n.NetNS, n.HostLink)
				}
				if n.RootDir != filepath.Join("/d", "nodes", n.Name) {
					t.Errorf("node %s root dir %s", n.Name, n.RootDir)
				}
			}
			if !slices.Equal(names, tt.wantNodes) || !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("nodes %v %v, want %v %v", names, ips, tt.wantNodes, tt.wantIPs)
			}
			if s.HostIP.String() != tt.wantHost {
				t.Errorf("host %s, want %s", s.HostIP, tt.wantHost)
			}
			if want := "https://" + tt.wantIPs[0] + ":6443"; s.ServerURL != want {
				t.Errorf("server URL %s, want %s", s.ServerURL, want)
			}
		})
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := plan(Config{DataDir: dir, Nodes: 2, Subnet: DefaultSubnet, ProxyMode: "iptables"})
	if err != nil {
		t.Fatal(err)
	}
	s.ServerPID, s.Nodes[1].AgentPID, s.Nodes[1].PodCIDR = 10, 11, "10.244.1.0/24"
	s.Routes = []string{"10.244.1.0/24 via 192.168.77.11"}
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ServerPID != 10 || got.Nodes[1].AgentPID != 11 || got.Nodes[1].PodCIDR != "10.244.1.0/24" ||
		got.Nodes[1].IP != s.Nodes[1].IP || got.ProxyMode != "iptables" || !slices.Equal(got.Routes, s.Routes) {
		t.Errorf("loaded %+v, want %+v", got, s)
	}
	if n, err := got.Node("work1"); err != nil || n.Name != "work1" {
		t.Errorf("Node(work1) = %v, %v", n, err)
	}
	if _, err := got.Node("work9"); err == nil || !strings.Contains(err.Error(), "master, work1") {
		t.Errorf("Node(work9) error %v, want one listing the nodes", err)
	}
	if _, err := LoadState(t.TempDir()); err == nil || !strings.Contains(err.Error(), "lab up") {
		t.Errorf("LoadState of an empty dir: %v, want a hint to run lab up", err)
	}
}

// TestLeftovers checks that lab down's sweep finds a process naming the
// data dir and its descendants (a pod's container under its shim), and
// nothing else.
func TestLeftovers(t *testing.T) {
	dataDir := t.TempDir()
	// $0 of the shell names a path below the data dir, like a shim's --spec;
	// its child sleep does not.
	marked := exec.Command("sh", "-c", "sleep 60 & wait", filepath.Join(dataDir, "nodes", "x", "spec"))
	other := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{marked, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	var pids []int
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		pids = pids[:0]
		for _, p := range leftovers(dataDir, nil) {
			pids = append(pids, p.pid)
		}
		if len(pids) >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond) // the shell has not forked sleep yet
	}
	if !slices.Contains(pids, marked.Process.Pid) {
		t.Errorf("leftovers %v miss the process naming the data dir (%d)", pids, marked.Process.Pid)
	}
	if len(pids) != 2 {
		t.Errorf("leftovers %v, want the shell and its sleep", pids)
	}
	if slices.Contains(pids, other.Process.Pid) {
		t.Errorf("leftovers %v include an unrelated process %d", pids, other.Process.Pid)
	}
	if !alive(marked.Process.Pid, dataMarker(dataDir)) || alive(other.Process.Pid, dataMarker(dataDir)) {
		t.Errorf("alive does not tell the lab's process from another")
	}
}
