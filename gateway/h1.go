package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Transport sends the requests that make up nearly all of a gateway's
// traffic, GET and HEAD without a body, over pooled HTTP/1.1 keep-alive
// connections, doing the write and the read in the calling goroutine.
// Profiling the gateway under wrk showed http.Transport spending a large
// share of each request handing it between the handler, its per-connection
// write loop and read loop (channel operations, wake-ups, scheduling);
// here a request costs the two syscalls and nothing else. Every other
// request (bodies, upgrades, Expect, odd headers) goes to the fallback
// http.Transport unchanged.
type h1Transport struct {
	fallback      http.RoundTripper
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle       int           // per host
	idleTimeout   time.Duration // an idle connection older than this is closed
	headerTimeout time.Duration // the longest wait for an answer's head
	readTimeout   time.Duration // the longest silence within an answer's body

	mu        sync.Mutex
	idle      map[string][]*h1Conn // host:port → idle connections, most recent last
	lastSweep time.Time
}

func newH1Transport(fallback *http.Transport, read time.Duration) *h1Transport {
	return &h1Transport{
		fallback:      fallback,
		readTimeout:   read,
		dial:          fallback.DialContext,
		maxIdle:       fallback.MaxIdleConnsPerHost,
		idleTimeout:   fallback.IdleConnTimeout,
		headerTimeout: fallback.ResponseHeaderTimeout,
		idle:          map[string][]*h1Conn{},
	}
}

// h1Conn is one connection to a backend.
type h1Conn struct {
	net.Conn
	host  string
	br    *bufio.Reader
	bw    *bufio.Writer
	read  int64 // bytes received in the current round trip
	limit int64 // while reading a response head, fail past this many bytes
	used  bool  // carried a round trip before this one
	since time.Time
	abort func() // makes a read or write in progress fail at once
}

// maxResponseHead bounds a response's status line and headers, as
// http.Transport's MaxResponseHeaderBytes does.
const maxResponseHead = 1 << 20

var errHeadTooLarge = errors.New("gateway: backend response headers exceed 1 MB")

func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit > 0 && c.read >= c.limit {
		return 0, errHeadTooLarge
	}
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	return n, err
}

// fastPath reports whether req can take the h1Transport's own path.
func fastPath(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	if (req.Body != nil && req.Body != http.NoBody) || req.ContentLength != 0 ||
		req.URL.Scheme != "http" || req.URL.Host == "" || req.Host != "" ||
		len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	h := req.Header
	if _, ok := h["Upgrade"]; ok {
		return false
	}
	if _, ok := h["Expect"]; ok {
		return false
	}
	// http.Transport refuses what could smuggle a second request into the
	// stream; leave those requests to it, so they fail the same way.
	if uri := req.URL.RequestURI(); !validHeaderValue(req.URL.Host) || !validHeaderValue(uri) || strings.IndexByte(uri, ' ') >= 0 {
		return false
	}
	for k, vs := range h {
		if !validFieldName(k) {
			return false
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return false
			}
		}
	}
	return true
}

// fieldNameByte and headerValueByte say which bytes validFieldName and
// validHeaderValue accept: every header of every request is checked, and a
// table lookup per byte costs a fraction of a search in a list.
var fieldNameByte, headerValueByte = func() (name, value [256]bool) {
	for c := range 256 {
		name[c] = c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
		value[c] = (c >= ' ' || c == '\t') && c != 0x7f
	}
	return name, value
}()

func validFieldName[T string | []byte](s T) bool { return len(s) > 0 && allIn(&fieldNameByte, s) }

func validHeaderValue[T string | []byte](s T) bool { return allIn(&headerValueByte, s) }

// allIn reports whether every byte of s is one the table accepts.
func allIn[T string | []byte](table *[256]bool, s T) bool {
	for i := 0; i < len(s); i++ {
		if !table[s[i]] {
			return false
		}
	}
	return true
}

// excluded reports the headers that writeRequest writes itself, or that
// are never sent on a request without a body.
func excluded(key string) bool {
	switch key {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !fastPath(req) {
		return t.fallback.RoundTrip(req)
	}
	return t.roundTripFast(req)
}

// roundTripFast is RoundTrip for a request that fastPath accepts.
func (t *h1Transport) roundTripFast(req *http.Request) (*http.Response, error) {
	return t.send(req.Context(), req.URL.Host, req, requestHead{req})
}

// headWriter writes the head of a request without a body.
type headWriter interface {
	writeHead(bw *bufio.Writer) error
}

// requestHead writes an *http.Request's head (writeRequest).
type requestHead struct{ r *http.Request }

func (h requestHead) writeHead(bw *bufio.Writer) error { return writeRequest(bw, h.r) }

// send makes the round trip of a GET or HEAD without a body to host: req
// gives the method and whether to close, head writes the request. The
// gateway's HTTP/1.1 engine calls it with a head of its own making.
func (t *h1Transport) send(ctx context.Context, host string, req *http.Request, head headWriter) (*http.Response, error) {
	return t.sendRaw(ctx, host, req, head, nil)
}

// sendRaw is send that, when raw is not nil and the answer's head is one
// rawResponse takes, fills raw instead of returning an *http.Response.
func (t *h1Transport) sendRaw(ctx context.Context, host string, req *http.Request, head headWriter, raw *rawResponse) (*http.Response, error) {
	for {
		c, err := t.getConn(ctx, host)
		if err != nil {
			return nil, err
		}
		resp, err := t.roundTrip(ctx, c, req, head, raw)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the backend closed while it was idle fails
		// before any byte of an answer arrives. GET and HEAD may be sent
		// again, on a new connection, as http.Transport does.
		if c.used && c.read == 0 && ctx.Err() == nil && !isTimeout(err) {
			continue
		}
		return nil, err
	}
}

// errHeaderTimeout is the fast path's timeout awaiting an answer's head.
var errHeaderTimeout error = timeoutError("gateway: timeout awaiting the instance's response headers")

type timeoutError string

func (e timeoutError) Error() string   { return string(e) }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

func (t *h1Transport) roundTrip(ctx context.Context, c *h1Conn, req *http.Request, head headWriter, raw *rawResponse) (*http.Response, error) {
	c.read = 0
	// A client that goes away aborts the backend exchange, as with
	// http.Transport.
	stop := notStopped
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.abort)
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, err
	}
	if err := head.writeHead(c.bw); err != nil {
		return fail(err)
	}
	// As http.Transport's ResponseHeaderTimeout: the head must come in
	// time. A read deadline, not a timer: nothing is allocated per request.
	if t.headerTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(t.headerTimeout))
	}
	if raw != nil && raw.peek(c, req.Method) {
		if t.headerTimeout > 0 && int64(c.br.Buffered()) < int64(raw.headLen)+raw.body {
			_ = c.SetReadDeadline(time.Time{})
		}
		raw.t, raw.c, raw.stop, raw.reuse = t, c, stop, raw.reuse && !req.Close
		return nil, nil
	}
	var resp *http.Response
	for {
		var err error
		c.limit = c.read + maxResponseHead
		resp, err = http.ReadResponse(c.br, req)
		c.limit = 0
		if err != nil && isTimeout(err) && ctx.Err() == nil {
			return fail(errHeaderTimeout)
		}
		if err != nil {
			return fail(err)
		}
		// 1xx answers other than 101 come before the real one; the proxy
		// forwards them through its trace hook, as with http.Transport.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if raw != nil && raw.got1xx != nil {
				if err := raw.got1xx(resp.StatusCode, resp.Header); err != nil {
					return fail(err)
				}
			} else if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue
		}
		break
	}
	if t.headerTimeout > 0 && !inBuffer(resp, c.br) {
		// The body has no deadline. A client that went away meanwhile set
		// one in the past, which clearing must not undo: ctx is done before
		// its AfterFunc runs, so checking it after clearing sees it. A body
		// that came whole with the head is read without touching the
		// connection, and the next round trip sets a deadline of its own
		// before it reads: the usual small answer needs no clearing.
		_ = c.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			_ = c.SetDeadline(time.Unix(1, 0))
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("gateway: unexpected 101 Switching Protocols to a request without Upgrade"))
	}
	reuse := !resp.Close && !req.Close
	resp.Body = &h1Body{rc: resp.Body, t: t, c: c, stop: stop, reuse: reuse, ctx: ctx}
	return resp, nil
}

// notStopped stands for context.AfterFunc's stop on a context that never
// ends (the engine's): there is nothing to stop, and nothing to allocate.
func notStopped() bool { return true }

// inBuffer reports whether the whole of resp's body is already in br, so
// that reading it cannot touch the connection.
func inBuffer(resp *http.Response, br *bufio.Reader) bool {
	return resp.Body == http.NoBody ||
		len(resp.TransferEncoding) == 0 && resp.ContentLength >= 0 && int64(br.Buffered()) >= resp.ContentLength
}

// writeRequest writes req as http.Request.Write would for a request
// without a body: request line, Host, User-Agent unless set empty (the
// proxy's way of sending none), then the other headers.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	// Appended in place in the writer's buffer, rather than with a call
	// per piece; a head larger than the buffer grows b, which Write takes.
	b := bw.AvailableBuffer()
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.URL.Host...)
	b = append(b, "\r\n"...)
	ua := "Go-http-client/1.1"
	if _, ok := req.Header["User-Agent"]; ok {
		ua = headerValue(req.Header, "User-Agent")
	}
	if ua != "" {
		b = append(b, "User-Agent: "...)
		b = append(b, ua...)
		b = append(b, "\r\n"...)
	}
	for k, vs := range req.Header {
		if excluded(k) {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			// As http.Request.Write trims: ASCII whitespace only, so a
			// value ending in, say, U+00A0 reaches the backend whole.
			b = append(b, textproto.TrimString(v)...)
			b = append(b, "\r\n"...)
		}
	}
	if req.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// h1Body hands the connection back to the pool once the response was read
// to its end and closed; a body closed early takes the connection with it.
type h1Body struct {
	ctx   context.Context
	rc    io.ReadCloser
	t     *h1Transport
	c     *h1Conn
	stop  func() bool
	reuse bool
	eof   bool
	done  bool
	state atomic.Int32 // bodyOpen, then bodyAborted or bodyClosed
}

const (
	bodyOpen int32 = iota
	bodyAborted
	bodyClosed
)

// abort ends the exchange at once, as the end of the request's context
// does: a read in progress or to come fails, and the connection is not
// reused. It does nothing once the body is closed, when the connection
// may already serve another request.
func (b *h1Body) abort() {
	if b.state.CompareAndSwap(bodyOpen, bodyAborted) {
		b.c.abort()
	}
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("gateway: read on closed response body")
	}
	if b.t.readTimeout > 0 && b.c.br.Buffered() == 0 {
		// As nginx's proxy_read_timeout: the instance may not fall silent
		// for longer within its answer. A client that went away set the
		// deadline in the past, which this must not undo.
		_ = b.c.SetReadDeadline(time.Now().Add(b.t.readTimeout))
		if b.ctx.Err() != nil || b.state.Load() == bodyAborted {
			_ = b.c.SetDeadline(time.Unix(1, 0))
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.rc.Close()
	// stop fails when the request's context already ended and the
	// connection's deadline was, or is being, set in the past; so does the
	// swap after an abort. Bytes the backend sent past the answer would be
	// read as the next request's answer: such a connection is closed, as
	// http.Transport does.
	stopped := b.stop()
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) && stopped && b.eof && b.reuse && err == nil && b.c.br.Buffered() == 0 {
		b.t.putConn(b.c)
	} else {
		b.c.Close()
	}
	return err
}

func (t *h1Transport) getConn(ctx context.Context, host string) (*h1Conn, error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[host]; len(conns) > 0; conns = t.idle[host] {
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[host] = conns[:len(conns)-1]
		if now.Sub(c.since) > t.idleTimeout {
			go c.Close()
			continue
		}
		t.mu.Unlock()
		c.used = true
		return c, nil
	}
	t.mu.Unlock()
	conn, err := t.dial(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c := &h1Conn{Conn: conn, host: host}
	// Made once per connection: a func literal per round trip would be
	// allocated per request.
	c.abort = func() { _ = c.SetDeadline(time.Unix(1, 0)) }
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(conn, 4<<10)
	return c, nil
}

func (t *h1Transport) putConn(c *h1Conn) {
	now := time.Now()
	c.since = now
	t.mu.Lock()
	var stale []*h1Conn
	if now.Sub(t.lastSweep) > t.idleTimeout/3 {
		t.lastSweep = now
		for host, conns := range t.idle {
			kept := conns[:0]
			for _, ic := range conns {
				if now.Sub(ic.since) > t.idleTimeout {
					stale = append(stale, ic)
				} else {
					kept = append(kept, ic)
				}
			}
			clear(conns[len(kept):])
			if len(kept) == 0 {
				delete(t.idle, host)
			} else {
				t.idle[host] = kept
			}
		}
	}
	if len(t.idle[c.host]) >= t.maxIdle {
		stale = append(stale, c)
	} else {
		t.idle[c.host] = append(t.idle[c.host], c)
	}
	t.mu.Unlock()
	for _, s := range stale {
		s.Close()
	}
}

// CloseIdleConnections closes every idle connection, of both paths.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.Close()
		}
	}
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
