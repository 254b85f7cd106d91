package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ip runs `ip args...` in the host namespace.
func ip(ctx context.Context, args ...string) error {
	return run(ctx, "ip", args...)
}

// nsIP runs `ip args...` inside netns.
func nsIP(ctx context.Context, netns string, args ...string) error {
	return run(ctx, "ip", append([]string{"-n", netns}, args...)...)
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// createSegment creates the bridge with the host's address.
func createSegment(ctx context.Context, s *State) error {
	// Frames between nodes are bridged: keep them out of the host's
	// iptables (br_netfilter with a FORWARD policy of DROP, as Docker
	// sets, would drop the nodes' traffic to each other).
	if err := ip(ctx, "link", "add", s.Bridge, "type", "bridge",
		"nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"); err != nil {
		return fmt.Errorf("lab: bridge: %w", err)
	}
	if err := ip(ctx, "addr", "add", s.HostIP.String(), "dev", s.Bridge); err != nil {
		return fmt.Errorf("lab: bridge address: %w", err)
	}
	if err := ip(ctx, "link", "set", s.Bridge, "up"); err != nil {
		return fmt.Errorf("lab: bridge up: %w", err)
	}
	return nil
}

// createNode creates n's namespace and joins it to the segment.
func createNode(ctx context.Context, s *State, n *Node) error {
	if err := ip(ctx, "netns", "add", n.NetNS); err != nil {
		return fmt.Errorf("lab: node %s: %w", n.Name, err)
	}
	steps := [][]string{
		{"link", "add", n.HostLink, "type", "veth", "peer", "name", NodeLink, "netns", n.NetNS},
		{"link", "set", n.HostLink, "master", s.Bridge},
		{"link", "set", n.HostLink, "up"},
	}
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return fmt.Errorf("lab: node %s: %w", n.Name, err)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", n.IP, s.HostIP.Bits()), "dev", NodeLink},
		{"link", "set", NodeLink, "up"},
	} {
		if err := nsIP(ctx, n.NetNS, args...); err != nil {
			return fmt.Errorf("lab: node %s: %w", n.Name, err)
		}
	}
	return nil
}

// addRoute adds a host route "dst via gw" over the bridge and records it.
func addRoute(ctx context.Context, s *State, dst, gw string) error {
	if err := ip(ctx, "route", "replace", dst, "via", gw, "dev", s.Bridge); err != nil {
		return fmt.Errorf("lab: host route: %w", err)
	}
	s.Routes = append(s.Routes, dst+" via "+gw)
	return nil
}

// labNetNS lists the namespaces named with NetNSPrefix.
func labNetNS() []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), NetNSPrefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// hostLabLinks lists the host's interfaces with the lab's names.
func hostLabLinks() []string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name == Bridge || strings.HasPrefix(name, HostLinkPrefix) {
			names = append(names, name)
		}
	}
	return names
}
