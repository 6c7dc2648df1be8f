package gateway

import (
	"math"
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/registry"
)

// The per-service series are plain atomics read by a collector at scrape
// time, not client_golang vectors: a vector child with its label pairs,
// and a histogram's double set of buckets, cost some 5 KB a service, which
// made the metrics most of what each route cost the gateway.
var (
	requestsDesc = prometheus.NewDesc("switchyard_gateway_requests_total",
		"Requests answered, by service, status class and the color of the instance that answered (\"\" when none did).",
		[]string{"service", "code", "upstream_color"}, nil)
	durationDesc = prometheus.NewDesc("switchyard_gateway_request_duration_seconds",
		"Time to answer a request, by service and the color of the instance that answered.",
		[]string{"service", "upstream_color"}, nil)
	retriesDesc = prometheus.NewDesc("switchyard_gateway_retries_total",
		"Requests sent again to another instance, by service.", []string{"service"}, nil)
	previewDesc = prometheus.NewDesc("switchyard_gateway_preview_requests_total",
		"Preview requests, and requests a trusted proxy sent to a color with Switchyard-Color, by service, status class and the color they were sent to (\"\" when none was chosen); they are not in switchyard_gateway_requests_total.",
		[]string{"service", "code", "color"}, nil)

	// durationBuckets are the registry's, so that the counts a gateway
	// reports to the controller (ColorTraffic) are the ones it exports.
	durationBuckets = registry.LatencyBounds
	classLabels     = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}
	// colorLabels are the colors a registry accepts, after "" for answers
	// no instance gave (refused, timed out before one answered).
	colorLabels = [3]string{"", "blue", "green"}
)

// colorIndex is color's place in colorLabels; an unknown color counts as
// none rather than growing the series.
func colorIndex(color string) int {
	switch color {
	case "blue":
		return 1
	case "green":
		return 2
	}
	return 0
}

// serviceMetrics are one service's series, made once when a route first
// names it, so the hot path never formats labels.
type serviceMetrics struct {
	service string
	byColor [len(colorLabels)]colorMetrics
	retries counter
	// preview counts check traffic (preview.go) by the color it was sent
	// to and status class, apart from byColor, which the controller
	// compares the colors by.
	preview [len(colorLabels)][len(classLabels)]counter
}

// colorMetrics are the answers given by one color's instances.
type colorMetrics struct {
	byClass  [6]counter // by status code / 100
	duration histogram
}

// record counts an answer with status code, given in seconds by an
// instance of color ("" when none answered).
func (sm *serviceMetrics) record(color string, code int, seconds float64) {
	cm := &sm.byColor[colorIndex(color)]
	if code >= 100 && code < 600 {
		cm.byClass[code/100].Inc()
	}
	cm.duration.Observe(seconds)
}

// recordPreview counts a check request answered with status code after
// it matched a route to p (nil when it matched none), sent to color (a
// colorLabels index; 0 when none was chosen).
func (m *metrics) recordPreview(p *Pool, color, code int) {
	class := 0
	if code >= 100 && code < 600 {
		class = code / 100
	}
	switch {
	case p == nil:
		m.previewNoRoute[class].Inc()
	case p.m != nil:
		p.m.preview[color][class].Inc()
	}
}

// counter is a Prometheus counter as one atomic.
type counter struct{ n atomic.Uint64 }

func (c *counter) Inc() { c.n.Add(1) }

// histogram counts observations into durationBuckets, and +Inf last.
type histogram struct {
	buckets [registry.LatencyBuckets + 1]atomic.Uint64
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
func (h *histogram) metric(service, color string) prometheus.Metric {
	cum := make(map[float64]uint64, len(durationBuckets))
	var n uint64
	for i, ub := range durationBuckets {
		n += h.buckets[i].Load()
		cum[ub] = n
	}
	n += h.buckets[len(durationBuckets)].Load()
	return prometheus.MustNewConstHistogram(durationDesc, n, math.Float64frombits(h.sum.Load()), cum, service, color)
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
	ch <- previewDesc
}

func (c serviceCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	all := make([]*serviceMetrics, 0, len(c.m.svc))
	for _, sm := range c.m.svc {
		all = append(all, sm)
	}
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(c.m.noRoute.n.Load()), "", classLabels[4], "")
	// Preview series appear once they count something: most gateways
	// serve no preview, and their scrape need not grow by them.
	collectPreview(ch, "", 0, &c.m.previewNoRoute)
	for _, sm := range all {
		for ci := range sm.preview {
			collectPreview(ch, sm.service, ci, &sm.preview[ci])
		}
		for ci := range sm.byColor {
			cm, color := &sm.byColor[ci], colorLabels[ci]
			for class := 1; class < len(classLabels); class++ {
				ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(cm.byClass[class].n.Load()), sm.service, classLabels[class], color)
			}
			ch <- cm.duration.metric(sm.service, color)
		}
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(sm.retries.n.Load()), sm.service)
	}
}

// collectPreview sends the nonzero preview counts of service's color ci.
func collectPreview(ch chan<- prometheus.Metric, service string, ci int, byClass *[len(classLabels)]counter) {
	for class := 1; class < len(classLabels); class++ {
		if n := byClass[class].n.Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(previewDesc, prometheus.CounterValue, float64(n), service, classLabels[class], colorLabels[ci])
		}
	}
}

// colors is what each color of each service answered so far, for the
// gateway's report; check traffic is not in it.
func (m *metrics) colors() []registry.ColorTraffic {
	m.mu.Lock()
	all := make([]*serviceMetrics, 0, len(m.svc))
	for _, sm := range m.svc {
		all = append(all, sm)
	}
	m.mu.Unlock()
	var out []registry.ColorTraffic
	for _, sm := range all {
		for ci := 1; ci < len(sm.byColor); ci++ {
			cm := &sm.byColor[ci]
			ct := registry.ColorTraffic{Service: sm.service, Color: colorLabels[ci], Errors: cm.byClass[5].n.Load()}
			for class := range cm.byClass {
				ct.Requests += cm.byClass[class].n.Load()
			}
			if ct.Requests == 0 {
				continue
			}
			ct.Latency = make([]uint64, len(cm.duration.buckets))
			for i := range cm.duration.buckets {
				ct.Latency[i] = cm.duration.buckets[i].Load()
			}
			out = append(out, ct)
		}
	}
	return out
}
