// The HTTP/1.1 engine.
//
// Profiles of the gateway under wrk put most of its cost per request, and
// its latency tail, in net/http's server rather than in the proxying:
// besides the syscalls, every request costs a goroutine of its own (the
// background read that watches for the client leaving), about six goroutine
// wake-ups, a header map, ReverseProxy's clone of the request and its
// response copy. With 32 connections on two shared cores the extra wake-ups
// queue up behind each other: the scheduler latency, not the garbage
// collector, makes the gateway's p99 (see BENCHMARKS.md, "where the tail
// comes from").
//
// The engine serves the requests that make up nearly all of an edge
// router's traffic, GET and HEAD without a body to a routed service with UP
// instances, in the connection's own goroutine: it reads the head the
// request-head guard already checked, writes the upstream request straight
// from it over the fast path's pooled connection (h1Transport), and writes
// the answer back, with one goroutine per connection and nothing allocated
// per request but the access log's strings.
//
// Everything else goes to net/http as before, and it is decided before the
// engine takes a request: the head is only peeked at, so a request the
// engine does not take is still whole in its buffer, and the connection is
// handed over, with what the engine buffered, to the one http.Server that
// serves HTTP/2, the TLS listener and every other request. Handed over, a
// connection stays with net/http. So the engine never answers an error of
// the guard, a bad request, a missing route, a body, an upgrade, Expect,
// hop-by-hop headers other than Connection: close/keep-alive, an escaped
// path, or a route with a request limit or status retries: those keep
// exactly the behaviour the conformance suite checks on the net/http path.

package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// engineBufSize bounds the heads the engine takes: a head that does not fit
// goes to net/http. It is nginx's client_header_buffer_size.
const engineBufSize = 4 << 10

// engineConns tracks the connections the engine serves, for the drain.
type engineConns struct {
	served    atomic.Uint64 // requests the engine answered
	handedOff atomic.Uint64 // connections handed to net/http
	mu        sync.Mutex
	conns     map[*engineConn]struct{}
	draining  bool
	wg        sync.WaitGroup
}

func (e *engineConns) add(c *engineConn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return false
	}
	if e.conns == nil {
		e.conns = map[*engineConn]struct{}{}
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	return true
}

func (e *engineConns) remove(c *engineConn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.wg.Done()
}

// drain wakes every connection waiting for a request, so that it closes,
// lets the others finish the request in hand (answered with Connection:
// close), and closes what is left when ctx ends.
func (e *engineConns) drain(ctx context.Context) {
	e.mu.Lock()
	e.draining = true
	for c := range e.conns {
		if c.idle.Load() {
			_ = c.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.mu.Lock()
		for c := range e.conns {
			_ = c.c.Close()
		}
		e.mu.Unlock()
		<-done
	}
}

func (e *engineConns) isDraining() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.draining
}

// engineConn is one client connection the engine serves.
type engineConn struct {
	g       *Gateway
	c       *guardedConn
	ci      *connInfo
	trusted bool // the peer is a trusted proxy
	handoff *connQueue
	br      *bufio.Reader
	bw      *bufio.Writer
	idle    atomic.Bool // waiting for a request; the drain may wake it
	first   bool        // no request was read yet
	req     engineRequest

	// The table the last request was matched in, and whether it has
	// routes that match on headers (the engine leaves those to net/http).
	table        *Table
	headerRoutes bool

	raw rawResponse // the answer in hand, when it is passed on raw

	// The exchange in hand: a connection has one at a time, nothing
	// keeps it past its answer (the access log formats its line in Log),
	// and it is cleared once answered.
	ex engineExchange
	// The Host of the last request as a string: a connection's requests
	// name the same host, and it needs no allocation per request then.
	host string
	ids  idBlock // the request ids this connection generates
}

// engineRequest is the head of the request in hand, as slices of the
// connection's read buffer: valid until the head is discarded.
type engineRequest struct {
	head    []byte
	method  string // "GET" or "HEAD"
	target  []byte // as received
	path    []byte // target up to '?'
	query   []byte // after '?', without it; nil for none
	http10  bool
	close   bool // the connection ends after the answer
	host    []byte
	fields  []engineField // forwarded as they are
	xff     [][]byte      // X-Forwarded-For values
	xfProto []byte
	xfHost  []byte
	fwd     [][]byte // Forwarded values
	reqID   [][]byte
	ua, ref []byte
}

type engineField struct{ name, value []byte }

// serveEngine serves c, the guarded plaintext side of an HTTP/1.x client
// connection, until it closes or is handed over to net/http through q.
func (g *Gateway) serveEngine(c *guardedConn, q *connQueue) {
	ec := &engineConn{g: g, c: c, ci: newConnInfo(c), handoff: q, first: true}
	ec.trusted = g.trusts(ec.ci.peer)
	if !g.engine.add(ec) {
		_ = c.Close()
		return
	}
	defer g.engine.remove(ec)
	ec.br = bufio.NewReaderSize(c, engineBufSize)
	ec.bw = bufio.NewWriterSize(c, engineBufSize)
	ec.raw.got1xx = ec.write1xx
	if ec.serve() {
		ec.handOff()
		return
	}
	_ = c.Close()
}

// serve answers requests until one goes to net/http (true) or the
// connection ends (false).
func (ec *engineConn) serve() (handOff bool) {
	g := ec.g
	for {
		head, ok := ec.readHead()
		if !ok {
			return false
		}
		if head == nil || !ec.parse(head) {
			return true
		}
		if done, handOff := ec.proxy(); done || handOff {
			return handOff
		}
		if ec.req.close || g.engine.isDraining() {
			return false
		}
	}
}

// readHead waits for the next request and returns its head, still in the
// read buffer; nil with ok when the head is not the engine's to take.
func (ec *engineConn) readHead() (head []byte, ok bool) {
	g := ec.g
	// As net/http: the idle timeout until a next request starts, then the
	// header timeout for its head. The guard holds a head back until it is
	// whole, and answers 408 itself when the header timeout passes first.
	if ec.first {
		ec.first = false
		if d := g.cfg.ClientHeaderTimeout; d > 0 {
			_ = ec.c.SetReadDeadline(time.Now().Add(d))
		}
	} else {
		ec.idle.Store(true)
		if g.engine.isDraining() {
			return nil, false
		}
		if d := g.cfg.ClientIdleTimeout; d > 0 {
			_ = ec.c.SetReadDeadline(time.Now().Add(d))
		} else {
			_ = ec.c.SetReadDeadline(time.Time{})
		}
		if _, err := ec.br.Peek(1); err != nil {
			ec.idle.Store(false)
			return nil, false
		}
		ec.idle.Store(false)
		if g.engine.isDraining() {
			// The drain woke this connection, or a request came just then:
			// net/http answers it, and closes.
			return nil, true
		}
		// The guard releases a head whole, so it is usually all here: one
		// search finds its end, and the header timeout is set only for
		// the rest of one that is not.
		buf := ec.peeked()
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return buf[:i+4], true
		}
		if d := g.cfg.ClientHeaderTimeout; d > 0 {
			_ = ec.c.SetReadDeadline(time.Now().Add(d))
		}
	}
	for {
		buf := ec.peeked()
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return buf[:i+4], true
		}
		if bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n")) {
			return nil, true // a head ended by a bare LF: net/http's to judge
		}
		if len(buf) == ec.br.Size() {
			return nil, true // larger than the engine takes
		}
		if _, err := ec.br.Peek(len(buf) + 1); err != nil {
			// A closed or silent client ends here; one that sent part of a
			// request goes to net/http with it, which answers as usual.
			return nil, len(ec.peeked()) > 0
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

func (ec *engineConn) peeked() []byte {
	b, _ := ec.br.Peek(ec.br.Buffered())
	return b
}

// handOff gives the connection, with what the engine buffered, to the
// http.Server behind the handoff queue.
func (ec *engineConn) handOff() {
	ec.g.engine.handedOff.Add(1)
	pre := ec.peeked()
	hc := &handedConn{guardedConn: ec.c}
	if len(pre) > 0 {
		hc.pre = bytes.Clone(pre)
	}
	_ = ec.c.SetReadDeadline(time.Time{})
	if !ec.handoff.put(hc) {
		_ = ec.c.Close()
	}
}

// handedConn is a connection the engine handed to net/http: the bytes the
// engine had read come first.
type handedConn struct {
	*guardedConn
	pre []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.guardedConn.Read(p)
}

// parse reads head into ec.req and reports whether the engine takes it.
func (ec *engineConn) parse(head []byte) bool {
	r := &ec.req
	*r = engineRequest{head: head, fields: r.fields[:0], xff: r.xff[:0], fwd: r.fwd[:0], reqID: r.reqID[:0]}
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		r.method, line = http.MethodGet, line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		r.method, line = http.MethodHead, line[5:]
	default:
		return false
	}
	target, proto, ok := bytes.Cut(line, []byte(" "))
	switch {
	case !ok:
		return false
	case string(proto) == "HTTP/1.1":
	case string(proto) == "HTTP/1.0":
		r.http10, r.close = true, true
	default:
		return false
	}
	if len(target) == 0 || target[0] != '/' || !allIn(&targetByte, target) {
		return false
	}
	r.target = target
	r.path = target
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		r.path, r.query = target[:i], target[i+1:]
		if len(r.query) == 0 {
			return false // "/x?" is kept apart from "/x" by net/http's URL
		}
	}
	hosts := 0
	for len(rest) > 2 {
		var l []byte
		l, rest, ok = bytes.Cut(rest, []byte("\r\n"))
		if !ok {
			return false
		}
		name, value, ok := splitField(l)
		if !ok {
			return false
		}
		switch fieldKindOf(requestFields, name) {
		case fieldHost:
			hosts++
			r.host = value
		case fieldConnection:
			if !r.connection(value) {
				return false
			}
		case fieldXFF:
			r.xff = append(r.xff, value)
		case fieldXFProto:
			if r.xfProto == nil {
				r.xfProto = value
			}
		case fieldXFHost:
			if r.xfHost == nil {
				r.xfHost = value
			}
		case fieldForwarded:
			r.fwd = append(r.fwd, value)
		case fieldRequestID:
			r.reqID = append(r.reqID, value)
		case fieldRefused:
			return false
		case fieldUserAgent:
			r.ua = value
			if len(value) == 0 {
				continue // net/http's path sends no empty User-Agent either
			}
			r.fields = append(r.fields, engineField{name, value})
		case fieldReferer:
			r.ref = value
			r.fields = append(r.fields, engineField{name, value})
		default:
			r.fields = append(r.fields, engineField{name, value})
		}
	}
	return hosts == 1 && allIn(&hostByte, r.host)
}

// connection reads a Connection field: close and keep-alive only; a field
// that names another header makes it hop-by-hop, which net/http handles.
func (r *engineRequest) connection(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		tok = bytes.Trim(tok, " \t")
		switch {
		case len(tok) == 0:
		case equalFold(tok, "close"):
			r.close = true
		case equalFold(tok, "keep-alive"):
			// An HTTP/1.0 client asking for keep-alive is still answered
			// and closed: the engine keeps only HTTP/1.1 connections.
		default:
			return false
		}
	}
	return true
}

// fieldKind is what the engine does with a field of a head.
type fieldKind uint8

const (
	fieldOther fieldKind = iota // passed on as it is
	fieldHost
	fieldConnection
	fieldXFF
	fieldXFProto
	fieldXFHost
	fieldForwarded
	fieldRequestID
	fieldUserAgent
	fieldReferer
	fieldContentLength
	fieldContentType
	fieldDate
	fieldRefused // the engine leaves the message to net/http
)

// requestFields are the request fields the engine looks at, by lower-case
// name. A body, a protocol switch, Expect, the other hop-by-hop fields,
// the guard's stand-in for a refused request and Switchyard-Color (which
// net/http's path honours from trusted proxies and strips from anyone
// else, preview.go) make it net/http's.
var requestFields = map[string]fieldKind{
	"host": fieldHost, "connection": fieldConnection, "x-forwarded-for": fieldXFF, "x-forwarded-proto": fieldXFProto,
	"x-forwarded-host": fieldXFHost, "forwarded": fieldForwarded, "x-request-id": fieldRequestID,
	"user-agent": fieldUserAgent, "referer": fieldReferer,
	"content-length": fieldRefused, "transfer-encoding": fieldRefused, "upgrade": fieldRefused, "expect": fieldRefused,
	"te": fieldRefused, "trailer": fieldRefused, "keep-alive": fieldRefused, "proxy-connection": fieldRefused,
	"proxy-authenticate": fieldRefused, "proxy-authorization": fieldRefused, "x-switchyard-reject": fieldRefused,
	"http2-settings": fieldRefused, "switchyard-color": fieldRefused,
}

// fieldKindOf looks name up in kinds without allocating: one map lookup
// in place of a comparison with every name.
func fieldKindOf(kinds map[string]fieldKind, name []byte) fieldKind {
	var buf [24]byte
	if len(name) > len(buf) {
		return fieldOther // longer than any name looked at
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return kinds[string(buf[:len(name)])]
}

// equalFold is strings.EqualFold for an ASCII lower-case s.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// targetByte are the bytes of a request target the engine takes as they
// are: no escapes (net/http would decode them for matching), nothing that
// needs quoting.
var targetByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?") {
		t[c] = true
	}
	return t
}()

// hostByte are the bytes of a Host field, as httpguts.ValidHostHeader.
var hostByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%") {
		t[c] = true
	}
	return t
}()

// engineExchange is one request the engine proxies.
type engineExchange struct {
	ec        *engineConn
	route     *tableRoute
	endpoint  *Endpoint
	uri       string // the path and query sent upstream
	host      string // the client's Host
	requestID string
	client    string
	start     time.Time
	retries   int
	status    int
	bytesOut  int64
	err       error
}

// engineGET and engineHEAD stand for the request in ReadResponse, which
// needs its method, and in the fast path's reuse decision.
var (
	engineGET  = &http.Request{Method: http.MethodGet}
	engineHEAD = &http.Request{Method: http.MethodHead}
)

// proxy answers the request in hand, or leaves it whole to net/http
// (handOff). done means the connection cannot serve another request.
func (ec *engineConn) proxy() (done, handOff bool) {
	g, r := ec.g, &ec.req
	t := g.table.Load()
	if t != ec.table {
		ec.table, ec.headerRoutes = t, false
		for i := range t.routes {
			if len(t.routes[i].Headers) > 0 {
				ec.headerRoutes = true
			}
		}
	}
	if ec.headerRoutes {
		return false, true
	}
	path := string(r.path)
	if p := cleanPath(path); p != path {
		path = p
	}
	if isControlPath(path) {
		return false, true
	}
	if string(r.host) != ec.host {
		ec.host = string(r.host)
	}
	host := ec.host
	tr := t.match(host, path, nil)
	if tr == nil || tr.pool.Len() == 0 || tr.Timeouts.Request > 0 || tr.up == nil || retriesAnyStatus(tr.Retry) {
		return false, true
	}
	h1, ok := tr.up.h1.(*h1Transport)
	if !ok {
		return false, true
	}
	e := tr.pool.pick(nil)
	if e == nil || e.h2c {
		return false, true
	}

	// The engine takes the request from here.
	g.engine.served.Add(1)
	ex := &ec.ex
	*ex = engineExchange{ec: ec, route: tr, endpoint: e, host: host, start: time.Now()}
	ex.requestID = ec.requestIDOf(r.reqID)
	ex.client = ec.clientAddr()
	if tr.StripPrefix && tr.Prefix != "/" {
		p := strings.TrimPrefix(path, tr.Prefix)
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		path = p
	}
	ex.uri = path
	if r.query != nil {
		ex.uri = path + "?" + string(r.query)
	}
	req := engineGET
	if r.method == http.MethodHead {
		req = engineHEAD
	}
	resp, err := ex.roundTrip(h1, req, &ec.raw)
	// The head was read and sent: what follows in the buffer is the next
	// request.
	logged := ec.logFields(ex)
	if _, derr := ec.br.Discard(len(r.head)); derr != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if ec.raw.c != nil {
			ec.raw.finish(false)
		}
		return true, false
	}
	switch {
	case err != nil:
		ex.err = err
		done = ec.writeProxyError(ex, err)
	case resp == nil:
		done = ec.writeRaw(ex, &ec.raw)
	default:
		done = ec.writeResponse(ex, resp)
	}
	g.finishEngine(ex, logged)
	*ex = engineExchange{} // an idle connection keeps no route, endpoint or error
	return done, false
}

// retriesAnyStatus reports whether p retries on answers, which the engine
// leaves to net/http's path.
func retriesAnyStatus(p RetryPolicy) bool {
	for _, on := range p.On {
		if strings.HasPrefix(on, "http_") {
			return true
		}
	}
	return false
}

// roundTrip sends the request to the exchange's endpoint and, when that
// fails in a way the route retries, to the next one of the pool this
// request has not tried yet, as retryTransport does.
func (ex *engineExchange) roundTrip(h1 *h1Transport, req *http.Request, raw *rawResponse) (*http.Response, error) {
	g := ex.ec.g
	var buf [defaultAttempts]string
	tried := buf[:0]
	attempts := ex.route.Retry.Attempts
	if attempts <= 0 {
		attempts = defaultAttempts
	}
	for {
		resp, err := h1.sendRaw(context.Background(), ex.endpoint.hostPort, req, ex, raw)
		if err == nil {
			return resp, nil
		}
		tried = append(tried, ex.endpoint.hostPort)
		pool := g.pool(ex.route.Service)
		dial := isDialError(err)
		if dial {
			if e := pool.endpoint(ex.endpoint.hostPort); e != nil {
				e.markDown(time.Now())
			}
		}
		if len(tried) >= min(attempts, pool.Len()) || !retriesError(ex.route.Retry, err, dial) {
			return nil, err
		}
		e := pool.pick(tried)
		if e == nil || e.h2c {
			return nil, err
		}
		ex.retries++
		if m := pool.m; m != nil {
			m.retries.Inc()
		}
		ex.endpoint.count(0)
		ex.endpoint = e
	}
}

// writeHead writes the upstream request: the client's fields as they came,
// less the ones the gateway sets, as rewrite and forwarded do on the
// net/http path.
func (ex *engineExchange) writeHead(bw *bufio.Writer) error {
	ec, r := ex.ec, &ex.ec.req
	b := bw.AvailableBuffer()
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, ex.uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if ex.route.PreserveHost {
		b = append(b, r.host...)
	} else {
		b = append(b, ex.endpoint.hostPort...)
	}
	b = append(b, "\r\n"...)
	for _, f := range r.fields {
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	// X-Forwarded-For, -Proto and -Host: extended or kept from a trusted
	// proxy, replaced for anyone else; Forwarded only from a trusted proxy.
	b = append(b, "X-Forwarded-For: "...)
	if ec.trusted {
		for i, v := range r.xff {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, v...)
		}
		if len(r.xff) > 0 {
			b = append(b, ", "...)
		}
	}
	b = append(b, ec.ci.peerIP...)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	switch {
	case ec.trusted && len(r.xfProto) > 0:
		b = append(b, r.xfProto...)
	case ec.ci.tls:
		b = append(b, "https"...)
	default:
		b = append(b, "http"...)
	}
	b = append(b, "\r\nX-Forwarded-Host: "...)
	if ec.trusted && len(r.xfHost) > 0 {
		b = append(b, r.xfHost...)
	} else {
		b = append(b, r.host...)
	}
	if ec.trusted {
		for _, v := range r.fwd {
			b = append(b, "\r\nForwarded: "...)
			b = append(b, v...)
		}
	}
	b = append(b, "\r\nX-Request-Id: "...)
	b = append(b, ex.requestID...)
	b = append(b, "\r\n\r\n"...)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// requestIDOf is the request's X-Request-Id when it carries one sane one,
// or a new one (requestID).
func (ec *engineConn) requestIDOf(vs [][]byte) string {
	if len(vs) == 1 && len(vs[0]) > 0 && len(vs[0]) <= 128 {
		if v := string(vs[0]); printableToken(v) {
			return v
		}
	}
	return ec.ids.next()
}

// maxIDBlock is the most request ids an idBlock formats at once.
const maxIDBlock = 32

// idBlock hands out request ids (requestID's) from blocks of sequence
// numbers it reserves at once and formats into one string, of which each
// id is a substring: a connection's requests then cost an allocation per
// block instead of one each. Blocks double from one id to maxIDBlock, so
// that a connection of one request formats no id it does not use. Ids stay
// unique in the process; across connections they are no longer in order.
type idBlock struct {
	s    string
	lens [maxIDBlock]uint8
	size int // ids in s, which doubles from one block to the next
	i    int // ids of s handed out
	off  int // where the next id starts in s
}

func (b *idBlock) next() string {
	if b.i == b.size {
		b.size = min(max(2*b.size, 1), maxIDBlock)
		first := requestIDSeq.Add(uint64(b.size)) - uint64(b.size) + 1
		var sb strings.Builder
		sb.Grow(b.size * (len(requestIDPrefix) + 1 + 16))
		var id [64]byte
		for k := range b.size {
			one := appendRequestID(id[:0], first+uint64(k))
			sb.Write(one)
			b.lens[k] = uint8(len(one))
		}
		b.s, b.i, b.off = sb.String(), 0, 0
	}
	id := b.s[b.off : b.off+int(b.lens[b.i])]
	b.off += len(id)
	b.i++
	return id
}

// clientAddr is the client's address for logs (Gateway.clientAddr).
func (ec *engineConn) clientAddr() string {
	if !ec.trusted || len(ec.req.xff) == 0 {
		return ec.ci.remoteAddr
	}
	h := http.Header{"X-Forwarded-For": make([]string, len(ec.req.xff))}
	for i, v := range ec.req.xff {
		h["X-Forwarded-For"][i] = string(v)
	}
	return ec.g.clientAddr(&http.Request{RemoteAddr: ec.ci.remoteAddr, Header: h}, &exchange{trusted: true})
}

// engineLogged is what the access log needs of the head, copied before
// the head's buffer is reused.
type engineLogged struct {
	method, target, ua, ref string
	http10                  bool
}

func (ec *engineConn) logFields(ex *engineExchange) engineLogged {
	r := &ec.req
	l := engineLogged{method: r.method, http10: r.http10}
	if ec.g.access != nil {
		l.target, l.ua, l.ref = string(r.target), string(r.ua), string(r.ref)
	}
	return l
}

// hopHeader are the response fields that are the connection's own and
// not passed on (ReverseProxy's hopHeaders), and the ones the engine
// writes itself.
func hopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "X-Request-Id":
		return true
	}
	return false
}

// writeResponse writes resp to the client; done means the connection
// cannot serve another request.
func (ec *engineConn) writeResponse(ex *engineExchange, resp *http.Response) (done bool) {
	g, r := ec.g, &ec.req
	if resp.StatusCode < 100 || resp.StatusCode > 999 {
		resp.Body.Close()
		err := fmt.Errorf("upstream answered the invalid status %d", resp.StatusCode)
		ex.err = err
		return ec.writeProxyError(ex, err)
	}
	ex.status = resp.StatusCode
	var named []string // fields the answer's Connection names
	for _, v := range resp.Header["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textprotoTrim(f); f != "" {
				named = append(named, http.CanonicalHeaderKey(f))
			}
		}
	}
	noBody := r.method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	length := resp.ContentLength
	chunked := !noBody && length < 0 && !r.http10
	closeAfter := r.close || g.engine.isDraining() || (!noBody && length < 0 && r.http10)

	var end func() // ends a tracked stream
	body := resp.Body
	if kind, ok := streamOf(resp); ok {
		sb := &streamBody{rc: body, resp: resp, kind: kind, cancel: body.(*h1Body).abort}
		body = sb
		untrack := g.streams.add(&stream{kind: kind, instance: ex.endpoint.inst.ID, endFn: sb.end})
		// A stream may stay silent for long: a client that leaves must end
		// it now, not at its next event, as net/http's background read does.
		unwatch := ec.watchClient(func() { sb.end(reasonClientGone) })
		end = func() { unwatch(); untrack() }
	}
	defer func() {
		if end != nil {
			end()
		}
	}()

	if !noBody && length < 0 {
		// As net/http's server under ReverseProxy: the head goes out with
		// the body's first bytes, and an answer that turns out empty gets
		// Content-Length: 0 rather than an empty chunked body.
		first := make([]byte, 4<<10)
		n, err := body.Read(first)
		switch {
		case n == 0 && err == io.EOF:
			length, chunked = 0, false
			closeAfter = r.close || g.engine.isDraining()
		case n == 0 && err != nil:
			body.Close()
			ex.status, ex.err = http.StatusBadGateway, err
			g.log.WithError(err).WithFields(ec.fields(ex)).Warn("the instance's answer broke off before its body; closing the client connection")
			return true
		default:
			body = &prefixedBody{first[:n], err, body}
		}
	}

	b := ec.bw.AvailableBuffer()
	b = appendStatusLine(b, resp.StatusCode)
	b = appendFields(b, resp.Header, named)
	_, hasDate := resp.Header["Date"]
	b = appendOwnFields(b, hasDate, ex.requestID)
	switch {
	case length >= 0 && (!noBody || r.method == http.MethodHead && resp.Header["Content-Length"] != nil) &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, length, 10)
		b = append(b, "\r\n"...)
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(resp.Trailer) > 0 {
			b = append(b, "Trailer: "...)
			i := 0
			for k := range resp.Trailer {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = append(b, k...)
				i++
			}
			b = append(b, "\r\n"...)
		}
	}
	if closeAfter {
		b = append(b, "Connection: close\r\n"...)
		r.close = true
	}
	b = append(b, "\r\n"...)
	if _, err := ec.bw.Write(b); err != nil {
		body.Close()
		return true
	}
	if noBody {
		_ = body.Close()
		return ec.bw.Flush() != nil
	}
	n, rerr, werr := ec.copyBody(body, chunked, length < 0)
	ex.bytesOut = n
	_ = body.Close() // hands the instance's connection back when the answer came whole
	if werr != nil {
		ex.status = statusClientClosed
		return true
	}
	if rerr == nil && length >= 0 && n != length {
		rerr = io.ErrUnexpectedEOF
	}
	if rerr != nil {
		// The instance's answer broke off: the client must not take what
		// came for the whole answer, so the connection ends without the
		// last chunk, as net/http's ReverseProxy ends it.
		g.log.WithError(rerr).WithFields(ec.fields(ex)).Warn("the instance's answer broke off; closing the client connection")
		_ = ec.bw.Flush()
		return true
	}
	if chunked {
		var t []byte
		t = append(t, "0\r\n"...)
		t = appendFields(t, resp.Trailer, nil)
		t = append(t, "\r\n"...)
		if _, err := ec.bw.Write(t); err != nil {
			return true
		}
	}
	return ec.bw.Flush() != nil
}

// appendFields appends h's fields, less the hop-by-hop ones, those named
// in the answer's Connection field, and those net/http's server would drop
// as unwritable.
func appendFields(b []byte, h http.Header, named []string) []byte {
	for k, vs := range h {
		if hopHeader(k) || slices.Contains(named, k) || !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

// appendStatusLine appends an HTTP/1.1 status line, with the reason
// net/http's server would write.
func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// write1xx passes an interim answer on to the client.
func (ec *engineConn) write1xx(code int, h http.Header) error {
	b := ec.bw.AvailableBuffer()
	b = appendStatusLine(b, code)
	b = appendFields(b, h, nil)
	b = append(b, "\r\n"...)
	if _, err := ec.bw.Write(b); err != nil {
		return err
	}
	return ec.bw.Flush()
}

// reasonClientGone ends a stream whose client went away.
const reasonClientGone = "client went away"

// watchClient calls gone when the client closes the connection, until the
// returned stop is called. It reads ahead into the connection's buffer,
// where a pipelined request the client sends meanwhile waits its turn.
func (ec *engineConn) watchClient(gone func()) (stop func()) {
	done := make(chan struct{})
	var stopped atomic.Bool
	_ = ec.c.SetReadDeadline(time.Time{})
	go func() {
		defer close(done)
		if _, err := ec.br.Peek(1); err != nil && !stopped.Load() {
			gone()
		}
	}()
	return func() {
		stopped.Store(true)
		_ = ec.c.SetReadDeadline(time.Unix(1, 0)) // wakes the Peek; readHead sets the next deadline
		<-done
	}
}

// writeRaw passes on an answer peeked raw: its head as it came, less the
// fields the gateway writes itself, then its body straight from the
// instance's connection buffer; done means the client connection cannot
// serve another request.
func (ec *engineConn) writeRaw(ex *engineExchange, raw *rawResponse) (done bool) {
	g, r := ec.g, &ec.req
	ex.status = raw.status
	closeAfter := r.close || g.engine.isDraining()
	b := ec.bw.AvailableBuffer()
	b = appendStatusLine(b, raw.status)
	for _, f := range raw.fields {
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	b = appendOwnFields(b, raw.hasDate, ex.requestID)
	if raw.hasLength && raw.status != http.StatusNotModified {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, raw.length, 10)
		b = append(b, "\r\n"...)
	}
	if closeAfter {
		b = append(b, "Connection: close\r\n"...)
		r.close = true
	}
	b = append(b, "\r\n"...)
	_, werr := ec.bw.Write(b)
	br := raw.c.br
	_, _ = br.Discard(raw.headLen) // what peek saw is in the buffer
	var rerr error
	var n int64
	for n < raw.body && werr == nil {
		if br.Buffered() == 0 {
			if d := raw.t.readTimeout; d > 0 {
				// As nginx's proxy_read_timeout, within the answer.
				_ = raw.c.SetReadDeadline(time.Now().Add(d))
				raw.deadline = true
			}
			if _, rerr = br.Peek(1); rerr != nil {
				break
			}
		}
		k := int(min(int64(br.Buffered()), raw.body-n))
		p, _ := br.Peek(k)
		_, werr = ec.bw.Write(p)
		_, _ = br.Discard(k)
		n += int64(k)
	}
	ex.bytesOut = n
	raw.finish(n == raw.body && rerr == nil && werr == nil)
	switch {
	case werr != nil:
		ex.status = statusClientClosed
		return true
	case rerr != nil:
		g.log.WithError(rerr).WithFields(ec.fields(ex)).Warn("the instance's answer broke off; closing the client connection")
		_ = ec.bw.Flush()
		return true
	}
	return ec.bw.Flush() != nil
}

// prefixedBody is a body whose first bytes were read already.
type prefixedBody struct {
	first []byte
	err   error // what the read of the first bytes returned
	rc    io.ReadCloser
}

func (b *prefixedBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rc.Read(p)
}

func (b *prefixedBody) Close() error { return b.rc.Close() }

// copyBody copies the answer's body to the client, chunked or not; a body
// of unknown length is flushed as it comes, as ReverseProxy does.
func (ec *engineConn) copyBody(body io.Reader, chunked, flush bool) (n int64, rerr, werr error) {
	bp := ec.g.proxy.BufferPool.Get()
	defer ec.g.proxy.BufferPool.Put(bp)
	for {
		k, err := body.Read(bp)
		if k > 0 {
			if chunked {
				var hdr [20]byte
				h := strconv.AppendInt(hdr[:0], int64(k), 16)
				h = append(h, "\r\n"...)
				if _, werr = ec.bw.Write(h); werr != nil {
					return n, nil, werr
				}
			}
			if _, werr = ec.bw.Write(bp[:k]); werr != nil {
				return n, nil, werr
			}
			n += int64(k)
			if chunked {
				if _, werr = ec.bw.WriteString("\r\n"); werr != nil {
					return n, nil, werr
				}
			}
			if flush {
				if werr = ec.bw.Flush(); werr != nil {
					return n, nil, werr
				}
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// writeProxyError answers a request no endpoint served, as proxyError does
// on the net/http path.
func (ec *engineConn) writeProxyError(ex *engineExchange, err error) (done bool) {
	g := ec.g
	service := ex.route.Service
	code, msg := http.StatusBadGateway, fmt.Sprintf("no instance of service %q answered", service)
	if isTimeout(err) {
		code, msg = http.StatusGatewayTimeout, fmt.Sprintf("no instance of service %q answered in time", service)
		g.log.WithError(err).WithFields(ec.fields(ex)).Warn("the instance did not answer in time; responding 504")
	} else {
		g.log.WithError(err).WithFields(ec.fields(ex)).Warn("no instance answered; responding 502")
	}
	ex.status = code
	body := fmt.Sprintf("{\"error\":%q}\n", msg)
	b := ec.bw.AvailableBuffer()
	b = appendStatusLine(b, code)
	b = append(b, "Cache-Control: no-store\r\nContent-Type: application/json\r\nDate: "...)
	b = appendDate(b)
	b = append(b, "\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: "...)
	b = append(b, ex.requestID...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	if ec.req.close || g.engine.isDraining() {
		b = append(b, "Connection: close\r\n"...)
		ec.req.close = true
	}
	b = append(b, "\r\n"...)
	if ec.req.method != http.MethodHead {
		b = append(b, body...)
		ex.bytesOut = int64(len(body))
	}
	if _, err := ec.bw.Write(b); err != nil {
		return true
	}
	return ec.bw.Flush() != nil
}

func (ec *engineConn) fields(ex *engineExchange) logrus.Fields {
	f := logrus.Fields{"service": ex.route.Service, "method": ec.req.method, "path": ex.uri, "request_id": ex.requestID}
	if ex.endpoint != nil {
		f["instance"] = ex.endpoint.inst.ID
		f["upstream"] = ex.endpoint.hostPort
	}
	return f
}

// finishEngine counts and logs the exchange, as finish does.
func (g *Gateway) finishEngine(ex *engineExchange, l engineLogged) {
	status := ex.status
	d := time.Since(ex.start)
	countAnswer(ex.endpoint, ex.route.pool, status, d)
	if g.access == nil {
		return
	}
	proto := "HTTP/1.1"
	if l.http10 {
		proto = "HTTP/1.0"
	}
	e := AccessEntry{
		Time: ex.start, RequestID: ex.requestID, Remote: ex.client, Method: l.method, Host: ex.host,
		Path: l.target, Proto: proto, Status: status, BytesOut: ex.bytesOut,
		Duration: d, Service: ex.route.Service, Retries: ex.retries, UserAgent: l.ua, Referer: l.ref,
	}
	if ex.endpoint != nil {
		e.Upstream, e.UpstreamAddr, e.Color = ex.endpoint.inst.ID, ex.endpoint.hostPort, ex.endpoint.inst.Color
	}
	if ex.err != nil {
		e.Error = ex.err.Error()
	}
	g.access.Log(&e)
}

// textprotoTrim trims ASCII whitespace.
func textprotoTrim(s string) string { return strings.Trim(s, " \t") }

// appendHeaderValue appends v with CR and LF as spaces, as net/http's
// Header.Write does.
func appendHeaderValue(b []byte, v string) []byte {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return append(b, textprotoTrim(v)...)
}

// The Date field, formatted once a second.
var engineDate struct {
	mu   sync.Mutex
	sec  int64
	text []byte
}

// appendOwnFields appends the fields the gateway adds to every answer it
// passes on: Date, unless the instance sent one, and X-Request-Id.
func appendOwnFields(b []byte, hasDate bool, requestID string) []byte {
	if !hasDate {
		b = append(b, "Date: "...)
		b = appendDate(b)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Request-Id: "...)
	b = append(b, requestID...)
	return append(b, "\r\n"...)
}

func appendDate(b []byte) []byte {
	now := time.Now()
	engineDate.mu.Lock()
	if s := now.Unix(); s != engineDate.sec {
		engineDate.sec = s
		engineDate.text = now.UTC().AppendFormat(engineDate.text[:0], http.TimeFormat)
	}
	b = append(b, engineDate.text...)
	engineDate.mu.Unlock()
	return b
}

var _ net.Conn = (*handedConn)(nil)
