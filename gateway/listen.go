package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// tlsHandshakeTimeout bounds a client's TLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

// Run follows the registry and serves on cfg.Listen (and cfg.TLSListen when
// TLS is configured, cfg.PreviewListen when set) until ctx ends, then
// drains.
func (g *Gateway) Run(ctx context.Context) error {
	var l Listeners
	var err error
	if l.Plain, err = net.Listen("tcp", g.cfg.Listen); err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", g.cfg.Listen, err)
	}
	if g.TLSEnabled() {
		if l.TLS, err = net.Listen("tcp", g.cfg.TLSListen); err != nil {
			l.close()
			return fmt.Errorf("gateway: listen on %s: %w", g.cfg.TLSListen, err)
		}
	}
	if g.cfg.PreviewListen != "" {
		if l.Preview, err = net.Listen("tcp", g.cfg.PreviewListen); err != nil {
			l.close()
			return fmt.Errorf("gateway: preview listen on %s: %w", g.cfg.PreviewListen, err)
		}
	}
	return g.ServeListeners(ctx, l)
}

// Listeners are the sockets a gateway serves; a nil one is not served.
type Listeners struct {
	Plain net.Listener // HTTP/1.1 and h2c
	TLS   net.Listener // HTTPS: HTTP/2 and HTTP/1.1 by ALPN
	// Preview serves each service's idle color (preview.go), HTTP/1.1 and
	// h2c; it needs Config.PreviewListen, which makes the routing table
	// keep the idle instances.
	Preview net.Listener
}

func (l Listeners) all() []net.Listener { return []net.Listener{l.Plain, l.TLS, l.Preview} }

func (l Listeners) close() {
	for _, ln := range l.all() {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// RunListener is Run on a plain listener the caller opened. It closes ln.
func (g *Gateway) RunListener(ctx context.Context, ln net.Listener) error {
	return g.Serve(ctx, ln, nil)
}

// TLSEnabled reports whether the gateway has certificates to serve HTTPS.
func (g *Gateway) TLSEnabled() bool { return g.certs != nil || len(g.cfg.ACME.Domains) > 0 }

// Serve is Run on listeners the caller opened: ln for HTTP/1.1 and h2c
// (nil for none), tln for TLS (nil for none). It closes both.
func (g *Gateway) Serve(ctx context.Context, ln, tln net.Listener) error {
	return g.ServeListeners(ctx, Listeners{Plain: ln, TLS: tln})
}

// ServeListeners is Run on listeners the caller opened. It closes them.
func (g *Gateway) ServeListeners(ctx context.Context, l Listeners) error {
	ln, tln, pln := l.Plain, l.TLS, l.Preview
	closeAll := l.close
	if !g.running.CompareAndSwap(false, true) {
		closeAll()
		return errors.New("gateway: already running")
	}
	defer g.running.Store(false)
	if tln != nil && !g.TLSEnabled() {
		closeAll()
		return errors.New("gateway: a TLS listener needs certificates (--tls-cert and --tls-key) or ACME domains")
	}
	if pln != nil && g.cfg.PreviewListen == "" {
		closeAll()
		return errors.New("gateway: a preview listener needs Config.PreviewListen, which makes the routing table keep idle instances")
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		g.stopWatches()
		wg.Wait()
	}()
	g.startWatches(ctx)
	wg.Go(func() { g.reportLoop(ctx) })
	if g.cfg.Admin != "" {
		aln, err := net.Listen("tcp", g.cfg.Admin)
		if err != nil {
			closeAll()
			return fmt.Errorf("gateway: admin listen on %s: %w", g.cfg.Admin, err)
		}
		wg.Go(func() { g.serveAdmin(ctx, aln) })
	}
	if g.certs != nil {
		wg.Go(func() { g.certs.watch(ctx) })
	}

	srv := g.newServer(g)
	servers := []*http.Server{srv}
	serveErr := make(chan error, 3)
	fields := logrus.Fields{"routes": g.cfg.Routes}
	if ln != nil {
		if g.engineOn() {
			q := newConnQueue(ln.Addr())
			go g.acceptEngine(ln, q)
			go func() { serveErr <- srv.Serve(q) }()
		} else {
			gl := guardListener(ln, g.cfg.HeadLimits, g.nonce)
			go func() { serveErr <- srv.Serve(gl) }()
		}
		fields["listen"] = ln.Addr().String()
	}
	if tln != nil {
		am := acmeManager(g.cfg.ACME)
		q := newConnQueue(tln.Addr())
		go g.acceptTLS(tln, tlsConfig(g.certs, am, g.cfg.ACME.Domains), q)
		go func() { serveErr <- srv.Serve(q) }()
		fields["tls_listen"] = tln.Addr().String()
		defer tln.Close()
	}
	if pln != nil {
		// The preview is check traffic: net/http's server serves all of
		// it, behind the same request-head guard, with the same limits.
		psrv := g.newServer(previewHandler{g})
		servers = append(servers, psrv)
		gl := guardListener(pln, g.cfg.HeadLimits, g.nonce)
		go func() { serveErr <- psrv.Serve(gl) }()
		fields["preview_listen"] = pln.Addr().String()
	}
	g.log.WithFields(fields).Info("gateway serving")

	select {
	case err := <-serveErr:
		closeAll()
		for _, s := range servers {
			_ = s.Close()
		}
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.drain(servers, l)
	return nil
}

// newServer is the http.Server behind the live listeners, with g as h
// (HTTP/1.1, h2c with prior knowledge on the plain listener, and HTTP/2 on
// TLS connections that chose it by ALPN), or behind the preview one.
func (g *Gateway) newServer(h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: g.cfg.ClientHeaderTimeout,
		IdleTimeout:       g.cfg.ClientIdleTimeout,
		MaxHeaderBytes:    g.cfg.HeadLimits.withDefaults().Head,
		ErrorLog:          log.New(debugWriter{g.log}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, newConnInfo(c))
		},
	}
}

// drain shuts the gateway down gracefully: no new connections, a GOAWAY to
// every HTTP/2 client, requests in flight finish, and streams are ended at
// once (WebSocket 1001, the end of SSE, UNAVAILABLE for gRPC), all within
// DrainTimeout; what is left then is closed.
func (g *Gateway) drain(servers []*http.Server, l Listeners) {
	g.log.WithFields(logrus.Fields{"streams": g.streams.total(), "timeout": g.cfg.DrainTimeout}).
		Info("gateway shutting down; draining requests in flight and ending streams")
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DrainTimeout)
	defer cancel()
	l.close()
	shut := make(chan error, len(servers))
	for _, srv := range servers {
		go func() {
			err := srv.Shutdown(ctx)
			if err != nil {
				_ = srv.Close()
			}
			shut <- err
		}()
	}
	engineDone := make(chan struct{})
	go func() { g.engine.drain(ctx); close(engineDone) }()
	g.streams.endAll(ctx)
	<-engineDone
	var drainErr error
	for range servers {
		if err := <-shut; err != nil && drainErr == nil {
			drainErr = err
		}
	}
	if drainErr != nil {
		g.log.WithError(drainErr).Warn("gateway drain timed out; closed the remaining connections")
	}
	for _, up := range g.upstreamList() {
		up.closeIdle()
	}
	if err := g.access.Close(); err != nil {
		g.log.WithError(err).Warn("access log did not close cleanly")
	}
}

func (g *Gateway) upstreamList() []*upstream {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	out := make([]*upstream, 0, len(g.upstreams))
	for _, u := range g.upstreams {
		out = append(out, u)
	}
	return out
}

func (g *Gateway) startWatches(ctx context.Context) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	g.watchMu.Lock()
	g.watchCtx = ctx
	g.watchMu.Unlock()
	g.syncWatches()
}

func (g *Gateway) stopWatches() {
	g.watchMu.Lock()
	for svc, stop := range g.watchers {
		stop()
		delete(g.watchers, svc)
	}
	g.watchCtx = nil
	g.watchMu.Unlock()
	g.watchWG.Wait()
}

// acceptTLS accepts connections on ln and hands each, once its handshake is
// done, to q: as the *tls.Conn itself when the client chose HTTP/2, so that
// net/http serves HTTP/2 on it, and behind the request-head guard for
// HTTP/1.1, to the engine when it is on. Handshakes run each in their own goroutine, as net/http's do,
// so that a slow client holds up no one else.
func (g *Gateway) acceptTLS(ln net.Listener, cfg *tls.Config, q *connQueue) {
	defer q.Close()
	g.acceptEach(ln, "TLS", func(c net.Conn) {
		tc := tls.Server(c, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			g.log.WithError(err).WithField("remote", c.RemoteAddr().String()).Debug("TLS handshake failed")
			_ = c.Close()
			return
		}
		var out net.Conn = tc
		if tc.ConnectionState().NegotiatedProtocol != "h2" {
			gc := guardConn(tc, g.cfg.HeadLimits, g.nonce)
			if g.engineOn() {
				g.serveEngine(gc, q)
				return
			}
			out = gc
		}
		if !q.put(out) {
			_ = c.Close()
		}
	})
}

// engineOn reports whether HTTP/1.1 clients are served by the engine.
func (g *Gateway) engineOn() bool { return !g.cfg.NoEngine && !g.cfg.NoFastPath }

// acceptEngine accepts connections on ln and serves each with the engine,
// which hands the ones it does not serve to q.
func (g *Gateway) acceptEngine(ln net.Listener, q *connQueue) {
	defer q.Close()
	g.acceptEach(ln, "HTTP", func(c net.Conn) { g.serveEngine(guardConn(c, g.cfg.HeadLimits, g.nonce), q) })
}

// acceptEach accepts connections on ln until it closes and serves each in
// a goroutine of its own with serve.
func (g *Gateway) acceptEach(ln net.Listener, kind string, serve func(net.Conn)) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.WithError(err).Warn(kind + " accept failed; retrying")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go serve(c)
	}
}

// connQueue is a net.Listener whose connections come from acceptTLS.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) put(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
