package controller

import (
	"net/http"

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
	instructions *prometheus.CounterVec
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
		instructions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_instructions_total", Help: "Status instructions sent to instances, by status and result.",
		}, []string{"status", "result"}),
	}
	m.reg.MustRegister(m.leading, m.switches, m.duration, m.instructions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }
