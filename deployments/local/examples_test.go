package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/zkstate"
)

func oneController(o *Options) { o.Controllers = 1 }

// greeting is the first message of hello's streams.
type greeting struct {
	Color    string `json:"color"`
	Instance string `json:"instance"`
}

func checkGreeting(t *testing.T, b []byte, inst *Instance) {
	t.Helper()
	var g greeting
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("greeting %q is not JSON: %v", b, err)
	}
	if g.Color != string(inst.Color) || g.Instance != inst.ID {
		t.Fatalf("greeting %q, want color %s and instance %s", b, inst.Color, inst.ID)
	}
}

// dialEcho opens hello's WebSocket and reads its greeting.
func dialEcho(ctx context.Context, t *testing.T, inst *Instance) *websocket.Conn {
	t.Helper()
	// Behind a gateway, a browser's Origin names the gateway, not the
	// instance; hello must take it.
	conn, resp, err := websocket.Dial(ctx, "ws://"+inst.Addr+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"https://gateway.example"}},
	})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	conn.SetReadLimit(1 << 20)
	if got := resp.Header.Get("X-Switchyard-Color"); got != string(inst.Color) {
		t.Errorf("upgrade answered X-Switchyard-Color %q, want %s", got, inst.Color)
	}
	typ, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the greeting: %v", err)
	}
	if typ != websocket.MessageText {
		t.Errorf("greeting is a %v message, want text", typ)
	}
	checkGreeting(t, b, inst)
	return conn
}

// sse is one Server-Sent Event.
type sse struct{ event, data string }

func readEvent(r *bufio.Reader) (sse, error) {
	var ev sse
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && ev != (sse{}):
			return ev, nil
		case strings.HasPrefix(line, "event:"):
			ev.event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			ev.data = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		}
	}
}

// openEvents opens hello's event stream and reads its hello event.
func openEvents(ctx context.Context, t *testing.T, inst *Instance, every string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inst.Addr+"/sse?every="+every, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /sse: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse answered %s", resp.Status)
	}
	for name, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Switchyard-Color": string(inst.Color)} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("GET /sse answered %s %q, want %q", name, got, want)
		}
	}
	r := bufio.NewReader(resp.Body)
	ev, err := readEvent(r)
	if err != nil {
		t.Fatalf("read the first event: %v", err)
	}
	if ev.event != "hello" {
		t.Fatalf("first event is %q, want hello", ev.event)
	}
	checkGreeting(t, []byte(ev.data), inst)
	return resp, r
}

func TestExampleHelloEndpoints(t *testing.T) {
	c, _ := startCluster(t, builtin(), 1, 0, oneController)
	inst := c.Instances[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("a WebSocket greets with the color, then echoes text and binary messages", func(t *testing.T) {
		conn := dialEcho(ctx, t, inst)
		for _, m := range []struct {
			typ  websocket.MessageType
			data []byte
		}{
			{websocket.MessageText, []byte("hello through the switch")},
			{websocket.MessageBinary, []byte{0, 1, 2, 0xfe, 0xff}},
			{websocket.MessageBinary, bytes.Repeat([]byte{7}, 100_000)},
		} {
			if err := conn.Write(ctx, m.typ, m.data); err != nil {
				t.Fatalf("write a %v message: %v", m.typ, err)
			}
			typ, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("read the echo of a %v message: %v", m.typ, err)
			}
			if typ != m.typ || !bytes.Equal(b, m.data) {
				t.Errorf("echo of a %v message of %d bytes is a %v message of %d bytes", m.typ, len(m.data), typ, len(b))
			}
		}
		if err := conn.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Errorf("close: %v", err)
		}
	})

	t.Run("an event stream says hello, then ticks with a counter", func(t *testing.T) {
		_, r := openEvents(ctx, t, inst, "20ms")
		for n := 1; n <= 3; n++ {
			ev, err := readEvent(r)
			if err != nil {
				t.Fatalf("read tick %d: %v", n, err)
			}
			if want := (sse{"tick", fmt.Sprint(n)}); ev != want {
				t.Fatalf("event %+v, want %+v", ev, want)
			}
		}
	})

	t.Run("delay and status answer as asked and refuse what makes no sense", func(t *testing.T) {
		for _, tc := range []struct {
			desc, method, path string
			want               int
			atLeast            time.Duration
		}{
			{desc: "a delay answers after it", method: http.MethodGet, path: "/delay/50", want: http.StatusOK, atLeast: 50 * time.Millisecond},
			{desc: "a delay that is no number is refused", method: http.MethodGet, path: "/delay/x", want: http.StatusBadRequest},
			{desc: "a status is answered", method: http.MethodGet, path: "/status/503", want: http.StatusServiceUnavailable},
			{desc: "a status is answered to any method", method: http.MethodPost, path: "/status/418", want: http.StatusTeapot},
			{desc: "a status below 100 is refused", method: http.MethodGet, path: "/status/42", want: http.StatusBadRequest},
			{desc: "an informational status is refused", method: http.MethodGet, path: "/status/101", want: http.StatusBadRequest},
			{desc: "an event stream with no interval is refused", method: http.MethodGet, path: "/sse?every=soon", want: http.StatusBadRequest},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				req, _ := http.NewRequestWithContext(ctx, tc.method, "http://"+inst.Addr+tc.path, nil)
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var body map[string]any
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
					t.Fatalf("%s %s: body is not JSON: %v", tc.method, tc.path, err)
				}
				if resp.StatusCode != tc.want {
					t.Errorf("%s %s answered %s, want %d", tc.method, tc.path, resp.Status, tc.want)
				}
				if took := time.Since(start); took < tc.atLeast {
					t.Errorf("%s %s answered after %v, want at least %v", tc.method, tc.path, took, tc.atLeast)
				}
				if got := resp.Header.Get("X-Switchyard-Color"); got != string(inst.Color) || body["color"] != string(inst.Color) {
					t.Errorf("%s %s answered color %q in the header and %v in the body, want %s", tc.method, tc.path, got, body["color"], inst.Color)
				}
				if _, ok := body["error"]; ok != (tc.want == http.StatusBadRequest) {
					t.Errorf("%s %s answered %v: an error must be said when, and only when, the request is refused", tc.method, tc.path, body)
				}
			})
		}
	})

	t.Run("stopping the instance closes an open WebSocket as going away and ends an event stream", func(t *testing.T) {
		conn := dialEcho(ctx, t, inst)
		_, events := openEvents(ctx, t, inst, "50ms")
		stopped := make(chan struct{})
		go func() { inst.Stop(15 * time.Second); close(stopped) }()
		_, _, err := conn.Read(ctx)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Errorf("the WebSocket ended with %v (status %v), want status %v", err, got, websocket.StatusGoingAway)
		}
		for {
			ev, err := readEvent(events)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("the event stream ended with %v, want a normal end", err)
				}
				break
			}
			if ev.event != "tick" {
				t.Errorf("event %+v, want ticks", ev)
			}
		}
		select {
		case <-stopped:
		case <-ctx.Done():
			t.Fatal("the instance did not stop")
		}
	})
}

func TestExampleHelloGRPC(t *testing.T) {
	c, _ := startCluster(t, builtin(), 0, 0, oneController)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := c.StartGRPCInstance(ctx, zkstate.Blue)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(inst.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	checkWho := func(t *testing.T, call string, md metadata.MD) {
		t.Helper()
		if got := md.Get("x-switchyard-color"); len(got) != 1 || got[0] != string(inst.Color) {
			t.Errorf("%s answered x-switchyard-color %q, want %s", call, got, inst.Color)
		}
		if got := md.Get("x-switchyard-instance"); len(got) != 1 || got[0] != inst.ID {
			t.Errorf("%s answered x-switchyard-instance %q, want %s", call, got, inst.ID)
		}
	}

	t.Run("health is SERVING for the server and the service, with the color in the headers", func(t *testing.T) {
		for _, service := range []string{"", "hello-grpc"} {
			var md metadata.MD
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.Header(&md))
			if err != nil {
				t.Fatalf("Check(%q): %v", service, err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Check(%q) = %v, want SERVING", service, resp.GetStatus())
			}
			checkWho(t, fmt.Sprintf("Check(%q)", service), md)
		}
		if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
			t.Errorf("Check of an unknown service: %v, want NotFound", err)
		}
	})

	t.Run("the bidi echo sends every message back", func(t *testing.T) {
		stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range [][]byte{[]byte("ping"), {0, 1, 0xff}} {
			if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
				t.Fatalf("send: %v", err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), body) {
				t.Errorf("echo of %q is %q", body, resp.GetPayload().GetBody())
			}
		}
		md, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		checkWho(t, "FullDuplexCall", md)
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend the stream ended with %v, want io.EOF", err)
		}
	})

	t.Run("the SDK's health check answers HTTP/1.1 on the same port", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inst.Addr+sdk.HealthPath, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			ID     string `json:"id"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("health body is not JSON: %v", err)
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 || body.Status != "ok" || body.ID != inst.ID {
			t.Errorf("GET %s answered %s over %s with %+v, want 200 over HTTP/1.1 with status ok and id %s", sdk.HealthPath, resp.Status, resp.Proto, body, inst.ID)
		}
	})

	t.Run("plain HTTP answers who it is, over HTTP/1.1 and over h2c", func(t *testing.T) {
		h2c := &http.Transport{Protocols: new(http.Protocols)}
		h2c.Protocols.SetUnencryptedHTTP2(true)
		defer h2c.CloseIdleConnections()
		for _, hc := range []*http.Client{http.DefaultClient, {Transport: h2c}} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inst.Addr+"/", nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]string
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || body["color"] != string(inst.Color) || body["instance"] != inst.ID ||
				resp.Header.Get("X-Switchyard-Color") != string(inst.Color) {
				t.Errorf("GET / over %s answered %s with %v (%v), want 200 from %s of %s", resp.Proto, resp.Status, body, err, inst.ID, inst.Color)
			}
		}
	})

	t.Run("a Watch sees SERVING, then NOT_SERVING at shutdown, then ends UNAVAILABLE", func(t *testing.T) {
		watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: "hello-grpc"})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Watch sent %v first, want SERVING", resp.GetStatus())
		}
		md, err := watch.Header()
		if err != nil {
			t.Fatal(err)
		}
		checkWho(t, "Watch", md)
		stopped := make(chan struct{})
		go func() { inst.Stop(15 * time.Second); close(stopped) }()
		if resp, err = watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("at shutdown Watch sent %v, %v; want NOT_SERVING", resp.GetStatus(), err)
		}
		if _, err = watch.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("at shutdown Watch ended with %v, want Unavailable", err)
		}
		select {
		case <-stopped:
		case <-ctx.Done():
			t.Fatal("the instance did not stop")
		}
	})
}
