package gateway

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrInvalidRoute means a route or a gateway configuration is malformed.
var ErrInvalidRoute = errors.New("gateway: invalid route")

// controlPrefix is where instances serve their health and status
// instructions; the edge must never expose it.
const controlPrefix = "/_switchyard"

// Route sends every request whose path is Prefix, or lies below it, to the
// UP instances of Service.
type Route struct {
	Prefix  string
	Service string
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
// one route and matching stays on whole path segments.
func (r Route) normalize() (Route, error) {
	switch {
	case r.Prefix == "":
		return r, errors.New("prefix is empty")
	case r.Prefix[0] != '/':
		return r, fmt.Errorf("prefix %q must start with \"/\"", r.Prefix)
	case strings.ContainsAny(r.Prefix, "?# \t\r\n"):
		return r, fmt.Errorf("prefix %q must be a plain path, without query, fragment or spaces", r.Prefix)
	case r.Service == "":
		return r, errors.New("service is empty")
	case len(r.Service) > 256 || strings.ContainsAny(r.Service, "/= \t\r\n"):
		return r, fmt.Errorf("service %q must be 1 to 256 characters without \"/\", \"=\" or spaces", r.Service)
	}
	if len(r.Prefix) > 1 {
		r.Prefix = strings.TrimSuffix(r.Prefix, "/")
	}
	if path.Clean(r.Prefix) != r.Prefix {
		return r, fmt.Errorf("prefix %q must be a clean path (no \"//\", \".\" or \"..\")", r.Prefix)
	}
	if isControlPath(r.Prefix) {
		return r, fmt.Errorf("prefix %q is reserved for instance control endpoints", r.Prefix)
	}
	return r, nil
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
