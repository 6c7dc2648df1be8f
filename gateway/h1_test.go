package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/switchyard/switchyard/internal/testutil"
)

// connCount counts a backend's connections.
type connCount struct {
	opened, closed atomic.Int64
}

// countingServer is a backend that counts the connections it accepted and
// closed.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *connCount) {
	t.Helper()
	var conns connCount
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.opened.Add(1)
		case http.StateClosed:
			conns.closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// outgoing is a request as the gateway's Rewrite leaves it.
func outgoing(t *testing.T, ctx context.Context, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = ""
	return req
}

func roundTrip(t *testing.T, tr http.RoundTripper, req *http.Request) (int, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestH1TransportFastPath(t *testing.T) {
	get := func(mut func(r *http.Request)) *http.Request {
		r := outgoing(t, context.Background(), http.MethodGet, "http://127.0.0.1:1/x?y=1")
		if mut != nil {
			mut(r)
		}
		return r
	}
	for _, tc := range []struct {
		desc string
		req  *http.Request
		want bool
	}{
		{desc: "GET without a body takes the fast path", req: get(nil), want: true},
		{desc: "HEAD takes the fast path", req: get(func(r *http.Request) { r.Method = http.MethodHead }), want: true},
		{desc: "POST goes to http.Transport", req: get(func(r *http.Request) { r.Method = http.MethodPost }), want: false},
		{desc: "a body goes to http.Transport", req: get(func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")); r.ContentLength = 1 }), want: false},
		{desc: "an upgrade goes to http.Transport", req: get(func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }), want: false},
		{desc: "Expect goes to http.Transport", req: get(func(r *http.Request) { r.Header.Set("Expect", "100-continue") }), want: false},
		{desc: "a header value with a line break goes to http.Transport", req: get(func(r *http.Request) { r.Header["X-A"] = []string{"a\r\nX-B: b"} }), want: false},
		{desc: "a malformed header name goes to http.Transport", req: get(func(r *http.Request) { r.Header["X A"] = []string{"a"} }), want: false},
		{desc: "an explicit Host goes to http.Transport", req: get(func(r *http.Request) { r.Host = "example" }), want: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := fastPath(tc.req); got != tc.want {
				t.Errorf("fastPath = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestH1Transport(t *testing.T) {
	t.Run("keep-alive connections are reused", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.RequestURI()) })
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		for range 20 {
			if code, body := roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/a?b=c")); code != 200 || body != "/a?b=c" {
				t.Fatalf("got %d %q", code, body)
			}
		}
		if n := conns.opened.Load(); n != 1 {
			t.Errorf("backend saw %d connections for 20 sequential requests, want 1", n)
		}
	})
	t.Run("a kept-alive connection the backend closed is replaced without an error", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/"))
		srv.CloseClientConnections()
		testutil.Eventually(t, 10*time.Second, "the backend to close the kept-alive connection", func() bool { return conns.closed.Load() == 1 })
		if code, body := roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/")); code != 200 || body != "ok" {
			t.Fatalf("got %d %q", code, body)
		}
		if n := conns.opened.Load(); n != 2 {
			t.Errorf("backend saw %d connections, want 2", n)
		}
	})
	t.Run("a response with Connection: close is not reused", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		})
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		for range 3 {
			roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/"))
		}
		if n := conns.opened.Load(); n != 3 {
			t.Errorf("backend saw %d connections, want 3", n)
		}
	})
	t.Run("a body closed before its end takes the connection with it", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, strings.Repeat("x", 64<<10)) })
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		for range 2 {
			resp, err := tr.RoundTrip(outgoing(t, context.Background(), http.MethodGet, srv.URL+"/"))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = resp.Body.Read(make([]byte, 10))
			resp.Body.Close()
		}
		if n := conns.opened.Load(); n != 2 {
			t.Errorf("backend saw %d connections, want 2", n)
		}
	})
	t.Run("informational responses before the answer are passed over", func(t *testing.T) {
		srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "final")
		})
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		if code, body := roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/")); code != 200 || body != "final" {
			t.Fatalf("got %d %q", code, body)
		}
	})
	t.Run("HEAD reads no body", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "5")
		})
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		for range 2 {
			if code, body := roundTrip(t, tr, outgoing(t, context.Background(), http.MethodHead, srv.URL+"/")); code != 200 || body != "" {
				t.Fatalf("got %d %q", code, body)
			}
		}
		if n := conns.opened.Load(); n != 1 {
			t.Errorf("backend saw %d connections, want 1", n)
		}
	})
	t.Run("a client that goes away aborts the backend exchange", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		aborted := make(chan struct{})
		srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done(): // the gateway closed the connection
				close(aborted)
			}
		})
		tr := newH1Transport(newTransport(testUpstream, false), testUpstream.Read)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := tr.RoundTrip(outgoing(t, ctx, http.MethodGet, srv.URL+"/"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's", err)
		}
		select {
		case <-aborted:
		case <-time.After(10 * time.Second):
			t.Error("the backend never saw its request aborted")
		}
	})
	t.Run("a refused connection is a dial error, so the gateway retries elsewhere", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = newH1Transport(newTransport(testUpstream, false), testUpstream.Read).RoundTrip(outgoing(t, context.Background(), http.MethodGet, "http://"+addr+"/"))
		if !isDialError(err) {
			t.Fatalf("err = %v, want a dial error", err)
		}
	})
	t.Run("idle connections past the idle timeout are closed, not used", func(t *testing.T) {
		srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
		base := newTransport(testUpstream, false)
		base.IdleConnTimeout = 30 * time.Millisecond
		tr := newH1Transport(base, 0)
		roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/"))
		host := srv.Listener.Addr().String()
		testutil.Eventually(t, 10*time.Second, "the pooled connection to outlive the idle timeout", func() bool {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			idle := tr.idle[host]
			return len(idle) == 1 && time.Since(idle[0].since) > base.IdleConnTimeout
		})
		roundTrip(t, tr, outgoing(t, context.Background(), http.MethodGet, srv.URL+"/"))
		if n := conns.opened.Load(); n != 2 {
			t.Errorf("backend saw %d connections, want 2", n)
		}
	})
}

// testUpstream are the upstream timeouts the transport tests run with.
var testUpstream = Timeouts{Connect: time.Second, ResponseHeader: time.Minute, Idle: 90 * time.Second}

// splitField is one pass over a field line; it must say what cutting at
// the first ':', trimming the value's blanks and checking both says, for
// any line.
func TestSplitFieldAgreesWithCutTrimAndCheck(t *testing.T) {
	reference := func(l []byte) (name, value []byte, ok bool) {
		name, value, ok = bytes.Cut(l, []byte(":"))
		if !ok || !validFieldName(name) {
			return nil, nil, false
		}
		value = bytes.Trim(value, " \t")
		return name, value, validHeaderValue(value)
	}
	// The bytes that matter to a field line, and any byte at all.
	telling := rapid.SampledFrom([]byte{':', ' ', '\t', '\r', '\n', 0, 0x7f, 0x80, 0xff, '"', '(', 'a', 'Z', '0', '-', '~'})
	b := rapid.OneOf(telling, rapid.Byte())
	rapid.Check(t, func(t *rapid.T) {
		l := rapid.SliceOfN(b, 0, 40).Draw(t, "line")
		name, value, ok := splitField(l)
		wantName, wantValue, wantOK := reference(l)
		if ok != wantOK || ok && (!bytes.Equal(name, wantName) || !bytes.Equal(value, wantValue)) {
			t.Fatalf("splitField(%q) = %q, %q, %v; cut, trim and check say %q, %q, %v", l, name, value, ok, wantName, wantValue, wantOK)
		}
	})
	for _, l := range []string{"Content-Length: 12", "Host:\t example.com \t", "X:", ":x", "Bad Name: v", "A:b:c", "A: v\x00", "A: \x7f", "A", ""} {
		name, value, ok := splitField([]byte(l))
		wantName, wantValue, wantOK := reference([]byte(l))
		if ok != wantOK || !bytes.Equal(name, wantName) || !bytes.Equal(value, wantValue) {
			t.Errorf("splitField(%q) = %q, %q, %v; want %q, %q, %v", l, name, value, ok, wantName, wantValue, wantOK)
		}
	}
}
