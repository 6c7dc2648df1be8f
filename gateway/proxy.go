package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// maxAttempts caps how many endpoints one request is tried on.
const maxAttempts = 3

// noUpError means the route matched but its service has no UP endpoint.
type noUpError struct{ service string }

func (e *noUpError) Error() string { return fmt.Sprintf("no UP instance of service %q", e.service) }

var (
	errNoRoute    = errors.New("gateway: no route for the path")
	errBodySealed = errors.New("gateway: request body belongs to a later attempt")
)

// newTransport is tuned for many short requests to a few local backends.
// It ignores proxy settings from the environment and leaves compression to
// the client and backend, so the proxy stays transparent.
func newTransport(cfg Config) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       cfg.UpstreamIdleTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// retryTransport sends each attempt to the endpoint in the request URL and,
// when that fails before a response arrived and the request can safely be
// sent again, to the next endpoint of the same pool that this request has
// not tried yet.
type retryTransport struct {
	base    http.RoundTripper
	lookup  func(path string) (*Pool, bool)
	retried func(service string) // counts a retry; may be nil
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var buf [maxAttempts]string
	tried := buf[:0]
	body, _ := req.Body.(*attemptBody)
	if req.URL.Host == "" {
		// The table lost the service's last endpoint after Rewrite ran.
		pool, ok := t.lookup(req.URL.Path)
		if !ok {
			return nil, errNoRoute
		}
		e := pool.pick(nil)
		if e == nil {
			return nil, &noUpError{service: pool.service}
		}
		req = retarget(req, e, &body)
	}
	for {
		resp, err := t.base.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		tried = append(tried, req.URL.Host)
		pool, ok := t.lookup(req.URL.Path)
		dial := isDialError(err)
		if dial && ok {
			if e := pool.endpoint(req.URL.Host); e != nil {
				e.markDown(time.Now())
			}
		}
		if !ok || len(tried) >= min(maxAttempts, pool.Len()) || !retryable(req, body, dial) {
			return nil, err
		}
		e := pool.pick(tried)
		if e == nil {
			return nil, err
		}
		if t.retried != nil {
			t.retried(pool.service)
		}
		req = retarget(req, e, &body)
	}
}

// retryable reports whether req may be sent again after it failed: always
// when the connection was never made, otherwise only when its method is
// idempotent, as http.Transport decides for itself. Either way the body must
// not have been read; sealing it keeps a late read of the failed attempt off
// the body of the next one.
func retryable(req *http.Request, body *attemptBody, dial bool) bool {
	if req.Context().Err() != nil {
		return false
	}
	if body != nil && !body.seal() {
		return false
	}
	if dial {
		return true
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
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

// proxyError answers a request that no endpoint served.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	service := ""
	if pool, ok := g.table.Load().Lookup(r.URL.Path); ok {
		service = pool.service
	}
	if nu := (*noUpError)(nil); errors.As(err, &nu) {
		g.metrics.count(service, http.StatusServiceUnavailable)
		writeError(w, http.StatusServiceUnavailable, nu.Error())
		return
	}
	fields := logrus.Fields{"service": service, "method": r.Method, "path": r.URL.Path}
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		g.metrics.count(service, http.StatusBadGateway)
		g.log.WithError(err).WithFields(fields).Debug("client went away before the backend answered")
		writeError(w, http.StatusBadGateway, fmt.Sprintf("no instance of service %q answered", service))
	case isTimeout(err):
		g.metrics.count(service, http.StatusGatewayTimeout)
		g.log.WithError(err).WithFields(fields).Warn("the instance did not answer in time; responding 504")
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("no instance of service %q answered in time", service))
	default:
		g.metrics.count(service, http.StatusBadGateway)
		g.log.WithError(err).WithFields(fields).Warn("no instance answered; responding 502")
		writeError(w, http.StatusBadGateway, fmt.Sprintf("no instance of service %q answered", service))
	}
}
