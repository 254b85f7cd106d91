package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kpconfig "k8s.io/kube-proxy/config/v1alpha1"
	"k8s.io/utils/ptr"

	"github.com/vishvananda/netlink"

	"github.com/svcnet/svcnet/internal/auth"
	"github.com/svcnet/svcnet/internal/dns"
	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/modes"
)

// ProxyConfig turns on the node proxy (the kube-proxy role) in the agent.
type ProxyConfig struct {
	// Mode forces a proxy mode; "" takes it from ConfigMap
	// kube-system/kube-proxy and follows that ConfigMap live.
	Mode         string
	ClusterCIDRs []netip.Prefix // default 10.244.0.0/16
	ServiceCIDRs []netip.Prefix // default 10.96.0.0/12
	// KeepRules leaves the rules in place when the agent stops with
	// CleanupOnExit (`svcnet up --keep-rules`).
	KeepRules bool
}

// DNSConfig turns on the node-local cluster DNS in the agent. It answers on
// the node IP, port 53, and is published as this node's endpoint of the
// kube-dns Service (EndpointSlice kube-system/kube-dns-<node>), so pods
// reach it through the proxy at the cluster DNS IP.
type DNSConfig struct {
	// Upstreams resolve names outside the cluster domain ("ip[:port]");
	// default: the nameservers of the node's /etc/resolv.conf.
	Upstreams []string
	// Port is the DNS port on the node IP (default 53).
	Port int
}

// Defaults of the proxy's CIDRs, as the server's.
var (
	DefaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
)

// runProxy runs the proxy until ctx ends; with CleanupOnExit it removes the
// rules afterwards (unless KeepRules).
func (a *Agent) runProxy(ctx context.Context) error {
	pc := a.cfg.Proxy
	kc, err := proxy.LoadConfigMap(ctx, a.client)
	if err != nil {
		a.log.Warn("kube-proxy ConfigMap unreadable; using defaults", "err", err)
		kc = proxy.DefaultConfig()
	}
	if pc.Mode != "" {
		kc.Mode = kpMode(pc.Mode)
	}
	cluster := pc.ClusterCIDRs
	if len(cluster) == 0 {
		if kc.ClusterCIDR != "" {
			cluster, _ = proxy.ParsePrefixes(kc.ClusterCIDR)
		}
		if len(cluster) == 0 {
			cluster = []netip.Prefix{DefaultClusterCIDR}
		}
	}
	svc := pc.ServiceCIDRs
	if len(svc) == 0 {
		svc = []netip.Prefix{DefaultServiceCIDR}
	}
	npa, err := proxy.ParsePrefixes(kc.NodePortAddresses...)
	if err != nil {
		return fmt.Errorf("agent: proxy nodePortAddresses: %w", err)
	}
	for _, p := range svc {
		if err := ensureServiceRoute(p, a.cfg.NodeIP); err != nil {
			a.log.Warn("route for the service CIDR", "cidr", p, "err", err)
		}
	}
	var sw *modes.Switcher
	err = modes.Run(ctx, a.client, kc, modes.Options{
		NodeName:          a.cfg.NodeName,
		NodeIPs:           []netip.Addr{a.cfg.NodeIP},
		ClusterCIDRs:      cluster,
		ServiceCIDRs:      svc,
		NodePortAddresses: npa,
		MasqueradeAll:     kc.NFTables.MasqueradeAll || kc.IPTables.MasqueradeAll,
		TCPBeLiberal:      kc.Conntrack.TCPBeLiberal,
		Algorithm:         kc.IPVS.Scheduler,
		IPVSScheduler:     kc.IPVS.Scheduler,
		IPVSTCPTimeout:    kc.IPVS.TCPTimeout.Duration,
		IPVSTCPFinTimeout: kc.IPVS.TCPFinTimeout.Duration,
		IPVSUDPTimeout:    kc.IPVS.UDPTimeout.Duration,
		Logger:            a.log.With("component", "proxy"),
	}, pc.Mode == "", func(s *modes.Switcher) { sw = s })
	if a.cfg.CleanupOnExit && !pc.KeepRules && sw != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := sw.Cleanup(cctx); cerr != nil {
			a.log.Warn("proxy cleanup", "err", cerr)
		}
		if cerr := removeServiceRoutes(); cerr != nil {
			a.log.Warn("remove the service CIDR route", "err", cerr)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// runDNS runs the node-local DNS and publishes it as a kube-dns endpoint.
func (a *Agent) runDNS(ctx context.Context) error {
	dc := a.cfg.DNS
	port := dc.Port
	if port == 0 {
		port = 53
	}
	ups := dc.Upstreams
	if len(ups) == 0 {
		var err error
		if ups, err = dns.ResolvConfUpstreams("/etc/resolv.conf"); err != nil {
			a.log.Warn("no upstream resolvers; names outside the cluster get SERVFAIL", "err", err)
		}
	}
	ip := a.cfg.NodeIP.String()
	cfg := dns.Config{
		Records:       dns.RecordConfig{Zone: a.cfg.ClusterDomain, TTL: dns.DefaultTTL, Pods: dns.PodsInsecure},
		Listen:        net.JoinHostPort(ip, strconv.Itoa(port)),
		Upstreams:     ups,
		MetricsListen: net.JoinHostPort(ip, "9153"),
		LoopDetect:    true,
		Logger:        a.log.With("component", "dns"),
	}
	go a.publishDNSEndpoint(ctx, port)
	err := dns.Run(ctx, a.client, cfg)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if derr := a.client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).Delete(dctx, auth.NodeDNSSlicePrefix+a.cfg.NodeName, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
		a.log.Warn("remove the node's kube-dns EndpointSlice", "err", derr)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// publishDNSEndpoint keeps EndpointSlice kube-system/kube-dns-<node> listing
// this node's DNS listener (dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP).
func (a *Agent) publishDNSEndpoint(ctx context.Context, port int) {
	name := auth.NodeDNSSlicePrefix + a.cfg.NodeName
	slices := a.client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem)
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: "kube-dns",
				discoveryv1.LabelManagedBy:   "svcnet-agent",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{a.cfg.NodeIP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(a.cfg.NodeName),
		}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To(int32(port))},
			{Name: ptr.To("dns-tcp"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(port))},
			{Name: ptr.To("metrics"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(9153))},
		},
	}
	if a.cfg.NodeIP.Is6() {
		want.AddressType = discoveryv1.AddressTypeIPv6
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		cur, err := slices.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = slices.Create(ctx, want, metav1.CreateOptions{})
		case err == nil && (len(cur.Endpoints) != 1 || len(cur.Endpoints[0].Addresses) != 1 || cur.Endpoints[0].Addresses[0] != a.cfg.NodeIP.String()):
			upd := want.DeepCopy()
			upd.ResourceVersion = cur.ResourceVersion
			_, err = slices.Update(ctx, upd, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("publish the node's kube-dns endpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func kpMode(m string) kpconfig.ProxyMode { return kpconfig.ProxyMode(m) }

// serviceRouteProtocol marks the service-CIDR route the agent adds.
const serviceRouteProtocol netlink.RouteProtocol = 116

// ensureServiceRoute makes sure the node routes cidr somewhere, so that
// connections from the node itself to ClusterIPs get past the routing
// decision to the proxy's DNAT (on a host without a default route they
// would fail with "network unreachable"). The route points at the node IP's
// interface; the proxy's rules catch every service address (unallocated
// ones are dropped), so nothing is sent on it. A host whose routes already
// cover cidr (a default route) is left alone.
func ensureServiceRoute(cidr netip.Prefix, nodeIP netip.Addr) error {
	probe := cidr.Addr().Next()
	if routes, err := netlink.RouteGet(probe.AsSlice()); err == nil && len(routes) > 0 {
		return nil
	}
	l, err := linkWithAddr(nodeIP)
	if err != nil {
		return err
	}
	dst := &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())}
	return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst,
		Scope: netlink.SCOPE_LINK, Protocol: serviceRouteProtocol, Src: nodeIP.AsSlice()})
}

// removeServiceRoutes deletes the routes ensureServiceRoute added.
func removeServiceRoutes() error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: serviceRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	var errs []error
	for i := range routes {
		errs = append(errs, netlink.RouteDel(&routes[i]))
	}
	return errors.Join(errs...)
}
