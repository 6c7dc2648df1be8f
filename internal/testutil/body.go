package testutil

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// FiftyMB is the size of the oversized bodies tests send.
const FiftyMB = 50 << 20

// HugeJSON is FiftyMB of a JSON document that opens with prefix (say
// `{"id":"`) and never ends, made on demand. Read counts what the client
// was asked for.
type HugeJSON struct {
	prefix string
	left   int64
	Read   atomic.Int64
}

// NewHugeJSON starts a FiftyMB body with prefix.
func NewHugeJSON(prefix string) *HugeJSON { return &HugeJSON{prefix: prefix, left: FiftyMB} }

// Reader is the body as an io.Reader.
func (b *HugeJSON) Reader() io.Reader { return hugeReader{b} }

type hugeReader struct{ b *HugeJSON }

func (r hugeReader) Read(p []byte) (int, error) {
	b := r.b
	if b.left <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.left)]
	for i := range p {
		p[i] = 'a'
	}
	if b.left == FiftyMB && len(p) >= len(b.prefix) {
		copy(p, b.prefix)
	}
	b.left -= int64(len(p))
	b.Read.Add(int64(len(p)))
	return len(p), nil
}

// CountingListener counts the bytes a server read from its connections
// and how many of them it has closed, to show that it refused a body
// without reading it.
type CountingListener struct {
	net.Listener
	Read             atomic.Int64
	mu               sync.Mutex
	accepted, closed int
}

// Accept counts the connection.
func (l *CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted++
	l.mu.Unlock()
	return &countingConn{Conn: c, l: l}, nil
}

// Open is how many accepted connections the server has not closed yet.
func (l *CountingListener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted - l.closed
}

type countingConn struct {
	net.Conn
	l    *CountingListener
	once sync.Once
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.Read.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.closed++
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
