package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const guardTestNonce = "guard-test-nonce-5d1e"

// guardSynthetic is the request the guard puts in place of a refused one,
// spelled out here so that a change to it fails the tests.
const guardSynthetic = "GET / HTTP/1.1\r\nHost: switchyard.invalid\r\nX-Switchyard-Reject: " +
	guardTestNonce + "\r\nConnection: close\r\n\r\n"

// guardConnKey stores the guarded conn in a request's context.
type guardConnKey struct{}

// guardSeen records what the handler of a guarded server was given.
type guardSeen struct {
	mu   sync.Mutex
	reqs []string
}

func (s *guardSeen) add(r string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r)
}

func (s *guardSeen) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// guardTestHandler answers the guard's stand-in for a refused request with
// the rejection, as the gateway does, and records every other request:
// "METHOD /path body" and its trailer X-Checksum, if any. /echo upgrades
// and echoes what follows.
func guardTestHandler(seen *guardSeen) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(rejectHeader) == guardTestNonce {
			if gc, ok := r.Context().Value(guardConnKey{}).(*guardedConn); ok {
				if rej, ok := gc.Rejected(); ok {
					http.Error(w, rej.Reason, rej.Code)
					return
				}
			}
		}
		if r.URL.Path == "/echo" && r.Header.Get("Upgrade") != "" {
			guardEcho(w)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "bad body: "+err.Error(), http.StatusBadRequest)
			return
		}
		rec := fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, body)
		if v := r.Trailer.Get("X-Checksum"); v != "" {
			rec += " trailer=" + v
		}
		if r.ProtoMajor == 2 {
			rec += " h2"
		}
		seen.add(rec)
		_, _ = io.WriteString(w, "ok")
	}
}

// guardEcho switches to a protocol that sends back every byte it gets.
func guardEcho(w http.ResponseWriter) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	if rw.Flush() != nil {
		return
	}
	_, _ = io.Copy(conn, rw)
}

// startGuardServer serves guardTestHandler on a loopback port through
// guardListener and returns its address.
func startGuardServer(t *testing.T, lim headLimits, protocols *http.Protocols) (string, *guardSeen) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := &guardSeen{}
	srv := &http.Server{
		Handler: guardTestHandler(seen),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, guardConnKey{}, c)
		},
		Protocols: protocols,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.Serve(guardListener(ln, lim, guardTestNonce)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), seen
}

type guardAnswer struct {
	code int
	body string
}

// guardExchange sends raw on a new connection and reads n answers. The
// connection is returned with its reader for further checks.
func guardExchange(t *testing.T, addr, raw string, n int) ([]guardAnswer, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server may answer before it read everything, so write aside.
	go func() { _, _ = io.WriteString(conn, raw) }()
	br := bufio.NewReader(conn)
	var got []guardAnswer
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of %d: %v (got %v)", len(got)+1, n, err, got)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", len(got)+1, err)
		}
		got = append(got, guardAnswer{resp.StatusCode, string(body)})
	}
	return got, conn, br
}

// guardExpectClosed fails unless the server closed the connection after what
// was read from br.
func guardExpectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection was not closed: read %q, %v", b, err)
	}
}

func TestGuardOverLoopback(t *testing.T) {
	const host = "Host: gw\r\n"
	smuggled := "GET /smuggled HTTP/1.1\r\n" + host + "\r\n"
	headLike := "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"
	var manyHeaders strings.Builder
	for i := 0; manyHeaders.Len() < 70<<10; i++ {
		fmt.Fprintf(&manyHeaders, "X-Filler-%04d: %s\r\n", i, strings.Repeat("v", 48))
	}
	tests := []struct {
		desc       string
		raw        string
		want       []guardAnswer // body: a substring of the answer's
		seen       []string
		wantClosed bool
	}{
		{
			desc:       "Content-Length before Transfer-Encoding is refused with 400",
			raw:        "POST /upload HTTP/1.1\r\n" + host + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX" + smuggled,
			want:       []guardAnswer{{400, "Content-Length together with Transfer-Encoding"}},
			wantClosed: true,
		},
		{
			desc:       "Transfer-Encoding before Content-Length, names in mixed case, is refused with 400",
			raw:        "POST /upload HTTP/1.1\r\n" + host + "tRANSFER-eNCODING: chunked\r\ncontent-LENGTH: 4\r\n\r\n5c\r\n" + smuggled + "\r\n0\r\n\r\n",
			want:       []guardAnswer{{400, "request smuggling"}},
			wantClosed: true,
		},
		{
			desc: "a request pipelined before a smuggling attempt is answered first and never sees its body",
			raw: "POST /first HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello" +
				"POST /bad HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + smuggled,
			want:       []guardAnswer{{200, "ok"}, {400, "request smuggling"}},
			seen:       []string{"POST /first hello"},
			wantClosed: true,
		},
		{
			desc:       "an obs-fold continuation with a space is refused with 400",
			raw:        "GET / HTTP/1.1\r\n" + host + "X-Long: first\r\n  folded\r\n\r\n",
			want:       []guardAnswer{{400, "obs-fold"}},
			wantClosed: true,
		},
		{
			desc:       "an obs-fold continuation with a tab is refused with 400",
			raw:        "GET / HTTP/1.1\r\n" + host + "X-Long: first\r\n\tfolded\r\n\r\n",
			want:       []guardAnswer{{400, "obs-fold"}},
			wantClosed: true,
		},
		{
			desc:       "a request line of 9 KiB is refused with 414",
			raw:        "GET /" + strings.Repeat("a", 9<<10) + " HTTP/1.1\r\n" + host + "\r\n",
			want:       []guardAnswer{{414, "request line longer than 8192 bytes"}},
			wantClosed: true,
		},
		{
			desc:       "a header line of 9 KiB is refused with 431",
			raw:        "GET / HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("b", 9<<10) + "\r\n\r\n",
			want:       []guardAnswer{{431, "header line longer than 8192 bytes"}},
			wantClosed: true,
		},
		{
			desc:       "70 KiB of small headers are refused with 431",
			raw:        "GET / HTTP/1.1\r\n" + host + manyHeaders.String() + "\r\n",
			want:       []guardAnswer{{431, "request head larger than 65536 bytes"}},
			wantClosed: true,
		},
		{
			desc: "Content-Length and chunked bodies and a GET share a keep-alive connection",
			raw: "POST /cl HTTP/1.1\r\n" + host + "Content-Length: 11\r\n\r\nhello world" +
				"POST /chunked HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
				"5;name=value\r\nhello\r\n6;q=\"a;b\"\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n" +
				"GET /last HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n",
			want: []guardAnswer{{200, "ok"}, {200, "ok"}, {200, "ok"}},
			seen: []string{"POST /cl hello world", "POST /chunked hello world trailer=abc", "GET /last "},
			// Connection: close asked for it.
			wantClosed: true,
		},
		{
			desc: "a body that looks like a refusable head is a body",
			raw: "POST /cl HTTP/1.1\r\n" + host + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(headLike)) + headLike +
				"GET /last HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n",
			want:       []guardAnswer{{200, "ok"}, {200, "ok"}},
			seen:       []string{"POST /cl " + headLike, "GET /last "},
			wantClosed: true,
		},
		{
			desc: "empty lines after a POST are held with the next head",
			raw: "POST /a HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nhi\r\n" +
				"GET /b HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n",
			want:       []guardAnswer{{200, "ok"}, {200, "ok"}},
			seen:       []string{"POST /a hi", "GET /b "},
			wantClosed: true,
		},
		{
			desc: "HTTP/1.0 ignores Transfer-Encoding, so what follows is the next head",
			raw: "POST /old HTTP/1.0\r\n" + host + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"POST /bad HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			want:       []guardAnswer{{200, "ok"}, {400, "request smuggling"}},
			seen:       []string{"POST /old "},
			wantClosed: true,
		},
		{
			desc: "a malformed chunk size is left to net/http, which fails the body and closes",
			raw: "POST /bad-chunk HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" +
				"POST /after HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			want:       []guardAnswer{{400, "bad body"}},
			wantClosed: true,
		},
		{
			desc:       "a head net/http refuses itself reaches net/http",
			raw:        "GET / HTTP/1.1\r\n" + host + "Bad Name: x\r\n\r\n",
			want:       []guardAnswer{{400, "400 Bad Request"}},
			wantClosed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			addr, seen := startGuardServer(t, headLimits{}, nil)
			got, _, br := guardExchange(t, addr, tt.raw, len(tt.want))
			for i, w := range tt.want {
				if got[i].code != w.code || !strings.Contains(got[i].body, w.body) {
					t.Errorf("answer %d = %d %q, want %d with %q", i+1, got[i].code, got[i].body, w.code, w.body)
				}
			}
			if tt.wantClosed {
				guardExpectClosed(t, br)
			}
			if s := seen.all(); !slices.Equal(s, tt.seen) {
				t.Errorf("handler saw %q, want %q", s, tt.seen)
			}
		})
	}
}

func TestGuardRefusedClientStillSendingGetsTheAnswerAndAClose(t *testing.T) {
	addr, _ := startGuardServer(t, headLimits{}, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Far more than the guard reads before it refuses: without a lingering
	// close the server's kernel would reset the connection.
	raw := "GET /" + strings.Repeat("a", 9<<10) + " HTTP/1.1\r\nHost: gw\r\n\r\n" + strings.Repeat("x", 1<<20)
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(conn, raw)
		wrote <- err
	}()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusRequestURITooLong {
		t.Errorf("status %d, want 414", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want a clean EOF", err)
	}
	if err := <-wrote; err != nil {
		t.Errorf("client's write: %v, want it drained", err)
	}
}

func TestGuardPassesH2CWithPriorKnowledge(t *testing.T) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	addr, seen := startGuardServer(t, headLimits{}, &protos)

	var clientProtos http.Protocols
	clientProtos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &clientProtos}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, path := range []string{"/one", "/two"} {
		resp, err := client.Post("http://"+addr+path, "text/plain", strings.NewReader("over h2c"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Errorf("%s: %s over %s, want 200 over HTTP/2", path, resp.Status, resp.Proto)
		}
	}
	if want := []string{"POST /one over h2c h2", "POST /two over h2c h2"}; !slices.Equal(seen.all(), want) {
		t.Errorf("handler saw %q, want %q", seen.all(), want)
	}
}

func TestGuardPassesAnUpgradedConnection(t *testing.T) {
	addr, _ := startGuardServer(t, headLimits{}, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Bytes the guard would refuse, were it still parsing.
	payload := "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n folded\r\n\r\n\x00\x01\xfe\xff"
	head := "GET /echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
	if _, err := io.WriteString(conn, head+payload); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	echoed, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(echoed) != payload {
		t.Errorf("echoed %q, want %q", echoed, payload)
	}
}

// guardScriptConn is a net.Conn whose reads follow a script; after it, EOF.
type guardScriptConn struct {
	net.Conn // nil: only Read is called
	steps    []guardScriptStep
}

// guardScriptStep is one read's data and error; data larger than the caller's
// buffer takes several reads, the error comes with its last byte.
type guardScriptStep struct {
	data []byte
	err  error
}

func (c *guardScriptConn) Read(p []byte) (int, error) {
	if len(c.steps) == 0 {
		return 0, io.EOF
	}
	s := &c.steps[0]
	n := copy(p, s.data)
	s.data = s.data[n:]
	if len(s.data) > 0 {
		return n, nil
	}
	err := s.err
	c.steps = c.steps[1:]
	return n, err
}

// guardDrain reads c to EOF with reads of size, passing over timeouts, and
// returns what it got and how many timeouts it was told of.
func guardDrain(t *testing.T, c *guardedConn, size, maxReads int) ([]byte, int) {
	t.Helper()
	var out []byte
	timeouts := 0
	p := make([]byte, size)
	for range maxReads {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			timeouts++
		case err == io.EOF:
			return out, timeouts
		default:
			t.Fatalf("read: %v", err)
		}
	}
	t.Fatalf("no EOF after %d reads; got %q", maxReads, out)
	return nil, 0
}

// guardScripts splits in into the reads of the conns the parser must not
// notice: all at once, a byte per read, and a timeout after every byte
// (on its own and together with the byte before it).
func guardScripts(in string) map[string][]guardScriptStep {
	scripts := map[string][]guardScriptStep{"whole": {{data: []byte(in)}}}
	var bytewise []guardScriptStep
	for i := range len(in) {
		bytewise = append(bytewise, guardScriptStep{data: []byte{in[i]}})
	}
	scripts["a byte per read"] = bytewise
	for k := 1; k < len(in); k++ {
		scripts[fmt.Sprintf("timeout after byte %d", k)] = []guardScriptStep{
			{data: []byte(in[:k])}, {err: os.ErrDeadlineExceeded}, {data: []byte(in[k:])},
		}
		scripts[fmt.Sprintf("timeout with byte %d", k)] = []guardScriptStep{
			{data: []byte(in[:k]), err: os.ErrDeadlineExceeded}, {data: []byte(in[k:])},
		}
	}
	return scripts
}

func TestGuardParser(t *testing.T) {
	lim := headLimits{RequestLine: 24, HeaderLine: 28, Head: 96}
	const (
		get     = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
		clte    = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		refused = "GET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n" // obs-fold
	)
	tests := []struct {
		desc string
		in   string
		out  string
		code int // of the rejection, 0 for none
	}{
		{desc: "a request without a body passes", in: get, out: get},
		{desc: "bare LF line endings pass", in: "GET / HTTP/1.1\nHost: h\n\n" + get, out: "GET / HTTP/1.1\nHost: h\n\n" + get},
		{desc: "a Content-Length body is not parsed as a head", in: "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n \r\n\r\n" + get, out: "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n \r\n\r\n" + get},
		{
			desc: "a chunked body with extensions and trailers is followed to its end",
			in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"1\"\r\n \r\n\r\n10 \t\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n" + refused,
			out:  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"1\"\r\n \r\n\r\n10 \t\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n" + guardSynthetic,
			code: 400,
		},
		{desc: "Content-Length with Transfer-Encoding is refused", in: clte, out: guardSynthetic, code: 400},
		{desc: "the requests before a refused one are released, what follows it is dropped", in: get + get + clte + get, out: get + get + guardSynthetic, code: 400},
		{desc: "an obs-fold line is refused", in: refused, out: guardSynthetic, code: 400},
		{desc: "a header line starting with a tab is refused", in: "GET / HTTP/1.1\r\n\tA: 1\r\n\r\n", out: guardSynthetic, code: 400},
		{desc: "a request line at the limit passes", in: "GET /" + strings.Repeat("a", 10) + " HTTP/1.1\r\n\r\n", out: "GET /" + strings.Repeat("a", 10) + " HTTP/1.1\r\n\r\n"},
		{desc: "a request line a byte over the limit is refused with 414", in: "GET /" + strings.Repeat("a", 11) + " HTTP/1.1\r\n\r\n", out: guardSynthetic, code: 414},
		{desc: "a request line a byte over the limit is refused with 414 before its end", in: "GET /" + strings.Repeat("a", 12) + " HTTP/1.1", out: guardSynthetic, code: 414},
		{desc: "a header line at the limit passes", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("v", 25) + "\r\n\r\n", out: "GET / HTTP/1.1\r\nX: " + strings.Repeat("v", 25) + "\r\n\r\n"},
		{desc: "a header line a byte over the limit is refused with 431", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("v", 26) + "\n\n", out: guardSynthetic, code: 431},
		{
			desc: "a head at the limit passes",
			in:   "GET / HTTP/1.1\r\n" + strings.Repeat("X: "+strings.Repeat("v", 19)+"\r\n", 3) + "Y: 1\r\n\r\n",
			out:  "GET / HTTP/1.1\r\n" + strings.Repeat("X: "+strings.Repeat("v", 19)+"\r\n", 3) + "Y: 1\r\n\r\n",
		},
		{
			desc: "a head a byte over the limit is refused with 431",
			in:   "GET / HTTP/1.1\r\n" + strings.Repeat("X: "+strings.Repeat("v", 19)+"\r\n", 3) + "Y: 12\r\n\r\n",
			out:  guardSynthetic,
			code: 431,
		},
		{desc: "empty lines before a request count towards its head", in: strings.Repeat("\r\n", 48) + get, out: guardSynthetic, code: 431},
		{desc: "empty lines before a request are held with it", in: "\r\n\n" + get, out: "\r\n\n" + get},
		{desc: "the HTTP/2 preface makes the guard transparent", in: h2Preface + clte, out: h2Preface + clte},
		{desc: "the start of the HTTP/2 preface alone is a head", in: "PRI * HTTP/2.0\r\n\r\nSX" + clte, out: "PRI * HTTP/2.0\r\n\r\n" + guardSynthetic, code: 400},
		{desc: "an upgrade makes the guard transparent", in: "GET / HTTP/1.1\r\nUpgrade: ws\r\nConnection: UPGRADE\r\n\r\n" + clte, out: "GET / HTTP/1.1\r\nUpgrade: ws\r\nConnection: UPGRADE\r\n\r\n" + clte},
		{desc: "an Upgrade without Connection: upgrade is no upgrade", in: "GET / HTTP/1.1\r\nUpgrade: ws\r\n\r\n" + clte, out: "GET / HTTP/1.1\r\nUpgrade: ws\r\n\r\n" + guardSynthetic, code: 400},
		{desc: "CONNECT makes the guard transparent", in: "CONNECT h:1 HTTP/1.1\r\n\r\n" + clte, out: "CONNECT h:1 HTTP/1.1\r\n\r\n" + clte},
		{desc: "a malformed chunk size makes the guard transparent", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n" + clte, out: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n" + clte},
		{desc: "chunk data not ended by CRLF makes the guard transparent", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n" + clte, out: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n" + clte},
		{desc: "an unknown transfer coding makes the guard transparent", in: "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n" + clte, out: "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n" + clte},
		{desc: "differing Content-Lengths make the guard transparent", in: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 01\r\n\r\n" + clte, out: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 01\r\n\r\n" + clte},
		{desc: "equal Content-Lengths frame the body", in: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length:  1\r\n\r\nx" + clte, out: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length:  1\r\n\r\nx" + guardSynthetic, code: 400},
		{desc: "HTTP/1.0 ignores Transfer-Encoding", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + clte, out: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + guardSynthetic, code: 400},
		{desc: "a head cut off by the end of the stream is handed over as it came", in: get + "GET / HTTP/1.1\r\nHost:", out: get + "GET / HTTP/1.1\r\nHost:"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			for name, steps := range guardScripts(tt.in) {
				injected := 0
				for _, s := range steps {
					if s.err != nil {
						injected++
					}
				}
				for _, size := range []int{1, 5, 4096} {
					c := guardConn(&guardScriptConn{steps: slices.Clone(steps)}, lim, guardTestNonce)
					out, timeouts := guardDrain(t, c, size, 4*len(tt.in)+100)
					if string(out) != tt.out {
						t.Fatalf("%s, reads of %d: got\n%q\nwant\n%q", name, size, out, tt.out)
					}
					rej, ok := c.Rejected()
					if ok != (tt.code != 0) || rej.Code != tt.code {
						t.Fatalf("%s, reads of %d: rejection %+v, %v; want code %d", name, size, rej, ok, tt.code)
					}
					if !ok && timeouts != injected {
						t.Fatalf("%s, reads of %d: told of %d timeouts, want %d", name, size, timeouts, injected)
					}
				}
			}
		})
	}
}

// guardLoopConn serves the same bytes over and over.
type guardLoopConn struct {
	net.Conn
	data []byte
	off  int
}

func (c *guardLoopConn) Read(p []byte) (int, error) {
	n := copy(p, c.data[c.off:])
	c.off = (c.off + n) % len(c.data)
	return n, nil
}

func TestGuardSteadyStateReadsDoNotAllocate(t *testing.T) {
	stream := "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789" +
		"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	c := guardConn(&guardLoopConn{data: []byte(stream)}, headLimits{}, guardTestNonce)
	p := make([]byte, 4096)
	allocs := testing.AllocsPerRun(200, func() {
		for range 10 {
			if _, err := c.Read(p); err != nil {
				t.Fatal(err)
			}
		}
	})
	if _, ok := c.Rejected(); ok {
		t.Fatal("the stream was refused")
	}
	if allocs != 0 {
		t.Errorf("%v allocations per 10 reads, want none", allocs)
	}
}
