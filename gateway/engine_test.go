package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testutil"
)

// engineBackend answers with what it received; /chunked answers in two
// flushed parts of unknown length, /slow after 300 ms.
func engineBackend(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			fmt.Fprint(w, "part one;")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "part two")
			return
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		}
		w.Header().Set("X-Seen", fmt.Sprintf("%s %s body=%d xff=%s", r.Method, r.RequestURI, len(body), r.Header.Get("X-Forwarded-For")))
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func engineEdge(t *testing.T) *edge {
	t.Helper()
	e := runEdge(t, Config{Routes: []Route{{Prefix: "/", Service: "web"}}, ClientHeaderTimeout: 5 * time.Second})
	e.up("web", 1, instanceAt(t, "web-1", "web", engineBackend(t).Listener.Addr().String(), ""))
	return e
}

// exchangeOn writes send on c and reads an answer for each of methods.
func exchangeOn(t *testing.T, c net.Conn, br *bufio.Reader, send string, methods ...string) []*http.Response {
	t.Helper()
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatal(err)
	}
	var out []*http.Response
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("answer %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", len(out)+1, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
	return out
}

func bodyOf(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func TestTheEngineAnswersGETAndHEADAndHandsTheRestToNetHTTP(t *testing.T) {
	e := engineEdge(t)
	addr := strings.TrimPrefix(e.url, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)

	rs := exchangeOn(t, c, br, "GET /a?x=1 HTTP/1.1\r\nHost: edge\r\n\r\nGET /chunked HTTP/1.1\r\nHost: edge\r\n\r\nHEAD /a HTTP/1.1\r\nHost: edge\r\n\r\n", "GET", "GET", "HEAD")
	if got := rs[0].Header.Get("X-Seen"); got != "GET /a?x=1 body=0 xff=127.0.0.1" {
		t.Errorf("the instance saw %q", got)
	}
	if rs[0].Header.Get("X-Request-Id") == "" || rs[0].Header.Get("Date") == "" || bodyOf(rs[0]) != "ok" {
		t.Errorf("first answer: %v %q", rs[0].Header, bodyOf(rs[0]))
	}
	if got := bodyOf(rs[1]); got != "part one;part two" || rs[1].TransferEncoding == nil {
		t.Errorf("an answer of unknown length came as %q (transfer encoding %v), want both parts, chunked", got, rs[1].TransferEncoding)
	}
	if rs[2].StatusCode != http.StatusOK || rs[2].ContentLength != 2 || bodyOf(rs[2]) != "" {
		t.Errorf("HEAD: status %d, length %d, body %q", rs[2].StatusCode, rs[2].ContentLength, bodyOf(rs[2]))
	}
	if s, h := e.g.engine.served.Load(), e.g.engine.handedOff.Load(); s != 3 || h != 0 {
		t.Fatalf("engine served %d requests and handed off %d connections, want 3 and 0", s, h)
	}

	// A body is net/http's: the connection goes over, and stays usable.
	rs = exchangeOn(t, c, br, "POST /p HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: edge\r\n\r\n", "POST", "GET")
	if got := rs[0].Header.Get("X-Seen"); got != "POST /p body=5 xff=127.0.0.1" {
		t.Errorf("the instance saw %q for the POST", got)
	}
	if got := rs[1].Header.Get("X-Seen"); got != "GET /b body=0 xff=127.0.0.1" {
		t.Errorf("the instance saw %q for the GET after the POST", got)
	}
	if s, h := e.g.engine.served.Load(), e.g.engine.handedOff.Load(); s != 3 || h != 1 {
		t.Fatalf("engine served %d requests and handed off %d connections, want 3 and 1", s, h)
	}
}

func TestTheEngineClosesWhenTheClientAsks(t *testing.T) {
	e := engineEdge(t)
	addr := strings.TrimPrefix(e.url, "http://")
	for _, tc := range []struct{ desc, send string }{
		{"HTTP/1.0", "GET /a HTTP/1.0\r\nHost: edge\r\n\r\n"},
		{"Connection: close", "GET /a HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			rs := exchangeOn(t, c, br, tc.send, "GET")
			if rs[0].StatusCode != http.StatusOK || !rs[0].Close {
				t.Errorf("status %d, Connection: close %v", rs[0].StatusCode, rs[0].Close)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after the answer: %d bytes, %v; want the connection closed", n, err)
			}
		})
	}
	if e.g.engine.served.Load() != 2 {
		t.Errorf("engine served %d requests, want 2", e.g.engine.served.Load())
	}
}

func TestTheEngineDrainsIdleConnectionsAndFinishesTheRequestInHand(t *testing.T) {
	e := engineEdge(t)
	addr := strings.TrimPrefix(e.url, "http://")
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ibr := bufio.NewReader(idle)
	exchangeOn(t, idle, ibr, "GET /a HTTP/1.1\r\nHost: edge\r\n\r\n", "GET")

	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The slow request is in hand before the drain starts.
	testutil.Eventually(t, 5*time.Second, "the engine takes the slow request", func() bool { return e.g.engine.served.Load() == 2 })
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()

	resp, err := http.ReadResponse(bufio.NewReader(busy), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("the request in hand was not answered: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("the request in hand: status %d, Connection: close %v", resp.StatusCode, resp.Close)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := ibr.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the idle connection: %d bytes, %v; want it closed by the drain", n, err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end")
	}
}

func TestTheEngineEndsASilentStreamWhenItsClientLeaves(t *testing.T) {
	ended := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: hello\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // silent from now on
		close(ended)
	}))
	t.Cleanup(sse.Close)
	e := runEdge(t, Config{Routes: []Route{{Prefix: "/", Service: "events"}}})
	e.up("events", 1, instanceAt(t, "events-1", "events", sse.Listener.Addr().String(), ""))

	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /sse HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: hello\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	if e.g.engine.served.Load() != 1 || e.g.streams.total() != 1 {
		t.Fatalf("engine served %d, streams open %d; want the stream on the engine", e.g.engine.served.Load(), e.g.streams.total())
	}
	c.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the instance's stream went on after its client left")
	}
	testutil.Eventually(t, 5*time.Second, "the stream is no longer tracked", func() bool { return e.g.streams.total() == 0 })
}

// The engine's request ids are requestID's, unique in the process however
// the connections that generate them interleave (with each other and with
// net/http's path), at an allocation per block of ids.
func TestIDBlockHandsOutUniqueIDsAnAllocationABlock(t *testing.T) {
	var a, b idBlock
	seen := map[string]bool{}
	check := func(id string) {
		t.Helper()
		prefix, seq, ok := strings.Cut(id, "-")
		if _, err := strconv.ParseUint(seq, 16, 64); !ok || prefix != requestIDPrefix || err != nil {
			t.Fatalf("id %q is not %s-<hex>", id, requestIDPrefix)
		}
		if seen[id] {
			t.Fatalf("id %q handed out twice", id)
		}
		seen[id] = true
	}
	for i := range 1000 {
		check(a.next())
		check(b.next())
		if i%7 == 0 {
			check(requestID(nil))
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 3200 {
		_ = a.next()
	}
	runtime.ReadMemStats(&after)
	if n := after.Mallocs - before.Mallocs; n > 3200/maxIDBlock+10 {
		t.Errorf("3,200 ids cost %d allocations, want about one per %d", n, maxIDBlock)
	}
}
