// The request-head guard.
//
// Go's http.Server is lenient where an edge router must be strict. Given a
// request with both Content-Length and Transfer-Encoding it silently drops
// Content-Length, so a backend or a cache that frames by Content-Length
// sees a different request boundary: request smuggling. It joins obs-fold
// continuation lines (a header line starting with SP or HTAB), and it has
// no 414 for an over-long request line, only MaxHeaderBytes for the whole
// head. nginx refuses all of these, and so must the gateway. None of it is
// visible in an *http.Request any more, only in the raw bytes, so the guard
// sits between the net.Conn and http.Server.
//
// The guard parses the byte stream as a sequence of HTTP/1.x requests. It
// holds each request head back until the head is complete and checked,
// because a refused head must never reach Go's parser: in its place the
// guard releases a synthetic request that carries the gateway's nonce and
// Connection: close, and then ends the stream. The gateway's handler sees
// that request and writes the error; requests before it are served as
// usual, so pipelining keeps working. Bodies are not held: the guard only
// follows their framing (Content-Length, chunked) to know where the next
// head begins, so body bytes go straight to the caller's buffer. Where
// the guard cannot follow the framing (an upgrade, CONNECT, a malformed
// body, HTTP/2 with prior knowledge) it steps aside: Go then either owns
// the connection or refuses it and closes it.

package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// headLimits bound a request head; zero fields take the defaults.
type headLimits struct {
	RequestLine int // longest request line; beyond it 414 (default 8 KiB, as nginx's large_client_header_buffers)
	HeaderLine  int // longest header line; beyond it 431 (default 8 KiB)
	Head        int // whole head (request line + headers); beyond it 431 (default 64 KiB)
}

const (
	defaultRequestLine = 8 << 10
	defaultHeaderLine  = 8 << 10
	defaultHead        = 64 << 10
	// maxHeadLimit keeps the guard's index arithmetic far from overflow.
	maxHeadLimit = 1 << 30
)

func (l headLimits) withDefaults() headLimits {
	fill := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return min(v, maxHeadLimit)
	}
	l.RequestLine = fill(l.RequestLine, defaultRequestLine)
	l.HeaderLine = fill(l.HeaderLine, defaultHeaderLine)
	l.Head = fill(l.Head, defaultHead)
	return l
}

// rejection is why the guard refused a request.
type rejection struct {
	Code   int    // 400, 414 or 431
	Reason string // e.g. "Content-Length together with Transfer-Encoding (request smuggling)"
}

// rejectHeader carries the nonce in the synthetic request that stands in
// for a refused one. The nonce keeps a client from forging it.
const rejectHeader = "X-Switchyard-Reject"

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	// guardBufSize is the held-head buffer a connection keeps; a larger
	// head grows it for that head only.
	guardBufSize = 4 << 10
	// lingerTimeout bounds how long a refused client's remaining bytes
	// are drained before the socket is closed (nginx's lingering_timeout).
	lingerTimeout = 5 * time.Second
)

type guardMode uint8

const (
	modePreface     guardMode = iota // connection start: is it HTTP/2 with prior knowledge?
	modeHead                         // holding a request head
	modeFixed                        // Content-Length body, left bytes to go
	modeChunkLine                    // a chunk-size line
	modeChunkData                    // chunk data, left bytes to go
	modeChunkCR                      // the CR after chunk data
	modeChunkLF                      // the LF after chunk data
	modeTrailer                      // trailer lines up to the empty line
	modeTransparent                  // not parsing any more
	modeRejected                     // the synthetic request is out; EOF from now on
)

// headPhase is where a head's scan is.
type headPhase uint8

const (
	phaseLeading headPhase = iota // empty lines before the request line
	phaseRequestLine
	phaseHeaders
)

// headFacts is what the guard learns from the head it holds.
type headFacts struct {
	phase     headPhase
	lineStart int // index in buf of the current line

	connect, http10 bool

	cl           int    // Content-Length fields
	clOff, clLen int    // the first one's value, relative to hstart
	clN          uint64 // its length
	clOK         bool   // it parses and every other one equals it

	te        int  // Transfer-Encoding fields
	teChunked bool // the last one is "chunked"

	upgradeSeen, upgrade bool // the first Upgrade field; it names a protocol
	connUpgrade          bool // a Connection field lists "upgrade"
}

// chunk-size line states.
const (
	chunkDigits uint8 = iota
	chunkOWS          // whitespace after the size
	chunkExt          // a chunk extension
	chunkCR           // the CR that ends the line
)

// trailer line states.
const (
	trailerLineStart uint8 = iota
	trailerCR              // a CR at the start of a line: maybe the empty line
	trailerLine
)

// guardedConn is a connection whose request heads are checked before
// http.Server reads them. See the comment at the top of this file.
type guardedConn struct {
	net.Conn
	lim   headLimits
	nonce string

	mu   sync.Mutex // serializes Read: the parser state is not shared
	mode guardMode
	// buf holds received bytes that are not delivered yet: buf[hstart:scan]
	// is the part of a head scanned so far, buf[scan:end] is not scanned.
	// Released bytes are delivered from out, which may point into buf.
	buf               []byte
	hstart, scan, end int
	out               []byte
	rerr              error // from the conn; returned once nothing is left to deliver
	h                 headFacts
	left              uint64 // of a Content-Length body or of chunk data
	chunkState        uint8
	chunkDigitsN      int
	chunkSize         uint64
	trailerState      uint8
	rejected          atomic.Pointer[rejection]
	lingering         atomic.Bool

	// readDeadline is the read deadline http.Server last set. When it
	// passes while part of a head is held, the client was too slow to send
	// its head: it gets 408, as nginx's client_header_timeout gives.
	dmu          sync.Mutex
	readDeadline time.Time
}

// guardConn wraps c, the plaintext side of an HTTP/1.x connection (a TCP
// conn or a *tls.Conn after its handshake). nonce must be a secret, random
// and non-empty: a request carrying it in rejectHeader on a connection
// whose Rejected reports true is the guard's stand-in for a refused one.
func guardConn(c net.Conn, lim headLimits, nonce string) *guardedConn {
	return &guardedConn{Conn: c, lim: lim.withDefaults(), nonce: nonce}
}

// Rejected returns the rejection, once the synthetic request was produced.
func (c *guardedConn) Rejected() (rejection, bool) {
	if r := c.rejected.Load(); r != nil {
		return *r, true
	}
	return rejection{}, false
}

// Read delivers the connection's bytes, each request head only once it
// was checked. Errors from the conn are returned as they are, never
// wrapped: http.Server recognizes the timeout it provokes to abort its
// background read by a type assertion to net.Error, and it reads again
// afterwards, so an error must not lose any state either.
func (c *guardedConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		switch c.mode {
		case modeRejected:
			return 0, io.EOF
		case modeTransparent:
			if c.hstart < c.end {
				c.out = c.buf[c.hstart:c.end]
				c.hstart, c.scan = c.end, c.end
				continue
			}
			if c.rerr != nil {
				return 0, c.takeErr()
			}
			return c.Conn.Read(p)
		}
		if c.scan < c.end {
			c.process()
			continue
		}
		if c.rerr != nil {
			if c.rerr == io.EOF && c.hstart < c.end {
				// The client ended inside a head: hand Go what came,
				// it will refuse it and close.
				c.mode = modeTransparent
				continue
			}
			return 0, c.takeErr()
		}
		if c.mode == modePreface || c.mode == modeHead {
			if n := c.fill(); n == 0 && c.rerr == nil && c.mode != modeRejected {
				return 0, nil
			}
			continue
		}
		if n, done := c.readBody(p); done {
			return n, nil
		}
	}
}

// takeErr returns the conn's error. EOF stays: there is nothing after it.
// Anything else is returned once, as the conn may work again (a timeout
// from a deadline that gets moved).
func (c *guardedConn) takeErr() error {
	err := c.rerr
	if err != io.EOF {
		c.rerr = nil
	}
	return err
}

// fill reads from the conn into buf, behind what it holds.
func (c *guardedConn) fill() int {
	if c.hstart == c.end && len(c.buf) > guardBufSize {
		c.buf = nil // a large head is gone; don't keep its buffer for an idle connection
		c.hstart, c.scan, c.end = 0, 0, 0
	}
	if c.buf == nil {
		c.buf = make([]byte, guardBufSize)
	}
	if c.end == len(c.buf) && c.hstart > 0 {
		c.compact()
	}
	if c.end == len(c.buf) {
		// At most Head bytes are held, so Head plus some read-ahead is
		// enough to always find the next byte of a head.
		size := min(2*len(c.buf), c.lim.Head+guardBufSize)
		if size <= c.end {
			size = c.end + guardBufSize
		}
		grown := make([]byte, size)
		copy(grown, c.buf[:c.end])
		c.buf = grown
	}
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if err != nil {
		if c.hstart < c.end && c.headTimedOut(err) {
			c.reject(http.StatusRequestTimeout, "request head not complete within the client header timeout")
			return 0
		}
		c.rerr = err
	}
	return n
}

// sinceEpochs tells the deadlines http.Server sets to time a client out
// from the one in the distant past (1970) it sets to abort its own read.
var sinceEpochs = time.Unix(1e9, 0)

// headTimedOut reports whether err is the read deadline of http.Server
// passing: its header or idle timeout, not the abort of its background
// read.
func (c *guardedConn) headTimedOut(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c.dmu.Lock()
	dl := c.readDeadline
	c.dmu.Unlock()
	return dl.After(sinceEpochs) && !time.Now().Before(dl)
}

func (c *guardedConn) noteDeadline(t time.Time) {
	c.dmu.Lock()
	c.readDeadline = t
	c.dmu.Unlock()
}

// SetReadDeadline notes t, for headTimedOut, and sets it.
func (c *guardedConn) SetReadDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline notes t, for headTimedOut, and sets it.
func (c *guardedConn) SetDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// compact moves the held bytes to the front of buf. Only called when
// nothing released is waiting in out.
func (c *guardedConn) compact() {
	d := c.hstart
	copy(c.buf, c.buf[d:c.end])
	c.hstart, c.scan, c.end = 0, c.scan-d, c.end-d
	c.h.lineStart -= d
}

// readBody reads body bytes straight into p and scans them for the framing.
// done is false when p got nothing to deliver yet.
func (c *guardedConn) readBody(p []byte) (n int, done bool) {
	c.hstart, c.scan, c.end = 0, 0, 0
	if c.mode == modeFixed && uint64(len(p)) > c.left {
		p = p[:c.left] // never read past the body, so nothing after it needs holding
	}
	m, err := c.Conn.Read(p)
	k := c.scanBody(p[:m])
	if k < m {
		// The next head began in p; it must be held, so move it to buf.
		if len(c.buf) < m-k {
			c.buf = make([]byte, max(guardBufSize, m-k))
		}
		c.end = copy(c.buf, p[k:m])
	}
	if err != nil {
		c.rerr = err
	}
	return k, k > 0 || (m == 0 && err == nil)
}

// process scans buffered bytes that were not scanned yet.
func (c *guardedConn) process() {
	switch c.mode {
	case modePreface:
		c.scanPreface()
	case modeHead:
		c.scanHead()
	default:
		k := c.scanBody(c.buf[c.scan:c.end])
		c.out = c.buf[c.scan : c.scan+k]
		c.scan += k
		c.hstart = c.scan
	}
}

// scanPreface holds the first bytes of a connection while they may still be
// the HTTP/2 client preface.
func (c *guardedConn) scanPreface() {
	got := c.buf[c.hstart:c.end]
	n := min(len(got), len(h2Preface))
	switch {
	case string(got[:n]) != h2Preface[:n]:
		c.mode = modeHead
		c.scan = c.hstart
	case n == len(h2Preface):
		c.mode = modeTransparent
	default:
		c.scan = c.end
	}
}

// scanHead advances over the held head. Whether and why it is refused does
// not depend on how the bytes were split into reads: a limit is hit at the
// first byte that certainly exceeds it, and no earlier.
func (c *guardedConn) scanHead() {
	h := &c.h
	for c.scan < c.end {
		if h.phase == phaseLeading {
			if b := c.buf[c.scan]; b == '\r' || b == '\n' {
				if c.scan-c.hstart >= c.lim.Head {
					c.reject(http.StatusRequestHeaderFieldsTooLarge, c.headReason())
					return
				}
				c.scan++
				continue
			}
			h.phase = phaseRequestLine
			h.lineStart = c.scan
		}
		limit := c.lim.HeaderLine
		if h.phase == phaseRequestLine {
			limit = c.lim.RequestLine
		} else if c.scan == h.lineStart {
			if b := c.buf[c.scan]; b == ' ' || b == '\t' {
				c.reject(http.StatusBadRequest, "obs-fold header continuation line")
				return
			}
		}
		// A line without its LF is certainly too long at lineBad: limit
		// bytes and a CR may still be followed by the LF.
		lineBad := h.lineStart + limit + 1
		headBad := c.hstart + c.lim.Head
		stop := min(c.end, lineBad+1, headBad+1)
		i := bytes.IndexByte(c.buf[c.scan:stop], '\n')
		if i < 0 {
			c.scan = stop
			if stop > min(lineBad, headBad) {
				if lineBad <= headBad {
					c.rejectLine()
				} else {
					c.reject(http.StatusRequestHeaderFieldsTooLarge, c.headReason())
				}
				return
			}
			continue
		}
		c.scan += i + 1
		if c.endLine(c.scan - 1) {
			return
		}
	}
}

// endLine checks the line that ends with the LF at lf. It reports whether
// the head is done with: refused, or complete and released.
func (c *guardedConn) endLine(lf int) bool {
	h := &c.h
	start := h.lineStart
	line := c.buf[start:lf]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	h.lineStart = lf + 1
	limit := c.lim.HeaderLine
	if h.phase == phaseRequestLine {
		limit = c.lim.RequestLine
	}
	switch {
	case len(line) > limit:
		c.rejectLine()
		return true
	case lf-c.hstart >= c.lim.Head:
		c.reject(http.StatusRequestHeaderFieldsTooLarge, c.headReason())
		return true
	case h.phase == phaseRequestLine:
		c.requestLine(line)
		h.phase = phaseHeaders
		return false
	case len(line) == 0:
		c.endHead()
		return true
	}
	c.header(start, line)
	if h.cl > 0 && h.te > 0 {
		c.reject(http.StatusBadRequest, "Content-Length together with Transfer-Encoding (request smuggling)")
		return true
	}
	return false
}

// requestLine notes what of the request line decides the framing, split as
// net/http splits it.
func (c *guardedConn) requestLine(line []byte) {
	method, rest := line, []byte(nil)
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		method, rest = line[:i], line[i+1:]
	}
	var proto []byte
	if i := bytes.IndexByte(rest, ' '); i >= 0 {
		proto = rest[i+1:]
	}
	c.h.connect = string(method) == "CONNECT"
	// net/http ignores Transfer-Encoding in an HTTP/1.0 request.
	c.h.http10 = string(proto) == "HTTP/1.0"
}

// header notes a header field that decides the framing. Names match as
// net/http matches them after canonicalizing; a name it would refuse
// matches nothing, which is fine, as Go then refuses the whole head.
func (c *guardedConn) header(start int, line []byte) {
	h := &c.h
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return
	}
	name := line[:colon]
	vs, ve := trimOWS(line, colon+1)
	value := line[vs:ve]
	switch {
	case asciiEqualFold(name, "content-length"):
		if h.cl == 0 {
			h.clOff, h.clLen = start+vs-c.hstart, len(value)
			h.clN, h.clOK = parseLength(value)
		} else if !bytes.Equal(value, c.buf[c.hstart+h.clOff:c.hstart+h.clOff+h.clLen]) {
			h.clOK = false // net/http refuses differing Content-Lengths
		}
		h.cl++
	case asciiEqualFold(name, "transfer-encoding"):
		h.te++
		h.teChunked = asciiEqualFold(value, "chunked")
	case asciiEqualFold(name, "connection"):
		h.connUpgrade = h.connUpgrade || hasToken(value, "upgrade")
	case asciiEqualFold(name, "upgrade"):
		if !h.upgradeSeen {
			h.upgradeSeen, h.upgrade = true, len(value) > 0
		}
	}
}

// endHead releases the complete head and sets out to follow its body as
// net/http frames it. Where net/http would refuse the framing, the guard
// steps aside: Go answers and closes the connection.
func (c *guardedConn) endHead() {
	h := &c.h
	c.out = c.buf[c.hstart:c.scan]
	c.hstart = c.scan
	switch {
	case h.connect || (h.upgrade && h.connUpgrade):
		c.mode = modeTransparent // what follows may be another protocol
	case h.te > 0 && !h.http10:
		if h.te == 1 && h.teChunked {
			c.mode = modeChunkLine
			c.chunkState, c.chunkDigitsN, c.chunkSize = chunkDigits, 0, 0
		} else {
			c.mode = modeTransparent
		}
	case h.cl > 0 && !h.clOK:
		c.mode = modeTransparent
	case h.cl > 0 && h.clN > 0:
		c.mode = modeFixed
		c.left = h.clN
	default:
		c.nextHead()
	}
}

func (c *guardedConn) nextHead() {
	c.mode = modeHead
	c.h = headFacts{}
}

// scanBody follows the framing over body bytes and returns how many of b
// belong to the body; the rest begins the next head.
func (c *guardedConn) scanBody(b []byte) int {
	i := 0
	for i < len(b) {
		switch c.mode {
		case modeFixed, modeChunkData:
			n := len(b) - i
			if uint64(n) > c.left {
				n = int(c.left)
			}
			i += n
			c.left -= uint64(n)
			if c.left > 0 {
				continue
			}
			if c.mode == modeFixed {
				c.nextHead()
			} else {
				c.mode = modeChunkCR
			}
		case modeChunkCR, modeChunkLF:
			want, next := byte('\r'), modeChunkLF
			if c.mode == modeChunkLF {
				want, next = '\n', modeChunkLine
				c.chunkState, c.chunkDigitsN, c.chunkSize = chunkDigits, 0, 0
			}
			if b[i] != want {
				c.mode = modeTransparent
				return len(b)
			}
			c.mode = next
			i++
		case modeChunkLine:
			if !c.chunkLineByte(b[i]) {
				c.mode = modeTransparent
				return len(b)
			}
			i++
		case modeTrailer:
			i += c.trailerBytes(b[i:])
		case modeTransparent:
			return len(b)
		default: // modeHead
			return i
		}
	}
	return i
}

// chunkLineByte takes the next byte of a chunk-size line as net/http's
// chunked reader reads it: hex digits (at most 16), optional whitespace or
// an extension, CRLF and no other CR. It reports false where that reader
// fails.
func (c *guardedConn) chunkLineByte(b byte) bool {
	switch c.chunkState {
	case chunkDigits:
		if v, ok := hexDigit(b); ok {
			if c.chunkDigitsN == 16 {
				return false
			}
			c.chunkDigitsN++
			c.chunkSize = c.chunkSize<<4 | uint64(v)
			return true
		}
		if c.chunkDigitsN == 0 {
			return false
		}
		switch b {
		case ' ', '\t':
			c.chunkState = chunkOWS
		case ';':
			c.chunkState = chunkExt
		case '\r':
			c.chunkState = chunkCR
		default:
			return false
		}
	case chunkOWS:
		switch b {
		case ' ', '\t':
		case '\r':
			c.chunkState = chunkCR
		default:
			return false
		}
	case chunkExt:
		switch b {
		case '\r':
			c.chunkState = chunkCR
		case '\n':
			return false
		}
	case chunkCR:
		if b != '\n' {
			return false
		}
		if c.chunkSize == 0 {
			c.mode = modeTrailer
			c.trailerState = trailerLineStart
		} else {
			c.mode = modeChunkData
			c.left = c.chunkSize
		}
	}
	return true
}

// trailerBytes follows trailer lines up to the empty line that ends the
// body and returns how many bytes of b it took.
func (c *guardedConn) trailerBytes(b []byte) int {
	for i := 0; i < len(b); i++ {
		switch c.trailerState {
		case trailerLineStart, trailerCR:
			if b[i] == '\n' {
				c.nextHead()
				return i + 1
			}
			if b[i] == '\r' && c.trailerState == trailerLineStart {
				c.trailerState = trailerCR
			} else {
				c.trailerState = trailerLine
			}
		case trailerLine:
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				return len(b)
			}
			i += j
			c.trailerState = trailerLineStart
		}
	}
	return len(b)
}

// reject drops the held head and everything after it, and releases the
// synthetic request in its place.
func (c *guardedConn) reject(code int, reason string) {
	c.rejected.Store(&rejection{Code: code, Reason: reason})
	c.out = []byte("GET / HTTP/1.1\r\nHost: switchyard.invalid\r\n" +
		rejectHeader + ": " + c.nonce + "\r\nConnection: close\r\n\r\n")
	c.mode = modeRejected
	c.buf, c.hstart, c.scan, c.end = nil, 0, 0, 0
	c.rerr = nil
}

func (c *guardedConn) rejectLine() {
	if c.h.phase == phaseRequestLine {
		c.reject(http.StatusRequestURITooLong, fmt.Sprintf("request line longer than %d bytes", c.lim.RequestLine))
		return
	}
	c.reject(http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("header line longer than %d bytes", c.lim.HeaderLine))
}

func (c *guardedConn) headReason() string {
	return fmt.Sprintf("request head larger than %d bytes", c.lim.Head)
}

// Close closes the connection. After a rejection the client may still be
// sending the refused request, and closing a socket with unread bytes
// makes the kernel answer with a reset, which can destroy the error
// response before the client read it. So, as nginx's lingering close,
// the guard shuts the writing side and drains the client for a while
// before it closes.
func (c *guardedConn) Close() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || c.rejected.Load() == nil {
		return c.Conn.Close()
	}
	if !c.lingering.CompareAndSwap(false, true) {
		return nil
	}
	if err := cw.CloseWrite(); err != nil {
		return c.Conn.Close()
	}
	go func() {
		defer c.Conn.Close()
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.Copy(io.Discard, c.Conn)
	}()
	return nil
}

// guardListener wraps every accepted conn with guardConn.
func guardListener(ln net.Listener, lim headLimits, nonce string) net.Listener {
	return &guardedListener{Listener: ln, lim: lim.withDefaults(), nonce: nonce}
}

type guardedListener struct {
	net.Listener
	lim   headLimits
	nonce string
}

// Accept returns the listener's error as it is: http.Server retries on a
// temporary net.Error, found by a type assertion.
func (l *guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return guardConn(c, l.lim, l.nonce), nil
}

// trimOWS returns the bounds of line[from:] without leading and trailing
// spaces and tabs, as net/textproto trims a field value.
func trimOWS(line []byte, from int) (int, int) {
	s, e := from, len(line)
	for s < e && (line[s] == ' ' || line[s] == '\t') {
		s++
	}
	for e > s && (line[e-1] == ' ' || line[e-1] == '\t') {
		e--
	}
	return s, e
}

// asciiEqualFold compares b with lower, a lower-case ASCII string, ignoring
// ASCII case only: bytes.EqualFold would also match non-ASCII look-alikes
// (ſ for s, K for k) that net/http refuses in a name.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		x := b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != lower[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token,
// ignoring ASCII case and whitespace around the elements.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		elem := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		s, e := trimOWS(elem, 0)
		if asciiEqualFold(elem[s:e], token) {
			return true
		}
	}
	return false
}

// parseLength parses a Content-Length value as net/http does: decimal
// digits only, below 2^63. An empty value counts as zero, which only Go's
// lax-content-length setting accepts; by default Go refuses it and closes.
func parseLength(v []byte) (uint64, bool) {
	var n uint64
	for _, b := range v {
		if b < '0' || b > '9' || n > (1<<63-1-uint64(b-'0'))/10 {
			return 0, false
		}
		n = n*10 + uint64(b-'0')
	}
	return n, true
}

func hexDigit(b byte) (byte, bool) {
	switch {
	case '0' <= b && b <= '9':
		return b - '0', true
	case 'a' <= b && b <= 'f':
		return b - 'a' + 10, true
	case 'A' <= b && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}
