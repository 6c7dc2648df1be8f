// Package gateway is switchyard's edge router. It matches each request to
// a route (host, path prefix, headers), proxies it to an UP instance of the
// route's service over HTTP/1.1 or HTTP/2, follows the registry with one
// blocking-query watch of all services (one per service where that view is
// costly, as Consul's is), moves long-lived streams off instances that
// leave the UP set, and reports the registry index it has applied, so the
// controller knows when a switch is visible. It serves HTTP/1.1 and
// h2c on a plain listener and HTTP/2 and HTTP/1.1 over TLS.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// Source is what the gateway needs of a registry.Backend.
type Source interface {
	Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error)
	ReportGateway(ctx context.Context, r registry.GatewayReport) error
}

// Config configures a Gateway.
type Config struct {
	ID     string // gateway id for reports; default hostname@listen
	Listen string // plain HTTP/1.1 and h2c; default 127.0.0.1:8088
	Routes []Route
	Source Source
	// ReportInterval is the heartbeat of the report, well below the
	// registry lease; default 1s.
	ReportInterval time.Duration
	// Admin, when set, is where /metrics, /healthz and /v1/routes are
	// served, apart from the traffic.
	Admin string
	Log   logrus.FieldLogger

	// Timeouts fill what a route leaves zero. Unset here, they take
	// nginx's defaults: Connect 5s, ResponseHeader 60s (then 504), Read
	// 60s, ClientBody 60s (then 408), Idle 60s, and no Request limit.
	Timeouts Timeouts
	// ClientHeaderTimeout bounds reading a request's head (60s, as nginx's
	// client_header_timeout); a client that sent part of one gets 408.
	ClientHeaderTimeout time.Duration
	// ClientIdleTimeout is how long a client's idle keep-alive connection
	// is kept (75s, as nginx's keepalive_timeout).
	ClientIdleTimeout time.Duration

	// TLSListen serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) when Certs or
	// ACME domains are set; default 127.0.0.1:8443.
	TLSListen string
	Certs     []CertPair // chosen by SNI; the first is the default
	ACME      ACME

	// TrustedProxies are the peers whose X-Forwarded-* headers are
	// extended rather than replaced, and whose Switchyard-Color header
	// sends a request to that color's instances (preview.go).
	TrustedProxies []netip.Prefix
	// PreviewListen, when set, serves the idle color of each service
	// through the same routes (preview.go), HTTP/1.1 and h2c, as
	// CodeDeploy's test listener does.
	PreviewListen string
	// StreamGrace is how long the streams of an instance that left the UP
	// set may go on before they are ended; 0 means 30s, negative at once.
	StreamGrace time.Duration
	// DrainTimeout bounds the graceful shutdown (30s): requests in flight
	// finish, streams are ended at once.
	DrainTimeout time.Duration
	// AccessLog, when set, gets one line per request.
	AccessLog *AccessLog
	// HeadLimits bound a request's head on HTTP/1.x (414, 431).
	HeadLimits headLimits
	// NoFastPath sends every HTTP/1.1 request through net/http's
	// Transport instead of the gateway's own fast path for GET and HEAD;
	// for debugging, and for the conformance suite, which runs on both.
	NoFastPath bool
	// NoEngine serves every HTTP/1.1 request with net/http's server and
	// ReverseProxy instead of the gateway's own engine for GET and HEAD
	// (engine.go); for comparison, and for the conformance suite. The
	// engine needs the fast path: NoFastPath turns it off too.
	NoEngine bool
}

const (
	defaultListen    = "127.0.0.1:8088"
	defaultTLSListen = "127.0.0.1:8443"
	reportTimeout    = 5 * time.Second
)

// Gateway is the edge proxy. It is an http.Handler; Run makes it follow the
// registry and serve.
type Gateway struct {
	cfg   Config
	log   logrus.FieldLogger
	proxy *httputil.ReverseProxy
	nonce string // marks the guard's stand-in requests; unguessable by clients

	table     atomic.Pointer[Table] // never nil
	applyMu   sync.Mutex            // serializes rebuilds and reloads, never taken per request
	upstreams map[Timeouts]*upstream
	changed   chan struct{} // buffered(1): a pending report after a change
	// routed is when a service's UP instances last changed (UnixNano):
	// the reports come faster for a while after it (reportLoop). A change
	// of an index, of readiness or of the standby list alone does not
	// count: then no new instance takes traffic.
	routed  atomic.Int64
	running atomic.Bool
	metrics *metrics
	streams *streams
	engine  engineConns // the connections the HTTP/1.1 engine serves
	access  *AccessLog
	certs   *certStore // nil without certificate files

	watchMu  sync.Mutex
	watchCtx context.Context               // set while running
	watchers map[string]context.CancelFunc // by service; "" is the one watch of all services
	watchWG  sync.WaitGroup
	resync   chan struct{} // buffered(1): routes name a service the watch of all services has not applied
	covered  atomic.Pointer[coverage]
}

// coverage is the view of all services the watch of them applied last:
// each pool of table reflects its service's view at index, whether it was
// rebuilt from that view or found equal to it and kept, except, when the
// view was not Ready, the Ready pools that the warm-up rule kept: those
// reflect the last Ready view.
type coverage struct {
	index     uint64
	table     *Table
	ready     bool
	lastReady *coverage // when this view was not Ready; nil if none was yet
}

// New checks cfg and builds a gateway whose table has no endpoints yet.
func New(cfg Config) (*Gateway, error) {
	if cfg.Source == nil {
		return nil, errors.New("gateway: a registry source is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if cfg.TLSListen == "" {
		cfg.TLSListen = defaultTLSListen
	}
	if cfg.ID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gateway"
		}
		cfg.ID = host + "@" + cfg.Listen
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = time.Second
	}
	cfg.Timeouts = withDefaults(cfg.Timeouts, Timeouts{
		Connect: 5 * time.Second, ResponseHeader: 60 * time.Second, Read: 60 * time.Second,
		ClientBody: 60 * time.Second, Idle: 60 * time.Second,
	})
	if cfg.ClientHeaderTimeout <= 0 {
		cfg.ClientHeaderTimeout = 60 * time.Second
	}
	if cfg.ClientIdleTimeout <= 0 {
		cfg.ClientIdleTimeout = 75 * time.Second
	}
	switch {
	case cfg.StreamGrace == 0:
		cfg.StreamGrace = 30 * time.Second
	case cfg.StreamGrace < 0:
		cfg.StreamGrace = 0
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	g := &Gateway{
		cfg:       cfg,
		log:       cfg.Log.WithField("gateway", cfg.ID),
		nonce:     newNonce(),
		upstreams: map[Timeouts]*upstream{},
		changed:   make(chan struct{}, 1),
		streams:   newStreams(cfg.StreamGrace),
		access:    cfg.AccessLog,
		watchers:  map[string]context.CancelFunc{},
		resync:    make(chan struct{}, 1),
	}
	g.metrics = newMetrics(g)
	g.streams.onMoved = func(k streamKind) { g.metrics.moved.WithLabelValues(k.String()).Inc() }
	g.table.Store(&Table{pools: map[string]*Pool{}, standby: cfg.PreviewListen != "" || len(cfg.TrustedProxies) > 0})
	if err := g.SetRoutes(cfg.Routes); err != nil {
		return nil, err
	}
	if len(cfg.Certs) > 0 {
		store, err := newCertStore(cfg.Certs, g.log)
		if err != nil {
			return nil, err
		}
		g.certs = store
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      retryTransport{g: g},
		ModifyResponse: g.modifyResponse,
		BufferPool:     newBufferPool(),
		ErrorHandler:   g.proxyError,
		ErrorLog:       log.New(debugWriter{g.log}, "", 0),
	}
	return g, nil
}

// withDefaults fills t's zero fields from def.
func withDefaults(t, def Timeouts) Timeouts {
	for _, f := range []struct{ v, d *time.Duration }{
		{&t.Connect, &def.Connect}, {&t.ResponseHeader, &def.ResponseHeader}, {&t.Read, &def.Read},
		{&t.Request, &def.Request}, {&t.ClientBody, &def.ClientBody}, {&t.Idle, &def.Idle},
	} {
		if *f.v == 0 {
			*f.v = *f.d
		}
	}
	return t
}

// SetRoutes checks routes and makes them the gateway's, keeping the
// endpoints of every service still routed; on an error nothing changes. A
// running gateway starts following new services and stops following those
// no route names any more.
func (g *Gateway) SetRoutes(routes []Route) error {
	if len(routes) == 0 {
		return fmt.Errorf("%w: at least one route is required", ErrInvalidRoute)
	}
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	trs := make([]tableRoute, 0, len(routes))
	seen := map[string]*Route{}
	for _, r := range routes {
		nr, err := r.normalize()
		if err != nil {
			return fmt.Errorf("%w %s: %w", ErrInvalidRoute, r, err)
		}
		if prev := seen[routeKey(&nr)]; prev != nil {
			return fmt.Errorf("%w: %s routes to both %q and %q", ErrInvalidRoute, describeMatch(&nr), prev.Service, nr.Service)
		}
		nr.Timeouts = withDefaults(nr.Timeouts, g.cfg.Timeouts)
		nr.Timeouts.Idle = g.cfg.Timeouts.Idle
		up := g.upstreams[nr.Timeouts]
		if up == nil {
			up = newUpstream(nr.Timeouts, g.cfg.NoFastPath)
			g.upstreams[nr.Timeouts] = up
		}
		route := nr
		seen[routeKey(&route)] = &route
		trs = append(trs, tableRoute{Route: &route, up: up})
	}
	t := g.table.Load().withRoutes(trs, g.metrics.service)
	g.table.Store(t)
	g.streams.changed(t) // streams of a service no route names any more move too
	g.cfg.Routes = routes
	g.syncWatches()
	return nil
}

// Reload loads the TLS certificates again and reopens the access log
// file (after a rotation moved it). A certificate that fails to load
// leaves the previous ones serving.
func (g *Gateway) Reload() error {
	var errs []error
	if g.certs != nil {
		if err := g.certs.Reload(); err != nil {
			errs = append(errs, err)
		} else {
			g.log.Info("TLS certificates reloaded")
		}
	}
	if err := g.access.Reopen(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PreviewListen is the preview listener's address as configured, "" for
// none.
func (g *Gateway) PreviewListen() string { return g.cfg.PreviewListen }

// pool is service's pool in the current table, nil when no route names it.
func (g *Gateway) pool(service string) *Pool { return g.table.Load().pools[service] }

// Applied maps each routed service to the registry index its current
// routing table was built from.
func (g *Gateway) Applied() map[string]uint64 {
	t, c := g.table.Load(), g.covered.Load()
	out := t.Applied()
	if c != nil {
		for svc := range out {
			out[svc] = c.of(svc, t.pools[svc])
		}
	}
	return out
}

// appliedIndex is p's entry of Applied, for the admin views.
func (g *Gateway) appliedIndex(p *Pool) uint64 {
	if c := g.covered.Load(); c != nil {
		return c.of(p.service, p)
	}
	return p.index
}

// of is the index that p, service's pool in some table, reflects: the
// coverage's when the coverage's table holds p itself, else p's own.
// Whichever of the table and the coverage a reader loads first, this
// never overstates: a pool in the coverage's table reflects its index.
func (c *coverage) of(service string, p *Pool) uint64 {
	switch {
	case !c.ready && p.ready && c.lastReady != nil:
		return c.lastReady.of(service, p)
	case !c.ready && p.ready:
	case c.table.pools[service] == p:
		return c.index
	}
	return p.index
}

// syncWatches follows the routed services while the gateway runs: all of
// them with one watch when the registry's view of all services is one
// query, or when they are more than the registry wants a watch each for
// (registry.WatchesAll), else one watch each. Callers hold applyMu.
func (g *Gateway) syncWatches() {
	g.watchMu.Lock()
	defer g.watchMu.Unlock()
	if g.watchCtx == nil {
		return
	}
	pools := g.table.Load().pools
	if registry.WatchesAll(g.cfg.Source, len(pools)) {
		// Routes that grew past a registry's AllAbove leave their
		// watches of one service each for the one of all.
		for svc, stop := range g.watchers {
			if svc != "" {
				stop()
				delete(g.watchers, svc)
			}
		}
		if _, ok := g.watchers[""]; !ok {
			ctx, cancel := context.WithCancel(g.watchCtx)
			g.watchers[""] = cancel
			g.watchWG.Go(func() { g.watchAll(ctx) })
			return
		}
		// A service a route just named needs its view now, not at the
		// registry's next change.
		for _, p := range pools {
			if !p.applied {
				g.askResync()
				return
			}
		}
		return
	}
	for svc, stop := range g.watchers {
		if _, ok := pools[svc]; !ok {
			stop()
			delete(g.watchers, svc)
		}
	}
	for svc := range pools {
		if _, ok := g.watchers[svc]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(g.watchCtx)
		g.watchers[svc] = cancel
		g.watchWG.Go(func() { g.watch(ctx, svc) })
	}
}

// watch applies service's snapshots until ctx ends.
func (g *Gateway) watch(ctx context.Context, service string) {
	for snap := range registry.Watch(ctx, g.cfg.Source, service, registry.WatchOptions{Log: g.log}) {
		g.applyWatched(ctx, service, snap)
	}
}

// watchViews follows the view of all services of l: as the changes the
// registry sends when it can (a Viewer), otherwise from its whole views,
// in which any service may have changed.
func watchViews(ctx context.Context, l registry.Lister, o registry.WatchOptions) <-chan *registry.View {
	if v, ok := l.(registry.Viewer); ok {
		return registry.WatchView(ctx, v, o)
	}
	out := make(chan *registry.View)
	go func() {
		defer close(out)
		for snap := range registry.Watch(ctx, l, "", o) {
			select {
			case out <- registry.ViewOf(snap):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (g *Gateway) askResync() {
	select {
	case g.resync <- struct{}{}:
	default:
	}
}

// watchAll applies the registry's views of all services until ctx ends.
// When routes name a service it has not applied, it reads the whole view
// again at once rather than wait for the registry's next change.
func (g *Gateway) watchAll(ctx context.Context) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		views := watchViews(wctx, g.cfg.Source, registry.WatchOptions{Log: g.log})
	follow:
		for {
			select {
			case v, ok := <-views:
				if !ok {
					break follow
				}
				g.applyAll(ctx, v)
			case <-g.resync:
				break follow
			}
		}
		cancel()
	}
}

// applyAll applies the view of all services to each routed service whose
// UP instances (and OUT_OF_SERVICE ones, when the table keeps them for the
// preview) or readiness differ from its pool; every other pool is
// kept as it is and reports the view's index (see coverage). Only the
// services the view names as changed are compared, so that a change costs
// what it touched, not the fleet. The warm-up rule of apply holds per
// service.
func (g *Gateway) applyAll(ctx context.Context, v *registry.View) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if ctx.Err() != nil {
		return // stopped by syncWatches: see applyWatched
	}
	prev := g.table.Load()
	changed := map[string]registry.Snapshot{}
	kept, rerouted := 0, false
	// A view whose readiness differs from the last one's is compared
	// whole: when a restarted registry's warm-up ends, the pools it kept
	// include services the registry may no longer have, which no change
	// names.
	whole := v.Changed == nil
	if c := g.covered.Load(); c == nil || c.ready != v.Ready {
		whole = true
	}
	for svc, p := range prev.pools {
		if !whole && !v.Changed[svc] && p.applied && p.ready == v.Ready {
			continue
		}
		insts := v.Services[svc]
		sameUp := sameStatus(p.eps, insts, registry.StatusUp)
		switch {
		case !v.Ready && p.applied && p.ready:
			kept++
		case p.applied && p.ready == v.Ready && sameUp && (!prev.standby || sameStatus(p.standby, insts, registry.StatusOutOfService)):
		default:
			changed[svc] = registry.Snapshot{Index: v.Index, Ready: v.Ready, Instances: insts}
			rerouted = rerouted || !sameUp
		}
	}
	if kept > 0 {
		g.log.WithFields(logrus.Fields{"index": v.Index, "services": kept}).
			Info("registry is warming up; keeping the last routing table of the services it had until it is ready")
	}
	t := prev
	if len(changed) > 0 {
		t = withSnapshots(prev, changed)
		g.table.Store(t)
		if rerouted {
			g.routed.Store(time.Now().UnixNano())
		}
		g.logApplied(prev, t, changed)
		g.streams.changed(t)
	}
	// Stored after the table: a reader that sees the older coverage with
	// the newer table reports less than it could, never more.
	c := &coverage{index: v.Index, table: t, ready: v.Ready}
	if old := g.covered.Load(); !v.Ready && old != nil {
		c.lastReady = old.lastReady
		if old.ready {
			c.lastReady = old
		}
	}
	g.covered.Store(c)
	// Even when no pool changed, a routed service's index may have moved
	// (an instance went from STARTING to OUT_OF_SERVICE), and the
	// controller waits for gateways to report it.
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// logApplied says what a view of all services changed from prev to t:
// each service when a few did, a summary when many did (a start, a
// registry's warm-up). A service left without UP instances is always
// named, and so is the switch that moved instances (see movedBy).
func (g *Gateway) logApplied(prev, t *Table, changed map[string]registry.Snapshot) {
	const few = 10
	empty := 0
	var newest int64
	for svc, snap := range changed {
		up := t.pools[svc].Len()
		fields := logrus.Fields{"service": svc, "index": snap.Index, "up": up, "ready": snap.Ready}
		if sw := movedBy(prev.pools[svc], svc, snap.Instances, t.standby); sw > 0 {
			fields["switch"] = sw
			newest = max(newest, sw)
		}
		entry := g.log.WithFields(fields)
		switch {
		case up == 0 && len(changed) <= few:
			entry.Warn("routing table applied; service has no UP instance and answers 503")
		case up == 0:
			empty++
		case len(changed) <= few:
			entry.Info("routing table applied")
		}
	}
	if len(changed) > few {
		fields := logrus.Fields{"services": len(changed), "without_up": empty}
		if newest > 0 {
			fields["switch"] = newest
		}
		entry := g.log.WithFields(fields)
		if empty > 0 {
			entry.Warn("routing table applied; services without an UP instance answer 503")
		} else {
			entry.Info("routing table applied")
		}
	}
}

// movedBy is the switch behind a change of service's pool from prev to
// the registry's view: the newest (largest) Instance.Switch among the
// instances of view that the change moves into or out of the UP
// endpoints, or, when the table keeps them (standby), the OUT_OF_SERVICE
// ones. 0 when none of them names a switch, and for a pool's first view,
// which moves nothing but what the gateway knows. It only labels the log
// line; the routing table never depends on it.
func movedBy(prev *Pool, service string, view []registry.Instance, standby bool) int64 {
	if prev == nil || !prev.applied || !slices.ContainsFunc(view, func(in registry.Instance) bool { return in.Switch > 0 }) {
		return 0
	}
	was := make(map[string]registry.Status, len(prev.eps)+len(prev.standby))
	for _, e := range prev.eps {
		was[e.inst.ID] = registry.StatusUp
	}
	if standby {
		for _, e := range prev.standby {
			was[e.inst.ID] = registry.StatusOutOfService
		}
	}
	var newest int64
	for i := range view {
		in := &view[i]
		if in.Service != service || in.Switch <= newest {
			continue
		}
		now := in.Status
		if now != registry.StatusUp && (!standby || now != registry.StatusOutOfService) {
			now = "" // in neither list
		}
		if was[in.ID] != now {
			newest = in.Switch
		}
	}
	return newest
}

// sameStatus tells whether view, a service's instances in the registry's
// order, has exactly eps as its instances in status st: a pool's UP
// endpoints, or the OUT_OF_SERVICE ones a table that serves the preview
// keeps.
func sameStatus(eps []*Endpoint, view []registry.Instance, st registry.Status) bool {
	n := 0
	for i := range view {
		if view[i].Status != st {
			continue
		}
		if n == len(eps) || eps[n].inst != view[i] {
			return false
		}
		n++
	}
	return n == len(eps)
}

// withSnapshots is Table.with for many services in one copy of the
// table, so that a view of all services costs one copy however many of
// its services changed. (It belongs with Table.with in table.go.)
func withSnapshots(t *Table, snaps map[string]registry.Snapshot) *Table {
	if len(snaps) == 1 {
		for svc, snap := range snaps {
			return t.with(svc, snap)
		}
	}
	nt := &Table{pools: maps.Clone(t.pools), routes: slices.Clone(t.routes), standby: t.standby}
	for svc, snap := range snaps {
		prev := t.pools[svc]
		np := newPool(svc, snap, true, prev, t.standby)
		if prev != nil {
			np.m = prev.m
		}
		nt.pools[svc] = np
	}
	for i := range nt.routes {
		nt.routes[i].pool = nt.pools[nt.routes[i].pool.service]
	}
	return nt
}

// apply makes snap service's view, unless it comes from a registry still
// warming up after a restart while the gateway has a view from a ready
// registry: that partial list would drop instances that have not registered
// again yet. A partial view may replace another partial view, which is all
// a gateway started during the warm-up has.
func (g *Gateway) apply(service string, snap registry.Snapshot) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	g.applyLocked(service, snap)
}

// applyWatched is apply for a watch that ctx stops. syncWatches stops a
// watch holding applyMu, when the routes move to another way of
// watching: a snapshot the stopped watch still held is older than what
// the new watch applies, and is dropped.
func (g *Gateway) applyWatched(ctx context.Context, service string, snap registry.Snapshot) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if ctx.Err() == nil {
		g.applyLocked(service, snap)
	}
}

func (g *Gateway) applyLocked(service string, snap registry.Snapshot) {
	prev := g.table.Load()
	old := prev.pools[service]
	if old == nil {
		return // a reload dropped the service meanwhile
	}
	fields := logrus.Fields{"service": service, "index": snap.Index}
	if !snap.Ready && old.applied && old.ready {
		g.log.WithFields(fields).WithField("applied", old.index).
			Info("registry is warming up; keeping the last routing table until it is ready")
		return
	}
	t := prev.with(service, snap)
	g.table.Store(t)
	if !sameStatus(old.eps, snap.Instances, registry.StatusUp) {
		g.routed.Store(time.Now().UnixNano())
	}
	up := t.pools[service].Len()
	fields["up"], fields["ready"] = up, snap.Ready
	if sw := movedBy(old, service, snap.Instances, t.standby); sw > 0 {
		fields["switch"] = sw
	}
	entry := g.log.WithFields(fields)
	if up == 0 {
		entry.Warn("routing table applied; service has no UP instance and answers 503")
	} else {
		entry.Info("routing table applied")
	}
	g.streams.changed(t)
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// reportLoop tells the registry what the gateway has applied, right after
// each change and every ReportInterval. A failed report is tried again on
// the next tick; it never touches routing.
//
// For fastReportFor after a change of the routing table (not of an
// index alone) it reports every
// fastReportInterval: that is when a new color takes its first traffic,
// and the post-switch analysis judges it from these reports, so each one
// it waits for is more of a bad release's answers reaching users.
func (g *Gateway) reportLoop(ctx context.Context) {
	every := g.cfg.ReportInterval
	fast := min(fastReportInterval, every)
	tick := time.NewTimer(every)
	defer tick.Stop()
	failing := false
	for {
		err := g.report(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			g.log.WithError(err).Warn("gateway report failed; routing is unaffected, retrying every interval")
		case err != nil:
			g.log.WithError(err).Debug("gateway report failed again")
		case failing:
			g.log.Info("gateway report delivered again")
		}
		failing = err != nil
		next := every
		if time.Since(time.Unix(0, g.routed.Load())) < fastReportFor {
			next = fast
		}
		tick.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-g.changed:
		case <-tick.C:
		}
	}
}

// The reports after a routing change: every fastReportInterval for
// fastReportFor.
const (
	fastReportInterval = 200 * time.Millisecond
	fastReportFor      = 10 * time.Second
)

func (g *Gateway) report(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	r := registry.GatewayReport{ID: g.cfg.ID, Applied: g.Applied(), Streams: g.streams.counts(), Moved: g.streams.moved.Load(), Traffic: g.traffic(), Colors: g.metrics.colors(), At: time.Now().UTC()}
	if err := g.cfg.Source.ReportGateway(ctx, r); err != nil {
		return fmt.Errorf("report gateway %s: %w", g.cfg.ID, err)
	}
	return nil
}

// traffic is each routed instance's counts, for the report; nil when no
// instance has had a request yet.
func (g *Gateway) traffic() map[string]registry.Traffic {
	var out map[string]registry.Traffic
	for _, p := range g.table.Load().pools {
		for _, e := range p.eps {
			n := e.traffic.requests.Load()
			if n == 0 {
				continue
			}
			if out == nil {
				out = map[string]registry.Traffic{}
			}
			out[e.inst.ID] = registry.Traffic{Requests: n, Errors: e.traffic.errors.Load()}
		}
	}
	return out
}

// debugWriter sends the standard logger output of net/http to logrus at
// debug level: it is about single connections, not the gateway.
type debugWriter struct{ log logrus.FieldLogger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newNonce is a random token for the guard's stand-in requests.
func newNonce() string { return requestIDPrefix + "-" + randomHex(16) }

var _ http.Handler = (*Gateway)(nil)
