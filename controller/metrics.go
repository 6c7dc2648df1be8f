package controller

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are a controller's Prometheus series, in a registry of its own so
// several controllers can share a process (as tests do).
type metrics struct {
	reg          *prometheus.Registry
	leading      prometheus.Gauge
	switches     *prometheus.CounterVec
	duration     prometheus.Histogram
	propagation  prometheus.Histogram
	instructions *prometheus.CounterVec
	verdicts     *prometheus.CounterVec
	rollbacks    prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		leading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_controller_leading", Help: "1 while this controller leads.",
		}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_switches_total", Help: "Switches finished, by phase (done, refused, failed).",
		}, []string{"phase"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchyard_switch_duration_seconds", Help: "Duration of switches that finished done.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchyard_controller_propagation_seconds",
			Help: "From the /active_color write to every gateway confirming the switch's final routing table, per switch done.",
			// From a few ms (all local) to minutes (a failover mid-switch).
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}),
		instructions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_instructions_total", Help: "Status instructions sent to instances, by status and result.",
		}, []string{"status", "result"}),
	}
	m.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_analysis_verdicts_total", Help: "Post-switch analyses finished, by verdict (verified, rolled back, superseded).",
	}, []string{"verdict"})
	m.rollbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "switchyard_rollbacks_total", Help: "Switches the post-switch analysis rolled back.",
	})
	m.reg.MustRegister(m.leading, m.switches, m.duration, m.propagation, m.instructions, m.verdicts, m.rollbacks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// observePropagation records a switch whose final routing table every
// gateway confirmed now.
func (m *metrics) observePropagation(askedAt time.Time, ok bool) {
	if ok {
		// ZooKeeper's clock and ours may differ a little; never negative.
		m.propagation.Observe(max(time.Since(askedAt), 0).Seconds())
	}
}
