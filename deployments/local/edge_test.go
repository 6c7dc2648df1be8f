package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/zkstate"
)

// wsClient keeps one WebSocket open through the gateway, echoing a message
// every pause, and reconnects when the gateway closes it with 1001 or 1000.
// Any other end is a failure.
type wsClient struct {
	color    atomic.Value // zkstate.Color it is connected to now
	moves    atomic.Int32
	mu       sync.Mutex
	failures []string
}

func (w *wsClient) fail(format string, args ...any) {
	w.mu.Lock()
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *wsClient) run(ctx context.Context, url string, pause time.Duration) {
	for ctx.Err() == nil {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			if ctx.Err() == nil {
				w.fail("dial: %v", err)
			}
			return
		}
		_, first, err := c.Read(ctx)
		var g greeting
		if err != nil || json.Unmarshal(first, &g) != nil {
			w.fail("greeting %q: %v", first, err)
			c.CloseNow()
			return
		}
		w.color.Store(zkstate.Color(g.Color))
		for ctx.Err() == nil {
			msg := []byte(time.Now().String())
			err := c.Write(ctx, websocket.MessageText, msg)
			if err == nil {
				var echo []byte
				_, echo, err = c.Read(ctx)
				if err == nil && string(echo) != string(msg) {
					w.fail("echo %q of %q", echo, msg)
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				switch code := websocket.CloseStatus(err); code {
				case websocket.StatusGoingAway, websocket.StatusNormalClosure:
					w.moves.Add(1)
				default:
					w.fail("closed with %d: %v", code, err)
					c.CloseNow()
					return
				}
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// grpcLoad calls Health.Check through the gateway until stopped, never
// retrying a call, and counts who answered.
type grpcLoad struct {
	calls, errs atomic.Int64
	mu          sync.Mutex
	byColor     map[string]int
	firstErrs   []string
}

func (g *grpcLoad) run(ctx context.Context, cc *grpc.ClientConn) {
	hc := healthpb.NewHealthClient(cc)
	for ctx.Err() == nil {
		var hdr metadata.MD
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
		cancel()
		if ctx.Err() != nil {
			return
		}
		g.calls.Add(1)
		g.mu.Lock()
		if err != nil {
			g.errs.Add(1)
			if len(g.firstErrs) < 5 {
				g.firstErrs = append(g.firstErrs, err.Error())
			}
		} else {
			g.byColor[strings.Join(hdr.Get("x-switchyard-color"), "")]++
		}
		g.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// A switch under mixed load fails nothing: HTTP/1.1 GET and POST, HTTP/2
// over TLS, gRPC unary calls and 20 WebSockets, which are all on the new
// color within the stream grace period and 2 s, closed with 1001 only.
func TestSwitchUnderMixedLoadMovesEveryStream(t *testing.T) {
	const grace = 2 * time.Second
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "gateway", "gateway.test", "127.0.0.1")
	tlsPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	c, _ := startCluster(t, builtin(), 2, 2, func(o *Options) {
		o.GatewayArgs = []string{"--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key,
			"--route", "/grpc.health.v1.Health=hello-grpc", "--stream-grace", grace.String()}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, color := range zkstate.Colors {
		if _, err := c.StartGRPCInstance(ctx, color); err != nil {
			t.Fatal(err)
		}
	}
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(c.GatewayURL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := retry.Until(ctx, 30*time.Second, func() (bool, error) {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("gRPC through the gateway never served: %v", err)
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	h1 := StartLoad(loadCtx, c.GatewayURL+"/", 4, 5*time.Millisecond)
	h2client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: ca.ClientConfig("gateway.test"), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4,
	}}
	h2 := StartLoadClient(loadCtx, h2client, "https://"+tlsAddr+"/", 4, 5*time.Millisecond, http.MethodGet, http.MethodPost)
	gl := &grpcLoad{byColor: map[string]int{}}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { gl.run(loadCtx, cc) })
	}
	ws := make([]*wsClient, 20)
	for i := range ws {
		ws[i] = &wsClient{}
		wg.Go(func() { ws[i].run(loadCtx, strings.Replace(c.GatewayURL, "http", "ws", 1)+"/ws", 100*time.Millisecond) })
	}
	onColor := func(color zkstate.Color) int {
		n := 0
		for _, w := range ws {
			if got, _ := w.color.Load().(zkstate.Color); got == color {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, 20*time.Second, "20 WebSockets on blue", func() bool { return onColor(zkstate.Blue) == len(ws) })
	waitSent(t, h1, 200)
	waitSent(t, h2, 200)

	if _, _, err := c.Flip(ctx, "green"); err != nil {
		t.Fatal(err)
	}
	rec, err := c.WaitRecord(ctx, time.Minute, func(s zkstate.Switch) bool { return s.Target == zkstate.Green && s.Phase != zkstate.PhaseSwitching })
	if err != nil || rec.Phase != zkstate.PhaseDone {
		t.Fatalf("switch: %+v, %v", rec, err)
	}
	deadline := rec.FinishedAt.Add(grace + 2*time.Second)
	for time.Now().Before(deadline) && onColor(zkstate.Green) < len(ws) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := onColor(zkstate.Green); n != len(ws) {
		t.Errorf("%d of %d WebSockets on green %s after the switch finished (grace %s + 2s)", n, len(ws), time.Since(*rec.FinishedAt).Round(time.Millisecond), grace)
	}
	callsAtSwitch := gl.calls.Load()
	testutil.Eventually(t, 10*time.Second, "gRPC calls after the switch", func() bool { return gl.calls.Load() > callsAtSwitch+50 })
	final, err := c.WaitRecord(ctx, 30*time.Second, func(s zkstate.Switch) bool { return s.Streams != nil && s.Streams.Left == 0 })
	if err != nil {
		t.Errorf("the record never showed every stream moved: %+v", rec.Streams)
	}
	stopLoad()
	wg.Wait()
	r1, r2 := h1.Stop(), h2.Stop()

	for name, rs := range map[string][]Result{"HTTP/1.1": r1, "HTTP/2 over TLS": r2} {
		assertServed(t, rs, "over "+name+" across the switch")
		if last := rs[len(rs)-1]; last.Color != zkstate.Green {
			t.Errorf("the last %s request went to %s", name, last.Color)
		}
	}
	if gl.errs.Load() > 0 {
		t.Errorf("gRPC: %d of %d calls failed: %v", gl.errs.Load(), gl.calls.Load(), gl.firstErrs)
	}
	if gl.byColor["green"] == 0 {
		t.Errorf("gRPC calls by color %v, want some on green", gl.byColor)
	}
	moves := 0
	for i, w := range ws {
		if len(w.failures) > 0 {
			t.Errorf("WebSocket %d: %v", i, w.failures)
		}
		moves += int(w.moves.Load())
	}
	if moves < len(ws) {
		t.Errorf("%d WebSockets were moved, want every one of %d", moves, len(ws))
	}
	if final.Streams != nil && final.Streams.Moved < len(ws) {
		t.Errorf("record says %d streams moved, want at least %d: %+v", final.Streams.Moved, len(ws), final.Streams)
	}
	t.Logf("HTTP/1.1 %d, HTTP/2 %d requests, gRPC %d calls %v, WebSockets moved %d; record streams %+v",
		len(r1), len(r2), gl.calls.Load(), gl.byColor, moves, final.Streams)
}

// hostGet sends GET path to the gateway with a Host header and returns
// the status.
func hostGet(t *testing.T, gatewayURL, host, path string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, gatewayURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// The gateway's routes come from a config file: by host with the prefix
// stripped; SIGHUP reloads it, and a broken file changes nothing. Every
// request gets one access log line.
func TestGatewayConfigReloadsOnSIGHUPAndKeepsTheLastGoodOne(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "gateway.yaml")
	accessLog := filepath.Join(dir, "access.log")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := "routes:\n  - match: {prefix: /}\n    service: hello\n  - match: {host: api.test, prefix: /v1}\n    service: hello\n    strip_prefix: true\n"
	write(good)
	c, _ := startCluster(t, builtin(), 1, 0, oneController, func(o *Options) {
		o.GatewayArgs = []string{"--config", conf, "--access-log", accessLog}
	})
	if got := hostGet(t, c.GatewayURL, "api.test", "/v1/status/201"); got != http.StatusCreated {
		t.Fatalf("api.test/v1/status/201 = %d, want 201 from /status/201 with the prefix stripped", got)
	}
	if got := hostGet(t, c.GatewayURL, "other.test", "/v1/status/201"); got != http.StatusOK {
		t.Fatalf("other.test/v1/status/201 = %d, want hello's catch-all 200 for /v1/...: the prefix is stripped only for api.test", got)
	}

	write("routes:\n  - match: {prefix: /}\n    service: hello\n    bogus: 1\n")
	if err := c.Gateway.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the gateway to refuse the broken config", func() bool {
		b, _ := os.ReadFile(filepath.Join(c.opts.Dir, "gateway.log"))
		return strings.Contains(string(b), "config not reloaded") && strings.Contains(string(b), "gateway.yaml:4")
	})
	if got := hostGet(t, c.GatewayURL, "api.test", "/v1/status/201"); got != http.StatusCreated {
		t.Fatalf("after a broken reload api.test/v1/status/201 = %d, want the last good routes", got)
	}

	write(good + "  - match: {host: new.test, prefix: /n}\n    service: hello\n    strip_prefix: true\n")
	if err := c.Gateway.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the new route", func() bool {
		return hostGet(t, c.GatewayURL, "new.test", "/n/status/202") == http.StatusAccepted
	})

	var line struct {
		RequestID string `json:"request_id"`
		Host      string `json:"host"`
		Path      string `json:"path"`
		Status    int    `json:"status"`
		Upstream  string `json:"upstream"`
		Color     string `json:"color"`
		Service   string `json:"service"`
	}
	testutil.Eventually(t, 10*time.Second, "the access log line of the first request", func() bool {
		b, _ := os.ReadFile(accessLog)
		for _, l := range strings.Split(string(b), "\n") {
			if json.Unmarshal([]byte(l), &line) == nil && line.Host == "api.test" && line.Status == http.StatusCreated {
				return true
			}
		}
		return false
	})
	if line.RequestID == "" || line.Path != "/v1/status/201" || line.Upstream != c.Instances[0].ID || line.Color != "blue" || line.Service != "hello" {
		t.Fatalf("access log line %+v", line)
	}
}
