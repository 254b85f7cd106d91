// Package modes builds the proxy backend of each proxy mode (nftables,
// iptables, userspace, ipvs) from one set of options, removes any mode's rules,
// and switches a running proxy from one mode to another.
//
// The switch (Switcher) happens inside the proxy's sync loop: when the
// wanted mode differs from the running one, the next sync builds the new
// backend, programs the whole State into it, and only then removes the old
// mode's rules. Established connections keep working across the switch:
// kernel modes' connections are NATed by their conntrack entries, which
// outlive the rules that created them, and the userspace mode keeps its
// proxied connections open while it removes its rules. New connections find
// either the old or the new rules at every moment, so none is refused.
//
// Each mode's backend is built once and kept: a switch back to a mode takes
// its backend back with a full sync (see Switcher). If the new mode cannot
// be built or programmed, the running mode keeps being synced and the
// error is returned so the proxy retries.
//
// switch_test.go shows it in a netns lab (issue 7 acceptance 4): streams
// opened under each mode survive nftables → iptables → userspace →
// nftables while new connections never fail, and only the running mode's
// rules remain after each switch; and WatchConfigMap, against a real API
// server, moves a running proxy when kube-system/kube-proxy is edited.
package modes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/svcnet/svcnet/internal/proxy"
	"github.com/svcnet/svcnet/internal/proxy/conntrack"
	"github.com/svcnet/svcnet/internal/proxy/iptables"
	"github.com/svcnet/svcnet/internal/proxy/ipvs"
	"github.com/svcnet/svcnet/internal/proxy/nftables"
	"github.com/svcnet/svcnet/internal/proxy/userspace"
)

// The proxy modes svcnet implements (KubeProxyConfiguration.mode values).
const (
	NFTables  = "nftables"
	IPTables  = "iptables"
	Userspace = "userspace"
	IPVS      = "ipvs"
)

// Supported lists the modes New accepts.
func Supported() []string { return []string{NFTables, IPTables, Userspace, IPVS} }

// Options are the node facts and settings every mode needs.
type Options struct {
	NodeName          string
	NodeIPs           []netip.Addr
	ClusterCIDRs      []netip.Prefix
	ServiceCIDRs      []netip.Prefix
	NodePortAddresses []netip.Prefix
	MasqueradeAll     bool
	TCPBeLiberal      bool
	// Algorithm is the userspace mode's default load-balancing algorithm
	// ("" = round robin; a Service may override it by annotation).
	Algorithm string
	// IPVSScheduler and the IPVS timeouts configure the ipvs mode
	// (KubeProxyConfiguration ipvs.scheduler, tcpTimeout, tcpFinTimeout,
	// udpTimeout; zero leaves the kernel's).
	IPVSScheduler                                     string
	IPVSTCPTimeout, IPVSTCPFinTimeout, IPVSUDPTimeout time.Duration
	Logger                                            *slog.Logger
}

// New returns the backend of mode for both IP families.
func New(ctx context.Context, mode string, o Options) (proxy.Backend, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch mode {
	case NFTables:
		var bs []proxy.Backend
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			nft, err := nftables.NewInterface(fam)
			if err != nil {
				return nil, err
			}
			b, err := nftables.New(nftables.Config{
				Family: fam, NodeName: o.NodeName, NodeIPs: o.NodeIPs,
				ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, NodePortAddresses: o.NodePortAddresses,
				MasqueradeAll: o.MasqueradeAll, TCPBeLiberal: o.TCPBeLiberal,
				Conntrack: conntrack.Netlink{}, Logger: o.Logger,
			}, nft)
			if err != nil {
				return nil, err
			}
			bs = append(bs, b)
		}
		return proxy.Combine(NFTables, bs...), nil
	case IPTables:
		return iptables.NewSystem(ctx, iptables.Config{
			NodeName: o.NodeName, NodeIPs: o.NodeIPs,
			ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, NodePortAddresses: o.NodePortAddresses,
			MasqueradeAll: o.MasqueradeAll, TCPBeLiberal: o.TCPBeLiberal,
			Conntrack: conntrack.Netlink{}, Logger: o.Logger,
		})
	case Userspace:
		alg, err := userspace.ParseAlgorithm(o.Algorithm)
		if err != nil {
			return nil, err
		}
		var bs []proxy.Backend
		var fams []*userspace.Backend
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			nft, err := userspace.NewInterface(fam)
			if err != nil {
				return nil, err
			}
			b, err := userspace.New(userspace.Config{
				Family: fam, NodeName: o.NodeName, NodeIPs: o.NodeIPs,
				ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, NodePortAddresses: o.NodePortAddresses,
				Algorithm: alg, Transparent: true, Logger: o.Logger,
			}, nft)
			if err != nil {
				return nil, err
			}
			bs, fams = append(bs, b), append(fams, b)
		}
		return &userspaceMode{Backend: proxy.Combine(Userspace, bs...), fams: fams}, nil
	case IPVS:
		// Refuses (naming the missing module) on a kernel without IPVS.
		return ipvs.NewSystem(ipvs.Config{
			NodeName: o.NodeName, NodeIPs: o.NodeIPs,
			ClusterCIDRs: o.ClusterCIDRs, ServiceCIDRs: o.ServiceCIDRs, NodePortAddresses: o.NodePortAddresses,
			MasqueradeAll: o.MasqueradeAll, Scheduler: o.IPVSScheduler,
			TCPTimeout: o.IPVSTCPTimeout, TCPFinTimeout: o.IPVSTCPFinTimeout, UDPTimeout: o.IPVSUDPTimeout,
			Logger: o.Logger,
		})
	}
	return nil, fmt.Errorf("proxy mode %q is not supported (supported: %v)", mode, Supported())
}

// userspaceMode is the userspace mode of both families. Besides Cleanup
// (which lets the connections it proxied drain), Close ends it for good.
type userspaceMode struct {
	proxy.Backend // proxy.Combine of fams
	fams          []*userspace.Backend
}

func (u *userspaceMode) LastSyncStats() (bool, int) {
	return u.Backend.(proxy.SyncStats).LastSyncStats()
}

// Close removes the mode's rules, listeners and policy route at once,
// without waiting for proxied connections (they end with the process).
func (u *userspaceMode) Close(ctx context.Context) error {
	var errs []error
	for _, b := range u.fams {
		errs = append(errs, b.Close(ctx))
	}
	return errors.Join(errs...)
}

// Cleanup removes the rules of every mode except keep ("" = all), in both
// families: `svcnet proxy cleanup`, and the start of a proxy whose node may
// hold another mode's leftovers.
func Cleanup(ctx context.Context, keep string) error {
	var errs []error
	for _, mode := range Supported() {
		if mode == keep {
			continue
		}
		if err := cleanupMode(ctx, mode); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mode, err))
		}
	}
	return errors.Join(errs...)
}

func cleanupMode(ctx context.Context, mode string) error {
	switch mode {
	case IPTables:
		return iptables.CleanupSystem(ctx)
	case NFTables:
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			nft, err := nftables.NewInterface(fam)
			if err != nil {
				return err
			}
			b, err := nftables.New(nftables.Config{Family: fam}, nft)
			if err != nil {
				return err
			}
			if err := b.Cleanup(ctx); err != nil {
				return err
			}
		}
	case Userspace:
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			nft, err := userspace.NewInterface(fam)
			if err != nil {
				return err
			}
			b, err := userspace.New(userspace.Config{Family: fam, Transparent: true}, nft)
			if err != nil {
				return err
			}
			// Close, not Cleanup: this throw-away backend proxied
			// nothing, and Close also releases its namespace handle.
			if err := b.Close(ctx); err != nil {
				return err
			}
		}
	case IPVS:
		return ipvs.CleanupSystem(ctx)
	}
	return nil
}

// Switcher is a proxy.Backend that runs one mode's backend and can switch
// to another mode live (see the package documentation).
//
// It builds each mode's backend once and keeps it: switching back to a
// mode takes its old backend back with a full sync. That matters for the
// userspace mode, whose retired backend keeps a draining remnant of its
// table (and its policy route) while connections it proxied are open, and
// removes them when the last one ends unless a Sync took it back first: a
// second, new userspace backend would have its table deleted under it.
type Switcher struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex // guards want, mode and name
	want string
	mode string
	// name is the mode Name reports: set once a switch is complete (the
	// new rules in, the old ones gone), so /proxyMode never names a mode
	// whose predecessor still has rules.
	name string

	// Owned by the sync goroutine.
	current proxy.Backend
	built   map[string]proxy.Backend
	// retired are backends whose Cleanup must still run (it failed once).
	retired []proxy.Backend
}

var _ proxy.Backend = (*Switcher)(nil)

// CheckKernel is the start-up check of mode that kube-proxy makes before it
// builds its proxier: the ipvs mode needs IPVS and dummy interfaces in the
// kernel (upstream refuses with "can't use the IPVS proxier"), and the
// error names the missing module. The other modes have nothing to check up
// front. Live switches do not call it: a switch that cannot be made keeps
// the running mode and is retried.
func CheckKernel(mode string) error {
	if mode != IPVS {
		return nil
	}
	if err := ipvs.CheckKernel(ipvs.DefaultKernelPaths()); err != nil {
		return fmt.Errorf("can't use the ipvs proxy mode: %w", err)
	}
	return nil
}

// NewSwitcher starts in mode (validated now; built at the first Sync).
func NewSwitcher(mode string, o Options) (*Switcher, error) {
	if !slices.Contains(Supported(), mode) {
		return nil, fmt.Errorf("proxy mode %q is not supported (supported: %v)", mode, Supported())
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Switcher{opts: o, log: o.Logger, want: mode, built: map[string]proxy.Backend{}}, nil
}

// SetMode asks for mode from the next sync on; the caller triggers a sync.
// It reports whether the wanted mode changed.
func (s *Switcher) SetMode(mode string) (bool, error) {
	if !slices.Contains(Supported(), mode) {
		return false, fmt.Errorf("proxy mode %q is not supported (supported: %v)", mode, Supported())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.want != mode
	s.want = mode
	return changed, nil
}

// Wanted is the mode asked for (by NewSwitcher or the last SetMode).
func (s *Switcher) Wanted() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want
}

// Name is the running mode (the wanted one before the first sync) — what
// /proxyMode reports.
func (s *Switcher) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.name == "" {
		return s.want
	}
	return s.name
}

// Sync programs st into the wanted mode, switching first if needed. When
// the switch fails (the new mode cannot be built or programmed), the
// running mode keeps being synced and the error is returned, so the caller
// retries the switch.
func (s *Switcher) Sync(ctx context.Context, st *proxy.State) error {
	s.mu.Lock()
	want := s.want
	s.mu.Unlock()
	if want == s.mode && s.current != nil {
		s.cleanupRetired(ctx)
		return s.current.Sync(ctx, st)
	}
	err := s.switchTo(ctx, want, st)
	if err == nil || s.current == nil {
		return err
	}
	s.log.Error("proxy mode switch failed; the running mode stays", "from", s.mode, "to", want, "err", err)
	return errors.Join(err, s.current.Sync(ctx, st))
}

// switchTo makes want the running mode: it programs all of st into want's
// backend, and only then removes the running mode's rules.
func (s *Switcher) switchTo(ctx context.Context, want string, st *proxy.State) error {
	nb, reused := s.built[want]
	if !reused {
		var err error
		if nb, err = New(ctx, want, s.opts); err != nil {
			return fmt.Errorf("switch to proxy mode %s: %w", want, err)
		}
	}
	// Taken back: its leftovers are rewritten by the full sync below, and
	// must not be cleaned up after it.
	s.retired = slices.DeleteFunc(s.retired, func(b proxy.Backend) bool { return b == nb })
	full := *st
	full.Full = true
	if err := nb.Sync(ctx, &full); err != nil {
		if cerr := nb.Cleanup(ctx); cerr != nil {
			s.log.Warn("removing the rules of the failed proxy mode", "mode", want, "err", cerr)
		}
		s.built[want] = nb
		return fmt.Errorf("switch to proxy mode %s: first sync: %w", want, err)
	}
	s.built[want] = nb
	old, oldMode := s.current, s.mode
	s.mu.Lock()
	s.current, s.mode = nb, want
	s.mu.Unlock()
	if old != nil {
		s.log.Info("proxy mode switched", "from", oldMode, "to", want)
		s.retired = append(s.retired, old)
	} else if err := Cleanup(ctx, want); err != nil {
		// First start: a previous run may have left another mode.
		s.log.Warn("removing other proxy modes' rules", "err", err)
	}
	s.cleanupRetired(ctx)
	s.mu.Lock()
	s.name = want
	s.mu.Unlock()
	return nil
}

func (s *Switcher) cleanupRetired(ctx context.Context) {
	kept := s.retired[:0]
	for _, b := range s.retired {
		if err := b.Cleanup(ctx); err != nil {
			s.log.Warn("cleaning up the previous proxy mode; will retry", "mode", b.Name(), "err", err)
			kept = append(kept, b)
		}
	}
	s.retired = kept
}

// Cleanup removes the rules of every mode the Switcher ran, for good: it
// is for the end of the proxy (agent exit, `svcnet proxy` cleanup, tests).
// The userspace mode is closed rather than drained (its listeners, table
// and policy route go at once; the connections it proxied end with the
// process anyway). A later Sync starts afresh.
func (s *Switcher) Cleanup(ctx context.Context) error {
	if len(s.built) == 0 {
		return cleanupMode(ctx, s.Wanted())
	}
	var errs []error
	for mode, b := range s.built {
		if c, ok := b.(interface{ Close(context.Context) error }); ok {
			errs = append(errs, c.Close(ctx))
			delete(s.built, mode) // unusable after Close
			continue
		}
		errs = append(errs, b.Cleanup(ctx))
	}
	s.retired = nil
	s.mu.Lock()
	s.current, s.mode, s.name = nil, "", ""
	s.mu.Unlock()
	return errors.Join(errs...)
}

// LastSyncStats forwards to the running backend when it reports them.
func (s *Switcher) LastSyncStats() (bool, int) {
	if st, ok := s.current.(proxy.SyncStats); ok {
		return st.LastSyncStats()
	}
	return false, 0
}
