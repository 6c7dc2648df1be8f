package gateway

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// ErrInvalidRoute means a route or a gateway configuration is malformed.
var ErrInvalidRoute = errors.New("gateway: invalid route")

// controlPrefix is where instances serve their health and status
// instructions; the edge must never expose it.
const controlPrefix = "/_switchyard"

// Route sends every request that matches it to the UP instances of
// Service. A request matches when its path is Prefix or lies below it, its
// host matches Host (when set) and it carries every header of Headers.
type Route struct {
	// Host is "" (any host), an exact host such as "api.example.com", or a
	// wildcard "*.example.com" matching any name below example.com (not
	// example.com itself). Matched case-insensitively, without the port.
	Host    string
	Prefix  string
	Headers map[string]string // canonical name → exact value; "" means present with any value
	Service string

	// StripPrefix removes Prefix from the path sent to the instance
	// ("/api/x" → "/x").
	StripPrefix bool
	// PreserveHost sends the client's Host header on to the instance
	// instead of the instance's address.
	PreserveHost bool
	// Timeouts left zero take the gateway's.
	Timeouts Timeouts
	Retry    RetryPolicy
	// MaxBody caps the request body in bytes; a larger one gets 413. Zero
	// means no limit.
	MaxBody int64
	// Line is where the route was written in a config file, for errors
	// and logs; 0 for a --route flag.
	Line int
}

// Timeouts bound the phases of a proxied request. Zero means the
// gateway's default.
type Timeouts struct {
	Connect        time.Duration // opening a connection to an instance (5s)
	ResponseHeader time.Duration // the instance's answer to begin; then 504 (60s)
	// Read is the longest silence from the instance once its answer
	// began, streams included (60s, as nginx's proxy_read_timeout).
	Read time.Duration
	// Request bounds a whole non-streaming exchange (0: none). WebSocket,
	// SSE and gRPC streams are exempt.
	Request time.Duration
	// ClientBody is the longest silence while the client sends its body;
	// then 408 (60s, as nginx's client_body_timeout).
	ClientBody time.Duration
	// Idle is how long an idle kept-alive connection to an instance is
	// kept (60s); gateway-wide, not set per route.
	Idle time.Duration
}

// RetryPolicy says when a failed attempt is tried again on another
// instance of the same pool, as nginx's proxy_next_upstream does.
type RetryPolicy struct {
	// Attempts is how many instances one request may be tried on in all;
	// 0 means 3, 1 means no retry.
	Attempts int
	// On lists the failures that are retried: "error" (no answer: the
	// connection failed or broke before a response), "timeout" (no
	// response head in time), "http_502", "http_503", "http_504". Empty
	// means ["error", "timeout"]. A connection that could not be opened is
	// always retried, whatever the method: nothing was sent.
	On []string
	// NonIdempotent also retries POST, PATCH and the like, which are
	// otherwise retried only with an Idempotency-Key header.
	NonIdempotent bool
}

func (r Route) String() string { return r.Prefix + "=" + r.Service }

// ParseRoute reads a route written as PREFIX=SERVICE, e.g. "/=hello" or
// "/api=api".
func ParseRoute(s string) (Route, error) {
	prefix, service, ok := strings.Cut(s, "=")
	if !ok {
		return Route{}, fmt.Errorf("%w %q: want PREFIX=SERVICE, e.g. /api=api", ErrInvalidRoute, s)
	}
	r, err := Route{Prefix: strings.TrimSpace(prefix), Service: strings.TrimSpace(service)}.normalize()
	if err != nil {
		return Route{}, fmt.Errorf("%w %q: %w", ErrInvalidRoute, s, err)
	}
	return r, nil
}

// normalize checks r and drops a trailing slash, so "/api/" and "/api" are
// one route and matching stays on whole path segments. It also puts Host
// and Headers in the form matchHost and matchHeaders compare, in a new
// Headers map.
func (r Route) normalize() (Route, error) {
	prefix, err := normalizePrefix(r.Prefix)
	if err != nil {
		return r, err
	}
	if err := checkService(r.Service); err != nil {
		return r, err
	}
	host, err := normalizeHost(r.Host)
	if err != nil {
		return r, err
	}
	headers, err := normalizeHeaders(r.Headers)
	if err != nil {
		return r, err
	}
	if err := checkTimeouts(r.Timeouts); err != nil {
		return r, err
	}
	if err := checkRetry(r.Retry); err != nil {
		return r, err
	}
	if r.MaxBody < 0 {
		return r, fmt.Errorf("max body %d must not be negative", r.MaxBody)
	}
	r.Prefix, r.Host, r.Headers = prefix, host, headers
	return r, nil
}

func normalizePrefix(p string) (string, error) {
	switch {
	case p == "":
		return p, errors.New("prefix is empty")
	case p[0] != '/':
		return p, fmt.Errorf("prefix %q must start with \"/\"", p)
	case strings.ContainsAny(p, "?# \t\r\n"):
		return p, fmt.Errorf("prefix %q must be a plain path, without query, fragment or spaces", p)
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	if path.Clean(p) != p {
		return p, fmt.Errorf("prefix %q must be a clean path (no \"//\", \".\" or \"..\")", p)
	}
	if isControlPath(p) {
		return p, fmt.Errorf("prefix %q is reserved for instance control endpoints", p)
	}
	return p, nil
}

func checkService(s string) error {
	switch {
	case s == "":
		return errors.New("service is empty")
	case len(s) > 256 || strings.ContainsAny(s, "/= \t\r\n"):
		return fmt.Errorf("service %q must be 1 to 256 characters without \"/\", \"=\" or spaces", s)
	}
	return nil
}

// checkTimeouts refuses a negative timeout: zero already means the
// gateway's default, so a negative one can only be a mistake.
func checkTimeouts(t Timeouts) error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"connect", t.Connect}, {"response_header", t.ResponseHeader}, {"read", t.Read},
		{"request", t.Request}, {"client_body", t.ClientBody},
	} {
		if f.d < 0 {
			return fmt.Errorf("timeout %s %s must not be negative", f.name, f.d)
		}
	}
	return nil
}

// retryConditions are the failures RetryPolicy.On may name.
var retryConditions = []string{"error", "timeout", "http_502", "http_503", "http_504"}

// maxRetryAttempts bounds RetryPolicy.Attempts: more only multiplies the
// load on a service that is already failing.
const maxRetryAttempts = 10

func checkRetry(p RetryPolicy) error {
	if p.Attempts < 0 || p.Attempts > maxRetryAttempts {
		return fmt.Errorf("retry attempts %d must be 1 to %d (0: the default)", p.Attempts, maxRetryAttempts)
	}
	for _, on := range p.On {
		if !slices.Contains(retryConditions, on) {
			return fmt.Errorf("retry on %q: want one of %s", on, strings.Join(retryConditions, ", "))
		}
	}
	return nil
}

// matches reports whether path is prefix or lies below it, on whole
// segments: "/api" matches "/api" and "/api/x" but not "/apix".
func matches(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// isControlPath reports whether p addresses an instance control endpoint.
// It also checks the cleaned path, because a backend may clean "//" or
// "/x/.." away before routing.
func isControlPath(p string) bool {
	if matches(controlPrefix, p) {
		return true
	}
	if p == "" || p[0] != '/' {
		return false
	}
	return matches(controlPrefix, path.Clean(p))
}
