package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
)

// guardFuzzLimits are small, so that random input reaches them.
var guardFuzzLimits = headLimits{RequestLine: 40, HeaderLine: 40, Head: 160}

// FuzzGuard feeds arbitrary bytes through a guardedConn, split into reads
// (and timeouts) by plan, and holds the output to three properties:
//   - it is the input, or a prefix of the input that ends where a request
//     head begins followed by exactly the synthetic request;
//   - it is what guardModel, a plain whole-input reading of the rules,
//     says it must be, with the same rejection;
//   - every request head net/http parses from it, read as http.Server
//     reads a connection, passes the guard's rules on its own: no head
//     reaches Go unchecked because the guard framed a body differently.
//
// The guard must not panic or loop either: reading stops after a bound.
func FuzzGuard(f *testing.F) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\nHost: a\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
		"GET /" + strings.Repeat("a", 40) + " HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("b", 40) + "\r\n\r\n",
		"GET / HTTP/1.1\r\n" + strings.Repeat("X: 123456789\r\n", 12) + "\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\nGET / HTTP/1.1\r\n folded\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;e=\"x\"\r\nbody\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4 ;e\r\nbody\r\n0\r\n\r\nGET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: ws\r\nConnection: Upgrade\r\n\r\nGET / HTTP/1.1\r\n b\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n b\r\n\r\n",
		h2Preface + "GET / HTTP/1.1\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4 \t\r\nbody\r\n0\r\nT: 1\n\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000004\r\nbody\r\n0\r\n\r\nGET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(in), []byte(nil))
		f.Add([]byte(in), []byte{0, 0x81, 3, 0x47, 0xe5, 1})
	}
	f.Fuzz(func(t *testing.T, in, plan []byte) {
		c := guardConn(&guardPlanConn{data: in, plan: plan}, guardFuzzLimits, guardTestNonce)
		out := guardReadPlanned(t, c, plan, 8*len(in)+8*len(plan)+100)

		if !bytes.Equal(out, in) {
			prefix, ok := bytes.CutSuffix(out, []byte(guardSynthetic))
			if !ok || !bytes.HasPrefix(in, prefix) {
				t.Fatalf("output is neither the input nor a prefix of it and the synthetic request:\nin  %q\nout %q", in, out)
			}
		}
		want, code := guardModel(in, guardFuzzLimits)
		rej, rejected := c.Rejected()
		if !bytes.Equal(out, want) || rej.Code != code || rejected != (code != 0) {
			t.Fatalf("in %q\nout  %q (rejection %d)\nwant %q (rejection %d)", in, out, rej.Code, want, code)
		}
		if bytes.HasPrefix(out, []byte(h2Preface)) {
			return // Go's HTTP/2 server has the connection
		}
		for _, head := range guardNetHTTPHeads(out) {
			if rejected && string(head) == guardSynthetic {
				continue // the guard's own, with a nonce of any length
			}
			g := guardConn(&guardPlanConn{data: head}, guardFuzzLimits, guardTestNonce)
			got := guardReadPlanned(t, g, nil, 4*len(head)+100)
			if rej, ok := g.Rejected(); ok || !bytes.Equal(got, head) {
				t.Fatalf("net/http parsed a head the guard refuses (%s):\n%q\nfrom the output\n%q", rej.Reason, head, out)
			}
		}
	})
}

// guardPlanConn reads data as plan says: each plan byte makes one read of
// 1 to 32 bytes, with a timeout before it (0x80) or with it (0x40).
type guardPlanConn struct {
	net.Conn
	data    []byte
	plan    []byte
	i       int
	timeout bool // the last read was a timeout without data
}

func (c *guardPlanConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	if len(c.plan) == 0 {
		n := copy(p, c.data)
		c.data = c.data[n:]
		return n, nil
	}
	b := c.plan[c.i%len(c.plan)]
	if b&0x80 != 0 && !c.timeout {
		c.timeout = true
		return 0, os.ErrDeadlineExceeded
	}
	c.timeout = false
	c.i++
	n := copy(p[:min(len(p), int(b&0x1f)+1)], c.data)
	c.data = c.data[n:]
	if b&0x40 != 0 {
		return n, os.ErrDeadlineExceeded
	}
	return n, nil
}

// guardReadPlanned reads c to EOF, with buffers of sizes taken from plan, and
// fails if that takes more than maxReads.
func guardReadPlanned(t *testing.T, c *guardedConn, plan []byte, maxReads int) []byte {
	t.Helper()
	sizes := []int{1, 3, 64, 4096}
	var out []byte
	for i := range maxReads {
		size := 4096
		if len(plan) > 0 {
			size = sizes[plan[(i+1)%len(plan)]>>5&3]
		}
		p := make([]byte, size)
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		switch {
		case err == io.EOF:
			return out
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("read: %v", err)
		}
	}
	t.Fatalf("no EOF after %d reads", maxReads)
	return nil
}

// guardModel says what the guard must output for in, reading the whole
// input at once: in unchanged, or the requests before the first refused
// head followed by the synthetic request, and the rejection's code.
func guardModel(in []byte, lim headLimits) ([]byte, int) {
	if bytes.HasPrefix(in, []byte(h2Preface)) {
		return in, 0
	}
	for pos := 0; pos < len(in); {
		end, code, head := guardModelHead(in[pos:], lim)
		if code != 0 {
			return append(in[:pos:pos], guardSynthetic...), code
		}
		if end < 0 {
			return in, 0 // the input ends inside the head
		}
		next := guardModelBody(in, pos+end, head)
		if next < 0 {
			return in, 0 // the guard stepped aside, or the input ends in the body
		}
		pos = next
	}
	return in, 0
}

type guardModelFacts struct {
	method, proto string
	cl, te        []string
	upgrade       *string
	connUpgrade   bool
}

// guardModelHead reads the head at the start of b, byte by byte, and returns
// its length (-1 if b ends inside it) or the code it is refused with.
func guardModelHead(b []byte, lim headLimits) (int, int, guardModelFacts) {
	var f guardModelFacts
	i := 0
	for ; i < len(b) && (b[i] == '\r' || b[i] == '\n'); i++ {
		if i+1 > lim.Head {
			return 0, 431, f
		}
	}
	for first := true; ; first = false {
		start := i
		limit, code := lim.HeaderLine, 431
		if first {
			limit, code = lim.RequestLine, 414
		}
		for ; i < len(b) && b[i] != '\n'; i++ {
			if !first && i == start && (b[i] == ' ' || b[i] == '\t') {
				return 0, 400, f
			}
			if i-start+1 > limit+1 {
				return 0, code, f
			}
			if i+1 > lim.Head {
				return 0, 431, f
			}
		}
		if i == len(b) {
			return -1, 0, f
		}
		line := string(b[start:i])
		line = strings.TrimSuffix(line, "\r")
		i++
		if len(line) > limit {
			return 0, code, f
		}
		if i > lim.Head {
			return 0, 431, f
		}
		if first {
			parts := strings.SplitN(line, " ", 3)
			f.method = parts[0]
			if len(parts) == 3 {
				f.proto = parts[2]
			}
			continue
		}
		if line == "" {
			return i, 0, f
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.Trim(value, " \t")
		switch guardLower(name) {
		case "content-length":
			f.cl = append(f.cl, value)
		case "transfer-encoding":
			f.te = append(f.te, value)
		case "connection":
			for _, tok := range strings.Split(value, ",") {
				f.connUpgrade = f.connUpgrade || guardLower(strings.Trim(tok, " \t")) == "upgrade"
			}
		case "upgrade":
			if f.upgrade == nil {
				f.upgrade = &value
			}
		}
		if len(f.cl) > 0 && len(f.te) > 0 {
			return 0, 400, f
		}
	}
}

// guardModelBody returns where the request whose body starts at pos ends, or -1
// where the guard passes the rest through.
func guardModelBody(in []byte, pos int, f guardModelFacts) int {
	if f.method == "CONNECT" || (f.upgrade != nil && *f.upgrade != "" && f.connUpgrade) {
		return -1
	}
	if len(f.te) > 0 && f.proto != "HTTP/1.0" {
		if len(f.te) != 1 || guardLower(f.te[0]) != "chunked" {
			return -1
		}
		return guardModelChunked(in, pos)
	}
	if len(f.cl) == 0 {
		return pos
	}
	for _, v := range f.cl[1:] {
		if v != f.cl[0] {
			return -1
		}
	}
	var n uint64
	if f.cl[0] != "" {
		var err error
		if n, err = strconv.ParseUint(f.cl[0], 10, 63); err != nil {
			return -1
		}
	}
	if n > uint64(len(in)-pos) {
		return -1
	}
	return pos + int(n)
}

// guardModelChunked follows a chunked body line by line, as net/http's chunked
// reader and its trailer reading do.
func guardModelChunked(in []byte, pos int) int {
	for {
		nl := bytes.IndexByte(in[pos:], '\n')
		if nl < 0 {
			return -1
		}
		line := in[pos : pos+nl+1]
		pos += nl + 1
		if len(line) < 2 || bytes.IndexByte(line, '\r') != len(line)-2 {
			return -1 // a bare LF, or a CR elsewhere
		}
		size := bytes.TrimRight(line[:len(line)-2], " \t")
		size, _, _ = bytes.Cut(size, []byte(";"))
		if len(size) == 0 || len(size) > 16 {
			return -1
		}
		n, err := strconv.ParseUint(string(size), 16, 64)
		if err != nil {
			return -1
		}
		if n == 0 {
			break
		}
		if n > uint64(len(in)-pos) {
			return -1
		}
		pos += int(n)
		if !bytes.HasPrefix(in[pos:], []byte("\r\n")) {
			return -1
		}
		pos += 2
	}
	for {
		nl := bytes.IndexByte(in[pos:], '\n')
		if nl < 0 {
			return -1
		}
		line := in[pos : pos+nl]
		pos += nl + 1
		if len(line) == 0 || string(line) == "\r" {
			return pos
		}
	}
}

func guardLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// guardNetHTTPHeads returns the request heads net/http parses from stream,
// read as http.Server reads a connection: request after request, each
// body read to its end, up to a request it would refuse or answer with a
// close, or one after which the guard steps aside. Where this is unsure
// whether the server would go on, it stops: it may miss a head, but never
// invents one.
func guardNetHTTPHeads(stream []byte) [][]byte {
	cr := &guardCountingReader{r: bytes.NewReader(stream)}
	br := bufio.NewReader(cr)
	pos := func() int { return cr.n - br.Buffered() }
	var heads [][]byte
	lastMethod := ""
	for {
		if lastMethod == "POST" {
			// http.Server drops up to four CR or LF after a POST.
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			_, _ = br.Discard(n)
		}
		start := pos()
		req, err := http.ReadRequest(br)
		if err != nil {
			return heads
		}
		heads = append(heads, stream[start:pos()])
		if !guardServerAccepts(req) {
			return heads
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return heads
		}
		if req.Close || req.Method == "CONNECT" || len(req.Header["Upgrade"]) > 0 {
			return heads
		}
		lastMethod = req.Method
	}
}

// guardServerAccepts approximates, on the strict side, the checks http.Server
// adds to http.ReadRequest before it serves a request.
func guardServerAccepts(req *http.Request) bool {
	if req.ProtoMajor != 1 || (req.ProtoMinor >= 1 && req.Host == "") {
		return false
	}
	if strings.Trim(req.Host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_") != "" {
		return false
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return false
	}
	for name, values := range req.Header {
		if name == "" || strings.ContainsFunc(name, func(r rune) bool {
			return r <= ' ' || r >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r)
		}) {
			return false
		}
		for _, v := range values {
			if strings.ContainsFunc(v, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) {
				return false
			}
		}
	}
	return true
}

type guardCountingReader struct {
	r io.Reader
	n int
}

func (c *guardCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
