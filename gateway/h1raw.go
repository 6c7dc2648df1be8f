package gateway

import (
	"bytes"
	"net/http"
	"time"
)

// rawResponse is an instance's answer whose head the engine passes on
// straight from the connection's buffer, without http.ReadResponse's
// header map: the usual answer, HTTP/1.1 with a status from 200 to 599, a
// Content-Length (or no body by its status or the request's method), and
// none of the fields that need more than copying. Anything else is left in
// the buffer for http.ReadResponse, which peek never consumes from, so the
// choice costs nothing but the look.
type rawResponse struct {
	status    int
	headLen   int           // the head's bytes in the buffer, blank line included
	fields    []engineField // passed on as they are; slices of the buffer
	length    int64         // the Content-Length field's value
	hasLength bool          // the answer had a Content-Length field
	body      int64         // the body's bytes that follow the head
	hasDate   bool
	reuse     bool // the instance keeps the connection open
	deadline  bool // a read deadline was set for the body

	t    *h1Transport
	c    *h1Conn
	stop func() bool

	// got1xx passes on an interim answer (103 Early Hints and the like)
	// that comes before the real one, as ReverseProxy does.
	got1xx func(code int, h http.Header) error
}

// splitField splits a header line into its name and its value without
// the whitespace around it, and says whether both are valid: the one
// rule of a field line for requests and answers alike.
// It is one pass over the line: every request and answer the engine
// passes on has a few of them, and a cut, a trim and two checks were
// about a tenth of the instructions the gateway spent on a request.
func splitField(l []byte) (name, value []byte, ok bool) {
	i := 0
	for i < len(l) && fieldNameByte[l[i]] {
		i++
	}
	// ':' is no byte of a name, so the name ends at the first ':' or at
	// a byte that makes the line invalid.
	if i == 0 || i == len(l) || l[i] != ':' {
		return nil, nil, false
	}
	j, k := i+1, len(l)
	for j < k && (l[j] == ' ' || l[j] == '\t') {
		j++
	}
	for k > j && (l[k-1] == ' ' || l[k-1] == '\t') {
		k--
	}
	return l[:i], l[j:k], validHeaderValue(l[j:k])
}

// peek reads the head of the answer to a request with method on c into r
// and reports whether the engine can pass it on raw.
func (r *rawResponse) peek(c *h1Conn, method string) bool {
	*r = rawResponse{fields: r.fields[:0], reuse: true, got1xx: r.got1xx}
	if _, err := c.br.Peek(1); err != nil {
		return false // http.ReadResponse meets the same error
	}
	var head []byte
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			head = buf[:i+4]
			break
		}
		if len(buf) == c.br.Size() {
			return false
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return false
		}
	}
	r.headLen = len(head)
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return false
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return false
		}
		r.status = r.status*10 + int(d-'0')
	}
	if r.status < 200 || r.status > 599 || !validHeaderValue(line[12:]) {
		return false // the reason phrase, too, is text without controls
	}
	for len(rest) > 2 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' {
			return false // obs-fold, or a stray blank line
		}
		name, value, ok := splitField(l)
		if !ok {
			return false
		}
		switch fieldKindOf(responseFields, name) {
		case fieldContentLength:
			if r.hasLength || len(value) == 0 || len(value) > 18 {
				return false
			}
			for _, d := range value {
				if d < '0' || d > '9' {
					return false
				}
				r.length = r.length*10 + int64(d-'0')
			}
			r.hasLength = true
		case fieldConnection:
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				switch tok = bytes.Trim(tok, " \t"); {
				case equalFold(tok, "close"):
					r.reuse = false
				case len(tok) == 0, equalFold(tok, "keep-alive"):
				default:
					return false // names a field as hop-by-hop
				}
			}
		case fieldContentType:
			// A stream is tracked, to follow the switch: net/http's path.
			if hasPrefixFold(value, "text/event-stream") || hasPrefixFold(value, "application/grpc") {
				return false
			}
			r.fields = append(r.fields, engineField{name, value})
		case fieldRequestID:
			// The answer carries the request's own, once.
		case fieldRefused:
			return false
		case fieldDate:
			r.hasDate = true
			r.fields = append(r.fields, engineField{name, value})
		default:
			r.fields = append(r.fields, engineField{name, value})
		}
	}
	noBody := method == http.MethodHead || r.status == http.StatusNoContent || r.status == http.StatusNotModified
	switch {
	case noBody && r.status == http.StatusNoContent:
		r.length, r.hasLength = 0, false
	case noBody:
		// The length describes the answer a GET would get; no body follows.
	case !r.hasLength:
		return false // chunked or up to the close: http.ReadResponse's
	default:
		r.body = r.length
	}
	return true
}

// responseFields are the answer's fields the engine looks at; the refused
// ones it leaves to http.ReadResponse and ReverseProxy's rules.
var responseFields = map[string]fieldKind{
	"content-length": fieldContentLength, "connection": fieldConnection, "content-type": fieldContentType,
	"x-request-id": fieldRequestID, "date": fieldDate,
	"transfer-encoding": fieldRefused, "trailer": fieldRefused, "upgrade": fieldRefused, "keep-alive": fieldRefused,
	"proxy-connection": fieldRefused, "te": fieldRefused, "proxy-authenticate": fieldRefused, "proxy-authorization": fieldRefused,
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// finish returns the connection to the pool when the answer was read
// whole and the instance keeps it, else closes it.
func (r *rawResponse) finish(whole bool) {
	stopped := r.stop()
	if whole && stopped && r.reuse && r.c.br.Buffered() == 0 {
		if r.deadline {
			// The next round trip's head may have no deadline of its own.
			_ = r.c.SetReadDeadline(time.Time{})
		}
		r.t.putConn(r.c)
	} else {
		r.c.Close()
	}
	r.c = nil
}
