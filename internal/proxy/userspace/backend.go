package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/svcnet/svcnet/internal/proxy"
)

// Config configures one userspace Backend (one IP family).
type Config struct {
	// Family selects the table and the sockets: v1.IPv4Protocol (the
	// default) or v1.IPv6Protocol.
	Family v1.IPFamily
	// NodeName is this node's name.
	NodeName string
	// NodeIPs are the node's addresses; NodePorts answer on those of this
	// family (never on loopback), unless NodePortAddresses is set. The
	// State's NodeIPs are added at each sync.
	NodeIPs []netip.Addr
	// NodePortAddresses restricts NodePorts to the local addresses inside
	// these prefixes (--nodeport-addresses).
	NodePortAddresses []netip.Prefix
	// InterfaceAddrs lists the local addresses matched against
	// NodePortAddresses (default: net.InterfaceAddrs).
	InterfaceAddrs func() ([]netip.Addr, error)
	// ServiceCIDRs: traffic to an unallocated address in them is dropped,
	// to an unused port of an allocated ClusterIP rejected.
	ServiceCIDRs []netip.Prefix
	// Algorithm is the agent's default load-balancing algorithm (default
	// RoundRobin); a Service overrides it with the annotation
	// svcnet.io/lb-algorithm.
	Algorithm Algorithm
	// ListenAddr is the address the per-service listeners bind (default
	// the unspecified address of Family: REDIRECT delivers to the primary
	// address of the incoming interface, or loopback for local clients).
	ListenAddr netip.Addr
	// DialTimeout bounds one connect attempt to an endpoint (default 2s).
	DialTimeout time.Duration
	// MaxTries caps the endpoints tried for one connection (0: all).
	MaxTries int
	// EjectBackoff is how long an endpoint that refused or timed out is
	// skipped; it doubles with each consecutive failure up to
	// EjectBackoffMax (defaults 5s and 1m). An ejected endpoint is still
	// tried when every other one failed.
	EjectBackoff, EjectBackoffMax time.Duration
	// UDPIdleTimeout ends a UDP client session after this long without a
	// datagram either way (default 30s).
	UDPIdleTimeout time.Duration
	// Transparent makes the endpoint see the client's address where the
	// nftables mode would not masquerade (ClusterIP traffic from the
	// ClusterCIDRs, external traffic of externalTrafficPolicy Local
	// services): connections to endpoints bind the client address with
	// IP_TRANSPARENT, and a policy route delivers the replies to the proxy
	// (see transparent.go). If the kernel refuses (no nft socket
	// expression, no CAP_NET_ADMIN), the backend logs it and connects from
	// the node's address.
	Transparent bool
	// ClusterCIDRs are the pod CIDRs: with Transparent, ClusterIP clients
	// outside them connect from the node's address (as masquerading).
	// Empty: every ClusterIP client is in the cluster.
	ClusterCIDRs []netip.Prefix
	// Logger receives the backend's logs (default slog.Default()).
	Logger *slog.Logger
}

// Backend is the userspace proxy backend for one IP family. It implements
// proxy.Backend and proxy.SyncStats. Sync and Cleanup must not be called
// concurrently (the proxy core calls them from one goroutine); the
// listeners serve connections on their own goroutines.
type Backend struct {
	cfg  Config
	nft  knftables.Interface
	ipv6 bool
	set  *settings
	log  *slog.Logger

	listeners map[lnKey]*listener
	// mu serializes Sync and Cleanup with the drain goroutine Cleanup may
	// start; epoch counts their calls, so a drain knows it is stale.
	mu          sync.Mutex
	epoch       uint64
	tpChecked   bool   // transparent proxying was set up (or found impossible)
	tpInstalled bool   // the policy route is installed
	initialized bool   // the table was recreated once by this process
	last        string // fingerprint of the whole rule set in the kernel ("" = unknown)
	// global is the fingerprint of the rules and elements that do not
	// belong to one service (base rules, NodePort addresses) as in the
	// kernel; "" makes the next sync full.
	global string
	// plans are the elements each service port put in the table, and refs
	// count the owners of each element key (a ClusterIP is shared by the
	// ports of a Service): a partial sync changes only what its services'
	// elements changed (see sync.go).
	plans map[proxy.ServicePortName][]*knftables.Element
	refs  map[string]*elemRef
	// globalCount is the number of rules and elements of the global part.
	globalCount int
	partial     bool // the last sync was partial
}

var (
	_ proxy.Backend   = (*Backend)(nil)
	_ proxy.SyncStats = (*Backend)(nil)
)

// TableName is the nftables table of the mode, in family ip and ip6.
const TableName = tableName

// Family returns the knftables family for an IP family.
func Family(f v1.IPFamily) knftables.Family {
	if f == v1.IPv6Protocol {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// NewInterface returns a real knftables.Interface (the nft binary) for the
// svcnet-userspace table of family f.
func NewInterface(f v1.IPFamily) (knftables.Interface, error) {
	nft, err := knftables.New(Family(f), tableName)
	if err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	return nft, nil
}

// NewFake returns an in-memory knftables.Fake for the table of family f.
func NewFake(f v1.IPFamily) *knftables.Fake {
	return knftables.NewFake(Family(f), tableName)
}

// New returns a Backend writing its redirect rules through nft (see
// NewInterface; a knftables.Fake in tests). Listeners are opened by Sync.
func New(cfg Config, nft knftables.Interface) (*Backend, error) {
	if cfg.Family == "" {
		cfg.Family = v1.IPv4Protocol
	}
	if cfg.Family != v1.IPv4Protocol && cfg.Family != v1.IPv6Protocol {
		return nil, fmt.Errorf("userspace: unknown IP family %q", cfg.Family)
	}
	alg, err := ParseAlgorithm(string(cfg.Algorithm))
	if err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	cfg.Algorithm = alg
	ipv6 := cfg.Family == v1.IPv6Protocol
	if !cfg.ListenAddr.IsValid() {
		cfg.ListenAddr = netip.IPv4Unspecified()
		if ipv6 {
			cfg.ListenAddr = netip.IPv6Unspecified()
		}
	}
	if cfg.ListenAddr.Is4() == ipv6 {
		return nil, fmt.Errorf("userspace: listen address %s is not %s", cfg.ListenAddr, cfg.Family)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = proxy.LocalAddrs
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, 2*time.Second)
	def(&cfg.EjectBackoff, 5*time.Second)
	def(&cfg.EjectBackoffMax, time.Minute)
	def(&cfg.UDPIdleTimeout, 30*time.Second)
	log := cfg.Logger.With("component", "proxy-userspace", "family", string(cfg.Family))
	ns, err := currentNetns()
	if err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	var cidrs []netip.Prefix
	for _, p := range cfg.ClusterCIDRs {
		if p.Addr().Is4() == !ipv6 {
			cidrs = append(cidrs, p.Masked())
		}
	}
	network := "tcp4"
	if ipv6 {
		network = "tcp6"
	}
	b := &Backend{
		cfg:  cfg,
		nft:  nft,
		ipv6: ipv6,
		log:  log,
		set: &settings{
			network:      network,
			dialTimeout:  cfg.DialTimeout,
			maxTries:     cfg.MaxTries,
			ejectBase:    cfg.EjectBackoff,
			ejectMax:     cfg.EjectBackoffMax,
			udpIdle:      cfg.UDPIdleTimeout,
			log:          log,
			netns:        ns,
			clusterCIDRs: cidrs,
		},
		listeners: map[lnKey]*listener{},
	}
	b.set.transparent.Store(cfg.Transparent)
	return b, nil
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "userspace" }

// LastSyncStats implements proxy.SyncStats; rules counts rules plus set and
// map elements.
func (b *Backend) LastSyncStats() (partial bool, rules int) {
	return b.partial, b.globalCount + len(b.refs)
}

// ListenerPort returns the local port of the listener serving traffic to
// name's ClusterIP (external false) or external entry points (true), and
// false when there is none. For diagnostics and tests.
func (b *Backend) ListenerPort(name proxy.ServicePortName, external bool) (uint16, bool) {
	if l := b.listeners[lnKey{name: name, external: external}]; l != nil {
		return l.port, true
	}
	return 0, false
}

// Cleanup implements proxy.Backend: it deletes the table and closes the
// listeners. Connections and UDP sessions already proxied keep running
// until they end, so a mode switch does not cut them. They still need
// conntrack to translate their packets (the REDIRECT binding), which the
// kernel does only while some nat chain is registered in the namespace,
// and the transparent ones need their return path: so while any is open
// the table keeps an empty nat chain and the mangle-prerouting chain, and
// the policy route stays; all go within a second of the last one ending
// (unless a Sync takes the backend back first).
func (b *Backend) Cleanup(ctx context.Context) error { return b.cleanup(ctx, false) }

func (b *Backend) cleanup(ctx context.Context, force bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.epoch++
	keep := !force && b.set.active.Load() > 0
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if keep {
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("svcnet userspace proxy: draining open connections")})
		// A nat chain keeps the kernel's NAT hooks registered, and a rule
		// using conntrack keeps conntrack itself hooked in (both are
		// unhooked when no rule in the namespace needs them).
		tx.Add(&knftables.Chain{Name: natPreroutingChain, Type: knftables.PtrTo(knftables.NATType),
			Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.DNATPriority)})
		tx.Add(&knftables.Rule{Chain: natPreroutingChain, Rule: "ct state established,related counter"})
		if b.tpInstalled {
			b.mangleChain(tx)
		}
	}
	var errs []error
	if err := b.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("userspace: cleanup %s table: %w", b.ipX(), err))
	}
	for k, l := range b.listeners {
		l.close()
		delete(b.listeners, k)
	}
	if b.cfg.Transparent && b.isReal() {
		b.clearTimeWait()
	}
	switch {
	case keep:
		go b.drain(b.epoch)
	case b.tpInstalled || (b.cfg.Transparent && b.isReal()):
		// (Also when this process never installed it: Cleanup removes
		// what any earlier run left.)
		if err := b.set.netns.do(b.cleanupPolicyRouting); err != nil {
			errs = append(errs, err)
		}
		b.tpInstalled = false
	}
	b.initialized = false
	b.tpChecked = false
	b.last, b.global = "", ""
	b.plans, b.refs = nil, nil
	return errors.Join(errs...)
}

// drain waits for the transparent connections left by Cleanup to end,
// then removes their return path, unless Sync or Cleanup ran meanwhile.
func (b *Backend) drain(epoch uint64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range t.C {
		b.mu.Lock()
		if b.epoch != epoch {
			b.mu.Unlock()
			return
		}
		if b.set.active.Load() > 0 {
			b.mu.Unlock()
			continue
		}
		err := b.set.netns.do(func() error {
			tx := b.nft.NewTransaction()
			tx.Add(&knftables.Table{})
			tx.Delete(&knftables.Table{})
			err := b.nft.Run(context.Background(), tx)
			if err != nil && knftables.IsNotFound(err) {
				err = nil
			}
			if b.tpInstalled {
				err = errors.Join(err, b.cleanupPolicyRouting())
			}
			return err
		})
		if err != nil {
			b.log.Error("removing the return path of transparent connections", "err", err)
		}
		b.tpInstalled = false
		if b.cfg.Transparent {
			b.clearTimeWait()
		}
		b.mu.Unlock()
		return
	}
}

// clearTimeWait runs destroyTransparentTimeWait in the backend's
// namespace; failures are logged (the sockets expire within a minute).
func (b *Backend) clearTimeWait() {
	var n int
	err := b.set.netns.do(func() (err error) {
		n, err = b.destroyTransparentTimeWait()
		return err
	})
	if err != nil {
		b.log.Error("removing TIME_WAIT sockets of transparent connections", "err", err)
	} else if n > 0 {
		b.log.Debug("removed TIME_WAIT sockets of transparent connections", "sockets", n)
	}
}

// Close is Cleanup without keeping the return path of open transparent
// connections, and also releases the network namespace the Backend was
// created in (see netnsHandle). The Backend must not be used after.
func (b *Backend) Close(ctx context.Context) error {
	err := b.cleanup(ctx, true)
	if h := b.set.netns; h != nil && h.f != nil {
		_ = h.f.Close()
		h.f = nil
	}
	return err
}

// isReal reports whether the backend writes a real dataplane (not a
// knftables.Fake): only then does it touch the routing tables.
func (b *Backend) isReal() bool {
	_, fake := b.nft.(*knftables.Fake)
	return !fake
}

// setupTransparent enables transparent proxying once, or disables it
// when the kernel does not allow it.
func (b *Backend) setupTransparent(ctx context.Context) {
	if b.tpChecked || !b.cfg.Transparent {
		return
	}
	b.tpChecked = true
	b.set.transparent.Store(true)
	if !b.isReal() {
		return
	}
	tx := b.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	b.mangleChain(tx)
	err := b.nft.Check(ctx, tx)
	if err == nil {
		err = b.set.netns.do(b.setupPolicyRouting)
	}
	if err != nil {
		b.log.Warn("transparent proxying unavailable; endpoints will see the node's address", "err", err)
		b.set.transparent.Store(false)
		return
	}
	b.tpInstalled = true
}

// mangleChain adds the chain marking packets of transparent sockets.
func (b *Backend) mangleChain(tx *knftables.Transaction) {
	c := &knftables.Chain{Name: manglePrerouting, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.ManglePriority)}
	tx.Add(c)
	tx.Flush(c)
	tx.Add(&knftables.Rule{Chain: manglePrerouting,
		Rule: fmt.Sprintf("meta l4proto { tcp, udp } socket transparent 1 meta mark set mark or 0x%x", transparentMark)})
}

func (b *Backend) familyAddrs(addrs []netip.Addr) []netip.Addr {
	return proxy.AddrsOfFamily(addrs, b.ipv6)
}

// nodePortIPs computes the addresses NodePorts answer on.
func (b *Backend) nodePortIPs(st *proxy.State) []netip.Addr {
	out, err := proxy.NodePortAddrs(b.cfg.NodePortAddresses, b.cfg.InterfaceAddrs, b.cfg.NodeIPs, st.NodeIPs,
		func(a netip.Addr) bool { return a.Is4() == !b.ipv6 })
	if err != nil {
		b.log.Error("listing local addresses for NodePorts", "err", err)
	}
	return out
}
