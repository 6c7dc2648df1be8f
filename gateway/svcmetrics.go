package gateway

import (
	"math"
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The per-service series are plain atomics read by a collector at scrape
// time, not client_golang vectors: a vector child with its label pairs,
// and a histogram's double set of buckets, cost some 5 KB a service, which
// made the metrics most of what each route cost the gateway.
var (
	requestsDesc = prometheus.NewDesc("switchyard_gateway_requests_total",
		"Requests answered, by service and status class.", []string{"service", "code"}, nil)
	durationDesc = prometheus.NewDesc("switchyard_gateway_request_duration_seconds",
		"Time to answer a request, by service.", []string{"service"}, nil)
	retriesDesc = prometheus.NewDesc("switchyard_gateway_retries_total",
		"Requests sent again to another instance, by service.", []string{"service"}, nil)

	durationBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)
	classLabels     = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}
)

// serviceMetrics are one service's series, made once when a route first
// names it, so the hot path never formats labels.
type serviceMetrics struct {
	service  string
	byClass  [6]counter // by status code / 100
	duration histogram
	retries  counter
}

// count records an answer with status code.
func (sm *serviceMetrics) count(code int) {
	if code >= 100 && code < 600 {
		sm.byClass[code/100].Inc()
	}
}

// counter is a Prometheus counter as one atomic.
type counter struct{ n atomic.Uint64 }

func (c *counter) Inc() { c.n.Add(1) }

// histogram counts observations into durationBuckets, and +Inf last.
type histogram struct {
	buckets [17]atomic.Uint64
	sum     atomic.Uint64 // float64 bits
}

func (h *histogram) Observe(v float64) {
	h.buckets[sort.SearchFloat64s(durationBuckets, v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// metric is the histogram as read now; the count is the sum of the
// buckets, so that the two always agree.
func (h *histogram) metric(service string) prometheus.Metric {
	cum := make(map[float64]uint64, len(durationBuckets))
	var n uint64
	for i, ub := range durationBuckets {
		n += h.buckets[i].Load()
		cum[ub] = n
	}
	n += h.buckets[len(durationBuckets)].Load()
	return prometheus.MustNewConstHistogram(durationDesc, n, math.Float64frombits(h.sum.Load()), cum, service)
}

// service returns service's series, made on first use.
func (m *metrics) service(s string) *serviceMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sm := m.svc[s]; sm != nil {
		return sm
	}
	sm := &serviceMetrics{service: s}
	m.svc[s] = sm
	return sm
}

// serviceCollector reads the per-service series at scrape time.
type serviceCollector struct{ m *metrics }

func (c serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- durationDesc
	ch <- retriesDesc
}

func (c serviceCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	all := make([]*serviceMetrics, 0, len(c.m.svc))
	for _, sm := range c.m.svc {
		all = append(all, sm)
	}
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(c.m.noRoute.n.Load()), "", classLabels[4])
	for _, sm := range all {
		for class := 1; class < len(classLabels); class++ {
			ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(sm.byClass[class].n.Load()), sm.service, classLabels[class])
		}
		ch <- sm.duration.metric(sm.service)
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(sm.retries.n.Load()), sm.service)
	}
}
