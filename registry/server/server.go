// Package server is the built-in registry: an HTTP API over an in-memory
// store with leases, blocking queries on an index, and gateway reports.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// MaxWait caps how long one blocking query may hold a connection.
const MaxWait = 5 * time.Minute

// Config configures the built-in registry server.
type Config struct {
	Listen string // host:port
	// Token is the shared secret every instance write must carry. Reads
	// and gateway reports take it or the read token derived from it
	// (registry.ReadToken), which is all a gateway needs.
	Token    string
	LeaseTTL time.Duration // an instance silent this long is evicted
	Warmup   time.Duration // after a start, how long views are not Ready
	// MaxWaiters caps the blocking queries held at once (default 4096),
	// MaxWaitersPerClient those of one client address (default 512).
	// A blocking query beyond a cap is answered 429 at once.
	MaxWaiters, MaxWaitersPerClient int
	// MaxStreams caps the heartbeat streams open at once (default 16384),
	// MaxStreamsPerClient those of one instance token, or of one client
	// address with the shared token (default 512). An upgrade beyond a cap
	// is answered 429 and the client heartbeats with PUT.
	MaxStreams, MaxStreamsPerClient int
	Log                             logrus.FieldLogger
}

// Server is the built-in registry over HTTP.
type Server struct {
	cfg       Config
	creds     *credentials
	store     *Store
	echo      *echo.Echo
	evictions prometheus.Counter
	waiters   *waiters
	streams   *streams
}

// New builds a server around a fresh Store.
func New(cfg Config) (*Server, error) {
	if len(registry.Keys(cfg.Token)) == 0 {
		return nil, errors.New("registry: a token is required (SWITCHYARD_TOKEN or --token)")
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = 4096
	}
	if cfg.MaxWaitersPerClient <= 0 {
		cfg.MaxWaitersPerClient = 512
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 16384
	}
	if cfg.MaxStreamsPerClient <= 0 {
		cfg.MaxStreamsPerClient = 512
	}
	s := &Server{cfg: cfg, creds: newCredentials(cfg.Token), store: NewStore(cfg.LeaseTTL, cfg.Warmup, nil),
		waiters: newWaiters(cfg.MaxWaiters, cfg.MaxWaitersPerClient), streams: newStreams(cfg.MaxStreams, cfg.MaxStreamsPerClient)}
	metrics, evictions := newServerMetrics(s.store, s.waiters)
	metrics.MustRegister(s.streams.gauge())
	s.evictions = evictions
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = jsonError
	// 64 KiB is far more than an instance sends; a gateway's report names
	// every service it routes (about 30 bytes each) and gets 2 MiB, enough
	// for some 60,000 services.
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: "64K",
		Skipper: func(c echo.Context) bool {
			return c.Request().Method == http.MethodPut && strings.HasPrefix(c.Path(), "/v1/gateways/")
		}}))
	v1 := e.Group("/v1")
	// An instance's routes take the shared token or that instance's own.
	own := v1.Group("", s.authInstance)
	own.PUT("/instances/:id", s.register)
	own.PUT("/instances/:id/heartbeat", s.heartbeat)
	own.PUT("/instances/:id/status", s.setStatus)
	own.DELETE("/instances/:id", s.deregister)
	// Several instances' heartbeats at once; it checks each id itself.
	v1.PUT("/heartbeats", s.heartbeats)
	// One long-lived stream per client process renews its leases; it
	// checks the token itself, once.
	v1.GET(strings.TrimPrefix(registry.HeartbeatStreamPath, "/v1"), s.heartbeatStream)
	// Gateways report with the read token; instances may read too.
	v1.PUT("/gateways/:id", s.reportGateway, middleware.BodyLimit("2M"), s.auth(sharedToken, readToken))
	read := v1.Group("", s.auth(sharedToken, readToken, instanceToken))
	read.GET("/instances", s.list)
	read.GET("/gateways", s.listGateways)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	s.echo = e
	return s, nil
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Store exposes the state, for tests and benchmarks.
func (s *Server) Store() *Store { return s.store }

// Serve listens on cfg.Listen until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("registry: listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	go s.expireLoop(ctx)
	s.closeStreamsWith(ctx)
	// Blocking queries end with ctx, so a shutdown never waits out their wait.
	srv := &http.Server{Handler: s.echo, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()
	s.cfg.Log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "lease_ttl": s.cfg.LeaseTTL, "warmup": s.cfg.Warmup}).Info("registry serving")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("registry: serve: %w", err)
	}
	<-stopped
	return nil
}

func (s *Server) expireLoop(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.LeaseTTL/10, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, inst := range s.store.Expire() {
				s.evictions.Inc()
				s.cfg.Log.WithFields(logrus.Fields{"instance": inst.ID, "service": inst.Service, "color": inst.Color}).
					Warn("lease expired without a heartbeat; instance evicted")
			}
		}
	}
}

// authInstance lets through requests for instance :id that carry the
// shared token or that instance's token.
func (s *Server) authInstance(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if s.creds.isShared(r) {
			return next(c)
		}
		if id, ok := s.creds.instance(r); ok && id == c.Param("id") {
			return next(c)
		}
		return echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong token for instance "+strconv.Quote(c.Param("id")))
	}
}

// The kinds of token auth may let through.
type tokenKind int

const (
	sharedToken   tokenKind = iota // a key of Config.Token
	readToken                      // a read token derived from one
	instanceToken                  // any valid instance token
)

// auth lets through requests that carry a token of one of kinds.
func (s *Server) auth(kinds ...tokenKind) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			for _, k := range kinds {
				var ok bool
				switch k {
				case sharedToken:
					ok = s.creds.isShared(r)
				case readToken:
					ok = s.creds.isRead(r)
				case instanceToken:
					_, ok = s.creds.instance(r)
				}
				if ok {
					return next(c)
				}
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong token")
		}
	}
}

func (s *Server) register(c echo.Context) error {
	var inst registry.Instance
	if err := decode(c, &inst); err != nil {
		return err
	}
	if inst.ID == "" {
		inst.ID = c.Param("id")
	}
	if inst.ID != c.Param("id") {
		return echo.NewHTTPError(http.StatusBadRequest, "instance id in the body differs from the path")
	}
	sw, err := switchOf(c)
	if err != nil {
		return err
	}
	if inst.Switch == 0 {
		inst.Switch = sw
	}
	idx, err := s.store.Register(inst)
	if err != nil {
		return err
	}
	s.cfg.Log.WithFields(logrus.Fields{"instance": inst.ID, "service": inst.Service, "color": inst.Color, "status": inst.Status}).Info("instance registered")
	return c.JSON(http.StatusOK, map[string]uint64{"index": idx})
}

func (s *Server) heartbeat(c echo.Context) error {
	if err := s.store.Heartbeat(c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// heartbeatCaller authenticates a renewal: the shared token may renew
// any lease (shared), an instance token only own's.
func (s *Server) heartbeatCaller(r *http.Request) (own string, shared bool, err error) {
	if s.creds.isShared(r) {
		return "", true, nil
	}
	own, ok := s.creds.instance(r)
	if !ok {
		return "", false, echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong token")
	}
	return own, false, nil
}

// heartbeats renews a batch of leases: any with the shared token, only
// its own with an instance token. A refused batch renews none.
func (s *Server) heartbeats(c echo.Context) error {
	own, shared, err := s.heartbeatCaller(c.Request())
	if err != nil {
		return err
	}
	var batch registry.HeartbeatBatch
	if err := decode(c, &batch); err != nil {
		return err
	}
	if len(batch.IDs) > registry.MaxHeartbeatBatch {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("at most %d ids per batch", registry.MaxHeartbeatBatch))
	}
	if !shared {
		for _, id := range batch.IDs {
			if id != own {
				return echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong token for instance "+strconv.Quote(id))
			}
		}
	}
	res := registry.HeartbeatResult{Missing: s.store.Heartbeats(batch.IDs)}
	if res.Missing == nil {
		res.Missing = []string{}
	}
	return c.JSON(http.StatusOK, res)
}

func (s *Server) setStatus(c echo.Context) error {
	var body registry.StatusChange
	if err := decode(c, &body); err != nil {
		return err
	}
	sw, err := switchOf(c)
	if err != nil {
		return err
	}
	idx, err := s.store.SetStatus(c.Param("id"), body.Status, sw)
	if err != nil {
		return err
	}
	fields := logrus.Fields{"instance": c.Param("id"), "status": body.Status, "index": idx}
	if sw > 0 {
		fields["switch"] = sw
	}
	s.cfg.Log.WithFields(fields).Info("status changed")
	return c.JSON(http.StatusOK, map[string]uint64{"index": idx})
}

func (s *Server) deregister(c echo.Context) error {
	idx, err := s.store.Deregister(c.Param("id"))
	if err != nil {
		return err
	}
	s.cfg.Log.WithField("instance", c.Param("id")).Info("instance deregistered")
	return c.JSON(http.StatusOK, map[string]uint64{"index": idx})
}

func (s *Server) reportGateway(c echo.Context) error {
	var r registry.GatewayReport
	if err := decode(c, &r); err != nil {
		return err
	}
	r.ID = c.Param("id")
	if err := s.store.ReportGateway(r); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listGateways(c echo.Context) error {
	index, wait, err := blocking(c)
	if err != nil {
		return err
	}
	release, err := s.hold(c, index, wait)
	if err != nil {
		return err
	}
	defer release()
	gws, idx := s.store.Gateways(c.Request().Context(), index, wait)
	c.Response().Header().Set(IndexHeader, strconv.FormatUint(idx, 10))
	return c.JSON(http.StatusOK, gws)
}

func (s *Server) list(c echo.Context) error {
	index, wait, err := blocking(c)
	if err != nil {
		return err
	}
	service := c.QueryParam("service")
	if service != "" {
		if err := registry.CheckName("service", service); err != nil {
			return err
		}
	}
	var since uint64
	if v := c.QueryParam("since"); v != "" {
		if service != "" {
			return echo.NewHTTPError(http.StatusBadRequest, "since lists the changes to all services; it takes no service")
		}
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "since must be an unsigned integer")
		}
	}
	release, err := s.hold(c, index, wait)
	if err != nil {
		return err
	}
	defer release()
	var idx uint64
	var body []byte
	if since > 0 {
		idx, body, err = s.store.EncodedSince(c.Request().Context(), c.QueryParam("epoch"), since, index, wait)
	} else {
		idx, body, err = s.store.Encoded(c.Request().Context(), service, index, wait)
	}
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(IndexHeader, strconv.FormatUint(idx, 10))
	h.Set(EpochHeader, s.store.Epoch())
	return c.JSONBlob(http.StatusOK, body)
}

// blocking reads a blocking query's index and wait, as Consul's: a
// request with an index waits up to wait (default 30s, at most MaxWait)
// for a change past it.
func blocking(c echo.Context) (index uint64, wait time.Duration, err error) {
	q := c.QueryParams()
	if v := q.Get("index"); v != "" {
		if index, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, "index must be an unsigned integer")
		}
	}
	wait = 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, "wait must be a duration such as 30s")
		}
		wait = min(d, MaxWait)
	}
	return index, wait, nil
}

// hold takes a place among the blocking queries for a request that
// blocks, or answers 429 when its client or the registry holds the most
// allowed.
func (s *Server) hold(c echo.Context, index uint64, wait time.Duration) (release func(), err error) {
	if index == 0 || wait <= 0 {
		return func() {}, nil
	}
	// The peer's own address: forwarded headers are the client's to choose.
	client, _, _ := net.SplitHostPort(c.Request().RemoteAddr)
	release, err = s.waiters.acquire(client)
	if err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return nil, echo.NewHTTPError(http.StatusTooManyRequests, err.Error())
	}
	return release, nil
}

// IndexHeader carries a list's index, as X-Consul-Index does.
const IndexHeader = registry.IndexHeader

// EpochHeader names the registry that answered a list; see
// registry.EpochHeader.
const EpochHeader = registry.EpochHeader

// decode reads exactly one JSON value with known fields: trailing data
// after it is refused, not ignored. A body over the limit is answered 413
// whether it announced its length or was sent in chunks.
func decode(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
			return err
		}
		return echo.NewHTTPError(http.StatusBadRequest, "malformed JSON body: "+err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
			return err
		}
		return echo.NewHTTPError(http.StatusBadRequest, "malformed JSON body: trailing data after the JSON value")
	}
	return nil
}

// switchOf reads the switch a call is made for from SwitchHeader: 0
// without one, a 400 for anything but a positive id.
func switchOf(c echo.Context) (int64, error) {
	h := c.Request().Header.Get(registry.SwitchHeader)
	if h == "" {
		return 0, nil
	}
	sw, err := strconv.ParseInt(h, 10, 64)
	if err != nil || sw <= 0 {
		return 0, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("%s must be a positive switch id, not %q", registry.SwitchHeader, h))
	}
	return sw, nil
}

// jsonError answers every error as {"error": "..."} with a fitting code.
func jsonError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, err.Error()
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		code, msg = he.Code, fmt.Sprint(he.Message)
	case errors.Is(err, registry.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, registry.ErrInvalid):
		code = http.StatusBadRequest
	}
	_ = c.JSON(code, map[string]string{"error": msg})
}
