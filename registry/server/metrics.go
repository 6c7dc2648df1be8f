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
	leases    *prometheus.Desc
	index     *prometheus.Desc
}

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.gateways
	ch <- c.leases
	ch <- c.index
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ service, color string }
	counts, services := map[key]map[registry.Status]int{}, map[string]bool{}
	all := c.store.Instances(context.Background(), "", 0, 0).Instances
	for _, in := range all {
		services[in.Service] = true
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
	gateways, _ := c.store.Gateways(context.Background(), 0, 0)
	ch <- prometheus.MustNewConstMetric(c.gateways, prometheus.GaugeValue, float64(len(gateways)))
	ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(len(all)), "instance")
	ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(len(gateways)), "gateway")
	// What each gateway applied is its own switchyard_gateway_applied_index;
	// it is not repeated here, since /metrics is open to all and gateway
	// ids are for token holders (GET /v1/gateways).
	for svc := range services {
		ch <- prometheus.MustNewConstMetric(c.index, prometheus.GaugeValue, float64(c.store.Instances(context.Background(), svc, 0, 0).Index), svc)
	}
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
		leases: prometheus.NewDesc("switchyard_registry_leases", "Live leases, by kind (instance, gateway).",
			[]string{"kind"}, nil),
		index: prometheus.NewDesc("switchyard_registry_service_index", "The registry's change index of each service, as a blocking query returns it.",
			[]string{"service"}, nil),
	}, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_registry_waiters", Help: "Blocking queries held now.",
	}, func() float64 { return float64(w.held()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_registry_waiters_max", Help: "Blocking queries the registry holds at most; the next ones are refused.",
		}, func() float64 { return float64(w.max) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg, evictions
}
