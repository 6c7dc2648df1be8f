package sdk_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/signing"
)

const fiftyMB = 50 << 20

// endlessJSON is 50 MB of a JSON string that never ends, made on demand;
// it counts what the client was asked for.
type endlessJSON struct {
	left int64
	read atomic.Int64
}

func (b *endlessJSON) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.left)]
	for i := range p {
		p[i] = 'U'
	}
	if b.left == fiftyMB && len(p) >= 11 {
		copy(p, `{"status":"`)
	}
	b.left -= int64(len(p))
	b.read.Add(int64(len(p)))
	return len(p), nil
}

// readCounter counts the bytes a server read from its connections and how
// many of them it has closed.
type readCounter struct {
	net.Listener
	read             atomic.Int64
	mu               sync.Mutex
	accepted, closed int
}

func (l *readCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted++
	l.mu.Unlock()
	return &readCountingConn{Conn: c, l: l}, nil
}

func (l *readCounter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted - l.closed
}

type readCountingConn struct {
	net.Conn
	l    *readCounter
	once sync.Once
}

func (c *readCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.read.Add(int64(n))
	return n, err
}

func (c *readCountingConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.closed++
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// An instruction is at most 4 KiB. Past that the instance answers 413 and
// closes the connection; net/http may first drain up to 256 KiB of a body
// sent in chunks (maxPostHandlerReadBytes). Buffers add a little.
const maxInstructionRead = 4<<10 + 256<<10 + 64<<10

func TestA50MBInstructionIsRefusedWithoutBeingRead(t *testing.T) {
	log := logrus.New()
	log.Out = io.Discard
	// New connects to nothing: the registry and ZooKeeper are only used by
	// Start, and a refused instruction never reaches the registry.
	inst, err := sdk.New(sdk.Config{Service: "hello", Color: "green", ID: "hello-green-big", Address: "127.0.0.1", Port: 9,
		ZK: []string{"127.0.0.1:1"}, Registry: registry.NewClient("http://127.0.0.1:1", "secret"), Token: fuzzKey, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") })
	ts := httptest.NewUnstartedServer(inst.Handler(app))
	rc := &readCounter{Listener: ts.Listener}
	ts.Listener = rc
	ts.Start()
	defer ts.Close()
	keys, err := signing.ParseKeys(registry.InstanceToken(fuzzKey, fuzzID)) // the controller signs with the instance's key
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		desc            string
		chunked, signed bool
	}{
		{desc: "unsigned, its length announced"},
		{desc: "unsigned, sent in chunks", chunked: true},
		{desc: "signed, its length announced", signed: true},
		{desc: "signed, sent in chunks", chunked: true, signed: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := &endlessJSON{left: fiftyMB}
			req, err := http.NewRequest(http.MethodPut, ts.URL+sdk.StatusPath, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = fiftyMB
			if tc.chunked {
				req.ContentLength = -1
			}
			if tc.signed {
				// Signed over another body: the size is refused before
				// the signature is looked at.
				mustSign(t, keys, req, []byte(`{"status":"UP"}`), signing.Claims{Subject: inst.ID(), Epoch: 1})
			}
			start := rc.read.Load()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
			defer client.CloseIdleConnections()
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("answered %d, want 413 or a closed connection", resp.StatusCode)
				}
			} else {
				t.Logf("the instance closed the connection: %v", err)
			}
			testutil.Eventually(t, 10*time.Second, "the instance to close the connection", func() bool { return rc.open() == 0 })
			n := rc.read.Load() - start
			t.Logf("the instance read %d bytes; the client produced %d", n, body.read.Load())
			if n > maxInstructionRead {
				t.Errorf("the instance read %d bytes of a 50 MB instruction before refusing it; want at most %d", n, maxInstructionRead)
			}
			if n := body.read.Load(); n >= fiftyMB {
				t.Errorf("the client sent all %d bytes: nothing stopped it", n)
			}
			if st := inst.Status(); st != registry.StatusOutOfService {
				t.Errorf("status %s after a refused instruction", st)
			}
		})
	}
}
