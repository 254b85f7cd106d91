package list_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
	"github.com/svcnet/svcnet/internal/proxy/list"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
	"github.com/svcnet/svcnet/internal/proxy/proxytest"
)

// get makes one HTTP request on a new connection from ns to addr and
// returns the name of the backend that answered. With keepAlive, the
// connection is left open: it is ESTABLISHED in the node's conntrack (the
// handshake and the reply went through the node). Without, the request
// asks the server to close and the reply is read to EOF, so the server's
// FIN has crossed the node and the flow is no longer ESTABLISHED.
func get(ctx context.Context, ns *proxytest.NetNS, addr string, keepAlive bool) (net.Conn, string, error) {
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := ""
	if !keepAlive {
		hdr = "Connection: close\r\n"
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n", addr, hdr); err != nil {
		c.Close()
		return nil, "", err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && !keepAlive {
		_, err = io.Copy(io.Discard, br) // until the server's FIN
	}
	if err != nil {
		c.Close()
		return nil, "", err
	}
	name, _, _ := strings.Cut(strings.TrimSpace(string(body)), " ")
	if !keepAlive {
		c.Close()
		c = nil
	}
	return c, name, nil
}

// TestConntrackCounts: real connections through a ClusterIP programmed by
// the nftables backend show up in the list's ActiveConn (open TCP
// connections) and InActConn (closed ones, UDP) of the endpoint that
// served them; an endpoint removed from the Service while a connection to
// it is open stays listed with weight 0 and that connection.
func TestConntrackCounts(t *testing.T) {
	proxytest.RequireSandbox(t, "nft")
	ctx := context.Background()
	c := proxytest.NewCluster(t)

	pods := map[string]string{"pod-1": "10.244.1.11", "pod-2": "10.244.1.12", "pod-3": "10.244.2.13"}
	for name, ip := range pods {
		node := c.NodeA
		if strings.HasPrefix(ip, "10.244.2.") {
			node = c.NodeB
		}
		c.StartServer(c.AddPod(node, name, ip), name, []int{8080}, []int{5353})
	}

	const vip = "10.96.50.1"
	ports := []port{{"http", 80, v1.ProtocolTCP, 8080, 0}, {"dns", 53, v1.ProtocolUDP, 5353, 0}}
	svc := service("default", "web", []string{vip}, ports)
	eps := []ep{{ip: pods["pod-1"], node: proxytest.NodeName}, {ip: pods["pod-2"], node: proxytest.NodeName}, {ip: pods["pod-3"], node: "node-b"}}
	sl := slice(svc, discovery.AddressTypeIPv4, eps, ports)
	client := fake.NewClientset(svc, sl)

	nft, err := nftables.NewInterface(v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nftables.New(nftables.Config{
		Family: v1.IPv4Protocol, NodeName: proxytest.NodeName, NodeIPs: c.NodeAIPs(),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ClusterCIDR)},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix(proxytest.ServiceCIDR)},
		Conntrack:    conntrack.Netlink{},
	}, nft)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	opts := list.Options{NodeName: proxytest.NodeName, NodeIPs: c.NodeAIPs(), Mode: list.ModeNFTables}
	// program syncs the backend from the API objects, the way the proxy
	// does (list.State is the proxy's Tracker over the same objects).
	program := func() *proxy.State {
		t.Helper()
		st, err := list.State(ctx, client, proxytest.NodeName)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(ctx, st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	// view lists the table with the kernel's conntrack counts.
	view := func(st *proxy.State) (*list.Table, string) {
		t.Helper()
		tbl, err := list.FromState(st, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := tbl.CountConnections(ctx, list.Netlink{}); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := tbl.Render(&buf); err != nil {
			t.Fatal(err)
		}
		return tbl, buf.String()
	}
	st := program()

	// Open connections until every backend holds at least one (random
	// choice; bounded), then close a few more after one request each.
	active := map[string]int{}
	addr := vip + ":80"
	for i := 0; i < 60 && (active["pod-1"] == 0 || active["pod-2"] == 0 || active["pod-3"] == 0); i++ {
		conn, name, err := get(ctx, c.Ext, addr, true)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		active[name]++
	}
	if active["pod-1"] == 0 || active["pod-2"] == 0 || active["pod-3"] == 0 {
		t.Fatalf("60 connections did not reach every backend: %v", active)
	}
	inactive := map[string]int{}
	for i := 0; i < 4; i++ {
		_, name, err := get(ctx, c.Ext, addr, false)
		if err != nil {
			t.Fatalf("closed connection %d: %v", i, err)
		}
		inactive[name]++
	}
	u, err := c.Ext.UDPDial(vip + ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ur, err := u.Exchange(5 * time.Second)
	if err != nil {
		t.Fatalf("UDP exchange: %v", err)
	}

	tbl, out := view(st)
	t.Logf("after %v open, %v closed connections and one UDP exchange with %s:\n%s", active, inactive, ur.Backend, out)
	byAddr := map[string]string{}
	for name, ip := range pods {
		byAddr[ip] = name
	}
	check := func(tbl *list.Table, proto v1.Protocol, want map[string][3]int) {
		t.Helper()
		var vs *list.VirtualService
		for _, s := range tbl.Services {
			if s.Protocol == proto && s.Address.Addr().String() == vip {
				vs = s
			}
		}
		if vs == nil {
			t.Fatalf("no %s virtual service for %s", proto, vip)
		}
		got := map[string][3]int{}
		for _, rs := range vs.RealServers {
			got[byAddr[rs.Address.Addr().String()]] = [3]int{rs.Weight, rs.ActiveConn, rs.InActConn}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s %s real servers (weight, active, inactive) = %v, want %v", proto, vip, got, want)
		}
	}
	wantTCP := map[string][3]int{}
	for name := range pods {
		wantTCP[name] = [3]int{1, active[name], inactive[name]}
	}
	check(tbl, v1.ProtocolTCP, wantTCP)
	wantUDP := map[string][3]int{}
	for name := range pods {
		wantUDP[name] = [3]int{1, 0, 0}
	}
	wantUDP[ur.Backend] = [3]int{1, 0, 1}
	check(tbl, v1.ProtocolUDP, wantUDP)

	// pod-1 leaves the Service: new connections no longer go there, but its
	// open ones stay (conntrack), so it is listed with weight 0, draining.
	sl = sl.DeepCopy()
	sl.Endpoints = sl.Endpoints[1:]
	if _, err := client.DiscoveryV1().EndpointSlices(sl.Namespace).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = program()
	tbl, out = view(st)
	t.Logf("after pod-1 left the Service:\n%s", out)
	wantTCP["pod-1"] = [3]int{0, active["pod-1"], inactive["pod-1"]}
	if inactive["pod-1"] == 0 && active["pod-1"] == 0 {
		delete(wantTCP, "pod-1")
	}
	check(tbl, v1.ProtocolTCP, wantTCP)
}
