package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Match reports whether a request for host and path, carrying h, is one
// this route takes. The path is checked first: it is the cheapest test
// and the one that fails most often.
func (r *Route) Match(host, path string, h http.Header) bool {
	return matches(r.Prefix, path) && r.matchHost(host) && r.matchHeaders(h)
}

// matchHost reports whether host, as a request gives it (any case,
// perhaps with a port, an IPv6 literal in brackets or a trailing dot),
// is r.Host. A wildcard "*.example.com" takes any name below example.com
// but not example.com itself, as in Envoy and nginx.
func (r *Route) matchHost(host string) bool {
	if r.Host == "" {
		return true
	}
	host = requestHost(host)
	if suffix, ok := strings.CutPrefix(r.Host, "*"); ok {
		return len(host) > len(suffix) && strings.EqualFold(host[len(host)-len(suffix):], suffix)
	}
	if strings.EqualFold(host, r.Host) {
		return true
	}
	// One IPv6 address has many spellings ("::1", "0:0::1").
	if strings.IndexByte(r.Host, ':') >= 0 {
		want, err1 := netip.ParseAddr(r.Host)
		got, err2 := netip.ParseAddr(host)
		return err1 == nil && err2 == nil && want == got
	}
	return false
}

// requestHost strips the port, IPv6 brackets and a trailing dot from a
// request's host, without allocating: it runs on every request.
func requestHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if end := strings.IndexByte(h, ']'); end > 0 {
			return h[1:end]
		}
		return h
	}
	// More than one colon is a bare IPv6 address, which has no port.
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// matchHeaders reports whether h carries every header of r.Headers: any
// value when the wanted one is "", else one value exactly equal to it.
func (r *Route) matchHeaders(h http.Header) bool {
	for name, want := range r.Headers {
		values := h.Values(name)
		if len(values) == 0 || (want != "" && !slices.Contains(values, want)) {
			return false
		}
	}
	return true
}

// Host rank in compareRoutes: a named host is more specific than a
// wildcard, which is more specific than any host.
const (
	hostExact = iota
	hostWildcard
	hostAny
)

func hostRank(host string) int {
	switch {
	case host == "":
		return hostAny
	case strings.HasPrefix(host, "*."):
		return hostWildcard
	default:
		return hostExact
	}
}

// compareRoutes orders routes as a table tries them: the first that
// matches a request takes it, so the most specific comes first. As nginx
// picks a server by host and then the longest location prefix:
//
//  1. an exact host before a wildcard host before any host;
//  2. among wildcards, the longer suffix first ("*.api.example.com"
//     before "*.example.com");
//  3. the longer Prefix first ("/api/v2" before "/api" before "/");
//  4. more Headers first, so a canary route ({X-Canary: 1}) is tried
//     before the plain route with the same host and prefix;
//  5. file order (Line); routes still equal (the --route flags, all at
//     Line 0) keep their order when sorted with slices.SortStableFunc.
//
// Two routes that compare equal on 1 to 4 with equal Headers count are
// either disjoint or duplicates, which routeKey catches.
func compareRoutes(a, b *Route) int {
	ra, rb := hostRank(a.Host), hostRank(b.Host)
	if c := cmp.Compare(ra, rb); c != 0 {
		return c
	}
	if ra == hostWildcard {
		if c := cmp.Compare(len(b.Host), len(a.Host)); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(len(b.Prefix), len(a.Prefix)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.Headers), len(a.Headers)); c != 0 {
		return c
	}
	return cmp.Compare(a.Line, b.Line)
}

// routeKey identifies what a normalized route matches: two routes with
// one key would take the same requests, and only the first would ever
// be used.
func routeKey(r *Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Host))
	b.WriteByte(0)
	b.WriteString(r.Prefix)
	names := make([]string, 0, len(r.Headers))
	for name := range r.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		// NUL cannot occur in a valid host, path, header name or value.
		b.WriteByte(0)
		b.WriteString(http.CanonicalHeaderKey(name))
		b.WriteByte('=')
		b.WriteString(r.Headers[name])
	}
	return b.String()
}

// normalizeHost checks a route's Host and returns it as matchHost
// compares it: lowercased, without a trailing dot, an IPv6 address
// without brackets and in its canonical form.
func normalizeHost(host string) (string, error) {
	if host == "" {
		return "", nil
	}
	h := strings.ToLower(host)
	if inner, ok := strings.CutPrefix(h, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			if ip, err := netip.ParseAddr(inner); err == nil && ip.Is6() && ip.Zone() == "" {
				return ip.String(), nil
			}
		}
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("host %q must not carry an IPv6 zone", host)
		}
		return ip.String(), nil
	}
	switch {
	case strings.Contains(h, "://"):
		return "", fmt.Errorf("host %q must be a bare host, without a scheme", host)
	case strings.ContainsAny(h, "/?#"):
		return "", fmt.Errorf("host %q must be a bare host, without a path", host)
	case h == "*" || h == "*.":
		return "", fmt.Errorf("host %q: leave host out to match any host", host)
	}
	if _, port, err := net.SplitHostPort(h); err == nil && port != "" {
		return "", fmt.Errorf("host %q must not carry a port: a route matches the host on any port", host)
	}
	h = strings.TrimSuffix(h, ".")
	if !validHostName(strings.TrimPrefix(h, "*.")) {
		return "", fmt.Errorf("host %q must be a host name, \"*.\" and a host name, or an IP address", host)
	}
	return h, nil
}

// validHostName reports whether s is a lowercase DNS name. Underscores
// are allowed: they are common in internal names and harmless here.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// checkHeaderName checks a header name a route matches on. Host is
// refused: net/http moves it out of the header map, so it would never
// match.
func checkHeaderName(name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("header name %q is not a valid HTTP token", name)
	}
	if http.CanonicalHeaderKey(name) == "Host" {
		return errors.New("header Host is not matched as a header: set the route's host instead")
	}
	return nil
}

// checkHeaderValue checks the value a route wants for header name. A
// value with spaces at either end could never match: servers trim them
// from what they receive.
func checkHeaderValue(name, value string) error {
	if !httpguts.ValidHeaderFieldValue(value) {
		return fmt.Errorf("header %s: value %q must be printable, without control characters", name, value)
	}
	if strings.TrimSpace(value) != value {
		return fmt.Errorf("header %s: value %q must not start or end with spaces", name, value)
	}
	return nil
}

// normalizeHeaders checks headers and returns them under their canonical
// names, in a new map: the caller's is left alone.
func normalizeHeaders(headers map[string]string) (map[string]string, error) {
	if len(headers) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	slices.Sort(names) // the same error for the same input
	out := make(map[string]string, len(headers))
	for _, name := range names {
		if err := checkHeaderName(name); err != nil {
			return nil, err
		}
		canon := http.CanonicalHeaderKey(name)
		if err := checkHeaderValue(canon, headers[name]); err != nil {
			return nil, err
		}
		if _, dup := out[canon]; dup {
			return nil, fmt.Errorf("header %s is given twice", canon)
		}
		out[canon] = headers[name]
	}
	return out, nil
}
