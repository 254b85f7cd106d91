package proxytest

import (
	"context"
	"testing"
	"time"
)

// TestClusterRouting checks the lab itself: pods reach each other across
// nodes by plain routing (no NAT: the server sees the client's pod IP),
// over TCP and UDP, and the outside client reaches a pod through node-a.
func TestClusterRouting(t *testing.T) {
	c := NewCluster(t)
	a := c.AddPod(c.NodeA, "pa", "10.244.1.2")
	b := c.AddPod(c.NodeB, "pb", "10.244.2.2")
	c.StartServer(a, "pa", []int{8080}, []int{5353})
	c.StartServer(b, "pb", []int{8080}, []int{5353})
	ctx := context.Background()

	for _, tc := range []struct {
		name       string
		from       *NetNS
		to         string
		wantServer string
		wantClient string
	}{
		{"pod a to pod b", a, "10.244.2.2:8080", "pb", "10.244.1.2"},
		{"pod b to pod a", b, "10.244.1.2:8080", "pa", "10.244.2.2"},
		{"node a to pod b", c.NodeA, "10.244.2.2:8080", "pb", NodeAIP2},
		{"outside client to pod b", c.Ext, "10.244.2.2:8080", "pb", ExternalIP},
		{"node b to pod a", c.NodeB, "10.244.1.2:8080", "pa", NodeBIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.from.HTTPGet(ctx, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if r.Backend != tc.wantServer || r.ClientIP() != tc.wantClient {
				t.Errorf("got %+v, want server %s seeing client %s", r, tc.wantServer, tc.wantClient)
			}
		})
	}

	u, err := a.UDPDial("10.244.2.2:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	r, err := u.Exchange(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Backend != "pb" || r.ClientIP() != "10.244.1.2" {
		t.Errorf("udp: got %+v", r)
	}

	// Nothing answers outside the lab: the default route ends in the
	// uplink namespace, which does not forward.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := a.HTTPGet(short, "10.244.3.3:80"); err == nil {
		t.Error("request to an address outside the lab succeeded")
	}
}
