package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcnet/svcnet/internal/dns"
)

// dnsFlags are the flags of `svcnet dns`.
type dnsFlags struct {
	kubeconfig  string
	listen      string
	upstreams   []string
	resolvConf  string
	stubDomains []string
	zone        string
	ttl         uint32
	pods        string
	health      string
	metrics     string
	cacheSize   int
	noLoop      bool
	logLevel    string
}

func newDNSCommand() *cobra.Command {
	f := &dnsFlags{}
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Run the cluster DNS server standalone (Kubernetes DNS spec 1.1.0, CoreDNS-compatible)",
		Long: `Run svcnet's cluster DNS against any Kubernetes API server: A/AAAA, SRV,
PTR, headless and ExternalName records for the cluster zone, from Services and
EndpointSlices; every other name is forwarded to the upstream resolvers
(--upstream, else the nameservers in --resolv-conf) through a cache.
/health and /ready are served on --health-listen, Prometheus /metrics on
--metrics-listen. Normally this runs inside "svcnet agent".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run() },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the API server to watch (required)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:53", "UDP and TCP address to answer on (bind a specific IP, e.g. 10.96.0.10:53)")
	fs.StringSliceVar(&f.upstreams, "upstream", nil, "upstream resolvers ip[:port] for names outside the zone (default: the nameservers of --resolv-conf)")
	fs.StringVar(&f.resolvConf, "resolv-conf", "/etc/resolv.conf", "resolv.conf to take upstreams from when --upstream is not set")
	fs.StringArrayVar(&f.stubDomains, "stub-domain", nil, "domain=ip[:port][,ip[:port]...]: resolvers for names below domain (repeatable)")
	fs.StringVar(&f.zone, "zone", dns.DefaultZone, "cluster domain")
	fs.Uint32Var(&f.ttl, "ttl", dns.DefaultTTL, "TTL of cluster records and of negative answers (0-3600)")
	fs.StringVar(&f.pods, "pods", string(dns.PodsDisabled), "a-b-c-d.<ns>.pod.<zone> records: disabled, insecure or verified")
	fs.StringVar(&f.health, "health-listen", "127.0.0.1:8080", "address for /health and /ready (empty: off)")
	fs.StringVar(&f.metrics, "metrics-listen", ":9153", "address for Prometheus /metrics (empty: off)")
	fs.IntVar(&f.cacheSize, "cache-size", dns.DefaultCacheSize, "entries in the forward cache")
	fs.BoolVar(&f.noLoop, "no-loop-detect", false, "do not send the loop probe through the upstreams at start")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func (f *dnsFlags) run() error {
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if f.kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	rc.UserAgent = "svcnet-dns"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ups := f.upstreams
	if len(ups) == 0 {
		if ups, err = dns.ResolvConfUpstreams(f.resolvConf); err != nil {
			logger.Warn("no upstream resolvers; names outside the zone get SERVFAIL", "err", err)
		}
	}
	stubs := map[string][]string{}
	for _, s := range f.stubDomains {
		d, list, ok := strings.Cut(s, "=")
		if !ok || d == "" || list == "" {
			return fmt.Errorf("--stub-domain %q: want domain=ip[:port][,...]", s)
		}
		stubs[d] = append(stubs[d], strings.Split(list, ",")...)
	}
	cfg := dns.Config{
		Records:       dns.RecordConfig{Zone: f.zone, TTL: f.ttl, Pods: dns.PodMode(f.pods)},
		Listen:        f.listen,
		Upstreams:     ups,
		StubDomains:   stubs,
		HealthListen:  f.health,
		MetricsListen: f.metrics,
		CacheSize:     f.cacheSize,
		LoopDetect:    !f.noLoop,
		OwnProcess:    true,
		Logger:        logger,
	}
	ctx, stop := signalContext()
	defer stop()
	return dns.Run(ctx, client, cfg)
}
