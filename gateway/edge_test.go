package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
)

// edge is a gateway serving a plain and a TLS listener on loopback.
type edge struct {
	g       *Gateway
	url     string // http://host:port
	tlsAddr string // host:port
	stop    func() // drains, as SIGTERM does
}

func runEdge(t *testing.T, cfg Config) *edge {
	t.Helper()
	if cfg.Source == nil {
		cfg.Source = idleSource{}
	}
	if cfg.Log == nil {
		cfg.Log, _ = quietLog()
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var tln net.Listener
	if g.TLSEnabled() {
		if tln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln, tln) }()
	e := &edge{g: g, url: "http://" + ln.Addr().String()}
	if tln != nil {
		e.tlsAddr = tln.Addr().String()
	}
	var stopped bool
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	}
	t.Cleanup(e.stop)
	return e
}

// up makes the instances at addrs the UP set of service, at index.
func (e *edge) up(service string, index uint64, insts ...registry.Instance) {
	e.g.apply(service, registry.Snapshot{Index: index, Ready: true, Instances: insts})
}

func instanceAt(t testing.TB, id, service, addr, proto string) registry.Instance {
	host, port := splitHostPort(t, addr)
	return registry.Instance{ID: id, Service: service, Color: "blue", Address: host, Port: port, Status: registry.StatusUp, Protocol: proto}
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestTLSPicksTheCertificateBySNIAndReloadsIt(t *testing.T) {
	ca := testutil.NewCA(t)
	aCert, aKey := ca.Issue(t, "a", "a.test")
	bCert, bKey := ca.Issue(t, "b", "*.b.test")
	be := newBackend(t, "web", nil)
	e := runEdge(t, Config{ID: "gw-tls", Routes: parseRoutes(t, "/=web"), Certs: []CertPair{{aCert, aKey}, {bCert, bKey}}})
	e.up("web", 1, instanceAt(t, "w1", "web", be.addr(), ""))

	serial := func(name string, cfg *tls.Config) string {
		t.Helper()
		c, err := tls.Dial("tcp", e.tlsAddr, cfg)
		if err != nil {
			t.Fatalf("TLS to %s: %v", name, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	tests := []struct {
		desc, sni, wantName string
	}{
		{desc: "an exact name gets its certificate", sni: "a.test", wantName: "a.test"},
		{desc: "a name below a wildcard gets the wildcard certificate", sni: "x.b.test", wantName: "x.b.test"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			serial(tt.sni, ca.ClientConfig(tt.sni)) // verifies the chain and the name
		})
	}
	t.Run("an unknown name gets the first pair", func(t *testing.T) {
		c, err := tls.Dial("tcp", e.tlsAddr, &tls.Config{RootCAs: ca.Pool, ServerName: "other.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "a.test" {
			t.Fatalf("default certificate names %v, want [a.test]", got)
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		cfg := ca.ClientConfig("a.test")
		cfg.MaxVersion = tls.VersionTLS11
		if c, err := tls.Dial("tcp", e.tlsAddr, cfg); err == nil {
			c.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
	t.Run("curl gets HTTP/2 by ALPN and the answer", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(e.tlsAddr)
		out := curl(t, "--http2", "--cacert", ca.File, "--resolve", "a.test:"+port+":"+host,
			"-w", "\n%{http_version}", "https://a.test:"+port+"/hello")
		if out != "web\n2" {
			t.Fatalf("curl over TLS = %q, want the answer over HTTP/2", out)
		}
	})
	t.Run("curl over TLS with HTTP/1.1", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(e.tlsAddr)
		out := curl(t, "--http1.1", "--cacert", ca.File, "--resolve", "a.test:"+port+":"+host,
			"-w", "\n%{http_version}", "https://a.test:"+port+"/hello")
		if out != "web\n1.1" {
			t.Fatalf("curl over TLS = %q, want the answer over HTTP/1.1", out)
		}
		if got := be.last.Load().Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Fatalf("X-Forwarded-Proto = %q, want https", got)
		}
	})
	t.Run("a changed certificate file is served without a restart", func(t *testing.T) {
		before := serial("a.test", ca.ClientConfig("a.test"))
		ca.Issue(t, "a", "a.test") // a new serial, same paths
		testutil.Eventually(t, 15*time.Second, "the renewed certificate to be served", func() bool {
			return serial("a.test", ca.ClientConfig("a.test")) != before
		})
	})
	t.Run("a broken certificate file keeps the last good one serving", func(t *testing.T) {
		if err := os.WriteFile(aCert, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.g.Reload(); err == nil {
			t.Fatal("Reload of a broken certificate succeeded")
		}
		serial("a.test", ca.ClientConfig("a.test"))
	})
}

func TestH2CPriorKnowledgeFromClientsAndToInstances(t *testing.T) {
	// An instance that speaks only HTTP/2 with prior knowledge.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2only := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "h2c-instance %s", r.Proto)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = h2only.Serve(ln) }()
	t.Cleanup(func() { h2only.Close() })
	plain := newBackend(t, "h1-instance", nil)

	e := runEdge(t, Config{ID: "gw-h2c", Routes: parseRoutes(t, "/h2=h2svc", "/=web")})
	e.up("h2svc", 1, instanceAt(t, "h2", "h2svc", ln.Addr().String(), registry.ProtocolH2C))
	e.up("web", 1, instanceAt(t, "w1", "web", plain.addr(), ""))

	if out := curl(t, "--http2-prior-knowledge", "-w", "\n%{http_version}", e.url+"/"); out != "h1-instance\n2" {
		t.Fatalf("h2c from the client = %q, want the HTTP/1.1 instance's answer over HTTP/2", out)
	}
	if out := curl(t, "--http1.1", e.url+"/h2/x"); out != "h2c-instance HTTP/2.0" {
		t.Fatalf("to an h2c instance = %q, want it reached over HTTP/2", out)
	}
}

// grpcInstance serves the standard health service over h2c, with the
// instance's name in the response headers.
func grpcInstance(t *testing.T, name string) (addr string, hs *health.Server) {
	t.Helper()
	hs = health.NewServer()
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs("x-instance", name))
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(metadata.Pairs("x-instance", name))
			return h(srv, ss)
		}))
	healthpb.RegisterHealthServer(srv, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

func TestGRPCThroughTheGatewayAndStreamsMoveWhenTheirInstanceLeaves(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "gw", "gw.test")
	blueAddr, _ := grpcInstance(t, "blue-1")
	greenAddr, _ := grpcInstance(t, "green-1")
	e := runEdge(t, Config{ID: "gw-grpc", Routes: parseRoutes(t, "/=grpc"), Certs: []CertPair{{cert, key}}, StreamGrace: -1})
	blue := instanceAt(t, "blue-1", "grpc", blueAddr, registry.ProtocolH2C)
	green := instanceAt(t, "green-1", "grpc", greenAddr, registry.ProtocolH2C)
	green.Color = "green"
	e.up("grpc", 1, blue)

	clients := map[string]*grpc.ClientConn{}
	for name, opt := range map[string]grpc.DialOption{
		"h2c":      grpc.WithTransportCredentials(insecure.NewCredentials()),
		"over TLS": grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig("gw.test"))),
	} {
		target := strings.TrimPrefix(e.url, "http://")
		if name == "over TLS" {
			target = e.tlsAddr
		}
		cc, err := grpc.NewClient("passthrough:///"+target, opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		clients[name] = cc
	}
	for name, cc := range clients {
		t.Run("unary call "+name+" carries headers, status and trailers", func(t *testing.T) {
			var hdr metadata.MD
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != healthpb.HealthCheckResponse_SERVING || strings.Join(hdr.Get("x-instance"), "") != "blue-1" {
				t.Fatalf("Check = %v from %v", res.Status, hdr.Get("x-instance"))
			}
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("Check of an unknown service: %v, want the instance's NotFound status", err)
			}
		})
	}
	t.Run("a stream on an instance that left the UP set ends with UNAVAILABLE; new calls go to the new one", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var hdr metadata.MD
		stream, err := healthpb.NewHealthClient(clients["over TLS"]).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first Watch message %v, %v", m, err)
		}
		testutil.Eventually(t, 5*time.Second, "the stream to be tracked", func() bool { return e.g.streams.counts()["blue-1"] == 1 })
		e.up("grpc", 2, blue, green)
		if got := e.g.streams.counts()["blue-1"]; got != 1 {
			t.Fatalf("a change that keeps blue UP touched its stream: %d open", got)
		}
		e.up("grpc", 3, green)
		_, err = stream.Recv()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
		}
		var hdr2 metadata.MD
		if _, err := healthpb.NewHealthClient(clients["over TLS"]).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr2)); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(hdr2.Get("x-instance"), ""); got != "green-1" {
			t.Fatalf("the next call went to %q, want green-1", got)
		}
		if e.g.streams.moved.Load() != 1 {
			t.Fatalf("moved = %d, want 1", e.g.streams.moved.Load())
		}
	})
}

// wsEcho is a WebSocket echo instance that says its name first.
func wsEcho(t *testing.T, name string) *backend {
	return newBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sse" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: %s\n\n", name)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if err := c.Write(ctx, websocket.MessageText, []byte(name)); err != nil {
			return
		}
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	})
}

func dialWS(t *testing.T, ctx context.Context, url string) (*websocket.Conn, string) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, first, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, string(first)
}

func TestWebSocketsFollowTheSwitchWithGoingAway(t *testing.T) {
	blue, green := wsEcho(t, "blue-1"), wsEcho(t, "green-1")
	e := runEdge(t, Config{ID: "gw-ws", Routes: parseRoutes(t, "/=web"), StreamGrace: 300 * time.Millisecond})
	b := instanceAt(t, "blue-1", "web", blue.addr(), "")
	g := instanceAt(t, "green-1", "web", green.addr(), "")
	e.up("web", 1, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, first := dialWS(t, ctx, e.url)
	if first != "blue-1" {
		t.Fatalf("first message %q", first)
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, echo, err := c.Read(ctx); err != nil || string(echo) != "\x00\x01\x02" {
		t.Fatalf("echo %q, %v", echo, err)
	}

	t.Run("a rollback within the grace period keeps the stream", func(t *testing.T) {
		e.up("web", 2, g)
		if got := e.g.streams.pendingMoves(); len(got) != 1 || got[0] != "blue-1" {
			t.Fatalf("pending moves after the switch = %v, want [blue-1]", got)
		}
		e.up("web", 3, b)
		if got := e.g.streams.pendingMoves(); len(got) != 0 {
			t.Fatalf("pending moves after the rollback = %v, want none", got)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("still there")); err != nil {
			t.Fatal(err)
		}
		if _, echo, err := c.Read(ctx); err != nil || string(echo) != "still there" {
			t.Fatalf("after a rollback: %q, %v", echo, err)
		}
	})
	t.Run("the instance leaving the UP set closes it with 1001 after the grace", func(t *testing.T) {
		e.up("web", 4, g)
		_, _, err := c.Read(ctx)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("read after the switch: %v (status %d), want 1001", err, got)
		}
		c2, first := dialWS(t, ctx, e.url)
		defer c2.CloseNow()
		if first != "green-1" {
			t.Fatalf("the reconnect landed on %q, want green-1", first)
		}
	})
	t.Run("SSE on a leaving instance ends cleanly", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/sse", nil)
		res, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		if err != nil || line != "data: green-1\n" {
			t.Fatalf("first event %q, %v", line, err)
		}
		e.up("web", 5, b)
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			t.Fatalf("the SSE answer ended with %v, want a clean end", err)
		}
	})
	t.Run("shutdown closes WebSockets with 1001", func(t *testing.T) {
		c3, _ := dialWS(t, ctx, e.url)
		go e.stop()
		_, _, err := c3.Read(ctx)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("read during the drain: %v, want 1001", err)
		}
	})
}

func TestRequestLimitSparesStreamsButTheReadTimeoutDoesNot(t *testing.T) {
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; ; i++ {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		case "/quiet-ws":
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			_, _, _ = c.Read(r.Context()) // never says a word
		default:
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			_, _ = io.WriteString(w, "late")
		}
	})
	route := Route{Prefix: "/", Service: "web", Timeouts: Timeouts{Request: 400 * time.Millisecond, Read: 300 * time.Millisecond}}
	e := runEdge(t, Config{ID: "gw-limits", Routes: []Route{route}})
	e.up("web", 1, instanceAt(t, "w1", "web", slow.addr(), ""))

	t.Run("a plain request over the limit gets 504", func(t *testing.T) {
		if r := get(t, e.url+"/late"); r.code != http.StatusGatewayTimeout {
			t.Fatalf("GET /late = %d %q, want 504 after the route's request limit", r.code, r.body)
		}
	})
	t.Run("an SSE stream outlives the request limit while it keeps talking", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/sse", nil)
		res, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		start := time.Now()
		for time.Since(start) < 1200*time.Millisecond { // three request limits
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatalf("the stream ended after %s: %v", time.Since(start), err)
			}
		}
	})
	t.Run("a silent WebSocket is closed with 1001 after the read timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, strings.Replace(e.url, "http", "ws", 1)+"/quiet-ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		_, _, err = c.Read(ctx)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("silent WebSocket: %v, want 1001 after the read timeout", err)
		}
	})
}
