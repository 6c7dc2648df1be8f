// Package gateway is switchyard's edge reverse proxy. It routes each request
// by path prefix to the UP instances of a service, follows the registry
// with one blocking-query watch per service, and reports the registry index
// it has applied, so the controller knows when a switch is visible.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
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
	ID             string // gateway id for reports; default hostname@listen
	Listen         string // host:port; default 127.0.0.1:8088
	Routes         []Route
	Source         Source
	ReportInterval time.Duration // heartbeat of the report, well below the registry lease; default 1s
	// Admin, when set, is where /metrics, /healthz and /v1/routes are
	// served, apart from the traffic.
	Admin string
	Log   logrus.FieldLogger
	// Upstream timeouts, with nginx's defaults: ConnectTimeout (5s) bounds
	// opening a connection to an instance, ResponseHeaderTimeout (60s) the
	// wait for its answer's head, after which the client gets 504, and
	// UpstreamIdleTimeout (60s) how long an idle kept-alive connection to
	// an instance is kept. A streaming answer is not bounded once its head
	// arrived.
	ConnectTimeout, ResponseHeaderTimeout, UpstreamIdleTimeout time.Duration
}

const (
	defaultListen   = "127.0.0.1:8088"
	reportTimeout   = 5 * time.Second
	shutdownTimeout = 10 * time.Second
)

// Gateway is the edge proxy. It is an http.Handler; Run makes it follow the
// registry and serve.
type Gateway struct {
	cfg      Config
	log      logrus.FieldLogger
	services []string
	proxy    *httputil.ReverseProxy

	table   atomic.Pointer[Table] // never nil
	applyMu sync.Mutex            // serializes rebuilds, never taken per request
	changed chan struct{}         // buffered(1): a pending report after a change
	running atomic.Bool
	metrics *metrics
}

// New checks cfg and builds a gateway whose table has no endpoints yet.
func New(cfg Config) (*Gateway, error) {
	if cfg.Source == nil {
		return nil, errors.New("gateway: a registry source is required")
	}
	if len(cfg.Routes) == 0 {
		return nil, fmt.Errorf("%w: at least one route is required", ErrInvalidRoute)
	}
	routes := make([]Route, 0, len(cfg.Routes))
	seen := map[string]string{}
	var services []string
	for _, r := range cfg.Routes {
		nr, err := r.normalize()
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrInvalidRoute, r, err)
		}
		if svc, dup := seen[nr.Prefix]; dup {
			return nil, fmt.Errorf("%w: prefix %q routes to both %q and %q", ErrInvalidRoute, nr.Prefix, svc, nr.Service)
		}
		seen[nr.Prefix] = nr.Service
		if !slices.Contains(services, nr.Service) {
			services = append(services, nr.Service)
		}
		routes = append(routes, nr)
	}
	cfg.Routes = routes
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
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
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 60 * time.Second
	}
	if cfg.UpstreamIdleTimeout <= 0 {
		cfg.UpstreamIdleTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Log.WithField("gateway", cfg.ID),
		services: services,
		changed:  make(chan struct{}, 1),
	}
	g.table.Store(NewTable(routes, nil))
	g.metrics = newMetrics(g)
	g.proxy = &httputil.ReverseProxy{
		Rewrite: g.rewrite,
		Transport: &retryTransport{
			base:   newH1Transport(newTransport(cfg)),
			lookup: func(path string) (*Pool, bool) { return g.table.Load().Lookup(path) },
			retried: func(service string) {
				if sm := g.metrics.svc[service]; sm != nil {
					sm.retries.Inc()
				}
			},
		},
		ModifyResponse: func(resp *http.Response) error {
			// net/http reads a status like 099, which ReverseProxy would
			// panic writing: answer 502 instead.
			if resp.StatusCode < 100 || resp.StatusCode > 999 {
				return fmt.Errorf("upstream answered the invalid status %d", resp.StatusCode)
			}
			if pool, ok := g.table.Load().Lookup(resp.Request.URL.Path); ok {
				g.metrics.count(pool.service, resp.StatusCode)
			}
			return nil
		},
		BufferPool:   newBufferPool(),
		ErrorHandler: g.proxyError,
		ErrorLog:     log.New(debugWriter{g.log}, "", 0),
	}
	return g, nil
}

// ServeHTTP proxies r to an UP instance of its route's service.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isControlPath(r.URL.Path) {
		writeError(w, http.StatusNotFound, "instance control endpoints are not served at the edge")
		return
	}
	pool, ok := g.table.Load().Lookup(r.URL.Path)
	if !ok {
		g.metrics.noRoute.Inc()
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for path %q", r.URL.Path))
		return
	}
	if pool.Len() == 0 {
		g.metrics.count(pool.service, http.StatusServiceUnavailable)
		writeError(w, http.StatusServiceUnavailable, (&noUpError{service: pool.service}).Error())
		return
	}
	start := time.Now()
	g.proxy.ServeHTTP(w, r)
	if sm := g.metrics.svc[pool.service]; sm != nil {
		sm.duration.Observe(time.Since(start).Seconds())
	}
}

// rewrite aims the outgoing request at the next endpoint. The path is kept
// as it came; the Host header becomes the endpoint's, as with SetURL.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	pr.SetXForwarded()
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = ""
	out.Host = ""
	if pool, ok := g.table.Load().Lookup(pr.In.URL.Path); ok {
		if e := pool.pick(nil); e != nil {
			out.URL.Host = e.hostPort
		}
	}
	if out.Body != nil {
		out.Body = &attemptBody{rc: out.Body}
	}
}

// Applied maps each routed service to the registry index its current
// routing table was built from.
func (g *Gateway) Applied() map[string]uint64 { return g.table.Load().Applied() }

// Run follows the registry and serves on cfg.Listen until ctx ends, then
// shuts down gracefully.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", g.cfg.Listen, err)
	}
	return g.RunListener(ctx, ln)
}

// RunListener is Run on a listener the caller opened. It closes ln.
func (g *Gateway) RunListener(ctx context.Context, ln net.Listener) error {
	if !g.running.CompareAndSwap(false, true) {
		_ = ln.Close()
		return errors.New("gateway: already running")
	}
	defer g.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, svc := range g.services {
		wg.Go(func() { g.watch(ctx, svc) })
	}
	wg.Go(func() { g.reportLoop(ctx) })
	if g.cfg.Admin != "" {
		aln, err := net.Listen("tcp", g.cfg.Admin)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("gateway: admin listen on %s: %w", g.cfg.Admin, err)
		}
		wg.Go(func() { g.serveAdmin(ctx, aln) })
	}

	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(debugWriter{g.log}, "", 0),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	g.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "routes": g.cfg.Routes}).Info("gateway serving")

	select {
	case err := <-serveErr:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("gateway shutting down; draining requests in flight")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		g.log.WithError(err).Warn("gateway drain timed out; closed the remaining connections")
	}
	<-serveErr
	return nil
}

// watch applies service's snapshots until ctx ends.
func (g *Gateway) watch(ctx context.Context, service string) {
	for snap := range registry.Watch(ctx, g.cfg.Source, service, registry.WatchOptions{Log: g.log}) {
		g.apply(service, snap)
	}
}

// apply makes snap service's view, unless it comes from a registry still
// warming up after a restart while the gateway has a view from a ready
// registry: that partial list would drop instances that have not registered
// again yet. A partial view may replace another partial view, which is all
// a gateway started during the warm-up has.
func (g *Gateway) apply(service string, snap registry.Snapshot) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	prev := g.table.Load()
	fields := logrus.Fields{"service": service, "index": snap.Index}
	if old := prev.pools[service]; !snap.Ready && old != nil && old.applied && old.ready {
		g.log.WithFields(fields).WithField("applied", old.index).
			Info("registry is warming up; keeping the last routing table until it is ready")
		return
	}
	t := prev.with(service, snap)
	g.table.Store(t)
	up := t.pools[service].Len()
	entry := g.log.WithFields(fields).WithFields(logrus.Fields{"up": up, "ready": snap.Ready})
	if up == 0 {
		entry.Warn("routing table applied; service has no UP instance and answers 503")
	} else {
		entry.Info("routing table applied")
	}
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// reportLoop tells the registry what the gateway has applied, right after
// each change and every ReportInterval. A failed report is tried again on
// the next tick; it never touches routing.
func (g *Gateway) reportLoop(ctx context.Context) {
	tick := time.NewTicker(g.cfg.ReportInterval)
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
		select {
		case <-ctx.Done():
			return
		case <-g.changed:
		case <-tick.C:
		}
	}
}

func (g *Gateway) report(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	if err := g.cfg.Source.ReportGateway(ctx, registry.GatewayReport{ID: g.cfg.ID, Applied: g.Applied()}); err != nil {
		return fmt.Errorf("report gateway %s: %w", g.cfg.ID, err)
	}
	return nil
}

// debugWriter sends the standard logger output of net/http to logrus at
// debug level: it is about single connections, not the gateway.
type debugWriter struct{ log logrus.FieldLogger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
