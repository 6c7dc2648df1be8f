package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// defaultAttempts caps how many endpoints one request is tried on.
const defaultAttempts = 3

// noUpError means the route matched but its service has no UP endpoint.
type noUpError struct{ service string }

func (e *noUpError) Error() string { return fmt.Sprintf("no UP instance of service %q", e.service) }

var errBodySealed = errors.New("gateway: request body belongs to a later attempt")

// upstream holds the transports for one set of upstream timeouts; routes
// with the same timeouts share one, and so their connection pools.
type upstream struct {
	h1  http.RoundTripper // HTTP/1.1: an h1Transport, the fast path falling back to http.Transport
	h2c *http.Transport   // HTTP/2 with prior knowledge, for instances that announce h2c
}

func newUpstream(t Timeouts, noFastPath bool) *upstream {
	if noFastPath {
		return &upstream{h1: newTransport(t, false), h2c: newTransport(t, true)}
	}
	return &upstream{h1: newH1Transport(newTransport(t, false), t.Read), h2c: newTransport(t, true)}
}

func (u *upstream) closeIdle() {
	if ci, ok := u.h1.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	u.h2c.CloseIdleConnections()
}

// newTransport is tuned for many short requests to a few local backends.
// It ignores proxy settings from the environment and leaves compression to
// the client and backend, so the proxy stays transparent.
func newTransport(t Timeouts, h2c bool) *http.Transport {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       t.Idle,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
		tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	}
	return tr
}

// retryTransport sends each attempt to the exchange's endpoint and, when
// that fails in a way the route retries, to the next endpoint of the same
// pool that this request has not tried yet.
type retryTransport struct {
	g *Gateway
}

func (t retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeOf(req.Context())
	var buf [defaultAttempts]string
	tried := buf[:0]
	body, _ := req.Body.(*attemptBody)
	policy := ex.route.Retry
	attempts := policy.Attempts
	if attempts <= 0 {
		attempts = defaultAttempts
	}
	for {
		if ex.endpoint == nil {
			// The table lost the service's last endpoint after Rewrite ran.
			tab := t.g.table.Load()
			e := ex.poolIn(tab).pick(tried)
			if e == nil {
				return nil, ex.unavailable(tab)
			}
			req = retarget(req, e, &body)
			ex.endpoint = e
		}
		resp, err := send(ex, req)
		if err == nil && !retriesStatus(policy, resp.StatusCode) {
			return resp, nil // the usual answer: no need to look at the pool
		}
		tried = append(tried, req.URL.Host)
		pool := ex.poolIn(t.g.table.Load())
		last := len(tried) >= min(attempts, pool.Len())
		if err == nil {
			if last || !retryable(req, body, false, policy) {
				return resp, nil
			}
			// The answer goes unread to the client; the connection is
			// reusable only if its body is short, as http.Transport's.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		} else {
			dial := isDialError(err)
			if dial {
				if e := pool.endpoint(req.URL.Host); e != nil {
					e.markDown(time.Now())
				}
			}
			if last || !retriesError(policy, err, dial) || !retryable(req, body, dial, policy) {
				return nil, err
			}
		}
		e := pool.pick(tried)
		if e == nil {
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("gateway: every instance answered %d", resp.StatusCode)
		}
		ex.retries++
		if m := pool.m; m != nil {
			m.retries.Inc()
		}
		switch {
		case ex.check: // check traffic is not the instance's live traffic (preview.go)
		case err == nil:
			ex.endpoint.count(resp.StatusCode)
		default:
			ex.endpoint.count(0)
		}
		req = retarget(req, e, &body)
		ex.endpoint = e
	}
}

// send makes one attempt at req: on the fast path when it takes it, else
// on the route's transport, with a context of the attempt's own.
func send(ex *exchange, req *http.Request) (*http.Response, error) {
	if ex.endpoint.h2c {
		return ex.route.up.h2c.RoundTrip(ex.attempt(req))
	}
	tr := ex.route.up.h1
	if h1, ok := tr.(*h1Transport); ok {
		if fastPath(req) {
			return h1.roundTripFast(req)
		}
		tr = h1.fallback
	}
	return tr.RoundTrip(ex.attempt(req))
}

// retriesError reports whether policy retries a failed attempt: a
// connection that was never made always, else "error" and "timeout" as
// listed (both by default).
func retriesError(p RetryPolicy, err error, dial bool) bool {
	if dial {
		return true
	}
	on := p.On
	if len(on) == 0 {
		on = []string{"error", "timeout"}
	}
	if isTimeout(err) {
		return slices.Contains(on, "timeout")
	}
	return slices.Contains(on, "error")
}

func retriesStatus(p RetryPolicy, code int) bool {
	switch code {
	case http.StatusBadGateway:
		return slices.Contains(p.On, "http_502")
	case http.StatusServiceUnavailable:
		return slices.Contains(p.On, "http_503")
	case http.StatusGatewayTimeout:
		return slices.Contains(p.On, "http_504")
	}
	return false
}

// retryable reports whether req may be sent again after an attempt failed:
// always when the connection was never made, otherwise only when its
// method is idempotent (as http.Transport decides for itself), it carries
// an idempotency key, or the route allows every method. Either way the body
// must not have been read; sealing it keeps a late read of the failed
// attempt off the body of the next one.
func retryable(req *http.Request, body *attemptBody, dial bool, p RetryPolicy) bool {
	if req.Context().Err() != nil {
		return false
	}
	if body != nil && !body.seal() {
		return false
	}
	if dial || p.NonIdempotent {
		return true
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// retarget copies req for an attempt on e. Only retries pay for the copy.
func retarget(req *http.Request, e *Endpoint, body **attemptBody) *http.Request {
	r := new(http.Request)
	*r = *req
	u := *req.URL
	u.Host = e.hostPort
	r.URL = &u
	if *body != nil {
		*body = &attemptBody{rc: (*body).rc}
		r.Body = *body
	}
	return r
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

const (
	bodyUntouched int32 = iota
	bodyRead
	bodySealed
)

// attemptBody hands the request body to one attempt. It remembers whether
// that attempt read from it, because a body that was partly sent cannot be
// sent again. Closing it does nothing: the server owns the real body.
type attemptBody struct {
	rc    io.ReadCloser
	state atomic.Int32
}

func (b *attemptBody) Read(p []byte) (int, error) {
	if b.state.Load() != bodyRead && !b.state.CompareAndSwap(bodyUntouched, bodyRead) {
		return 0, errBodySealed
	}
	return b.rc.Read(p)
}

func (b *attemptBody) Close() error { return nil }

// seal takes the body from this attempt; false means it was already read.
func (b *attemptBody) seal() bool { return b.state.CompareAndSwap(bodyUntouched, bodySealed) }

const copyBufferSize = 32 << 10

// bufferPool lends ReverseProxy its copy buffers. It stores array pointers,
// so that Put does not allocate.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) >= copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(buf[:copyBufferSize]))
	}
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// statusClientClosed is what the access log records for a request whose
// client went away before the answer, as nginx's 499.
const statusClientClosed = 499

// proxyError answers a request that no endpoint served.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	service := ex.route.Service
	ex.err = err
	var (
		nu *noUpError
		pe *previewError
	)
	switch {
	case errors.As(err, &nu):
		writeError(w, http.StatusServiceUnavailable, nu.Error())
	case errors.As(err, &pe) && ex.preview:
		writePlain(w, http.StatusServiceUnavailable, pe.Error())
	case errors.As(err, &pe):
		writeError(w, http.StatusServiceUnavailable, pe.Error())
	case ex.bodyErr.Load() != 0:
		// The client's body failed: too large, or too slow. What it sent
		// after cannot be read as a next request.
		code, msg := http.StatusRequestTimeout, "the request body stalled longer than the client body timeout"
		ex.err = errClientBodyTimeout
		switch ex.bodyErr.Load() {
		case http.StatusRequestEntityTooLarge:
			code, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over the route's limit of %d bytes", ex.route.MaxBody)
			ex.err = errBodyTooLarge
		case http.StatusBadRequest:
			code, msg, ex.err = http.StatusBadRequest, "the request body is malformed or was cut short", errClientBody
		}
		w.Header().Set("Connection", "close")
		writeError(w, code, msg)
	case r.Context().Err() != nil && !ex.timedOut.Load():
		ex.status = statusClientClosed
		g.log.WithError(err).WithFields(ex.fields(r)).Debug("client went away before the backend answered")
		writeError(w, http.StatusBadGateway, fmt.Sprintf("no instance of service %q answered", service))
	case isTimeout(err) || ex.timedOut.Load():
		g.log.WithError(err).WithFields(ex.fields(r)).Warn("the instance did not answer in time; responding 504")
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("no instance of service %q answered in time", service))
	default:
		g.log.WithError(err).WithFields(ex.fields(r)).Warn("no instance answered; responding 502")
		writeError(w, http.StatusBadGateway, fmt.Sprintf("no instance of service %q answered", service))
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
