package gateway

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// yamlLines joins lines into a file, so that a test's line numbers are
// the indexes of its lines plus one.
func yamlLines(lines ...string) []byte {
	return []byte(strings.Join(lines, "\n") + "\n")
}

func TestLoadConfigExample(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "deployments", "gateway.example.yaml"))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	def := Timeouts{Connect: 5 * time.Second, ResponseHeader: 60 * time.Second, Read: 60 * time.Second, ClientBody: 60 * time.Second}
	api := def
	api.ResponseHeader = 5 * time.Second
	uploads := def
	uploads.ClientBody, uploads.Request = 5*time.Minute, 10*time.Minute
	defRetry := RetryPolicy{Attempts: 3, On: []string{"error", "timeout"}}
	want := []Route{
		{
			Host: "*.example.com", Prefix: "/api", Headers: map[string]string{"X-Canary": "1"}, Service: "api-canary",
			StripPrefix: true, Timeouts: api, Retry: RetryPolicy{Attempts: 2, On: []string{"error", "http_503"}},
			MaxBody: 10 << 20, Line: 18,
		},
		{Host: "*.example.com", Prefix: "/api", Service: "api", StripPrefix: true, Timeouts: api, Retry: defRetry, MaxBody: 10 << 20, Line: 28},
		{Host: "admin.example.com", Prefix: "/", Service: "admin", PreserveHost: true, Timeouts: def, Retry: RetryPolicy{Attempts: 1, On: []string{"error", "timeout"}}, Line: 37},
		{Prefix: "/uploads", Service: "uploads", Timeouts: uploads, Retry: defRetry, MaxBody: 1 << 30, Line: 45},
		{Prefix: "/", Service: "web", Timeouts: def, Retry: defRetry, Line: 51},
	}
	if len(cfg.Routes) != len(want) {
		t.Fatalf("got %d routes, want %d: %+v", len(cfg.Routes), len(want), cfg.Routes)
	}
	if cfg.PreviewListen != "127.0.0.1:8087" {
		t.Errorf("preview_listen = %q, want 127.0.0.1:8087", cfg.PreviewListen)
	}
	for i := range want {
		if !reflect.DeepEqual(cfg.Routes[i], want[i]) {
			t.Errorf("route %d:\n got %+v\nwant %+v", i+1, cfg.Routes[i], want[i])
		}
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxConfigSize+1), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err := LoadConfig(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error %v does not wrap fs.ErrNotExist", err)
	}
	_, err = LoadConfig(big)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), big+": file is larger than 1 MiB") {
		t.Errorf("file over 1 MiB: error %v, want one naming the file and the limit, wrapping ErrInvalidConfig", err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	route := []string{
		"routes:",
		"  - match:",
		"      prefix: /api",
		"    service: api",
	}
	withRoute := func(lines ...string) []byte { return yamlLines(append(append([]string{}, route...), lines...)...) }

	tests := []struct {
		desc  string
		in    []byte
		where string // "gateway.yaml:LINE: " and, for a route, "route N: "
		msg   string // names the field at fault
		route bool   // also wraps ErrInvalidRoute
	}{
		{desc: "empty file", in: nil, where: "gateway.yaml: ", msg: "file is empty"},
		{desc: "file of comments only", in: yamlLines("# nothing yet"), where: "gateway.yaml: ", msg: "file is empty"},
		{desc: "null document", in: yamlLines("~"), where: "gateway.yaml:1: ", msg: "file is empty"},
		{desc: "list at the root", in: yamlLines("- /api=api"), where: "gateway.yaml:1: ", msg: "want a mapping with routes, got a list"},
		{desc: "scalar at the root", in: yamlLines("/api=api"), where: "gateway.yaml:1: ", msg: `want a mapping with routes, got "/api=api"`},
		{desc: "YAML syntax error", in: yamlLines("routes:", "  - match: {prefix: /api}", "    service: api: x"), where: "gateway.yaml:3: ", msg: "YAML syntax: mapping values are not allowed"},
		{desc: "tab in the indentation", in: yamlLines("routes:", "  - match: {prefix: /api}", "\tservice: api"), where: "gateway.yaml:3: ", msg: "YAML syntax: found character that cannot start any token"},
		{desc: "second document", in: yamlLines(append(append([]string{}, route...), "---", "routes: []")...), where: "gateway.yaml:6: ", msg: "only one YAML document"},
		{desc: "file over 1 MiB", in: append(withRoute(), make([]byte, maxConfigSize)...), where: "gateway.yaml: ", msg: "larger than 1 MiB"},
		{desc: "unknown top-level key", in: withRoute("route: /x"), where: "gateway.yaml:5: ", msg: `unknown key "route" in the config`},
		{desc: "top-level key written twice", in: withRoute("routes: []"), where: "gateway.yaml:5: ", msg: `key "routes" in the config is written twice (first at line 1)`},
		{desc: "preview_listen without a port", in: withRoute("preview_listen: 127.0.0.1"), where: "gateway.yaml:5: ", msg: `preview_listen "127.0.0.1" must be an address such as 127.0.0.1:8087`},
		{desc: "preview_listen without a value", in: withRoute("preview_listen:"), where: "gateway.yaml:5: ", msg: `preview_listen has no value`},
		{desc: "no routes key", in: yamlLines("defaults:", "  max_body: 1MB"), where: "gateway.yaml:1: ", msg: "routes: at least one route is required"},
		{desc: "empty routes list", in: yamlLines("routes: []"), where: "gateway.yaml:1: ", msg: "routes: at least one route is required"},
		{desc: "routes without items", in: yamlLines("routes:"), where: "gateway.yaml:1: ", msg: "routes: at least one route is required"},
		{desc: "routes not a list", in: yamlLines("routes:", "  /api: api"), where: "gateway.yaml:2: ", msg: "routes must be a list of routes, got a mapping"},
		{desc: "route in flag form", in: yamlLines("routes:", "  - /api=api"), where: "gateway.yaml:2: route 1: ", msg: `route must be a mapping, got "/api=api"`, route: true},
		{desc: "empty route item", in: yamlLines("routes:", "  -", "  - match: {prefix: /}", "    service: web"), where: "gateway.yaml:2: route 1: ", msg: "route is empty", route: true},
		{desc: "unknown route key", in: withRoute("    servce: api2"), where: "gateway.yaml:5: route 1: ", msg: `unknown key "servce" in route`, route: true},
		{desc: "route key written twice", in: withRoute("    service: api2"), where: "gateway.yaml:5: route 1: ", msg: `key "service" in route is written twice (first at line 4)`, route: true},
		{desc: "unknown match key", in: yamlLines("routes:", "  - match:", "      prefix: /", "      hots: a.example.com", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: `unknown key "hots" in match`, route: true},
		{desc: "missing match", in: yamlLines("routes:", "  - match: {prefix: /}", "    service: web", "  - service: api"), where: "gateway.yaml:4: route 2: ", msg: "match is required", route: true},
		{desc: "missing prefix", in: yamlLines("routes:", "  - match:", "      host: a.example.com", "    service: web"), where: "gateway.yaml:3: route 1: ", msg: "match.prefix is required", route: true},
		{desc: "prefix without slash", in: yamlLines("routes:", "  - match:", "      prefix: api", "    service: api"), where: "gateway.yaml:3: route 1: ", msg: `prefix "api" must start with "/"`, route: true},
		{desc: "prefix not clean", in: yamlLines("routes:", "  - match:", "      prefix: /a//b", "    service: api"), where: "gateway.yaml:3: route 1: ", msg: `prefix "/a//b" must be a clean path`, route: true},
		{desc: "prefix with query", in: yamlLines("routes:", "  - match:", "      prefix: /a?b=1", "    service: api"), where: "gateway.yaml:3: route 1: ", msg: "prefix \"/a?b=1\" must be a plain path", route: true},
		{desc: "control prefix is reserved", in: yamlLines("routes:", "  - match:", "      prefix: /_switchyard/status", "    service: api"), where: "gateway.yaml:3: route 1: ", msg: "reserved for instance control endpoints", route: true},
		{desc: "prefix is a list", in: yamlLines("routes:", "  - match:", "      prefix: [/a, /b]", "    service: api"), where: "gateway.yaml:3: route 1: ", msg: "match.prefix must be a single value, got a list", route: true},
		{desc: "missing service", in: yamlLines("routes:", "  - match:", "      prefix: /"), where: "gateway.yaml:2: route 1: ", msg: "service is required", route: true},
		{desc: "empty service", in: yamlLines("routes:", "  - match: {prefix: /}", "    service:"), where: "gateway.yaml:3: route 1: ", msg: "service is empty", route: true},
		{desc: "service with a slash", in: yamlLines("routes:", "  - match: {prefix: /}", "    service: a/b"), where: "gateway.yaml:3: route 1: ", msg: `service "a/b" must be 1 to 256 characters`, route: true},
		{desc: "host with a port", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: a.example.com:8080", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: `host "a.example.com:8080" must not carry a port`, route: true},
		{desc: "host with a scheme", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: https://a.example.com", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "without a scheme", route: true},
		{desc: "host with a path", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: a.example.com/x", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "without a path", route: true},
		{desc: "wildcard inside the host", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: api.*.example.com", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: `host "api.*.example.com" must be a host name`, route: true},
		{desc: "bare wildcard host", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: '*'", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "leave host out to match any host", route: true},
		{desc: "host label too long", in: yamlLines("routes:", "  - match:", "      prefix: /", "      host: "+strings.Repeat("a", 64)+".example.com", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "must be a host name", route: true},
		{desc: "header name not a token", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers:", "        X Canary: 1", "    service: web"), where: "gateway.yaml:5: route 1: ", msg: `header name "X Canary" is not a valid HTTP token`, route: true},
		{desc: "Host as a header", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers: {host: a.example.com}", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "header Host is not matched as a header: set the route's host", route: true},
		{desc: "header value with a control character", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers:", `        X-Canary: "a\x01"`, "    service: web"), where: "gateway.yaml:5: route 1: ", msg: "header X-Canary: value", route: true},
		{desc: "header value with a leading space", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers:", `        X-Canary: " 1"`, "    service: web"), where: "gateway.yaml:5: route 1: ", msg: "must not start or end with spaces", route: true},
		{desc: "header given twice in two cases", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers:", "        x-canary: 1", "        X-Canary: 2", "    service: web"), where: "gateway.yaml:6: route 1: ", msg: "header X-Canary is written twice in match.headers (first at line 5)", route: true},
		{desc: "headers not a mapping", in: yamlLines("routes:", "  - match:", "      prefix: /", "      headers: [X-Canary]", "    service: web"), where: "gateway.yaml:4: route 1: ", msg: "match.headers must be a mapping", route: true},
		{desc: "duration without a unit", in: withRoute("    timeouts: {connect: 5}"), where: "gateway.yaml:5: route 1: ", msg: `timeouts.connect "5" is not a duration`, route: true},
		{desc: "negative duration", in: withRoute("    timeouts:", "      read: -1s"), where: "gateway.yaml:6: route 1: ", msg: `timeouts.read "-1s" must not be negative`, route: true},
		{desc: "duration with no value", in: withRoute("    timeouts:", "      request:"), where: "gateway.yaml:6: route 1: ", msg: "timeouts.request has no value", route: true},
		{desc: "unknown timeout", in: withRoute("    timeouts: {idle: 5s}"), where: "gateway.yaml:5: route 1: ", msg: `unknown key "idle" in timeouts`, route: true},
		{desc: "bad default duration", in: yamlLines("defaults:", "  timeouts:", "    client_body: soon", "routes:", "  - match: {prefix: /}", "    service: web"), where: "gateway.yaml:3: ", msg: `defaults.timeouts.client_body "soon" is not a duration`},
		{desc: "unknown defaults key", in: yamlLines("defaults:", "  strip_prefix: true", "routes:", "  - match: {prefix: /}", "    service: web"), where: "gateway.yaml:2: ", msg: `unknown key "strip_prefix" in defaults`},
		{desc: "negative size", in: withRoute("    max_body: -1"), where: "gateway.yaml:5: route 1: ", msg: `max_body "-1" must not be negative`, route: true},
		{desc: "size that overflows", in: withRoute("    max_body: 9000000000GiB"), where: "gateway.yaml:5: route 1: ", msg: `max_body "9000000000GiB" is too large`, route: true},
		{desc: "size with an unknown unit", in: withRoute("    max_body: 10TB"), where: "gateway.yaml:5: route 1: ", msg: `max_body "10TB" is not a size`, route: true},
		{desc: "fractional size", in: withRoute("    max_body: 1.5MB"), where: "gateway.yaml:5: route 1: ", msg: `max_body "1.5MB" is not a size`, route: true},
		{desc: "bad default size", in: yamlLines("defaults:", "  max_body: lots", "routes:", "  - match: {prefix: /}", "    service: web"), where: "gateway.yaml:2: ", msg: `defaults.max_body "lots" is not a size`},
		{desc: "zero attempts", in: withRoute("    retry: {attempts: 0}"), where: "gateway.yaml:5: route 1: ", msg: `retry.attempts "0" must be a whole number from 1 to 10`, route: true},
		{desc: "too many attempts", in: withRoute("    retry:", "      attempts: 11"), where: "gateway.yaml:6: route 1: ", msg: `retry.attempts "11" must be a whole number from 1 to 10`, route: true},
		{desc: "attempts not a number", in: withRoute("    retry:", "      attempts: two"), where: "gateway.yaml:6: route 1: ", msg: `retry.attempts "two"`, route: true},
		{desc: "unknown retry condition", in: withRoute("    retry:", "      on:", "        - error", "        - http_500"), where: "gateway.yaml:8: route 1: ", msg: `retry.on: "http_500" is not one of error, timeout, http_502, http_503, http_504`, route: true},
		{desc: "empty retry list", in: withRoute("    retry: {on: []}"), where: "gateway.yaml:5: route 1: ", msg: "retry.on is empty", route: true},
		{desc: "retry list as a scalar", in: withRoute("    retry: {on: error}"), where: "gateway.yaml:5: route 1: ", msg: "retry.on must be a list", route: true},
		{desc: "bad default retry condition", in: yamlLines("defaults:", "  retry: {on: [eror]}", "routes:", "  - match: {prefix: /}", "    service: web"), where: "gateway.yaml:2: ", msg: `defaults.retry.on: "eror" is not one of`},
		{desc: "non-boolean flag", in: withRoute("    strip_prefix: maybe"), where: "gateway.yaml:5: route 1: ", msg: `strip_prefix "maybe" must be true or false`, route: true},
		{desc: "non-boolean non_idempotent", in: withRoute("    retry: {non_idempotent: 2}"), where: "gateway.yaml:5: route 1: ", msg: `retry.non_idempotent "2" must be true or false`, route: true},
		{
			desc: "two routes with the same match name both lines",
			in: yamlLines(
				"routes:",
				"  - match: {host: A.example.com, prefix: /api, headers: {x-canary: '1'}}",
				"    service: a",
				"  - match: {prefix: /}",
				"    service: web",
				"  - match: {host: a.example.com., prefix: /api/, headers: {X-Canary: '1'}}",
				"    service: b",
			),
			where: "gateway.yaml:6: route 3: ",
			msg:   `same match as route 1 (line 2): host "a.example.com", prefix "/api", headers X-Canary="1"`,
			route: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := ParseConfig("gateway.yaml", tt.in)
			if err == nil {
				t.Fatalf("ParseConfig = %+v, want an error", cfg)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %q does not wrap ErrInvalidConfig", err)
			}
			if got := errors.Is(err, ErrInvalidRoute); got != tt.route {
				t.Errorf("error %q: wraps ErrInvalidRoute = %v, want %v", err, got, tt.route)
			}
			if !strings.HasPrefix(err.Error(), tt.where) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q, want it to start with %q and contain %q", err, tt.where, tt.msg)
			}
		})
	}
}

// routeYAML is a config of one route that writes extra lines.
func routeYAML(extra ...string) []byte {
	return yamlLines(append([]string{"routes:", "  - match: {prefix: /}", "    service: web"}, extra...)...)
}

func TestParseConfigSizes(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want int64
	}{
		{desc: "plain bytes", in: "1048576", want: 1 << 20},
		{desc: "zero is no limit", in: "0", want: 0},
		{desc: "bytes unit", in: "512B", want: 512},
		{desc: "kilobytes are 1000s", in: "2KB", want: 2000},
		{desc: "megabytes are 1000s", in: "10MB", want: 10_000_000},
		{desc: "gigabytes are 1000s", in: "1GB", want: 1_000_000_000},
		{desc: "kibibytes are 1024s", in: "512KiB", want: 512 << 10},
		{desc: "mebibytes are 1024s", in: "10MiB", want: 10 << 20},
		{desc: "gibibytes are 1024s", in: "1GiB", want: 1 << 30},
		{desc: "unit after a space", in: "10 MiB", want: 10 << 20},
		{desc: "unit in any case", in: "10mib", want: 10 << 20},
		{desc: "largest byte count", in: "9223372036854775807", want: 1<<63 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := ParseConfig("gateway.yaml", routeYAML("    max_body: "+tt.in))
			if err != nil {
				t.Fatalf("max_body %s: %v", tt.in, err)
			}
			if got := cfg.Routes[0].MaxBody; got != tt.want {
				t.Fatalf("max_body %s = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseConfigDurations(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want time.Duration
	}{
		{desc: "seconds", in: "5s", want: 5 * time.Second},
		{desc: "compound", in: "1m30s", want: 90 * time.Second},
		{desc: "milliseconds", in: "250ms", want: 250 * time.Millisecond},
		{desc: "hours", in: "2h", want: 2 * time.Hour},
		{desc: "zero is the gateway default", in: "0s", want: 0},
		{desc: "bare zero", in: "0", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := ParseConfig("gateway.yaml", routeYAML("    timeouts: {read: "+tt.in+"}"))
			if err != nil {
				t.Fatalf("read %s: %v", tt.in, err)
			}
			if got := cfg.Routes[0].Timeouts.Read; got != tt.want {
				t.Fatalf("read %s = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	defaults := []string{
		"defaults:",
		"  timeouts: {connect: 2s, response_header: 30s, request: 1m}",
		"  retry: {attempts: 4, on: [error, http_502], non_idempotent: true}",
		"  max_body: 1MiB",
	}
	tests := []struct {
		desc  string
		route []string // lines of the route after its match and service
		want  func(r *Route)
	}{
		{desc: "a route that sets nothing takes every default", want: func(*Route) {}},
		{
			desc:  "a route setting one timeout keeps the other defaults",
			route: []string{"    timeouts: {response_header: 5s}"},
			want:  func(r *Route) { r.Timeouts.ResponseHeader = 5 * time.Second },
		},
		{
			desc:  "a route setting a timeout the defaults leave out adds it",
			route: []string{"    timeouts: {client_body: 10s}"},
			want:  func(r *Route) { r.Timeouts.ClientBody = 10 * time.Second },
		},
		{
			desc:  "a written zero timeout overrides the default",
			route: []string{"    timeouts: {request: 0s}"},
			want:  func(r *Route) { r.Timeouts.Request = 0 },
		},
		{
			desc:  "a route setting attempts keeps the default retry list",
			route: []string{"    retry: {attempts: 1}"},
			want:  func(r *Route) { r.Retry.Attempts = 1 },
		},
		{
			desc:  "a route's retry list replaces the default one",
			route: []string{"    retry: {on: [timeout]}"},
			want:  func(r *Route) { r.Retry.On = []string{"timeout"} },
		},
		{
			desc:  "a written false overrides a default true",
			route: []string{"    retry: {non_idempotent: false}"},
			want:  func(r *Route) { r.Retry.NonIdempotent = false },
		},
		{
			desc:  "a written zero max_body lifts the default limit",
			route: []string{"    max_body: 0"},
			want:  func(r *Route) { r.MaxBody = 0 },
		},
		{
			desc:  "a route's own max_body wins",
			route: []string{"    max_body: 5MB"},
			want:  func(r *Route) { r.MaxBody = 5_000_000 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			lines := append(append([]string{}, defaults...), "routes:", "  - match: {prefix: /}", "    service: web")
			cfg, err := ParseConfig("gateway.yaml", yamlLines(append(lines, tt.route...)...))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			want := Route{
				Prefix: "/", Service: "web", Line: 6,
				Timeouts: Timeouts{Connect: 2 * time.Second, ResponseHeader: 30 * time.Second, Request: time.Minute},
				Retry:    RetryPolicy{Attempts: 4, On: []string{"error", "http_502"}, NonIdempotent: true},
				MaxBody:  1 << 20,
			}
			tt.want(&want)
			if got := cfg.Routes[0]; !reflect.DeepEqual(got, want) {
				t.Fatalf("route\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseConfigDefaultsAreNotShared(t *testing.T) {
	cfg, err := ParseConfig("gateway.yaml", yamlLines(
		"defaults: {retry: {on: [error, timeout]}}",
		"routes:",
		"  - match: {prefix: /a}",
		"    service: a",
		"  - match: {prefix: /b}",
		"    service: b",
	))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	cfg.Routes[0].Retry.On[0] = "changed"
	if got := cfg.Routes[1].Retry.On[0]; got != "error" {
		t.Fatalf("changing route 1's retry list changed route 2's to %q", got)
	}
}

func TestParseConfigNormalizesMatch(t *testing.T) {
	tests := []struct {
		desc  string
		match string
		want  Route
	}{
		{desc: "host is lowercased", match: "{host: API.Example.COM, prefix: /}", want: Route{Host: "api.example.com", Prefix: "/"}},
		{desc: "trailing dot of the host is dropped", match: "{host: api.example.com., prefix: /}", want: Route{Host: "api.example.com", Prefix: "/"}},
		{desc: "wildcard host", match: "{host: '*.Example.com', prefix: /}", want: Route{Host: "*.example.com", Prefix: "/"}},
		{desc: "IPv4 host", match: "{host: 10.0.0.1, prefix: /}", want: Route{Host: "10.0.0.1", Prefix: "/"}},
		{desc: "IPv6 host in brackets", match: "{host: '[2001:DB8:0::1]', prefix: /}", want: Route{Host: "2001:db8::1", Prefix: "/"}},
		{desc: "IPv6 host without brackets", match: "{host: '::1', prefix: /}", want: Route{Host: "::1", Prefix: "/"}},
		{desc: "empty host is any host", match: "{host: '', prefix: /}", want: Route{Prefix: "/"}},
		{desc: "trailing slash of the prefix is dropped", match: "{prefix: /api/}", want: Route{Prefix: "/api"}},
		{desc: "header names are canonical", match: "{prefix: /, headers: {x-canary: '1'}}", want: Route{Prefix: "/", Headers: map[string]string{"X-Canary": "1"}}},
		{desc: "header without a value matches any value", match: "{prefix: /, headers: {X-Debug: }}", want: Route{Prefix: "/", Headers: map[string]string{"X-Debug": ""}}},
		{desc: "numeric header value is its text", match: "{prefix: /, headers: {X-Version: 2}}", want: Route{Prefix: "/", Headers: map[string]string{"X-Version": "2"}}},
		{desc: "empty headers are none", match: "{prefix: /, headers: {}}", want: Route{Prefix: "/"}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := ParseConfig("gateway.yaml", yamlLines("routes:", "  - match: "+tt.match, "    service: web"))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			tt.want.Service, tt.want.Line = "web", 2
			if got := cfg.Routes[0]; !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("route\n got %+v\nwant %+v", got, tt.want)
			}
			if again, err := cfg.Routes[0].normalize(); err != nil || !reflect.DeepEqual(again, tt.want) {
				t.Fatalf("normalize of a loaded route = %+v, %v; want it unchanged", again, err)
			}
		})
	}
}

func TestParseConfigAliases(t *testing.T) {
	cfg, err := ParseConfig("gateway.yaml", yamlLines(
		"routes:",
		"  - match: {prefix: /a, headers: &canary {X-Canary: '1'}}",
		"    service: a",
		"  - match: {prefix: /b, headers: *canary}",
		"    service: b",
	))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if got := cfg.Routes[1].Headers; !reflect.DeepEqual(got, map[string]string{"X-Canary": "1"}) {
		t.Fatalf("aliased headers = %v", got)
	}
}

func TestParseConfigRouteLines(t *testing.T) {
	cfg, err := ParseConfig("gateway.yaml", yamlLines(
		"# routes of the edge",
		"routes:",
		"",
		"  - match:",
		"      prefix: /a",
		"    service: a",
		"  # the rest",
		"  - service: b",
		"    match: {prefix: /b}",
	))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if got := []int{cfg.Routes[0].Line, cfg.Routes[1].Line}; !reflect.DeepEqual(got, []int{4, 8}) {
		t.Fatalf("route lines = %v, want [4 8]", got)
	}
}

func TestParseConfigSameHostAndPrefixWithOtherHeadersIsNoDuplicate(t *testing.T) {
	cfg, err := ParseConfig("gateway.yaml", yamlLines(
		"routes:",
		"  - match: {host: a.example.com, prefix: /api, headers: {X-Canary: '1'}}",
		"    service: canary",
		"  - match: {host: a.example.com, prefix: /api}",
		"    service: api",
		"  - match: {host: '*.example.com', prefix: /api}",
		"    service: api",
		"  - match: {prefix: /api}",
		"    service: api",
	))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if len(cfg.Routes) != 4 {
		t.Fatalf("got %d routes, want 4", len(cfg.Routes))
	}
}
