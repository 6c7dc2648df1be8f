//go:build linux

package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// The conformance suite lists each rule the edge router keeps, at the wire
// and in what it forwards, as one case, and runs every case against four
// targets: the gateway as it runs by default (its HTTP/1.1 engine, engine.go,
// for GET and HEAD, net/http's server for the rest), the gateway with
// net/http's server and its fast path to the instances, the gateway with
// every request through net/http's server and Transport (every path must
// behave the same), and nginx 1.22 configured to the same settings. Where nginx keeps
// the same rule it passes the same case, which shows the expectation is
// the ordinary one of an edge router; where it has no such rule, or keeps
// it with another answer, the case says so and why.

// The settings all the targets share. The timeouts are short so that the
// cases that wait for them are quick.
const (
	confHeaderTimeout   = 300 * time.Millisecond // gateway ClientHeaderTimeout, nginx client_header_timeout
	confBodyTimeout     = 300 * time.Millisecond // route Timeouts.ClientBody, nginx client_body_timeout (/stall)
	confUpstreamTimeout = 300 * time.Millisecond // route Timeouts.ResponseHeader, nginx proxy_read_timeout (/silent)
	confMaxBody         = 1024                   // route MaxBody, nginx client_max_body_size 1k (/small)
)

// confPath is how a gateway target serves HTTP/1.1: its own engine for
// GET and HEAD (the default), net/http's server with the fast path to the
// instances, or net/http all the way.
type confPath int

const (
	confEngine confPath = iota
	confNoEngine
	confNoFastPath
)

// confTarget is one implementation of the rules.
type confTarget struct {
	name    string
	addr    string // host:port, trusting no proxy
	trusted string // host:port, the same rules with 127.0.0.1/32 as a trusted proxy
	nginx   bool
	logs    []*logtest.Hook // the gateway's log entries, shown when a case fails
}

// confEnv is what stands behind every target.
type confEnv struct {
	web, api *confBackend
	silent   string // accepts connections and never answers
	dead     string // refuses connections
}

// confSeen is what an instance received, as it tells it in its answer.
type confSeen struct {
	Backend  string      `json:"backend"`
	Method   string      `json:"method"`
	URI      string      `json:"uri"` // the request target exactly as received
	Host     string      `json:"host"`
	Header   http.Header `json:"header"`
	BodySize int64       `json:"body_size"`
	BodySHA  string      `json:"body_sha256"`
	BodyErr  string      `json:"body_err,omitempty"` // the body did not arrive whole
}

// confBackend is a real HTTP server standing in for an instance. It
// answers every request with what it received, as JSON, and refuses every
// protocol switch with 400. A request with X-Read-Body-After: DURATION has
// its body read only after that long, as by a slow instance.
type confBackend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	seen []confSeen
}

func newConfBackend(t *testing.T, name string) *confBackend {
	b := &confBackend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := confSeen{Backend: name, Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()}
		if _, ok := r.Header["Upgrade"]; ok {
			b.note(s)
			http.Error(w, "no protocol switch here", http.StatusBadRequest)
			return
		}
		if d, err := time.ParseDuration(r.Header.Get("X-Read-Body-After")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		s.BodySize, s.BodySHA = n, hex.EncodeToString(h.Sum(nil))
		if err != nil {
			s.BodyErr = err.Error()
		}
		b.note(s)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *confBackend) note(s confSeen) {
	b.mu.Lock()
	b.seen = append(b.seen, s)
	b.mu.Unlock()
}

func (b *confBackend) addr() string { return b.srv.Listener.Addr().String() }

// of is what the backend received carrying X-Case: id.
func (b *confBackend) of(id string) []confSeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []confSeen
	for _, s := range b.seen {
		if s.Header.Get("X-Case") == id {
			out = append(out, s)
		}
	}
	return out
}

// confGateway runs a gateway with the suite's routes and settings.
func confGateway(t *testing.T, env *confEnv, path confPath, trusted bool) (string, *logtest.Hook) {
	cfg := Config{
		ID: "gw-conformance",
		Routes: []Route{
			{Prefix: "/", Service: "web"},
			{Prefix: "/api", Service: "api", StripPrefix: true},
			{Prefix: "/preserve", Service: "web", PreserveHost: true},
			{Prefix: "/small", Service: "web", MaxBody: confMaxBody},
			{Prefix: "/stall", Service: "web", Timeouts: Timeouts{ClientBody: confBodyTimeout}},
			{Prefix: "/silent", Service: "silent", Timeouts: Timeouts{ResponseHeader: confUpstreamTimeout}},
			{Prefix: "/dead", Service: "dead"},
		},
		ClientHeaderTimeout: confHeaderTimeout,
		NoFastPath:          path == confNoFastPath,
		NoEngine:            path == confNoEngine,
	}
	log, hook := quietLog()
	log.Level = logrus.WarnLevel
	cfg.Log = log
	if trusted {
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	e := runEdge(t, cfg)
	for svc, addr := range map[string]string{"web": env.web.addr(), "api": env.api.addr(), "silent": env.silent, "dead": env.dead} {
		e.up(svc, 1, instanceAt(t, svc+"-1", svc, addr, ""))
	}
	return strings.TrimPrefix(e.url, "http://"), hook
}

// confNginxConf is the nginx configuration with the gateway's rules, as
// far as nginx has them. Where nginx's defaults differ from the gateway's,
// a directive or a map sets the gateway's rule, with a comment on why.
func confNginxConf(env *confEnv, plain, trusted string) string {
	headers := func(host string) string {
		return `
        proxy_http_version 1.1;
        proxy_set_header Host ` + host + `;
        proxy_set_header Connection $up_connection;
        proxy_set_header Upgrade $up_upgrade;
        proxy_set_header X-Forwarded-For $fwd_for;
        proxy_set_header X-Forwarded-Proto $fwd_proto;
        proxy_set_header X-Forwarded-Host $fwd_host;
        proxy_set_header Forwarded $fwd_forwarded;
        proxy_set_header X-Request-Id $req_id;`
	}
	// proxy_pass with a URI part ("/") sends the normalized path, as the
	// gateway does; without one, nginx sends the path as the client wrote
	// it. The path cases go to "location /" for that reason.
	locations := fmt.Sprintf(`
    location / {%[1]s
        proxy_pass http://%[3]s/;
    }
    location = /api {%[1]s
        proxy_pass http://%[4]s/;
    }
    location /api/ {%[1]s
        proxy_pass http://%[4]s/;
    }
    location /preserve/ {%[2]s
        proxy_pass http://%[3]s;
    }
    location /small/ {%[1]s
        client_max_body_size 1k;
        proxy_pass http://%[3]s;
    }
    location /stall/ {%[1]s
        client_body_timeout %[7]dms;
        proxy_pass http://%[3]s;
    }
    location /silent/ {%[1]s
        proxy_read_timeout %[8]dms;
        proxy_pass http://%[5]s;
    }
    location /dead/ {%[1]s
        proxy_pass http://%[6]s;
    }`, headers("$proxy_host"), headers("$http_host"), env.web.addr(), env.api.addr(), env.silent, env.dead,
		confBodyTimeout.Milliseconds(), confUpstreamTimeout.Milliseconds())
	return fmt.Sprintf(`
    server_tokens off;
    # A request line over 8k is 414; a header line must fit one 8k buffer
    # and the whole head 8 of them (64k), or it is 400.
    large_client_header_buffers 8 8k;
    client_header_timeout %[1]dms;

    # X-Forwarded-*: nginx's stock $proxy_add_x_forwarded_for appends to
    # whatever the client sent, from anyone. The gateway's rule (extend from
    # a trusted peer, replace from anyone else) takes a geo and these maps;
    # $trust_proxies says whether the server has trusted proxies at all.
    geo $peer_in_trusted_proxies {
        default 0;
        127.0.0.1/32 1;
    }
    map "$trust_proxies:$peer_in_trusted_proxies" $from_trusted {
        "1:1" 1;
        default 0;
    }
    map $from_trusted $fwd_for {
        1 $proxy_add_x_forwarded_for;
        default $remote_addr;
    }
    map "$from_trusted:$http_x_forwarded_proto" $fwd_proto {
        "~^1:(?<claimed_proto>.+)$" $claimed_proto;
        default $scheme;
    }
    map "$from_trusted:$http_x_forwarded_host" $fwd_host {
        "~^1:(?<claimed_host>.+)$" $claimed_host;
        default $http_host;
    }
    map $from_trusted $fwd_forwarded {
        1 $http_forwarded;
        default "";
    }

    # X-Request-Id: the client's when it is 1 to 128 printable characters
    # without '"' or '\', else nginx's own $request_id; echoed in the answer.
    map $http_x_request_id $req_id {
        "~^[\x21\x23-\x5b\x5d-\x7e]{1,128}$" $http_x_request_id;
        default $request_id;
    }

    # Upgrade is passed on only in a request that asks for a switch
    # (Connection lists "upgrade"), as the gateway does; nginx drops it by
    # default, so WebSockets need these maps anyway.
    map $http_connection $asks_upgrade {
        "~*(^|,)[ \t]*upgrade[ \t]*(,|$)" 1;
        default 0;
    }
    map "$asks_upgrade:$http_upgrade" $up_upgrade {
        "~^1:(?<asked_upgrade>.+)$" $asked_upgrade;
        default "";
    }
    map $up_upgrade $up_connection {
        "" "";
        default upgrade;
    }

    server {
        listen %[2]s;
        set $trust_proxies 0;
        add_header X-Request-Id $req_id always;
%[4]s
    }
    server {
        listen %[3]s;
        set $trust_proxies 1;
        add_header X-Request-Id $req_id always;
%[4]s
    }`, confHeaderTimeout.Milliseconds(), plain, trusted, locations)
}

// confTargets starts what the cases run against.
func confTargets(t *testing.T, env *confEnv) []*confTarget {
	var targets []*confTarget
	for _, path := range []confPath{confEngine, confNoEngine, confNoFastPath} {
		tg := &confTarget{name: [...]string{"gateway", "gateway-no-engine", "gateway-no-fast-path"}[path]}
		var plain, trusted *logtest.Hook
		tg.addr, plain = confGateway(t, env, path, false)
		tg.trusted, trusted = confGateway(t, env, path, true)
		tg.logs = []*logtest.Hook{plain, trusted}
		targets = append(targets, tg)
	}
	bin := nginxBinary()
	if bin == "" {
		t.Log("nginx is not installed; its target is skipped")
		return targets
	}
	addrs := runNginx(t, bin, 2, func(addrs []string) string { return confNginxConf(env, addrs[0], addrs[1]) })
	plain, trusted := addrs[0], addrs[1]
	return append(targets, &confTarget{name: "nginx", addr: plain, trusted: trusted, nginx: true})
}

// confConn is what a case expects of the client's connection after the
// last answer.
type confConn int

const (
	confConnAny    confConn = iota // not checked
	confConnOpen                   // kept alive
	confConnClosed                 // closed by the server
)

func (s confConn) String() string {
	return [...]string{"not checked", "kept open", "closed"}[s]
}

// confWant is the answers a case expects.
type confWant struct {
	status []int // every answer on the connection, 1xx included, in order
	conn   confConn
}

// confStep writes send and then reads read answers.
type confStep struct {
	send string
	read int
}

// nginxDiff is where nginx does not keep a case's rule as the gateway
// does: it has no such rule (skip), or it keeps it with other answers
// (want, check). why is the reason.
type nginxDiff struct {
	skip  string
	want  *confWant
	check func(t *testing.T, r *confRun)
	why   string
}

type confCase struct {
	desc    string
	trusted bool // to the target's listener that trusts 127.0.0.1
	// The request: raw bytes on one connection, with {host} and {case}
	// filled in; a net/http request to base; or curl arguments, with
	// {base} filled in. Each carries X-Case, so what the backends
	// received can be told apart.
	raw   []confStep
	req   func(base string) *http.Request
	curl  []string
	want  confWant
	check func(t *testing.T, r *confRun) // what the backends must or must not have received
	nginx nginxDiff
}

// confSeens reads as a list in failure messages.
type confSeens []confSeen

func (ss confSeens) String() string {
	if len(ss) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s on %s (%d body bytes", s.Method, s.URI, s.Backend, s.BodySize)
		if s.BodyErr != "" {
			fmt.Fprintf(&b, ", %s", s.BodyErr)
		}
		b.WriteString(")")
	}
	return b.String()
}

// confRun is the outcome of one case on one target.
type confRun struct {
	host    string // the host:port the request went to
	id      string
	answers []confAnswer
	seen    confSeens // what the backends received from this case
	elapsed time.Duration
}

type confAnswer struct {
	status int
	header http.Header
	body   []byte
}

// only is the one request of the case that reached a backend.
func (r *confRun) only(t *testing.T) confSeen {
	t.Helper()
	if len(r.seen) != 1 {
		t.Fatalf("backends received %s, want exactly one request", r.seen)
	}
	return r.seen[0]
}

// echo decodes the i-th answer as the echo of a backend.
func (r *confRun) echo(t *testing.T, i int) confSeen {
	t.Helper()
	var s confSeen
	if err := json.Unmarshal(r.answers[i].body, &s); err != nil {
		t.Fatalf("answer %d is not a backend's echo: %v: %q", i, err, r.answers[i].body)
	}
	return s
}

func confCases(env *confEnv) []confCase {
	// wire is a request head: the lines, each ended by CRLF, and the empty
	// line; hc are the Host and X-Case lines of a raw request.
	wire := func(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }
	const hc = "Host: {host}\r\nX-Case: {case}"
	get := func(target string, extra ...string) string {
		return wire(append([]string{"GET " + target + " HTTP/1.1", hc}, extra...)...)
	}
	send := func(s string) []confStep { return []confStep{{send: s}} }
	open, closed, unchecked := confConnOpen, confConnClosed, confConnAny
	answers := func(conn confConn, status ...int) confWant { return confWant{status: status, conn: conn} }

	// What the backends must or must not have received.
	nothingReached := func(t *testing.T, r *confRun) {
		t.Helper()
		if len(r.seen) != 0 {
			t.Fatalf("backends received %s of a refused request, want nothing", r.seen)
		}
	}
	reached := func(backend, uri string) func(*testing.T, *confRun) {
		return func(t *testing.T, r *confRun) {
			t.Helper()
			if len(r.seen) != 1 || r.seen[0].Backend != backend || r.seen[0].URI != uri {
				t.Fatalf("backends received %s, want exactly %s on %s", r.seen, uri, backend)
			}
		}
	}
	// A proxy that streams bodies (the gateway) may have begun the request
	// of a refused body; one that buffers them (nginx) not even that. Either
	// way the backend must not get all of it, nor more than the limit.
	noWholeBody := func(t *testing.T, r *confRun) {
		t.Helper()
		for _, s := range r.seen {
			if s.BodyErr == "" || s.BodySize > confMaxBody {
				t.Fatalf("backends received %s of a refused body, want at most an incomplete body of %d bytes", r.seen, confMaxBody)
			}
		}
	}
	// forwarded: the one request that reached a backend carried header as
	// want; "" means not at all.
	forwarded := func(header, want string) func(*testing.T, *confRun) {
		return func(t *testing.T, r *confRun) {
			t.Helper()
			got, ok := r.only(t).Header[http.CanonicalHeaderKey(header)]
			switch {
			case want == "" && ok:
				t.Fatalf("%s reached the backend as %q, want it not forwarded", header, got)
			case want != "" && (len(got) != 1 || got[0] != want):
				t.Fatalf("%s reached the backend as %q, want %q", header, got, want)
			}
		}
	}

	path := func(desc, sent, backend, uri string) confCase {
		return confCase{desc: desc, raw: send(get(sent)), want: answers(open, 200), check: reached(backend, uri)}
	}
	header := func(desc string, trusted bool, name, value string, check func(*testing.T, *confRun)) confCase {
		return confCase{desc: desc, trusted: trusted, want: answers(unchecked, 200), check: check,
			req: func(base string) *http.Request {
				req, _ := http.NewRequest(http.MethodGet, base+"/fwd", nil)
				req.Header.Set(name, value)
				return req
			}}
	}
	hop := func(desc string, check func(*testing.T, *confRun), lines ...string) confCase {
		return confCase{desc: desc, raw: send(get("/hop", lines...)), want: answers(unchecked, 200), check: check}
	}
	requestID := func(desc, sent string, kept bool) confCase {
		return confCase{desc: desc, want: answers(unchecked, 200),
			req: func(base string) *http.Request {
				req, _ := http.NewRequest(http.MethodGet, base+"/id", nil)
				req.Header.Set("X-Request-Id", sent)
				return req
			},
			check: func(t *testing.T, r *confRun) {
				got := r.only(t).Header.Get("X-Request-Id")
				echoed := r.answers[0].header.Get("X-Request-Id")
				switch {
				case kept && got != sent:
					t.Fatalf("X-Request-Id reached the backend as %q, want the client's %q kept", got, sent)
				case !kept && (got == sent || got == "" || len(got) > 128 || strings.ContainsAny(got, " \t")):
					t.Fatalf("X-Request-Id reached the backend as %q, want a new sane id in place of %q", got, sent)
				case echoed != got:
					t.Fatalf("the answer carries X-Request-Id %q, want the forwarded %q", echoed, got)
				}
			}}
	}
	bigHead := func() string {
		lines := []string{"GET /big-head HTTP/1.1", hc}
		for i := range 80 { // 80 lines of about 1 KiB: a 80 KiB head, each line well within 8 KiB
			lines = append(lines, fmt.Sprintf("X-Fill-%02d: %s", i, strings.Repeat("f", 1000)))
		}
		return wire(lines...)
	}
	kib2 := strings.Repeat("x", 2*confMaxBody)

	return []confCase{
		// 1. Request smuggling and framing.
		{
			desc: "Content-Length with Transfer-Encoding is 400 and the connection is closed",
			raw: send(wire("POST /smuggle HTTP/1.1", hc, "Content-Length: 4", "Transfer-Encoding: chunked") +
				"0\r\n\r\n" + get("/smuggled")),
			want: answers(closed, 400), check: nothingReached,
		},
		{
			desc: "Transfer-Encoding before Content-Length is 400 and the connection is closed",
			raw: send(wire("POST /smuggle HTTP/1.1", hc, "Transfer-Encoding: chunked", "Content-Length: 4") +
				"0\r\n\r\n" + get("/smuggled")),
			want: answers(closed, 400), check: nothingReached,
		},
		{
			desc: "two different Content-Length fields are 400 and the connection is closed",
			raw:  send(wire("POST /smuggle HTTP/1.1", hc, "Content-Length: 4", "Content-Length: 9") + "ping" + get("/smuggled")),
			want: answers(closed, 400), check: nothingReached,
		},
		{
			desc: "a space before a header name's colon is 400",
			raw:  send(wire("POST /smuggle HTTP/1.1", hc, "Transfer-Encoding : chunked", "Content-Length: 5") + "0\r\n\r\n"),
			want: answers(closed, 400), check: nothingReached,
		},
		{
			desc: "a transfer coding other than chunked is 501",
			raw:  send(wire("POST /smuggle HTTP/1.1", hc, "Transfer-Encoding: gzip, chunked") + "0\r\n\r\n"),
			want: answers(closed, 501), check: nothingReached,
		},
		{
			// The client's broken framing is the client's fault: not a 502
			// that blames the instance.
			desc: "a malformed chunk size is 400 and no backend gets the whole body",
			raw:  send(wire("POST /chunks HTTP/1.1", hc, "Transfer-Encoding: chunked") + "5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"),
			want: answers(closed, 400), check: noWholeBody,
		},
		{
			desc: "an HTTP/1.1 request without Host is 400",
			raw:  send(wire("GET /no-host HTTP/1.1", "X-Case: {case}")),
			want: answers(closed, 400), check: nothingReached,
		},
		{
			desc: "two Host fields are 400",
			raw:  send(get("/two-hosts", "Host: other.example")),
			want: answers(closed, 400), check: nothingReached,
		},

		// 2. obs-fold.
		{
			desc: "an obs-fold continuation line is 400",
			raw:  send(get("/fold", "X-Folded: a", " b")),
			want: answers(closed, 400), check: nothingReached,
		},

		// 3. Path normalisation.
		path("a dot-dot segment is resolved: /a/../b reaches the instance as /b", "/a/../b", "web", "/b"),
		path("a double slash is merged: //x reaches the instance as /x", "//x", "web", "/x"),
		path("a dot segment is dropped and the trailing slash kept: /a/./b/ is /a/b/", "/a/./b/", "web", "/a/b/"),
		path("an encoded dot-dot is resolved after decoding: /a/%2e%2e/b is /b", "/a/%2e%2e/b", "web", "/b"),
		path("the query is passed unchanged while the path is normalised", "/a/../b?x=%2F..&y=1", "web", "/b?x=%2F..&y=1"),
		{
			desc: "a path that climbs above the root stays at the root: /../x is /x",
			raw:  send(get("/../x")), want: answers(open, 200), check: reached("web", "/x"),
			nginx: nginxDiff{
				want: &confWant{status: []int{400}, conn: closed}, check: nothingReached,
				why: "nginx refuses a path above the root with 400 (\"client sent invalid request\"); the gateway clamps it at the " +
					"root, as path.Clean and RFC 3986 remove_dot_segments do. Neither lets it leave the root.",
			},
		},

		// 4. An encoded dot-dot cannot escape a stripped prefix: the path
		// is normalised before the route is chosen, so what leaves /api is
		// routed by "/", never sent to api.
		path("a dot-dot within the prefix stays with it: /api/x/../y reaches api as /y", "/api/x/../y", "api", "/y"),
		path("/api/%2e%2e/secret is /secret: routed by /, never to api", "/api/%2e%2e/secret", "web", "/secret"),
		path("/api/..%2fsecret is /secret: routed by /, never to api", "/api/..%2fsecret", "web", "/secret"),
		path("/api%2f..%2fsecret is /secret: routed by /, never to api", "/api%2f..%2fsecret", "web", "/secret"),
		path("an encoded slash separates segments, as nginx decodes it: /api%2fsecret reaches api as /secret", "/api%2fsecret", "api", "/secret"),

		// 5. Methods an edge does not serve.
		{
			desc: "TRACE is 405",
			raw:  send(wire("TRACE /trace HTTP/1.1", hc)),
			want: answers(unchecked, 405), check: nothingReached,
		},
		{
			desc: "CONNECT is 405 and the connection is closed",
			raw:  send(wire("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443", "X-Case: {case}")),
			want: answers(closed, 405), check: nothingReached,
			nginx: nginxDiff{
				want: &confWant{status: []int{400}, conn: closed},
				why: "nginx 1.22 refuses CONNECT while parsing the request line, with 400 (\"client sent invalid request\"); " +
					"the gateway answers 405 with Allow, as for TRACE. Both refuse it and close.",
			},
		},

		// 6. Sizes.
		{
			desc: "a request line over 8 KiB is 414",
			raw:  send(get("/" + strings.Repeat("a", 9000))),
			want: answers(closed, 414), check: nothingReached,
		},
		{
			desc: "a header line over 8 KiB is 431",
			raw:  send(get("/big-line", "X-Big: "+strings.Repeat("b", 9000))),
			want: answers(closed, 431), check: nothingReached,
			nginx: nginxDiff{
				want: &confWant{status: []int{400}, conn: closed},
				why:  "nginx answers 400 \"Request Header Or Cookie Too Large\" where RFC 6585 has 431; the limit is the same",
			},
		},
		{
			desc: "a head over 64 KiB is 431",
			raw:  send(bigHead()),
			want: answers(closed, 431), check: nothingReached,
			nginx: nginxDiff{
				want: &confWant{status: []int{400}, conn: closed},
				why: "nginx answers 400 \"Request Header Or Cookie Too Large\"; its limit is 8 buffers of 8k " +
					"(large_client_header_buffers 8 8k), not a byte count",
			},
		},
		{
			desc: "a header line just under 8 KiB passes",
			raw:  send(get("/long-line", "X-Long: "+strings.Repeat("l", 8000))),
			want: answers(open, 200), check: reached("web", "/long-line"),
		},

		// 7, 8. Slow clients.
		{
			desc: "half a head, then silence, is 408 after the client header timeout",
			raw:  send("GET /slow-head HTTP/1.1\r\n" + hc + "\r\n"),
			want: answers(closed, 408), check: nothingReached,
			nginx: nginxDiff{
				want: &confWant{conn: closed},
				why: "nginx closes the connection without an answer when client_header_timeout passes " +
					"(ngx_http_close_request; 408 is only logged)",
			},
		},
		{
			desc: "a body that stalls is 408 after the client body timeout",
			raw:  send(wire("POST /stall/x HTTP/1.1", hc, "Content-Length: 100") + "0123456789"),
			want: answers(closed, 408), check: noWholeBody,
			nginx: nginxDiff{
				want: &confWant{conn: closed},
				why: "nginx terminates the request without an answer when client_body_timeout passes; the 408 is only in " +
					"its access log (with 0 bytes sent), as for client_header_timeout",
			},
		},

		// 9. Body size.
		{
			desc: "a Content-Length over the route's limit is 413 before any backend sees it",
			raw:  send(wire("POST /small/x HTTP/1.1", hc, "Content-Length: 2048") + kib2),
			want: answers(closed, 413), check: nothingReached,
		},
		{
			desc: "a chunked body growing over the route's limit is 413",
			curl: []string{"-H", "Transfer-Encoding: chunked", "-H", "Expect:", "--data-binary", kib2, "{base}/small/x"},
			want: answers(unchecked, 413), check: noWholeBody,
		},
		{
			desc: "a body of exactly the route's limit passes",
			raw:  send(wire("POST /small/x HTTP/1.1", hc, "Content-Length: 1024") + kib2[:confMaxBody]),
			want: answers(open, 200),
			check: func(t *testing.T, r *confRun) {
				if s := r.only(t); s.BodySize != confMaxBody || s.BodyErr != "" {
					t.Fatalf("the backend received %d body bytes (%q), want %d", s.BodySize, s.BodyErr, confMaxBody)
				}
			},
		},
		{
			desc: "a chunked body within the limit passes whole",
			raw: send(wire("POST /small/x HTTP/1.1", hc, "Transfer-Encoding: chunked") +
				"32\r\n" + kib2[:50] + "\r\n32;ext=1\r\n" + kib2[:50] + "\r\n0\r\n\r\n"),
			want: answers(open, 200),
			check: func(t *testing.T, r *confRun) {
				if s := r.only(t); s.BodySize != 100 || s.BodyErr != "" {
					t.Fatalf("the backend received %d body bytes (%q), want 100", s.BodySize, s.BodyErr)
				}
			},
		},

		// 10. Upstream failures.
		{
			desc: "an upstream that accepts and never answers is 504 after the response header timeout",
			req: func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/silent/x", nil)
				return r
			},
			want: answers(unchecked, 504),
			check: func(t *testing.T, r *confRun) {
				if r.elapsed < confUpstreamTimeout || r.elapsed > confUpstreamTimeout+3*time.Second {
					t.Fatalf("504 after %s, want it once the %s timeout passed", r.elapsed, confUpstreamTimeout)
				}
			},
		},
		{
			desc: "an upstream that refuses connections is 502",
			req: func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/dead/x", nil)
				return r
			},
			want: answers(unchecked, 502),
		},

		// 11. Forwarding headers: believed only from a trusted proxy.
		header("X-Forwarded-For from an untrusted client is replaced by the peer", false,
			"X-Forwarded-For", "1.2.3.4", forwarded("X-Forwarded-For", "127.0.0.1")),
		header("X-Forwarded-For from a trusted proxy is extended with the peer", true,
			"X-Forwarded-For", "1.2.3.4", forwarded("X-Forwarded-For", "1.2.3.4, 127.0.0.1")),
		header("X-Forwarded-Proto from an untrusted client is replaced by the scheme", false,
			"X-Forwarded-Proto", "https", forwarded("X-Forwarded-Proto", "http")),
		header("X-Forwarded-Proto from a trusted proxy is kept", true,
			"X-Forwarded-Proto", "https", forwarded("X-Forwarded-Proto", "https")),
		header("X-Forwarded-Host from an untrusted client is replaced by Host", false,
			"X-Forwarded-Host", "evil.example", func(t *testing.T, r *confRun) { forwarded("X-Forwarded-Host", r.host)(t, r) }),
		header("X-Forwarded-Host from a trusted proxy is kept", true,
			"X-Forwarded-Host", "origin.example", forwarded("X-Forwarded-Host", "origin.example")),
		header("Forwarded from an untrusted client is dropped", false,
			"Forwarded", "for=1.2.3.4", forwarded("Forwarded", "")),
		// httputil.ReverseProxy deletes Forwarded before Rewrite; the
		// gateway copies it back for a trusted proxy only.
		header("Forwarded from a trusted proxy is kept", true,
			"Forwarded", "for=1.2.3.4", forwarded("Forwarded", "for=1.2.3.4")),

		// 12. X-Request-Id.
		{
			desc: "X-Request-Id is added when absent and echoed in the answer",
			curl: []string{"{base}/id"},
			want: answers(unchecked, 200),
			check: func(t *testing.T, r *confRun) {
				got := r.only(t).Header.Get("X-Request-Id")
				if got == "" || r.answers[0].header.Get("X-Request-Id") != got {
					t.Fatalf("the backend got X-Request-Id %q and the client %q, want one new id for both",
						got, r.answers[0].header.Get("X-Request-Id"))
				}
			},
		},
		requestID("a sane X-Request-Id is kept", "req-42.abc_DEF:7", true),
		requestID("an X-Request-Id of 200 characters is replaced", strings.Repeat("r", 200), false),
		requestID("an X-Request-Id with a space is replaced", "two words", false),

		// 13. Hop-by-hop headers.
		hop("Keep-Alive is not forwarded", forwarded("Keep-Alive", ""), "Connection: keep-alive", "Keep-Alive: timeout=5"),
		hop("the client's Connection header is not forwarded", func(t *testing.T, r *confRun) {
			if v := strings.ToLower(r.only(t).Header.Get("Connection")); strings.Contains(v, "x-hop") || strings.Contains(v, "keep-alive") {
				t.Fatalf("the backend got Connection %q: the client's was forwarded", v)
			}
		}, "Connection: keep-alive, X-Hop"),
		{
			desc: "a header named in Connection is not forwarded",
			raw:  send(get("/hop", "Connection: X-Hop", "X-Hop: secret")),
			want: answers(unchecked, 200), check: forwarded("X-Hop", ""),
			nginx: nginxDiff{skip: "nginx does not read the Connection header's list; it drops only its fixed set " +
				"(Connection, Keep-Alive, TE, Upgrade, Expect, and the framing headers) and forwards the headers named there"},
		},
		{
			desc: "Proxy-Connection is not forwarded",
			raw:  send(get("/hop", "Proxy-Connection: keep-alive")),
			want: answers(unchecked, 200), check: forwarded("Proxy-Connection", ""),
			nginx: nginxDiff{skip: "nginx forwards Proxy-Connection; it is not in its fixed set of hop-by-hop headers"},
		},
		hop("TE other than trailers is not forwarded", forwarded("TE", ""), "TE: gzip"),
		{
			desc: "TE: trailers is passed on",
			raw:  send(get("/hop", "TE: trailers")),
			want: answers(unchecked, 200), check: forwarded("TE", "trailers"),
			nginx: nginxDiff{skip: "nginx drops TE whatever it says (proxy_set_header TE \"\" by default); it does not " +
				"pass trailers to HTTP/1.1 upstreams, so it has no need to announce them"},
		},
		hop("Upgrade in a request that does not ask for a switch is not forwarded", forwarded("Upgrade", ""), "Upgrade: h2c"),

		// 14. Host.
		{
			desc: "Host is rewritten to the instance's address by default",
			req: func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/host", nil)
				r.Host = "client.example"
				return r
			},
			want: answers(unchecked, 200),
			check: func(t *testing.T, r *confRun) {
				if got := r.only(t).Host; got != env.web.addr() {
					t.Fatalf("Host reached the backend as %q, want its own address %q", got, env.web.addr())
				}
			},
		},
		{
			desc: "Host is preserved on a PreserveHost route",
			req: func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/preserve/x", nil)
				r.Host = "client.example"
				return r
			},
			want: answers(unchecked, 200),
			check: func(t *testing.T, r *confRun) {
				if got := r.only(t).Host; got != "client.example" {
					t.Fatalf("Host reached the backend as %q, want the client's client.example", got)
				}
			},
		},

		// 15. Pipelining and 100-continue.
		{
			desc: "three pipelined GETs get three answers in order",
			raw:  send(get("/p/1") + get("/p/2") + get("/p/3")),
			want: answers(open, 200, 200, 200),
			check: func(t *testing.T, r *confRun) {
				for i := range 3 {
					if s := r.echo(t, i); s.URI != fmt.Sprintf("/p/%d", i+1) {
						t.Fatalf("answer %d is for %s, want /p/%d", i, s.URI, i+1)
					}
				}
				if len(r.seen) != 3 {
					t.Fatalf("backends received %s, want the three GETs", r.seen)
				}
			},
		},
		{
			desc: "a pipelined GET after a POST with a body is its own request",
			raw:  send(wire("POST /p/body HTTP/1.1", hc, "Content-Length: 5") + "hello" + get("/p/next")),
			want: answers(open, 200, 200),
			check: func(t *testing.T, r *confRun) {
				if a, b := r.echo(t, 0), r.echo(t, 1); a.URI != "/p/body" || a.BodySize != 5 || b.URI != "/p/next" || b.BodySize != 0 {
					t.Fatalf("answers are for %s (%d bytes) and %s (%d bytes), want /p/body (5) and /p/next (0)", a.URI, a.BodySize, b.URI, b.BodySize)
				}
			},
		},
		{
			// net/http's server sends a 100 itself when the proxy begins to
			// read the body; were Expect forwarded, ReverseProxy would relay
			// the instance's 100 as well (it forwards every 1xx). The
			// instance here asks for the body only after the Transport's
			// ExpectContinueTimeout (1s), which made the duplicate certain.
			desc: "Expect: 100-continue gets one 100, then the answer, however late the instance reads the body",
			raw: []confStep{
				{send: wire("POST /expect HTTP/1.1", hc, "Content-Length: 5", "Expect: 100-continue", "X-Read-Body-After: 1500ms"), read: 1},
				{send: "hello"},
			},
			want: answers(open, 100, 200),
			check: func(t *testing.T, r *confRun) {
				if s := r.only(t); s.BodySize != 5 || s.BodyErr != "" {
					t.Fatalf("the backend received %d body bytes (%q), want 5", s.BodySize, s.BodyErr)
				}
			},
		},

		// 16. The guard's stand-in header cannot be forged.
		{
			desc: "a client's X-Switchyard-Reject is not forwarded and refuses nothing",
			req: func(base string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, base+"/reject", nil)
				r.Header.Set(rejectHeader, "0123456789abcdef-0123456789abcdef0123456789abcdef")
				return r
			},
			want: answers(unchecked, 200), check: forwarded(rejectHeader, ""),
			nginx: nginxDiff{skip: "X-Switchyard-Reject is the gateway's own mechanism; nginx has no such header to guard"},
		},

		// 17. A refused upgrade ends the connection.
		{
			desc: "an upgrade the backend refuses with 400 gets 400 and the connection is closed",
			raw: send(get("/ws", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==") + get("/after-upgrade")),
			want: answers(closed, 400),
			check: func(t *testing.T, r *confRun) {
				if len(r.seen) != 1 || r.seen[0].URI != "/ws" {
					t.Fatalf("backends received %s, want the upgrade request only: what follows an upgrade request is not "+
						"checked by the guard and must not be served", r.seen)
				}
			},
			nginx: nginxDiff{
				want: &confWant{status: []int{400, 200}, conn: open},
				check: func(t *testing.T, r *confRun) {
					if len(r.seen) != 2 || r.seen[1].URI != "/after-upgrade" {
						t.Fatalf("backends received %s, want the upgrade and the request after it", r.seen)
					}
				},
				why: "nginx parses and checks every request on a connection itself, so after a refused switch it serves the " +
					"next one; the gateway's guard stood aside for the upgrade request and cannot vouch for what follows",
			},
		},
	}
}

// TestConformance runs every edge-router rule against the gateway (fast
// path and net/http Transport) and nginx.
func TestConformance(t *testing.T) {
	start := time.Now()
	env := &confEnv{web: newConfBackend(t, "web"), api: newConfBackend(t, "api"), silent: silentUpstream(t), dead: deadAddr(t)}
	targets := confTargets(t, env)
	for i, c := range confCases(env) {
		t.Run(c.desc, func(t *testing.T) {
			for _, tg := range targets {
				t.Run(tg.name, func(t *testing.T) {
					want, check := c.want, c.check
					if tg.nginx {
						if c.nginx.skip != "" {
							t.Skip("nginx: " + c.nginx.skip)
						}
						if c.nginx.want != nil {
							want = *c.nginx.want
							t.Logf("nginx differs: %s", c.nginx.why)
						}
						if c.nginx.check != nil {
							check = c.nginx.check
						}
					}
					r := &confRun{host: tg.addr, id: fmt.Sprintf("c%02d-%s", i, tg.name)}
					if c.trusted {
						r.host = tg.trusted
					}
					for _, h := range tg.logs {
						h.Reset()
					}
					conn := confConnAny
					switch {
					case c.raw != nil:
						conn = r.raw(t, c.raw, want)
					case c.req != nil:
						r.http(t, c.req("http://"+r.host))
					default:
						r.curl(t, c.curl)
					}
					r.seen = append(confSeens(env.web.of(r.id)), env.api.of(r.id)...)
					var got []int
					for _, a := range r.answers {
						got = append(got, a.status)
					}
					if !slices.Equal(got, want.status) || conn != want.conn {
						t.Errorf("answers %v, connection %s; want %v, connection %s (backends received %s)",
							got, conn, want.status, want.conn, r.seen)
						for _, a := range r.answers {
							t.Logf("answer %d: %s", a.status, bytes.TrimSpace(a.body))
						}
					}
					if check != nil {
						check(t, r)
					}
					if t.Failed() {
						for _, h := range tg.logs {
							for _, e := range h.AllEntries() {
								t.Logf("gateway logged %s: %s %v", e.Level, e.Message, e.Data)
							}
						}
					}
				})
			}
		})
	}
	t.Logf("conformance suite ran in %s", time.Since(start).Round(time.Millisecond))
}

// raw sends the steps on one connection and reads the answers want
// expects. It reports what became of the connection after them, when want
// says what should.
func (r *confRun) raw(t *testing.T, steps []confStep, want confWant) confConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.host, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	fill := strings.NewReplacer("{host}", r.host, "{case}", r.id)
	start := time.Now()
	read := func(n int) {
		for range n {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Logf("no more answers after %d: %v", len(r.answers), err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Logf("answer %d %d: body cut short: %v", len(r.answers), resp.StatusCode, err)
			}
			r.answers = append(r.answers, confAnswer{status: resp.StatusCode, header: resp.Header, body: body})
		}
	}
	for _, s := range steps {
		if _, err := io.WriteString(c, fill.Replace(s.send)); err != nil {
			// A server may refuse a request before it has all of it.
			t.Logf("write: %v", err)
		}
		read(s.read)
	}
	read(len(want.status) - len(r.answers))
	r.elapsed = time.Since(start)
	if want.conn == confConnAny {
		return confConnAny
	}
	// A close shows at once; an open connection only by the silence.
	wait := 3 * time.Second
	if want.conn == confConnOpen {
		wait = 300 * time.Millisecond
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	var b [512]byte
	n, err := br.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		t.Logf("bytes after the answers: %q", b[:n])
		return confConnOpen
	case errors.As(err, &ne) && ne.Timeout():
		return confConnOpen
	default: // EOF or a reset
		return confConnClosed
	}
}

// confClient sends the net/http cases, each on a new connection.
var confClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true}, // and no proxy from the environment
	Timeout:   10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

func (r *confRun) http(t *testing.T, req *http.Request) {
	t.Helper()
	req.Header.Set("X-Case", r.id)
	start := time.Now()
	resp, err := confClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	r.elapsed = time.Since(start)
	r.answers = append(r.answers, confAnswer{status: resp.StatusCode, header: resp.Header, body: body})
}

func (r *confRun) curl(t *testing.T, args []string) {
	t.Helper()
	dir := t.TempDir()
	hdrFile, bodyFile := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
	full := []string{"-sS", "--max-time", "10", "--noproxy", "*", "-H", "X-Case: " + r.id, "-D", hdrFile, "-o", bodyFile}
	for _, a := range args {
		full = append(full, strings.ReplaceAll(a, "{base}", "http://"+r.host))
	}
	start := time.Now()
	out, err := exec.Command("curl", full...).CombinedOutput()
	r.elapsed = time.Since(start)
	// curl may fail to send the rest of a body the server refused; the
	// answer it read is what counts.
	if err != nil {
		t.Logf("curl: %v: %s", err, out)
	}
	raw, err := os.ReadFile(hdrFile)
	if err != nil || len(raw) == 0 {
		t.Fatalf("curl got no answer: %v: %s", err, out)
	}
	// The file holds every head curl read, 1xx included; the last is the
	// answer's.
	heads := bytes.Split(bytes.TrimRight(raw, "\r\n"), []byte("\r\n\r\n"))
	last := heads[len(heads)-1]
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(append(last, "\r\n\r\n"...))), nil)
	if err != nil {
		t.Fatalf("curl's headers %q: %v", raw, err)
	}
	body, _ := os.ReadFile(bodyFile)
	r.answers = append(r.answers, confAnswer{status: resp.StatusCode, header: resp.Header, body: body})
}
