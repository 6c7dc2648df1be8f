package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series. Per-request updates go to
// each routed service's serviceMetrics (svcmetrics.go).
type metrics struct {
	reg     *prometheus.Registry
	moved   *prometheus.CounterVec
	noRoute counter // requests that matched no route: service "", 4xx
	// previewNoRoute counts the preview requests that matched no route,
	// by status class.
	previewNoRoute [len(classLabels)]counter

	mu  sync.Mutex
	svc map[string]*serviceMetrics
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_gateway_streams_moved_total", Help: "Streams ended because their instance left the UP set, by kind.",
		}, []string{"kind"}),
		svc: map[string]*serviceMetrics{},
	}
	m.reg.MustRegister(serviceCollector{m}, m.moved, tableCollector{g},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_gateway_streams_open", Help: "Open long-lived streams (WebSocket, SSE, gRPC).",
		}, func() float64 { return float64(g.streams.total()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchyard_gateway_access_log_dropped_total", Help: "Access log lines dropped to keep the request path from blocking.",
		}, func() float64 { return float64(g.access.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchyard_gateway_engine_requests_total", Help: "HTTP/1.1 requests the gateway's own engine answered (the rest go through net/http).",
		}, func() float64 { return float64(g.engine.served.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchyard_gateway_engine_handoffs_total", Help: "HTTP/1.1 connections the engine handed to net/http, at a request it does not take.",
		}, func() float64 { return float64(g.engine.handedOff.Load()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var (
	upDesc      = prometheus.NewDesc("switchyard_gateway_instances_up", "UP instances in the routing table, by service.", []string{"service"}, nil)
	appliedDesc = prometheus.NewDesc("switchyard_gateway_applied_index", "Registry index of the routing table, by service.", []string{"service"}, nil)
)

// tableCollector reads the routing table at scrape time.
type tableCollector struct{ g *Gateway }

func (c tableCollector) Describe(ch chan<- *prometheus.Desc) { ch <- upDesc; ch <- appliedDesc }

func (c tableCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.g.table.Load()
	for s, p := range t.pools {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, float64(p.Len()), s)
		ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.GaugeValue, float64(c.g.appliedIndex(p)), s)
	}
}

// RouteView is one route of GET /v1/routes.
type RouteView struct {
	Host      string            `json:"host,omitempty"`
	Prefix    string            `json:"prefix"`
	Headers   map[string]string `json:"headers,omitempty"`
	Service   string            `json:"service"`
	Index     uint64            `json:"index"`
	Ready     bool              `json:"ready"`
	Instances []InstanceView    `json:"instances"`
}

// InstanceView is an UP instance the gateway routes to.
type InstanceView struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Color   string `json:"color"`
	Version string `json:"version,omitempty"`
}

// Routes describes the routing table now, in the order routes are tried.
func (g *Gateway) Routes() []RouteView {
	t := g.table.Load()
	out := make([]RouteView, 0, len(t.routes))
	for _, r := range t.routes {
		v := RouteView{Host: r.Host, Prefix: r.Prefix, Headers: r.Headers, Service: r.pool.service, Index: g.appliedIndex(r.pool), Ready: r.pool.ready, Instances: []InstanceView{}}
		for _, e := range r.pool.eps {
			v.Instances = append(v.Instances, InstanceView{ID: e.inst.ID, Address: e.hostPort, Color: e.inst.Color, Version: e.inst.Version})
		}
		out = append(out, v)
	}
	return out
}

// serveAdmin serves /metrics, /healthz and /v1/routes on ln until ctx ends.
// Health is 200 once every service's table came from a ready registry view.
func (g *Gateway) serveAdmin(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(g.Routes())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		code, status := http.StatusOK, "ok"
		for _, p := range g.table.Load().pools {
			if !p.applied || !p.ready {
				code, status = http.StatusServiceUnavailable, "waiting for the registry"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "id": g.cfg.ID, "applied": g.Applied(),
			"streams": g.streams.counts(), "moving": g.streams.pendingMoves(), "moved": g.streams.moved.Load()})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		g.log.WithError(err).Error("admin listener stopped")
	}
}
