package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/http/httpguts"
)

// exchange is what the gateway knows of one request while it proxies it;
// the request's context carries it from ServeHTTP through Rewrite, the
// transports and ModifyResponse to the access log.
type exchange struct {
	ctx       exchangeContext // the proxied request's context
	start     time.Time
	table     *Table // the table route was matched in
	route     *tableRoute
	endpoint  *Endpoint // the endpoint of the current attempt
	retries   int
	err       error // why no endpoint answered
	status    int   // the status to log when it is not the one written (499)
	requestID string
	client    string // the client's address, past trusted proxies
	ci        *connInfo
	peerIP    string // the address the request came from
	trusted   bool   // the peer is a trusted proxy
	// preview: the request came in on the preview listener. check: it is
	// a preview request or a trusted proxy's Switchyard-Color one, counted
	// apart from live traffic. color, when not 0, is the colorLabels index
	// of the color it is sent to instead of the live pool (preview.go).
	// Bytes, beside trusted: they take its padding, not a larger exchange.
	preview, check bool
	color          uint8
	// values backs the header values the gateway sets on every request:
	// one array with the exchange instead of a slice allocated for each.
	values [numValues]string
	// cancel ends the exchange; only a route with a request limit has one.
	// Otherwise nothing ends a request before its client goes away, and
	// the context http.Server gives it is all it needs.
	cancel context.CancelFunc
	// attemptCancel ends the current attempt when it does not take the
	// fast path; see attempt.
	attemptCancel context.CancelFunc
	timer         *time.Timer // the route's request limit; nil without one
	timedOut      atomic.Bool
	bodyErr       atomic.Int32 // 408 or 413 once the client's body failed
	bodyIn        atomic.Int64
	streamEnd     func() // untracks the stream, once the exchange is one
	w             http.ResponseWriter
	upgrade       bool // an HTTP/1.1 request to switch protocols
	lw            logWriter

	mu       sync.Mutex
	hijacked net.Conn
}

type exchangeKey struct{}

// exchangeContext is the proxied request's context: the server's (or, on
// a route with a request limit, a cancelable one below it) with the
// exchange as a value. It lives inside the exchange: what
// context.WithValue would allocate per request comes with the exchange.
type exchangeContext struct {
	context.Context
	ex *exchange
}

func (c *exchangeContext) Value(key any) any {
	if key == (exchangeKey{}) {
		return c.ex
	}
	return c.Context.Value(key)
}

func exchangeOf(ctx context.Context) *exchange {
	if c, ok := ctx.(*exchangeContext); ok {
		return c.ex
	}
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

func (ex *exchange) clientConn() net.Conn {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.hijacked
}

func (ex *exchange) fields(r *http.Request) logrus.Fields {
	f := logrus.Fields{"service": ex.route.Service, "method": r.Method, "path": r.URL.Path, "request_id": ex.requestID}
	if ex.endpoint != nil {
		f["instance"] = ex.endpoint.inst.ID
		f["upstream"] = ex.endpoint.hostPort
	}
	return f
}

// The header values in exchange.values.
const (
	valueRequestID = iota // X-Request-Id of the answer
	valueOutRequestID
	valueForwardedFor
	valueForwardedProto
	valueForwardedHost
	numValues
)

// value sets the header value i to v and returns it as a header's values.
// Its capacity is 1: an Add to that header copies it rather than writing
// into the next value.
func (ex *exchange) value(i int, v string) []string {
	ex.values[i] = v
	return ex.values[i : i+1 : i+1]
}

// connInfo is what the gateway knows of a client connection.
type connInfo struct {
	tls   bool
	guard *guardedConn
	// The peer's address as http.Server gives it to each request, and the
	// IP in it, parsed once per connection rather than per request.
	remoteAddr string
	peer       netip.Addr
	peerIP     string
}

func newConnInfo(c net.Conn) *connInfo {
	ci := &connInfo{remoteAddr: c.RemoteAddr().String()}
	ci.peer = remoteIP(ci.remoteAddr)
	ci.peerIP = ci.peer.String()
	if h, ok := c.(*handedConn); ok {
		c = h.guardedConn
	}
	switch c := c.(type) {
	case *tls.Conn:
		ci.tls = true
	case *guardedConn:
		ci.guard = c
		_, ci.tls = c.Conn.(*tls.Conn)
	}
	return ci
}

// peerOf is the IP r came from, and its text.
func peerOf(r *http.Request, ci *connInfo) (netip.Addr, string) {
	if ci != nil && ci.remoteAddr == r.RemoteAddr {
		return ci.peer, ci.peerIP
	}
	a := remoteIP(r.RemoteAddr)
	return a, a.String()
}

type connKey struct{}

var (
	errBodyTooLarge      = errors.New("gateway: request body over the route's limit")
	errClientBodyTimeout = errors.New("gateway: the client's request body stalled")
	errClientBody        = errors.New("gateway: the client's request body is malformed or cut short")
)

// ServeHTTP proxies r to an UP instance of the service its route names.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.serve(w, r, false) }

// serve proxies r for the live listener, or for the preview one to the
// idle color of the service its route names.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, preview bool) {
	ex := &exchange{start: time.Now(), requestID: requestID(r.Header), preview: preview, check: preview}
	lw := &ex.lw // one allocation for both
	lw.ResponseWriter, lw.ex = w, ex
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	ex.ci = ci
	defer g.finish(lw, r, ex)
	w.Header()["X-Request-Id"] = ex.value(valueRequestID, ex.requestID)

	if rej, ok := g.rejected(r, ci); ok {
		ex.route = &noRoute
		lw.Header().Set("Connection", "close")
		writeError(lw, rej.Code, rej.Reason)
		return
	}
	switch r.Method {
	case http.MethodTrace, http.MethodConnect:
		ex.route = &noRoute
		// After a CONNECT the request-head guard stands aside: what follows
		// on the connection must not be read as requests.
		lw.Header().Set("Connection", "close")
		lw.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		writeError(lw, http.StatusMethodNotAllowed, r.Method+" is not served at the edge")
		return
	}
	if p := cleanPath(r.URL.Path); p != r.URL.Path {
		// Routing, prefix stripping and the instance all see one path:
		// "/api/../admin" must not reach /admin behind /api's back.
		r.URL.Path, r.URL.RawPath = p, ""
	}
	if isControlPath(r.URL.Path) {
		ex.route = &noRoute
		writeError(lw, http.StatusNotFound, "instance control endpoints are not served at the edge")
		return
	}
	ex.table = g.table.Load()
	tr := ex.table.match(r.Host, r.URL.Path, r.Header)
	if tr == nil {
		ex.route = &noRoute
		writeError(lw, http.StatusNotFound, fmt.Sprintf("no route for %s%s", r.Host, r.URL.Path))
		return
	}
	ex.route = tr
	if _, ok := r.Header[colorHeader]; ok || preview {
		if !g.chooseColor(lw, r, ex, ci, preview) {
			return
		}
	}
	if ex.color == 0 && tr.pool.Len() == 0 {
		writeError(lw, http.StatusServiceUnavailable, (&noUpError{service: tr.Service}).Error())
		return
	}
	if tr.MaxBody > 0 && r.ContentLength > tr.MaxBody {
		lw.Header().Set("Connection", "close")
		writeError(lw, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes over the route's limit of %d bytes", r.ContentLength, tr.MaxBody))
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{rc: r.Body, ctl: http.NewResponseController(w), idle: tr.Timeouts.ClientBody, max: tr.MaxBody, ex: ex}
	}
	peer, peerIP := peerOf(r, ci)
	ex.peerIP, ex.trusted = peerIP, g.trusts(peer)
	ex.client = g.clientAddr(r, ex)
	ex.w = lw
	ex.upgrade = headerValue(r.Header, "Upgrade") != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
	ctx := r.Context()
	if d := tr.Timeouts.Request; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		ex.cancel = cancel
		ex.timer = time.AfterFunc(d, func() {
			ex.timedOut.Store(true)
			cancel()
		})
		defer ex.timer.Stop()
	}
	defer ex.endAttempt()
	ex.ctx = exchangeContext{Context: ctx, ex: ex}
	g.proxy.ServeHTTP(lw, r.WithContext(&ex.ctx))
}

// attempt gives req, sent to a transport other than the fast path, a
// context of its own that ends the attempt on demand (a stream's end, an
// instance fallen silent), unless the exchange has a cancel of its own.
// The fast path needs none: its body aborts itself (h1Body.abort).
// Deriving it only here spares the usual request a context, its
// registration with the server's and a channel.
func (ex *exchange) attempt(req *http.Request) *http.Request {
	if ex.cancel != nil {
		return req
	}
	ex.endAttempt()
	ctx, cancel := context.WithCancel(req.Context())
	ex.attemptCancel = cancel
	return req.WithContext(ctx)
}

func (ex *exchange) endAttempt() {
	if ex.attemptCancel != nil {
		ex.attemptCancel()
	}
}

// upstreamAbort is what ends the exchange with the instance that answered
// with body at once: the request's cancel when it has one, else the fast
// path's abort, else the attempt's cancel.
func (ex *exchange) upstreamAbort(body io.ReadCloser) func() {
	if ex.cancel != nil {
		return ex.cancel
	}
	if b, ok := body.(*h1Body); ok {
		return b.abort
	}
	if ex.attemptCancel != nil {
		return ex.attemptCancel
	}
	return func() {}
}

// noRoute stands for the route of a request that matched none.
var noRoute = tableRoute{Route: &Route{}}

// rejected reports whether r is the stand-in the request-head guard put in
// place of a request it refused, and why.
func (g *Gateway) rejected(r *http.Request, ci *connInfo) (rejection, bool) {
	if _, ok := r.Header[rejectHeader]; !ok || ci == nil || ci.guard == nil || r.Header.Get(rejectHeader) != g.nonce {
		return rejection{}, false
	}
	return ci.guard.Rejected()
}

// countAnswer counts a live answer of status, d after its request came:
// on the instance that gave it (nil: none did) and in its route's
// metrics by color. Both of the gateway's request paths end with it.
func countAnswer(ep *Endpoint, p *Pool, status int, d time.Duration) {
	if ep != nil {
		ep.count(status)
	}
	if p != nil && p.m != nil {
		color := ""
		if ep != nil {
			color = ep.inst.Color
		}
		p.m.record(color, status, d.Seconds())
	}
}

// finish counts and logs the exchange once it is over.
func (g *Gateway) finish(lw *logWriter, r *http.Request, ex *exchange) {
	if ex.streamEnd != nil {
		ex.streamEnd()
	}
	status := lw.status
	if ex.status != 0 {
		status = ex.status
	}
	if status == 0 {
		status = http.StatusOK
	}
	d := time.Since(ex.start)
	if ex.check {
		// Check traffic must tell the controller nothing about how a
		// color serves live traffic: it has counters of its own.
		g.metrics.recordPreview(ex.route.pool, int(ex.color), status)
	} else {
		countAnswer(ex.endpoint, ex.route.pool, status, d)
		if ex.route.pool == nil {
			g.metrics.noRoute.Inc()
		}
	}
	if g.access == nil {
		return
	}
	e := AccessEntry{
		Time: ex.start, RequestID: ex.requestID, Remote: ex.client, Method: r.Method, Host: r.Host,
		Path: r.RequestURI, Proto: r.Proto, Status: status, BytesIn: ex.bodyIn.Load(), BytesOut: lw.bytes,
		Duration: d, Service: ex.route.Service, Retries: ex.retries, Preview: ex.check,
		UserAgent: headerValue(r.Header, "User-Agent"), Referer: headerValue(r.Header, "Referer"),
	}
	if e.Remote == "" {
		e.Remote = r.RemoteAddr
	}
	if ex.endpoint != nil {
		e.Upstream, e.UpstreamAddr, e.Color = ex.endpoint.inst.ID, ex.endpoint.hostPort, ex.endpoint.inst.Color
	}
	if ex.err != nil {
		e.Error = ex.err.Error()
	}
	g.access.Log(&e)
}

// rewrite aims the outgoing request at an endpoint of the route's pool and
// sets the forwarding headers.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	out := pr.Out
	g.forwarded(pr, ex)
	out.Header["X-Request-Id"] = ex.value(valueOutRequestID, ex.requestID)
	delete(out.Header, rejectHeader)
	// As nginx: the gateway answers the client's 100-continue itself, when
	// it starts reading the body; the instance's would be a second one.
	delete(out.Header, "Expect")
	if ex.route.StripPrefix && ex.route.Prefix != "/" {
		p := strings.TrimPrefix(out.URL.Path, ex.route.Prefix)
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		out.URL.Path, out.URL.RawPath = p, ""
	}
	out.URL.Scheme = "http"
	out.URL.Host = ""
	out.Host = ""
	if ex.route.PreserveHost {
		out.Host = pr.In.Host
	}
	// The newest table, which a switch may have replaced since the match.
	pool := ex.route.pool
	if t := g.table.Load(); ex.color != 0 {
		pool = ex.poolIn(t)
	} else if t != ex.table {
		pool = t.pools[ex.route.Service]
	}
	if e := pool.pick(nil); e != nil {
		out.URL.Host = e.hostPort
		ex.endpoint = e
	}
	if out.Body != nil {
		out.Body = &attemptBody{rc: out.Body}
	}
}

// forwarded sets X-Forwarded-For, -Proto and -Host. From a trusted proxy
// they are extended (For) or kept (Proto, Host); from anyone else they are
// replaced, so a client cannot make itself look like another address. A
// Forwarded header is passed on only from a trusted proxy.
func (g *Gateway) forwarded(pr *httputil.ProxyRequest, ex *exchange) {
	in, out := pr.In, pr.Out
	xff, proto, host := ex.peerIP, "http", in.Host
	if in.TLS != nil || ex.ci != nil && ex.ci.tls {
		proto = "https"
	}
	if ex.trusted {
		// ReverseProxy drops Forwarded before Rewrite; only a trusted
		// proxy's is passed on.
		if v := in.Header["Forwarded"]; len(v) > 0 {
			out.Header["Forwarded"] = v
		}
		if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + xff
		}
		if v := headerValue(in.Header, "X-Forwarded-Proto"); v != "" {
			proto = v
		}
		if v := headerValue(in.Header, "X-Forwarded-Host"); v != "" {
			host = v
		}
	}
	out.Header["X-Forwarded-For"] = ex.value(valueForwardedFor, xff)
	out.Header["X-Forwarded-Proto"] = ex.value(valueForwardedProto, proto)
	out.Header["X-Forwarded-Host"] = ex.value(valueForwardedHost, host)
}

// clientAddr is the client's address for logs: the peer, or, behind
// trusted proxies, the last address in X-Forwarded-For that is not one of
// them (as nginx's real_ip_recursive).
func (g *Gateway) clientAddr(r *http.Request, ex *exchange) string {
	if !ex.trusted {
		return r.RemoteAddr
	}
	hops := r.Header["X-Forwarded-For"]
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return r.RemoteAddr
			}
			if !g.trusts(a) {
				return a.String()
			}
		}
	}
	return r.RemoteAddr
}

// headerValue is h.Get(key) for a key in canonical form, which Get would
// canonicalize again on every request.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func remoteIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (g *Gateway) trusts(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range g.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// modifyResponse checks the instance's answer and, when it starts a
// stream, tracks it so that a switch can move it.
func (g *Gateway) modifyResponse(resp *http.Response) error {
	// net/http reads a status like 099, which ReverseProxy would panic
	// writing: answer 502 instead.
	if resp.StatusCode < 100 || resp.StatusCode > 999 {
		return fmt.Errorf("upstream answered the invalid status %d", resp.StatusCode)
	}
	ex := exchangeOf(resp.Request.Context())
	// The answer already carries the request's id; an instance that echoes
	// it must not make it appear twice.
	delete(resp.Header, "X-Request-Id")
	if ex.color != 0 {
		delete(resp.Header, previewHeader) // the gateway's word, not the instance's
	}
	if resp.StatusCode != http.StatusSwitchingProtocols && ex.upgrade {
		// The request-head guard stood aside after this upgrade request;
		// since no switch happened, what the client sends next must not be
		// read as more requests.
		ex.w.Header().Set("Connection", "close")
	}
	kind, isStream := streamOf(resp)
	if !isStream || ex.endpoint == nil {
		if _, fast := resp.Body.(*h1Body); !fast && ex.route.Timeouts.Read > 0 {
			resp.Body = newIdleBody(resp.Body, ex.route.Timeouts.Read, ex.upstreamAbort(resp.Body))
		}
		return nil
	}
	if ex.timer != nil {
		ex.timer.Stop() // streams are exempt from the request limit
	}
	s := &stream{kind: kind, instance: ex.endpoint.inst.ID}
	switch kind {
	case streamWebSocket:
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			return nil // ReverseProxy refuses it
		}
		relay := newWSRelay(rwc, ex.route.Timeouts.Read, ex.clientConn)
		resp.Body = relay
		s.endFn = relay.end
	default:
		body, abort := resp.Body, ex.upstreamAbort(resp.Body)
		if _, fast := body.(*h1Body); !fast && ex.route.Timeouts.Read > 0 {
			body = newIdleBody(body, ex.route.Timeouts.Read, abort)
		}
		sb := &streamBody{rc: body, resp: resp, kind: kind, cancel: abort}
		resp.Body = sb
		s.endFn = sb.end
	}
	if !ex.check {
		// Check traffic's streams are not moved by switches, nor counted
		// in the switch record's streams: they are not live traffic.
		ex.streamEnd = g.streams.add(s)
	}
	return nil
}

// idleBody cancels the exchange when the instance falls silent for longer
// than idle within its answer (http.Transport has no such limit of its own).
type idleBody struct {
	rc    io.ReadCloser
	idle  time.Duration
	timer *time.Timer
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleBody {
	return &idleBody{rc: rc, idle: idle, timer: time.AfterFunc(idle, cancel)}
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	return b.rc.Read(p)
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.rc.Close()
}

// clientBody is the client's request body: it counts it, caps it at the
// route's limit (413) and bounds the silence between two reads (408).
type clientBody struct {
	rc   io.ReadCloser
	ctl  *http.ResponseController
	idle time.Duration
	max  int64
	ex   *exchange
}

func (b *clientBody) Read(p []byte) (int, error) {
	n0 := b.ex.bodyIn.Load()
	if b.max > 0 {
		if n0 > b.max {
			return 0, errBodyTooLarge
		}
		if rest := b.max - n0 + 1; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	if b.idle > 0 {
		_ = b.ctl.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.rc.Read(p)
	total := b.ex.bodyIn.Add(int64(n))
	switch {
	case b.max > 0 && total > b.max:
		b.ex.bodyErr.CompareAndSwap(0, http.StatusRequestEntityTooLarge)
		return 0, errBodyTooLarge
	case err != nil && err != io.EOF && isTimeout(err):
		b.ex.bodyErr.CompareAndSwap(0, http.StatusRequestTimeout)
		return n, fmt.Errorf("%w: %w", errClientBodyTimeout, err)
	case err != nil && err != io.EOF:
		// Bad chunked framing, or a client that left mid-body: the
		// client's fault, not the instance's.
		b.ex.bodyErr.CompareAndSwap(0, http.StatusBadRequest)
		return n, fmt.Errorf("%w: %w", errClientBody, err)
	case err == io.EOF && b.idle > 0:
		// net/http's background read, which watches for the client
		// leaving while the handler runs, would take this deadline for
		// the client's.
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *clientBody) Close() error { return b.rc.Close() }

// logWriter records the status and size of the answer, and the client
// connection when a protocol switch takes it over.
type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	ex     *exchange
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.status = http.StatusSwitchingProtocols
		w.ex.mu.Lock()
		w.ex.hijacked = c
		w.ex.mu.Unlock()
	}
	return c, brw, err
}

// cleanPath normalizes p as nginx does before matching locations:
// "." and ".." segments resolved, "//" merged, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && p[0] == '/' {
		return p // nothing to clean: the usual case, without allocating
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requestIDPrefix makes this process's request ids unique among gateways.
var (
	requestIDPrefix = randomHex(8)
	requestIDSeq    atomic.Uint64
)

// requestID is the request's X-Request-Id when it carries a sane one, or
// a new one.
func requestID(h http.Header) string {
	if v := h["X-Request-Id"]; len(v) == 1 && len(v[0]) > 0 && len(v[0]) <= 128 && printableToken(v[0]) {
		return v[0]
	}
	return string(appendRequestID(make([]byte, 0, 32), requestIDSeq.Add(1)))
}

// appendRequestID appends the request id of sequence number seq.
func appendRequestID(b []byte, seq uint64) []byte {
	b = append(b, requestIDPrefix...)
	return strconv.AppendUint(append(b, '-'), seq, 16)
}

func printableToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
