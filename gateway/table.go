package gateway

import (
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// passiveDown is how long an endpoint that refused a connection is passed
// over, unless nothing else is left.
const passiveDown = 2 * time.Second

// Table is a routing table: the routes, most specific first, each with the
// UP endpoints of its service. A Table never changes once built (only the
// round-robin counters and the endpoints' passive health move, atomically),
// so readers need no lock: the gateway builds a new Table for every change
// and swaps it in whole, as fabio does.
type Table struct {
	routes []tableRoute
	pools  map[string]*Pool
	// standby makes the pools keep their OUT_OF_SERVICE endpoints too, for
	// the preview and Switchyard-Color (preview.go). A gateway that serves
	// neither does not pay for them on a rebuild; live routing never looks
	// at them.
	standby bool
	// upSet is upIDs, made the first time isUp asks: only a gateway with
	// long-lived streams open asks, so a table change costs the others
	// nothing per instance.
	upOnce sync.Once
	upSet  map[string]bool
}

type tableRoute struct {
	*Route
	pool *Pool
	up   *upstream // nil in a table built by NewTable
}

// Pool is one service's UP endpoints in a Table.
type Pool struct {
	service string
	index   uint64
	applied bool // built from a registry snapshot, not only named by a route
	ready   bool // that snapshot was Ready
	eps     []*Endpoint
	next    atomic.Uint64
	m       *serviceMetrics // nil in a table built by NewTable
	// standby are the OUT_OF_SERVICE endpoints, in the registry's order
	// as eps, when the table keeps them; colors sorts eps and standby by
	// color the first time a preview or Switchyard-Color request asks.
	standby []*Endpoint
	colors  atomic.Pointer[colorView]
}

// Endpoint is one UP instance that a Pool sends traffic to.
type Endpoint struct {
	inst     registry.Instance
	hostPort string
	h2c      bool // the instance speaks HTTP/2 with prior knowledge
	// downUntil, in Unix nanoseconds, is set when the endpoint refused a
	// connection. Endpoints are carried over from table to table, so this
	// passive health outlives a rebuild.
	downUntil atomic.Int64
	// traffic counts what the gateway sent this instance; it is shared by
	// the endpoints a rebuild makes for the same address, so that it lasts
	// as long as the instance stays UP.
	traffic *endpointTraffic
}

// endpointTraffic counts the exchanges with one instance, for the
// gateway's report: the controller's dashboard shows their rates.
type endpointTraffic struct {
	requests atomic.Uint64
	errors   atomic.Uint64 // 5xx answers and attempts that got no answer
}

// count counts an exchange that ended with status (0 for no answer).
func (e *Endpoint) count(status int) {
	e.traffic.requests.Add(1)
	if status == 0 || status >= 500 {
		e.traffic.errors.Add(1)
	}
}

// NewTable builds the table for routes (normalized, as ParseRoute returns
// them) from each service's snapshot. A service without a snapshot has no
// endpoints. Of two routes with the same match, the first wins.
func NewTable(routes []Route, snaps map[string]registry.Snapshot) *Table {
	return newTable(routes, snaps, false)
}

// newTable is NewTable, keeping the OUT_OF_SERVICE endpoints too when
// standby is set.
func newTable(routes []Route, snaps map[string]registry.Snapshot, standby bool) *Table {
	rs := make([]tableRoute, len(routes))
	for i := range routes {
		rs[i] = tableRoute{Route: &routes[i]}
	}
	t := (&Table{pools: map[string]*Pool{}, standby: standby}).withRoutes(rs, nil)
	for svc, snap := range snaps {
		if _, ok := t.pools[svc]; ok {
			t = t.with(svc, snap)
		}
	}
	return t
}

// withRoutes returns a table with routes in place of t's. The pools of
// services still routed are kept, endpoints and all; a new service starts
// with an empty pool that no snapshot was applied to. newMetrics, when set,
// gives a new pool its series.
func (t *Table) withRoutes(routes []tableRoute, newMetrics func(service string) *serviceMetrics) *Table {
	nt := &Table{pools: make(map[string]*Pool, len(routes)), standby: t.standby}
	seen := map[string]bool{}
	for _, r := range routes {
		if seen[routeKey(r.Route)] {
			continue
		}
		seen[routeKey(r.Route)] = true
		p := nt.pools[r.Service]
		if p == nil {
			p = t.pools[r.Service]
			if p == nil {
				p = &Pool{service: r.Service}
				if newMetrics != nil {
					p.m = newMetrics(r.Service)
				}
			}
			nt.pools[r.Service] = p
		}
		r.pool = p
		nt.routes = append(nt.routes, r)
	}
	slices.SortStableFunc(nt.routes, func(a, b tableRoute) int { return compareRoutes(a.Route, b.Route) })
	return nt
}

// with returns a copy of t in which service's pool is built from snap. Only
// that pool is rebuilt; its endpoints are carried over where the instance is
// unchanged, and every other pool is shared.
func (t *Table) with(service string, snap registry.Snapshot) *Table {
	nt := &Table{pools: maps.Clone(t.pools), routes: make([]tableRoute, len(t.routes)), standby: t.standby}
	prev := t.pools[service]
	np := newPool(service, snap, true, prev, t.standby)
	if prev != nil {
		np.m = prev.m
	}
	nt.pools[service] = np
	for i, r := range t.routes {
		r.pool = nt.pools[r.pool.service]
		nt.routes[i] = r
	}
	return nt
}

// newPool builds service's pool from snap, carrying over prev's endpoints
// of instances that did not change, and keeping the OUT_OF_SERVICE ones
// apart when standby is set.
func newPool(service string, snap registry.Snapshot, applied bool, prev *Pool, standby bool) *Pool {
	p := &Pool{service: service, index: snap.Index, applied: applied, ready: applied && snap.Ready}
	var old, oldStandby []*Endpoint
	if prev != nil {
		old, oldStandby = prev.eps, prev.standby
	}
	p.eps = carryOver(old, snap.Instances, service, registry.StatusUp)
	if standby {
		p.standby = carryOver(oldStandby, snap.Instances, service, registry.StatusOutOfService)
	}
	return p
}

// carryOver lists the endpoints of service's instances in insts whose
// status is st, carrying over old's endpoints of instances that did not
// change. A switch changes a few instances per snapshot of thousands, so
// this is the gateway's cost per registry change: registries list
// instances ordered by id (as both backends do), and so are a pool's
// endpoints, so the old endpoints are found by walking both lists
// together, without a map; a snapshot out of order falls back to one.
// When the endpoints are the same, old itself is returned.
func carryOver(old []*Endpoint, insts []registry.Instance, service string, st registry.Status) []*Endpoint {
	var (
		eps    []*Endpoint // nil while it equals old[:n]
		n      int         // endpoints so far
		j      int         // the walk's place in old
		byID   map[string]*Endpoint
		lastID string
	)
	for i := range insts {
		inst := &insts[i]
		if inst.Status != st || inst.Service != service {
			continue
		}
		var e *Endpoint
		switch {
		case byID != nil:
			e = byID[inst.ID]
		case n > 0 && inst.ID <= lastID:
			byID = make(map[string]*Endpoint, len(old))
			for _, o := range old {
				byID[o.inst.ID] = o
			}
			e = byID[inst.ID]
		default:
			for j < len(old) && old[j].inst.ID < inst.ID {
				j++
			}
			if j < len(old) && old[j].inst.ID == inst.ID {
				e = old[j]
			}
		}
		lastID = inst.ID
		if e == nil || e.inst != *inst {
			ne := &Endpoint{inst: *inst, hostPort: inst.HostPort(), h2c: inst.Protocol == registry.ProtocolH2C}
			if e != nil && e.hostPort == ne.hostPort {
				ne.downUntil.Store(e.downUntil.Load())
				ne.traffic = e.traffic
			} else {
				ne.traffic = new(endpointTraffic)
			}
			e = ne
		}
		if eps == nil && (n >= len(old) || old[n] != e) {
			eps = make([]*Endpoint, n, n+statusIn(insts[i:], service, st))
			copy(eps, old[:n])
		}
		if eps != nil {
			eps = append(eps, e)
		}
		n++
	}
	switch {
	case eps != nil:
		return eps
	case n == len(old):
		return old // the same endpoints; a Table's lists are never written
	default:
		return old[:n:n]
	}
}

// statusIn counts the instances of service in insts whose status is st.
func statusIn(insts []registry.Instance, service string, st registry.Status) int {
	n := 0
	for i := range insts {
		if insts[i].Status == st && insts[i].Service == service {
			n++
		}
	}
	return n
}

// Lookup finds the pool of the first route that takes path on any host
// without headers. ok is false when no route matches; a matched pool may
// still be empty.
func (t *Table) Lookup(path string) (p *Pool, ok bool) {
	if r := t.match("", path, nil); r != nil {
		return r.pool, true
	}
	return nil, false
}

// match finds the first route, most specific first, that takes a request
// for host and path carrying h; nil when none does.
func (t *Table) match(host, path string, h http.Header) *tableRoute {
	for i := range t.routes {
		if t.routes[i].Match(host, path, h) {
			return &t.routes[i]
		}
	}
	return nil
}

// Applied maps each service that has a snapshot behind this table to that
// snapshot's registry index.
func (t *Table) Applied() map[string]uint64 {
	out := make(map[string]uint64, len(t.pools))
	for svc, p := range t.pools {
		if p.applied {
			out[svc] = p.index
		}
	}
	return out
}

// isUp tells whether instance id is UP in some pool.
func (t *Table) isUp(id string) bool {
	t.upOnce.Do(func() { t.upSet = t.upIDs() })
	return t.upSet[id]
}

// upIDs is the set of instance ids that are UP in some pool.
func (t *Table) upIDs() map[string]bool {
	out := map[string]bool{}
	for _, p := range t.pools {
		for _, e := range p.eps {
			out[e.inst.ID] = true
		}
	}
	return out
}

// Service is the pool's service.
func (p *Pool) Service() string { return p.service }

// Index is the registry index of the snapshot the pool was built from.
func (p *Pool) Index() uint64 { return p.index }

// Len is the number of UP endpoints; a nil pool (a service no route names
// any more) has none.
func (p *Pool) Len() int {
	if p == nil {
		return 0
	}
	return len(p.eps)
}

// Endpoints lists the UP endpoints.
func (p *Pool) Endpoints() []*Endpoint { return slices.Clone(p.eps) }

// Next picks the next endpoint round-robin, passing over endpoints that
// recently refused a connection while others are left. It returns nil when
// the pool is empty.
func (p *Pool) Next() *Endpoint { return p.pick(nil) }

// pick is Next, but also passes over the endpoints already tried (by
// host:port) for this request; it returns nil when every one was tried.
func (p *Pool) pick(tried []string) *Endpoint {
	if p == nil {
		return nil
	}
	n := uint64(len(p.eps))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1) - 1
	var now int64
	var fallback *Endpoint
	for k := range n {
		e := p.eps[(start+k)%n]
		if slices.Contains(tried, e.hostPort) {
			continue
		}
		if until := e.downUntil.Load(); until != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			if now < until {
				if fallback == nil {
					fallback = e
				}
				continue
			}
		}
		return e
	}
	return fallback
}

// endpoint finds the endpoint at hostPort, or nil.
func (p *Pool) endpoint(hostPort string) *Endpoint {
	if p == nil {
		return nil
	}
	for _, e := range p.eps {
		if e.hostPort == hostPort {
			return e
		}
	}
	return nil
}

// Instance is the registry's record of the endpoint.
func (e *Endpoint) Instance() registry.Instance { return e.inst }

// HostPort is the address traffic goes to.
func (e *Endpoint) HostPort() string { return e.hostPort }

// markDown passes the endpoint over for passiveDown.
func (e *Endpoint) markDown(now time.Time) { e.downUntil.Store(now.Add(passiveDown).UnixNano()) }
