package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard/switchyard/registry"
)

// storeCollector reports the store's contents at scrape time, so the hot
// paths pay nothing for metrics.
type storeCollector struct {
	store     *Store
	instances *prometheus.Desc
	gateways  *prometheus.Desc
}

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.gateways
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ service, color string }
	counts := map[key]map[registry.Status]int{}
	for _, in := range c.store.Instances(context.Background(), "", 0, 0).Instances {
		k := key{in.Service, in.Color}
		if counts[k] == nil {
			counts[k] = map[registry.Status]int{}
		}
		counts[k][in.Status]++
	}
	for k, byStatus := range counts {
		for _, st := range []registry.Status{registry.StatusUp, registry.StatusDown, registry.StatusStarting, registry.StatusOutOfService} {
			ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(byStatus[st]), k.service, k.color, string(st))
		}
	}
	ch <- prometheus.MustNewConstMetric(c.gateways, prometheus.GaugeValue, float64(len(c.store.Gateways())))
}

func newServerMetrics(store *Store, w *waiters) (*prometheus.Registry, prometheus.Counter) {
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "switchyard_registry_evictions_total", Help: "Instances evicted because their lease ran out.",
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(evictions, storeCollector{
		store: store,
		instances: prometheus.NewDesc("switchyard_registry_instances", "Registered instances by service, color and status.",
			[]string{"service", "color", "status"}, nil),
		gateways: prometheus.NewDesc("switchyard_registry_gateways", "Gateways with a current report.", nil, nil),
	}, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_registry_waiters", Help: "Blocking queries held now.",
	}, func() float64 { return float64(w.held()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg, evictions
}
