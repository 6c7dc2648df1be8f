package gateway

import (
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRouteMatchHost(t *testing.T) {
	tests := []struct {
		desc  string
		route string // Route.Host, as normalize leaves it
		host  string // as the request gives it
		want  bool
	}{
		{desc: "no host matches any host", route: "", host: "anything.example.org", want: true},
		{desc: "no host matches an empty host", route: "", host: "", want: true},
		{desc: "exact host", route: "api.example.com", host: "api.example.com", want: true},
		{desc: "exact host in another case", route: "api.example.com", host: "API.Example.COM", want: true},
		{desc: "exact host with a port", route: "api.example.com", host: "api.example.com:8443", want: true},
		{desc: "exact host with a trailing dot", route: "api.example.com", host: "api.example.com.", want: true},
		{desc: "exact host with a trailing dot and a port", route: "api.example.com", host: "api.example.com.:80", want: true},
		{desc: "other host", route: "api.example.com", host: "www.example.com", want: false},
		{desc: "exact host does not take a subdomain", route: "example.com", host: "api.example.com", want: false},
		{desc: "exact host does not take a longer name", route: "example.com", host: "badexample.com", want: false},
		{desc: "empty request host", route: "api.example.com", host: "", want: false},
		{desc: "wildcard takes one label below", route: "*.example.com", host: "a.example.com", want: true},
		{desc: "wildcard takes several labels below", route: "*.example.com", host: "a.b.example.com", want: true},
		{desc: "wildcard in another case with a port", route: "*.example.com", host: "A.EXAMPLE.com:8080", want: true},
		{desc: "wildcard with a trailing dot", route: "*.example.com", host: "a.example.com.", want: true},
		{desc: "wildcard does not take the name itself", route: "*.example.com", host: "example.com", want: false},
		{desc: "wildcard does not take an empty label", route: "*.example.com", host: ".example.com", want: false},
		{desc: "wildcard does not take a name sharing the suffix text", route: "*.example.com", host: "aexample.com", want: false},
		{desc: "wildcard does not take another domain", route: "*.example.com", host: "a.example.org", want: false},
		{desc: "IPv4 host with a port", route: "10.0.0.1", host: "10.0.0.1:8080", want: true},
		{desc: "IPv4 host does not take another", route: "10.0.0.1", host: "10.0.0.2", want: false},
		{desc: "IPv6 host in brackets with a port", route: "::1", host: "[::1]:8080", want: true},
		{desc: "IPv6 host in brackets", route: "2001:db8::1", host: "[2001:DB8::1]", want: true},
		{desc: "IPv6 host spelled out in full", route: "2001:db8::1", host: "[2001:db8:0:0:0:0:0:1]", want: true},
		{desc: "bare IPv6 host", route: "::1", host: "::1", want: true},
		{desc: "IPv6 host does not take another", route: "::1", host: "[::2]:80", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := &Route{Host: tt.route, Prefix: "/"}
			if got := r.matchHost(tt.host); got != tt.want {
				t.Fatalf("Route{Host: %q}.matchHost(%q) = %v, want %v", tt.route, tt.host, got, tt.want)
			}
		})
	}
}

func TestRouteMatchHeaders(t *testing.T) {
	tests := []struct {
		desc    string
		route   map[string]string
		request http.Header
		want    bool
	}{
		{desc: "no headers match any request", route: nil, request: http.Header{}, want: true},
		{desc: "exact value", route: map[string]string{"X-Canary": "1"}, request: http.Header{"X-Canary": {"1"}}, want: true},
		{desc: "one of several values", route: map[string]string{"X-Canary": "1"}, request: http.Header{"X-Canary": {"0", "1"}}, want: true},
		{desc: "other value", route: map[string]string{"X-Canary": "1"}, request: http.Header{"X-Canary": {"2"}}, want: false},
		{desc: "value is compared exactly", route: map[string]string{"X-Env": "Prod"}, request: http.Header{"X-Env": {"prod"}}, want: false},
		{desc: "value is not split on commas", route: map[string]string{"X-Canary": "1"}, request: http.Header{"X-Canary": {"1, 2"}}, want: false},
		{desc: "missing header", route: map[string]string{"X-Canary": "1"}, request: http.Header{"X-Other": {"1"}}, want: false},
		{desc: "empty wanted value takes any value", route: map[string]string{"X-Debug": ""}, request: http.Header{"X-Debug": {"yes"}}, want: true},
		{desc: "empty wanted value takes an empty value", route: map[string]string{"X-Debug": ""}, request: http.Header{"X-Debug": {""}}, want: true},
		{desc: "empty wanted value still needs the header", route: map[string]string{"X-Debug": ""}, request: http.Header{}, want: false},
		{desc: "every header is needed", route: map[string]string{"X-Canary": "1", "X-Debug": ""}, request: http.Header{"X-Canary": {"1"}}, want: false},
		{desc: "every header present", route: map[string]string{"X-Canary": "1", "X-Debug": ""}, request: http.Header{"X-Canary": {"1"}, "X-Debug": {"on"}}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := &Route{Prefix: "/", Headers: tt.route}
			if got := r.matchHeaders(tt.request); got != tt.want {
				t.Fatalf("Route{Headers: %v}.matchHeaders(%v) = %v, want %v", tt.route, tt.request, got, tt.want)
			}
		})
	}
}

func TestRouteMatch(t *testing.T) {
	r := &Route{Host: "*.example.com", Prefix: "/api", Headers: map[string]string{"X-Canary": "1"}, Service: "api"}
	canary := http.Header{"X-Canary": {"1"}}
	tests := []struct {
		desc   string
		host   string
		path   string
		header http.Header
		want   bool
	}{
		{desc: "host, path and headers all match", host: "a.example.com", path: "/api/users", header: canary, want: true},
		{desc: "the prefix itself", host: "a.example.com:443", path: "/api", header: canary, want: true},
		{desc: "path outside the prefix", host: "a.example.com", path: "/apix", header: canary, want: false},
		{desc: "host outside the wildcard", host: "example.com", path: "/api", header: canary, want: false},
		{desc: "header missing", host: "a.example.com", path: "/api", header: http.Header{}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := r.Match(tt.host, tt.path, tt.header); got != tt.want {
				t.Fatalf("Match(%q, %q, %v) = %v, want %v", tt.host, tt.path, tt.header, got, tt.want)
			}
		})
	}
}

func TestCompareRoutes(t *testing.T) {
	canary := map[string]string{"X-Canary": "1"}
	tests := []struct {
		desc   string
		first  Route // tried before second
		second Route
	}{
		{desc: "exact host before wildcard host", first: Route{Host: "a.example.com", Prefix: "/"}, second: Route{Host: "*.example.com", Prefix: "/api/v2"}},
		{desc: "wildcard host before any host", first: Route{Host: "*.example.com", Prefix: "/"}, second: Route{Prefix: "/api/v2"}},
		{desc: "exact host before any host", first: Route{Host: "a.example.com", Prefix: "/"}, second: Route{Prefix: "/api", Headers: canary}},
		{desc: "longer wildcard before shorter", first: Route{Host: "*.api.example.com", Prefix: "/"}, second: Route{Host: "*.example.com", Prefix: "/api"}},
		{desc: "longer prefix before shorter", first: Route{Prefix: "/api/v2"}, second: Route{Prefix: "/api", Headers: canary}},
		{desc: "any prefix before the root", first: Route{Prefix: "/a"}, second: Route{Prefix: "/"}},
		{desc: "more headers before fewer", first: Route{Prefix: "/api", Headers: canary, Line: 9}, second: Route{Prefix: "/api", Line: 2}},
		{desc: "earlier line first", first: Route{Prefix: "/a", Line: 3}, second: Route{Prefix: "/b", Line: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if c := compareRoutes(&tt.first, &tt.second); c >= 0 {
				t.Errorf("compareRoutes(first, second) = %d, want < 0", c)
			}
			if c := compareRoutes(&tt.second, &tt.first); c <= 0 {
				t.Errorf("compareRoutes(second, first) = %d, want > 0", c)
			}
		})
	}
}

func TestCompareRoutesSortsATable(t *testing.T) {
	// In file order; the services name the order the table must try them in.
	routes := []Route{
		{Prefix: "/", Service: "9-root", Line: 1},
		{Prefix: "/api", Service: "8-api", Line: 2},
		{Host: "*.example.com", Prefix: "/", Service: "7-wildcard-root", Line: 3},
		{Prefix: "/api", Headers: map[string]string{"X-Canary": "1"}, Service: "6-api-canary", Line: 4},
		{Host: "a.example.com", Prefix: "/", Service: "3-exact-root", Line: 5},
		{Host: "*.a.example.com", Prefix: "/", Service: "4-long-wildcard", Line: 6},
		{Host: "b.example.com", Prefix: "/api", Service: "1-exact-api-line-7", Line: 7},
		{Host: "a.example.com", Prefix: "/api", Service: "2-exact-api-line-8", Line: 8},
		{Host: "*.example.com", Prefix: "/api", Service: "5-wildcard-api", Line: 9},
		{Prefix: "/", Service: "a-flag-route"}, // Line 0: the flag form sorts stably
		{Prefix: "/", Service: "b-flag-route"},
	}
	slices.SortStableFunc(routes, func(a, b Route) int { return compareRoutes(&a, &b) })
	var got []string
	for _, r := range routes {
		got = append(got, r.Service)
	}
	want := []string{
		"1-exact-api-line-7", "2-exact-api-line-8", "3-exact-root", // exact hosts: prefix length, then line
		"4-long-wildcard", "5-wildcard-api", "7-wildcard-root",
		"6-api-canary", "8-api", "a-flag-route", "b-flag-route", "9-root",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted order\n got %v\nwant %v", got, want)
	}
}

func TestRouteKey(t *testing.T) {
	tests := []struct {
		desc string
		a, b Route
		same bool
	}{
		{desc: "same prefix, other service", a: Route{Prefix: "/api", Service: "a"}, b: Route{Prefix: "/api", Service: "b"}, same: true},
		{desc: "host in another case", a: Route{Host: "A.example.com", Prefix: "/"}, b: Route{Host: "a.example.com", Prefix: "/"}, same: true},
		{desc: "headers in another order", a: Route{Prefix: "/", Headers: map[string]string{"A": "1", "B": "2"}}, b: Route{Prefix: "/", Headers: map[string]string{"B": "2", "A": "1"}}, same: true},
		{desc: "header name in another case", a: Route{Prefix: "/", Headers: map[string]string{"x-canary": "1"}}, b: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "1"}}, same: true},
		{desc: "other settings do not count", a: Route{Prefix: "/", StripPrefix: true, MaxBody: 1, Line: 3}, b: Route{Prefix: "/", Timeouts: Timeouts{Read: time.Second}, Line: 9}, same: true},
		{desc: "other prefix", a: Route{Prefix: "/api"}, b: Route{Prefix: "/api2"}, same: false},
		{desc: "host against no host", a: Route{Host: "a.example.com", Prefix: "/"}, b: Route{Prefix: "/"}, same: false},
		{desc: "wildcard against exact host", a: Route{Host: "*.example.com", Prefix: "/"}, b: Route{Host: "example.com", Prefix: "/"}, same: false},
		{desc: "header against none", a: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "1"}}, b: Route{Prefix: "/"}, same: false},
		{desc: "other header value", a: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "1"}}, b: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "2"}}, same: false},
		{desc: "any value against a value", a: Route{Prefix: "/", Headers: map[string]string{"X-Canary": ""}}, b: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "1"}}, same: false},
		{desc: "parts are not run together", a: Route{Host: "a", Prefix: "/b"}, b: Route{Host: "a/", Prefix: "b"}, same: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if same := routeKey(&tt.a) == routeKey(&tt.b); same != tt.same {
				t.Fatalf("routeKey(%+v) == routeKey(%+v) is %v, want %v", tt.a, tt.b, same, tt.same)
			}
		})
	}
}

func TestRouteNormalizeMatchFields(t *testing.T) {
	tests := []struct {
		desc string
		in   Route
		want Route
		err  string
	}{
		{desc: "host is lowercased without its trailing dot", in: Route{Host: "API.Example.com.", Prefix: "/", Service: "s"}, want: Route{Host: "api.example.com", Prefix: "/", Service: "s"}},
		{desc: "IPv6 host loses its brackets", in: Route{Host: "[::1]", Prefix: "/", Service: "s"}, want: Route{Host: "::1", Prefix: "/", Service: "s"}},
		{desc: "header names are made canonical", in: Route{Prefix: "/", Service: "s", Headers: map[string]string{"x-canary": "1"}}, want: Route{Prefix: "/", Service: "s", Headers: map[string]string{"X-Canary": "1"}}},
		{desc: "empty headers become nil", in: Route{Prefix: "/", Service: "s", Headers: map[string]string{}}, want: Route{Prefix: "/", Service: "s"}},
		{
			desc: "other settings are kept",
			in:   Route{Prefix: "/a/", Service: "s", StripPrefix: true, PreserveHost: true, Timeouts: Timeouts{Connect: time.Second}, Retry: RetryPolicy{Attempts: 2, On: []string{"http_504"}}, MaxBody: 10, Line: 4},
			want: Route{Prefix: "/a", Service: "s", StripPrefix: true, PreserveHost: true, Timeouts: Timeouts{Connect: time.Second}, Retry: RetryPolicy{Attempts: 2, On: []string{"http_504"}}, MaxBody: 10, Line: 4},
		},
		{desc: "host with a port is refused", in: Route{Host: "a.example.com:80", Prefix: "/", Service: "s"}, err: "must not carry a port"},
		{desc: "IPv6 zone is refused", in: Route{Host: "fe80::1%eth0", Prefix: "/", Service: "s"}, err: "zone"},
		{desc: "header name that is no token is refused", in: Route{Prefix: "/", Service: "s", Headers: map[string]string{"X:Y": "1"}}, err: "not a valid HTTP token"},
		{desc: "one header in two cases is refused", in: Route{Prefix: "/", Service: "s", Headers: map[string]string{"x-a": "1", "X-A": "2"}}, err: "header X-A is given twice"},
		{desc: "header value with a newline is refused", in: Route{Prefix: "/", Service: "s", Headers: map[string]string{"X-A": "1\r\nX-B: 2"}}, err: "must be printable"},
		{desc: "negative timeout is refused", in: Route{Prefix: "/", Service: "s", Timeouts: Timeouts{ClientBody: -time.Second}}, err: "timeout client_body -1s must not be negative"},
		{desc: "too many attempts are refused", in: Route{Prefix: "/", Service: "s", Retry: RetryPolicy{Attempts: 11}}, err: "retry attempts 11 must be 1 to 10"},
		{desc: "unknown retry condition is refused", in: Route{Prefix: "/", Service: "s", Retry: RetryPolicy{On: []string{"5xx"}}}, err: `retry on "5xx"`},
		{desc: "negative max body is refused", in: Route{Prefix: "/", Service: "s", MaxBody: -1}, err: "max body -1 must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var before map[string]string
			if tt.in.Headers != nil {
				before = maps.Clone(tt.in.Headers)
			}
			got, err := tt.in.normalize()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("normalize(%+v) = %+v, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalize(%+v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("normalize(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
			if before != nil && !reflect.DeepEqual(tt.in.Headers, before) {
				t.Fatalf("normalize changed the caller's headers to %v", tt.in.Headers)
			}
		})
	}
}
