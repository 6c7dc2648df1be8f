package gateway

import (
	"cmp"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// passiveDown is how long an endpoint that refused a connection is passed
// over, unless nothing else is left.
const passiveDown = 2 * time.Second

// Table is a routing table: the routes, longest prefix first, each with the
// UP endpoints of its service. A Table never changes once built (only the
// round-robin counters and the endpoints' passive health move, atomically),
// so readers need no lock: the gateway builds a new Table for every change
// and swaps it in whole, as fabio does.
type Table struct {
	routes []tableRoute
	pools  map[string]*Pool
}

type tableRoute struct {
	prefix string
	pool   *Pool
}

// Pool is one service's UP endpoints in a Table.
type Pool struct {
	service string
	index   uint64
	applied bool // built from a registry snapshot, not only named by a route
	ready   bool // that snapshot was Ready
	eps     []*Endpoint
	next    atomic.Uint64
}

// Endpoint is one UP instance that a Pool sends traffic to.
type Endpoint struct {
	inst     registry.Instance
	hostPort string
	// downUntil, in Unix nanoseconds, is set when the endpoint refused a
	// connection. Endpoints are carried over from table to table, so this
	// passive health outlives a rebuild.
	downUntil atomic.Int64
}

// NewTable builds the table for routes (as ParseRoute returns them) from
// each service's snapshot. A service without a snapshot has no endpoints.
// When two routes share a prefix, the first wins.
func NewTable(routes []Route, snaps map[string]registry.Snapshot) *Table {
	t := &Table{pools: make(map[string]*Pool, len(routes))}
	for _, r := range routes {
		if _, ok := t.pools[r.Service]; ok {
			continue
		}
		snap, ok := snaps[r.Service]
		t.pools[r.Service] = newPool(r.Service, snap, ok, nil)
	}
	t.routes = make([]tableRoute, 0, len(routes))
	for _, r := range routes {
		if !slices.ContainsFunc(t.routes, func(tr tableRoute) bool { return tr.prefix == r.Prefix }) {
			t.routes = append(t.routes, tableRoute{prefix: r.Prefix, pool: t.pools[r.Service]})
		}
	}
	slices.SortStableFunc(t.routes, func(a, b tableRoute) int { return cmp.Compare(len(b.prefix), len(a.prefix)) })
	return t
}

// with returns a copy of t in which service's pool is built from snap. Only
// that pool is rebuilt; its endpoints are carried over where the instance is
// unchanged, and every other pool is shared.
func (t *Table) with(service string, snap registry.Snapshot) *Table {
	nt := &Table{pools: maps.Clone(t.pools), routes: make([]tableRoute, len(t.routes))}
	nt.pools[service] = newPool(service, snap, true, t.pools[service])
	for i, r := range t.routes {
		nt.routes[i] = tableRoute{prefix: r.prefix, pool: nt.pools[r.pool.service]}
	}
	return nt
}

func newPool(service string, snap registry.Snapshot, applied bool, prev *Pool) *Pool {
	p := &Pool{service: service, index: snap.Index, applied: applied, ready: applied && snap.Ready}
	var old map[string]*Endpoint
	if prev != nil && len(prev.eps) > 0 {
		old = make(map[string]*Endpoint, len(prev.eps))
		for _, e := range prev.eps {
			old[e.inst.ID] = e
		}
	}
	for _, inst := range snap.Instances {
		if inst.Status != registry.StatusUp || inst.Service != service {
			continue
		}
		e := old[inst.ID]
		if e == nil || e.inst != inst {
			ne := &Endpoint{inst: inst, hostPort: inst.HostPort()}
			if e != nil && e.hostPort == ne.hostPort {
				ne.downUntil.Store(e.downUntil.Load())
			}
			e = ne
		}
		p.eps = append(p.eps, e)
	}
	return p
}

// Lookup finds the pool of the longest route prefix that path lies under.
// ok is false when no route matches; a matched pool may still be empty.
func (t *Table) Lookup(path string) (p *Pool, ok bool) {
	for i := range t.routes {
		if matches(t.routes[i].prefix, path) {
			return t.routes[i].pool, true
		}
	}
	return nil, false
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

// Service is the pool's service.
func (p *Pool) Service() string { return p.service }

// Index is the registry index of the snapshot the pool was built from.
func (p *Pool) Index() uint64 { return p.index }

// Len is the number of UP endpoints.
func (p *Pool) Len() int { return len(p.eps) }

// Endpoints lists the UP endpoints.
func (p *Pool) Endpoints() []*Endpoint { return slices.Clone(p.eps) }

// Next picks the next endpoint round-robin, passing over endpoints that
// recently refused a connection while others are left. It returns nil when
// the pool is empty.
func (p *Pool) Next() *Endpoint { return p.pick(nil) }

// pick is Next, but also passes over the endpoints already tried (by
// host:port) for this request; it returns nil when every one was tried.
func (p *Pool) pick(tried []string) *Endpoint {
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
