package iptables_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// scaleState returns n ClusterIP services of 10 endpoints on other nodes,
// every 10th with a NodePort and every 20th with an ExternalIP.
func scaleState(n int) *proxy.State {
	svcs := make([]proxytest.TrafficService, n)
	for i := range svcs {
		s := proxytest.TrafficService{Name: fmt.Sprintf("svc-%05d", i), ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), Port: 80}
		if i%10 == 9 {
			s.NodePort = int32(30000 + i%2700)
		}
		if i%20 == 19 {
			s.External = []string{fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)}
		}
		for j := 0; j < 10; j++ {
			s.Endpoints = append(s.Endpoints, fmt.Sprintf("10.%d.%d.%d:8080@node-b", 128+j, i/250, i%250+1))
		}
		svcs[i] = s
	}
	st := proxytest.TrafficState(proxytest.NodeName, 1, true, svcs)
	st.NodeIPs = proxytest.NodeIPs()
	return st
}

// TestGateAtScale shows the destination gate: with 10k services, the
// first packet of a connection that is not to a service address evaluates
// a few dozen rules in all (upstream's linear KUBE-SERVICES: over 10k),
// and one to a service O(log n) more; and a one-service change writes a
// payload of a few chains, not the ruleset.
func TestGateAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("10k services")
	}
	ctx := context.Background()
	const n = 10000
	st := scaleState(n)
	b, fake := newFlowBackend(t, v1.IPv4Protocol)
	start := time.Now()
	if err := b.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	tr := tracer(t, fake, proxytest.NodeIPs())

	for _, c := range []struct {
		name     string
		src, dst string
		port     int
		want     string
		maxRules int
	}{
		{"pod to pod", proxytest.LocalPod, "10.244.2.2", 8080, "", 40},
		{"pod to the outside", proxytest.LocalPod, "8.8.8.8", 443, "", 40},
		{"outside to a node port that is not a NodePort", proxytest.ExternalIP, proxytest.NodeIP, 22, "", 60},
		{"pod to a ClusterIP", proxytest.LocalPod, "10.96.20.7", 80, "DNAT", 90},
		{"pod to an ExternalIP", proxytest.LocalPod, "198.18.0.20", 80, "DNAT", 90},
	} {
		res, err := tr.Trace(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst), "tcp", c.port)
		if err != nil {
			t.Fatal(err)
		}
		got := res.String()
		if c.want == "DNAT" && strings.HasPrefix(got, "DNAT ") {
			got = "DNAT"
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.name, res.String(), c.want)
		}
		if e := tr.RulesEvaluated(); e > c.maxRules {
			t.Errorf("%s: %d rules evaluated, want <= %d", c.name, e, c.maxRules)
		} else {
			t.Logf("%s: %d rules evaluated (%d services)", c.name, e, n)
		}
	}
	// The non-NodePort connection to the node walks KUBE-NODEPORTS
	// (linear in NodePorts): reported, bounded above by the NodePort count.

	// One endpoint change.
	n0 := slices.Collect(maps.Keys(st.Services))[0]
	next := *st
	next.Full, next.Generation = false, 2
	next.Endpoints = maps.Clone(st.Endpoints)
	eps := slices.Clone(st.Endpoints[n0])
	eps[0].IP = netip.MustParseAddr("10.200.0.1")
	next.Endpoints[n0] = eps
	next.Changed = map[proxy.ServicePortName]struct{}{n0: {}}
	before := len(fake.Restores)
	start = time.Now()
	if err := b.Sync(ctx, &next); err != nil {
		t.Fatal(err)
	}
	change := time.Since(start)
	if partial, _ := b.LastSyncStats(); !partial {
		t.Error("one endpoint change: full sync, want partial")
	}
	if got := len(fake.Restores) - before; got != 1 {
		t.Fatalf("%d restores for one change, want 1", got)
	}
	payload := fake.Restores[len(fake.Restores)-1]
	if lines := strings.Count(payload, "\n"); lines > 40 {
		t.Errorf("one endpoint change wrote %d payload lines, want a handful:\n%s", lines, payload)
	}
	_, rules := b.LastSyncStats()
	t.Logf("%d services: %d rules; cold sync into the fake %s, one endpoint change %s (%d payload lines)",
		n, rules, cold.Round(time.Millisecond), change.Round(time.Microsecond), strings.Count(payload, "\n"))
}
