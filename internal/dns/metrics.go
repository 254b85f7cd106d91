package dns

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series. Labelled children are
// resolved once so the hot path only does atomic adds.
type metrics struct {
	reg                    *prometheus.Registry
	reqUDP, reqTCP         prometheus.Counter
	byRcode                [24]prometheus.Counter
	dropped                prometheus.Counter
	cacheHits, cacheMisses prometheus.Counter
	forwards               prometheus.Counter
	latency                prometheus.Histogram
	indexNames             prometheus.Gauge
	buildSeconds           prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "requests_total", Help: "DNS requests received, by transport."}, []string{"proto"})
	m.reqUDP, m.reqTCP = reqs.WithLabelValues("udp"), reqs.WithLabelValues("tcp")
	resp := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "responses_total", Help: "DNS responses sent, by rcode."}, []string{"rcode"})
	for i := range m.byRcode {
		name := rcodeName(i)
		m.byRcode[i] = resp.WithLabelValues(name)
	}
	m.dropped = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "requests_dropped_total", Help: "Requests dropped without an answer (unparseable, or a response)."})
	m.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "cache_hits_total", Help: "Forwarded names answered from the cache."})
	m.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "cache_misses_total", Help: "Forwarded names not in the cache."})
	m.forwards = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "forward_requests_total", Help: "Queries sent to upstream resolvers."})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "request_duration_seconds", Help: "Time from reading a request to writing its answer.",
		Buckets: []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}})
	m.indexNames = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "index_names", Help: "Names in the published cluster record index."})
	m.buildSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "svcnet", Subsystem: "dns",
		Name: "index_build_duration_seconds", Help: "Time to build and publish the record index.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)})
	m.reg.MustRegister(reqs, resp, m.dropped, m.cacheHits, m.cacheMisses, m.forwards, m.latency, m.indexNames, m.buildSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func rcodeName(i int) string {
	names := []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"}
	if i < len(names) {
		return names[i]
	}
	return "RCODE" + itoa(i)
}

// observe counts a response (nil: dropped) and its latency.
func (m *metrics) observe(resp []byte, start time.Time) {
	if len(resp) < 4 {
		m.dropped.Inc()
		return
	}
	m.byRcode[resp[3]&0x0F].Inc()
	m.latency.Observe(time.Since(start).Seconds())
}
