package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics, on a private registry so
// several proxies (tests) can coexist. Names follow kube-proxy where one
// exists.
type Metrics struct {
	Registry *prometheus.Registry

	SyncDuration        prometheus.Histogram
	SyncFullDuration    prometheus.Histogram
	SyncPartialDuration prometheus.Histogram
	ProgrammingLatency  prometheus.Histogram
	SyncFailures        prometheus.Counter
	LastSync            prometheus.Gauge
	Rules               prometheus.Gauge
	Services            prometheus.Gauge
	Endpoints           prometheus.Gauge
	Healthz             *prometheus.CounterVec
	Livez               *prometheus.CounterVec
}

// NewMetrics creates and registers the metrics for mode.
func NewMetrics(mode string) *Metrics {
	buckets := prometheus.ExponentialBuckets(0.001, 2, 15) // 1 ms … 16.4 s, as upstream
	labels := prometheus.Labels{"mode": mode}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_proxy_rules_duration_seconds", Help: "Sync duration, full or partial.",
			Buckets: buckets, ConstLabels: labels}),
		SyncFullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_full_proxy_rules_duration_seconds", Help: "Full sync duration.",
			Buckets: buckets, ConstLabels: labels}),
		SyncPartialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_partial_proxy_rules_duration_seconds", Help: "Partial sync duration.",
			Buckets: buckets, ConstLabels: labels}),
		ProgrammingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kubeproxy_network_programming_duration_seconds",
			Help:    "Time from a Service/EndpointSlice change (its last-change-trigger-time) to the rules being in the dataplane.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20), ConstLabels: labels}),
		SyncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_failures_total", Help: "Failed syncs.", ConstLabels: labels}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds", Help: "Time of the last successful sync.", ConstLabels: labels}),
		Rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_rules", Help: "Rules (or entries) in the dataplane after the last sync.", ConstLabels: labels}),
		Services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_service_ports", Help: "Service ports programmed.", ConstLabels: labels}),
		Endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_endpoints", Help: "Endpoints known for programmed service ports.", ConstLabels: labels}),
		Healthz: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeproxy_proxy_healthz_total", Help: "/healthz answers by code."}, []string{"code"}),
		Livez: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeproxy_proxy_livez_total", Help: "/livez answers by code."}, []string{"code"}),
	}
	m.Registry.MustRegister(m.SyncDuration, m.SyncFullDuration, m.SyncPartialDuration, m.ProgrammingLatency,
		m.SyncFailures, m.LastSync, m.Rules, m.Services, m.Endpoints, m.Healthz, m.Livez,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
