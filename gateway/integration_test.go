package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

const testToken = "test-token"

// testClient talks to the gateway straight, whatever the environment's
// proxy settings are.
var testClient = &http.Client{
	Transport: &http.Transport{MaxIdleConnsPerHost: 16},
	Timeout:   10 * time.Second,
}

type result struct {
	code   int
	body   string
	header http.Header
}

func do(t testing.TB, req *http.Request) result {
	t.Helper()
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return result{code: res.StatusCode, body: string(b), header: res.Header}
}

func get(t testing.TB, url string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func post(t testing.TB, url, body string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// jsonError decodes a {"error": ...} body, failing the test if it is not one.
func jsonError(t testing.TB, r result) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json (body %q)", ct, r.body)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", r.body, err)
	}
	return e.Error
}

// startRegistry runs the real registry server on a free loopback port.
func startRegistry(t testing.TB) *registry.Client {
	t.Helper()
	log, _ := quietLog()
	ctx, cancel := context.WithCancel(context.Background())
	url, done, err := local.ServeRegistry(ctx, server.Config{Token: testToken, LeaseTTL: time.Minute, Log: log})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return registry.NewClient(url, testToken)
}

// startStoppableRegistry runs the real registry handler on a server the
// test can kill outright, long polls included, as a crash would.
func startStoppableRegistry(t testing.TB, warmup time.Duration) (*registry.Client, *server.Server, func()) {
	t.Helper()
	log, _ := quietLog()
	srv, err := server.New(server.Config{Token: testToken, LeaseTTL: time.Minute, Warmup: warmup, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	stop := sync.OnceFunc(func() {
		_ = hs.Close()
		<-done
	})
	t.Cleanup(stop)
	return registry.NewClient("http://"+ln.Addr().String(), testToken), srv, stop
}

// waitWarmedUp waits until the restarted registry srv ends its warm-up
// and returns the index of its first ready view of service ("" for all).
func waitWarmedUp(t *testing.T, c *registry.Client, srv *server.Server, service string) uint64 {
	t.Helper()
	var ready uint64
	testutil.Eventually(t, 5*time.Second, "the warm-up to end", func() bool {
		srv.Store().Expire()
		snap, err := c.Instances(context.Background(), service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		ready = snap.Index
		return snap.Ready
	})
	return ready
}

// startGateway runs a gateway on a free loopback port and returns its base
// URL.
func startGateway(t testing.TB, src Source, routes ...string) (*Gateway, string, *logtest.Hook) {
	t.Helper()
	log, hook := quietLog()
	g, url := runGateway(t, Config{ID: "gw-test", Listen: "127.0.0.1:0", Routes: parseRoutes(t, routes...), Source: src,
		ReportInterval: 50 * time.Millisecond, Log: log})
	return g, url, hook
}

func parseRoutes(t testing.TB, routes ...string) []Route {
	t.Helper()
	var rs []Route
	for _, s := range routes {
		r, err := ParseRoute(s)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// runGateway runs a gateway built from cfg on a free loopback port until
// the test ends, and returns its base URL.
func runGateway(t testing.TB, cfg Config) (*Gateway, string) {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.RunListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g, "http://" + ln.Addr().String()
}

// backend is a real HTTP server standing in for an instance.
type backend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
	last atomic.Pointer[http.Request] // a clone of the last request seen
}

// newBackend answers with its name, followed by the request body if there
// was one; h, if set, answers instead.
func newBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.last.Store(r.Clone(context.Background()))
		if h != nil {
			h(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if len(body) > 0 {
			_, _ = io.WriteString(w, name+" got "+string(body))
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

// dropConnection reads the request and closes the connection without an
// answer, as an instance killed mid-request does.
func dropConnection(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

func register(t testing.TB, c *registry.Client, id, service, addr string, st registry.Status) {
	t.Helper()
	host, port := splitHostPort(t, addr)
	inst := registry.Instance{ID: id, Service: service, Color: "blue", Address: host, Port: port, Status: st}
	if err := c.Register(context.Background(), inst); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func setStatus(t testing.TB, c *registry.Client, id string, st registry.Status) uint64 {
	t.Helper()
	idx, err := c.SetStatus(context.Background(), id, st)
	if err != nil {
		t.Fatalf("set status of %s: %v", id, err)
	}
	return idx
}

// currentIndex is the registry's index for service right now.
func currentIndex(t testing.TB, c *registry.Client, service string) uint64 {
	t.Helper()
	snap, err := c.Instances(context.Background(), service, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return snap.Index
}

func waitApplied(t testing.TB, g *Gateway, service string, index uint64) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, "gateway to apply "+service+" index", func() bool { return g.Applied()[service] >= index })
	return time.Since(start)
}

// spread sends n GETs to url, fails on any non-200, and counts answers by
// body.
func spread(t testing.TB, url string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		r := get(t, url)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s = %d %q, want 200", url, r.code, r.body)
		}
		seen[r.body]++
	}
	return seen
}

func TestGatewayRoutesOnlyToUpInstances(t *testing.T) {
	c := startRegistry(t)
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	s := newBackend(t, "starting", nil)
	o := newBackend(t, "oos", nil)
	register(t, c, "a", "hello", a.addr(), registry.StatusUp)
	register(t, c, "b", "hello", b.addr(), registry.StatusUp)
	register(t, c, "s", "hello", s.addr(), registry.StatusStarting)
	register(t, c, "o", "hello", o.addr(), registry.StatusOutOfService)
	g, base, _ := startGateway(t, c, "/=hello")
	waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

	seen := spread(t, base+"/", 20)
	if seen["a"] != 10 || seen["b"] != 10 || len(seen) != 2 {
		t.Fatalf("answers = %v, want 10 each from a and b only", seen)
	}
	if s.hits.Load() != 0 || o.hits.Load() != 0 {
		t.Fatalf("STARTING got %d and OUT_OF_SERVICE got %d requests, want none", s.hits.Load(), o.hits.Load())
	}

	took := waitApplied(t, g, "hello", setStatus(t, c, "b", registry.StatusDown))
	t.Logf("DOWN status applied %s after SetStatus returned", took)
	if seen := spread(t, base+"/", 10); seen["a"] != 10 {
		t.Fatalf("answers after b went DOWN = %v, want a only", seen)
	}

	waitApplied(t, g, "hello", setStatus(t, c, "a", registry.StatusOutOfService))
	r := get(t, base+"/")
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("GET with nothing UP = %d %q, want 503", r.code, r.body)
	}
	if msg := jsonError(t, r); msg != `no UP instance of service "hello"` {
		t.Fatalf("503 error = %q", msg)
	}

	waitApplied(t, g, "hello", setStatus(t, c, "s", registry.StatusUp))
	if seen := spread(t, base+"/", 5); seen["starting"] != 5 {
		t.Fatalf("answers after s came UP = %v, want s only", seen)
	}
}

func TestGatewayRoutesByLongestPrefix(t *testing.T) {
	c := startRegistry(t)
	web := newBackend(t, "web", nil)
	api := newBackend(t, "api", nil)
	register(t, c, "web-1", "web", web.addr(), registry.StatusUp)
	register(t, c, "api-1", "api", api.addr(), registry.StatusUp)
	g, base, _ := startGateway(t, c, "/=web", "/api=api")
	waitApplied(t, g, "web", currentIndex(t, c, "web"))
	waitApplied(t, g, "api", currentIndex(t, c, "api"))

	tests := []struct {
		desc string
		path string
		want string
	}{
		{desc: "root", path: "/", want: "web"},
		{desc: "api prefix", path: "/api", want: "api"},
		{desc: "below the api prefix, query kept", path: "/api/users?id=1", want: "api"},
		{desc: "longer first segment stays on root", path: "/apix", want: "web"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := get(t, base+tt.path)
			if r.code != http.StatusOK || r.body != tt.want {
				t.Fatalf("GET %s = %d %q, want 200 %q", tt.path, r.code, r.body, tt.want)
			}
		})
	}
	if last := api.last.Load(); last.URL.RequestURI() != "/api/users?id=1" {
		t.Fatalf("api saw %q, want the path and query unchanged", last.URL.RequestURI())
	}

	t.Run("no matching route is a 404", func(t *testing.T) {
		g, base, _ := startGateway(t, c, "/api=api")
		waitApplied(t, g, "api", currentIndex(t, c, "api"))
		r := get(t, base+"/other")
		if r.code != http.StatusNotFound {
			t.Fatalf("GET /other = %d %q, want 404", r.code, r.body)
		}
		jsonError(t, r)
	})
}

func TestGatewayDoesNotProxyControlEndpoints(t *testing.T) {
	c := startRegistry(t)
	a := newBackend(t, "a", nil)
	register(t, c, "a", "hello", a.addr(), registry.StatusUp)
	g, base, _ := startGateway(t, c, "/=hello")
	waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

	for _, path := range []string{
		"/_switchyard/status",
		"/_switchyard/health",
		"/_switchyard",
		"//_switchyard/status",
		"/x/../_switchyard/status",
		"/%5Fswitchyard/status",
	} {
		t.Run(path, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPut} {
				req, err := http.NewRequest(method, base+path, strings.NewReader(`{"status":"DOWN"}`))
				if err != nil {
					t.Fatal(err)
				}
				r := do(t, req)
				if r.code != http.StatusNotFound {
					t.Fatalf("%s %s = %d %q, want 404", method, path, r.code, r.body)
				}
				jsonError(t, r)
			}
		})
	}
	if n := a.hits.Load(); n != 0 {
		t.Fatalf("backend got %d control requests, want none", n)
	}
}

func TestGatewayForwardingHeaders(t *testing.T) {
	c := startRegistry(t)
	a := newBackend(t, "a", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "X-Bar")
		w.Header().Set("X-Bar", "hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
		_, _ = io.WriteString(w, "a")
	})
	register(t, c, "a", "hello", a.addr(), registry.StatusUp)
	g, base, _ := startGateway(t, c, "/=hello")
	waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

	req, err := http.NewRequest(http.MethodGet, base+"/h?q=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "X-Foo")
	req.Header.Set("X-Foo", "hop")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-End", "kept")
	r := do(t, req)
	if r.code != http.StatusOK {
		t.Fatalf("GET = %d %q", r.code, r.body)
	}
	in := a.last.Load()
	gwHost := strings.TrimPrefix(base, "http://")

	tests := []struct {
		desc   string
		header string
		got    string
		want   string
	}{
		{desc: "X-Forwarded-For is the client, not what it claimed", header: "X-Forwarded-For", got: in.Header.Get("X-Forwarded-For"), want: "127.0.0.1"},
		{desc: "X-Forwarded-Proto", header: "X-Forwarded-Proto", got: in.Header.Get("X-Forwarded-Proto"), want: "http"},
		{desc: "X-Forwarded-Host is the host the client asked for", header: "X-Forwarded-Host", got: in.Header.Get("X-Forwarded-Host"), want: gwHost},
		{desc: "Host is the instance", header: "Host", got: in.Host, want: a.addr()},
		{desc: "header named by Connection is dropped", header: "X-Foo", got: in.Header.Get("X-Foo"), want: ""},
		{desc: "Keep-Alive is dropped", header: "Keep-Alive", got: in.Header.Get("Keep-Alive"), want: ""},
		{desc: "Connection is dropped", header: "Connection", got: in.Header.Get("Connection"), want: ""},
		{desc: "end-to-end header is kept", header: "X-End", got: in.Header.Get("X-End"), want: "kept"},
		{desc: "response header named by Connection is dropped", header: "X-Bar", got: r.header.Get("X-Bar"), want: ""},
		{desc: "response Keep-Alive is dropped", header: "Keep-Alive", got: r.header.Get("Keep-Alive"), want: ""},
		{desc: "response end-to-end header is kept", header: "X-End", got: r.header.Get("X-End"), want: "kept"},
		{desc: "no Via is added", header: "Via", got: r.header.Get("Via"), want: ""},
		{desc: "no Server is added", header: "Server", got: r.header.Get("Server"), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("%s = %q, want %q", tt.header, tt.got, tt.want)
			}
		})
	}
}

func TestGatewayRetries(t *testing.T) {
	t.Run("GET is retried when an instance's port is closed", func(t *testing.T) {
		c := startRegistry(t)
		good := newBackend(t, "good", nil)
		dead := deadAddr(t)
		register(t, c, "dead", "hello", dead, registry.StatusUp)
		register(t, c, "good", "hello", good.addr(), registry.StatusUp)
		g, base, _ := startGateway(t, c, "/=hello")
		waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

		if seen := spread(t, base+"/", 20); seen["good"] != 20 {
			t.Fatalf("answers = %v, want all from good", seen)
		}
		p, _ := g.table.Load().Lookup("/")
		if e := p.endpoint(dead); e == nil || e.downUntil.Load() <= time.Now().UnixNano() {
			t.Fatal("the refusing instance is not passed over")
		}
	})

	t.Run("POST with a body is retried when the connection is refused", func(t *testing.T) {
		c := startRegistry(t)
		good := newBackend(t, "good", nil)
		register(t, c, "dead-1", "hello", deadAddr(t), registry.StatusUp)
		register(t, c, "dead-2", "hello", deadAddr(t), registry.StatusUp)
		register(t, c, "good", "hello", good.addr(), registry.StatusUp)
		g, base, _ := startGateway(t, c, "/=hello")
		waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

		for i := range 6 {
			body := strings.Repeat("payload-", i+1)
			r := post(t, base+"/orders", body)
			if r.code != http.StatusOK || r.body != "good got "+body {
				t.Fatalf("POST %d = %d %q, want 200 with the body echoed by good", i, r.code, r.body)
			}
		}
	})

	t.Run("GET is retried when an instance drops the connection mid-request", func(t *testing.T) {
		c := startRegistry(t)
		killed := newBackend(t, "killed", dropConnection)
		good := newBackend(t, "good", nil)
		register(t, c, "killed", "hello", killed.addr(), registry.StatusUp)
		register(t, c, "good", "hello", good.addr(), registry.StatusUp)
		g, base, _ := startGateway(t, c, "/=hello")
		waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

		if seen := spread(t, base+"/", 20); seen["good"] != 20 {
			t.Fatalf("answers = %v, want all from good", seen)
		}
		if killed.hits.Load() == 0 {
			t.Fatal("the dropping instance was never tried; the retry path went untested")
		}
	})

	t.Run("POST is not retried once it reached an instance", func(t *testing.T) {
		c := startRegistry(t)
		killed := newBackend(t, "killed", dropConnection)
		good := newBackend(t, "good", nil)
		register(t, c, "killed", "hello", killed.addr(), registry.StatusUp)
		register(t, c, "good", "hello", good.addr(), registry.StatusUp)
		g, base, _ := startGateway(t, c, "/=hello")
		waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

		failed := 0
		for i := range 8 {
			// Without a body only the method keeps a POST from a retry.
			body := ""
			if i%4 >= 2 {
				body = "once"
			}
			r := post(t, base+"/pay", body)
			switch r.code {
			case http.StatusOK:
			case http.StatusBadGateway:
				jsonError(t, r)
				failed++
			default:
				t.Fatalf("POST = %d %q, want 200 or 502", r.code, r.body)
			}
		}
		if k := killed.hits.Load(); k == 0 || int(k) != failed || good.hits.Load() != int64(8-failed) {
			t.Fatalf("killed got %d, good got %d, %d answered 502: a POST that reached an instance was sent again",
				k, good.hits.Load(), failed)
		}
	})

	t.Run("502 with a JSON body when every instance refuses", func(t *testing.T) {
		c := startRegistry(t)
		register(t, c, "dead-1", "hello", deadAddr(t), registry.StatusUp)
		register(t, c, "dead-2", "hello", deadAddr(t), registry.StatusUp)
		g, base, _ := startGateway(t, c, "/=hello")
		waitApplied(t, g, "hello", currentIndex(t, c, "hello"))

		r := get(t, base+"/")
		if r.code != http.StatusBadGateway {
			t.Fatalf("GET = %d %q, want 502", r.code, r.body)
		}
		if msg := jsonError(t, r); !strings.Contains(msg, `"hello"`) {
			t.Fatalf("502 error %q does not name the service", msg)
		}
	})
}

func TestGatewayReportsAppliedIndexToRegistry(t *testing.T) {
	c := startRegistry(t)
	a := newBackend(t, "a", nil)
	register(t, c, "a", "hello", a.addr(), registry.StatusUp)
	startGateway(t, c, "/=hello")

	idx := setStatus(t, c, "a", registry.StatusOutOfService)
	testutil.Eventually(t, 5*time.Second, "the registry to list the gateway at the new index", func() bool {
		gws, err := c.Gateways(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, gw := range gws {
			if gw.ID == "gw-test" && gw.Applied["hello"] >= idx {
				return true
			}
		}
		return false
	})
}

// switchSource points the gateway at whichever registry is current, as a
// restarted registry on the same address would.
type switchSource struct {
	cur atomic.Pointer[registry.Client]
}

func (s *switchSource) Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error) {
	return s.cur.Load().Instances(ctx, service, waitIndex, wait)
}

func (s *switchSource) ReportGateway(ctx context.Context, r registry.GatewayReport) error {
	return s.cur.Load().ReportGateway(ctx, r)
}

func TestGatewayKeepsRoutingThroughRegistryRestart(t *testing.T) {
	c1, _, stop := startStoppableRegistry(t, 0)
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	register(t, c1, "a", "hello", a.addr(), registry.StatusUp)
	src := &switchSource{}
	src.cur.Store(c1)
	g, base, hook := startGateway(t, src, "/=hello")
	waitApplied(t, g, "hello", currentIndex(t, c1, "hello"))

	stop()
	testutil.Eventually(t, 5*time.Second, "the watch to notice the registry is gone", func() bool { return logged(hook, "registry watch failed") })
	testutil.Eventually(t, 5*time.Second, "a report to fail", func() bool { return logged(hook, "gateway report failed") })
	if seen := spread(t, base+"/", 10); seen["a"] != 10 {
		t.Fatalf("answers with the registry down = %v, want a only", seen)
	}

	// The registry comes back warming up and hears first from b only.
	c2, srv2, _ := startStoppableRegistry(t, 10*time.Millisecond)
	register(t, c2, "b", "hello", b.addr(), registry.StatusUp)
	src.cur.Store(c2)
	before := g.Applied()["hello"]
	testutil.Eventually(t, 10*time.Second, "the gateway to reach the restarted registry", func() bool {
		return logged(hook, "registry is warming up") || g.Applied()["hello"] != before
	})
	if seen := spread(t, base+"/", 10); seen["a"] != 10 {
		t.Fatalf("answers while the registry warms up = %v, want a only: the partial view replaced the table", seen)
	}

	ready := waitWarmedUp(t, c2, srv2, "hello")
	waitApplied(t, g, "hello", ready)
	if seen := spread(t, base+"/", 10); seen["b"] != 10 {
		t.Fatalf("answers after the warm-up = %v, want b only", seen)
	}
}
