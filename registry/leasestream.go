package registry

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
)

// The heartbeat stream: a client upgrades one request to a long-lived
// connection, as a WebSocket does, and renews its leases over it with one
// line per heartbeat, so that a heartbeat costs the registry one small
// read rather than an HTTP request.
//
//	GET /v1/heartbeats/stream
//	Connection: Upgrade
//	Upgrade: switchyard-heartbeats/1
//	Authorization: Bearer <the shared token, or the instance's own>
//
// answered "101 Switching Protocols" with the lease TTL in milliseconds in
// LeaseTTLHeader. Then each line the client sends, at most
// MaxHeartbeatFrame bytes with its '\n', renews the leases it names: ids
// separated by single spaces, after a '?' when the client wants an answer
// (a ping). The registry answers a ping with ".", names an id it does not
// know with "missing <id>" (register it again), and ends the stream with
// "error <reason>" on a frame it refuses, renewing nothing of that frame.
// A stream silent for a lease is closed.
const (
	HeartbeatStreamPath     = "/v1/heartbeats/stream"
	HeartbeatStreamProtocol = "switchyard-heartbeats/1"
	LeaseTTLHeader          = "X-Switchyard-Lease-Ttl"
	MaxHeartbeatFrame       = 512
)

// ClientOption tunes a Client.
type ClientOption func(*Client)

// WithoutHeartbeatStream makes a Client renew each lease with a PUT
// request, as clients did before heartbeat streams: for a proxy that
// accepts the upgrade but does not pass the stream on.
func WithoutHeartbeatStream() ClientOption {
	return func(c *Client) { c.stream.off = true }
}

// Retry a registry that refused the upgrade this much later: it may have
// been upgraded itself.
const streamRecheck = time.Minute

// firstDialWait is how long a client's first heartbeat waits for its
// stream before it goes out as a PUT.
const firstDialWait = 2 * time.Second

// errNoStream asks a caller to heartbeat with PUT.
var errNoStream = errors.New("registry: no heartbeat stream")

// errStreamUnsupported is an upgrade that the registry, or a proxy in
// front of it, does not take.
var errStreamUnsupported = errors.New("registry: heartbeat streams not supported")

// leaseStream is a Client's heartbeat stream. Heartbeats are written as
// heartbeats does its batches: the first at once, those that callers send
// meanwhile in the next write. While the stream is down (not yet open,
// broken, refused) every heartbeat goes out as a PUT and a new stream is
// opened in the background, with backoff, so no lease waits on a
// reconnect.
type leaseStream struct {
	c   *Client
	off bool
	own string // the instance an instance token acts for

	mu        sync.Mutex
	conn      net.Conn // nil while down
	gen       int      // counts connections; a reader of an old one changes nothing
	dialing   bool
	tried     bool      // a stream was dialled before
	notBefore time.Time // no new stream before
	backoff   retry.Backoff
	ttl       time.Duration
	pingSent  time.Time // of the ping that awaits its answer; zero when none
	lastPing  time.Time
	missing   map[string]bool // ids the registry said it does not know
	writing   bool
	queue     []*beat
	buf       []byte // the frames being written, reused by the writer
}

func (s *leaseStream) init(c *Client) {
	s.c = c
	s.backoff = retry.Backoff{Min: time.Second, Max: 30 * time.Second}
	s.missing = map[string]bool{}
	if rest, ok := strings.CutPrefix(c.token, InstancePrefix); ok {
		if i := strings.LastIndexByte(rest, '.'); i > 0 {
			s.own = rest[:i]
		}
	}
}

// beat renews id's lease over the stream; errNoStream asks for a PUT.
func (s *leaseStream) beat(ctx context.Context, id string) error {
	if s.off || CheckName("instance id", id) != nil || s.own != "" && id != s.own {
		// Let the PUT answer with the registry's own error.
		return errNoStream
	}
	now := time.Now()
	s.mu.Lock()
	if s.missing[id] {
		delete(s.missing, id)
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if s.conn != nil && !s.pingSent.IsZero() && now.Sub(s.pingSent) > s.ttl/4 {
		// A proxy or a NAT may drop a connection without a word: a ping
		// unanswered for a quarter lease means the stream is gone, with
		// time left to renew by PUT.
		s.dropLocked(s.gen, errors.New("no answer to a ping"))
	}
	if s.conn == nil {
		if s.dialing || now.Before(s.notBefore) {
			s.mu.Unlock()
			return errNoStream
		}
		s.dialing = true
		dialed := make(chan struct{})
		go func() {
			defer close(dialed)
			s.dial()
		}()
		if s.tried {
			// A reconnect: this lease must not wait for it.
			s.mu.Unlock()
			return errNoStream
		}
		s.tried = true
		// The first heartbeat waits a moment for the stream and goes over
		// it, so that a client that only heartbeats holds one connection,
		// not two; a slow registry gets a PUT meanwhile.
		s.mu.Unlock()
		wait := firstDialWait
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d)/2)
		}
		t := time.NewTimer(wait)
		select {
		case <-dialed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		s.mu.Lock()
		if s.conn == nil {
			s.mu.Unlock()
			return errNoStream
		}
	}
	b := &beat{ctx: ctx, id: id, done: make(chan error, 1)}
	s.queue = append(s.queue, b)
	if !s.writing {
		s.writing = true
		s.mu.Unlock()
		s.flush()
		return <-b.done
	}
	s.mu.Unlock()
	select {
	case err := <-b.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush writes what is queued until nothing is.
func (s *leaseStream) flush() {
	for {
		now := time.Now()
		s.mu.Lock()
		q, conn, gen := s.queue, s.conn, s.gen
		s.queue = nil
		if len(q) == 0 || conn == nil {
			s.writing = false
			s.mu.Unlock()
			for _, b := range q {
				b.done <- errNoStream
			}
			return
		}
		ping := s.pingSent.IsZero() && now.Sub(s.lastPing) >= s.ttl/2
		if ping {
			s.pingSent, s.lastPing = now, now
		}
		wait := s.ttl / 4
		s.mu.Unlock()
		s.buf = appendFrames(s.buf[:0], q, ping)
		_ = conn.SetWriteDeadline(now.Add(wait))
		_, err := conn.Write(s.buf)
		if err != nil {
			s.mu.Lock()
			s.dropLocked(gen, err)
			s.mu.Unlock()
			err = errNoStream
		}
		for _, b := range q {
			b.done <- err
		}
	}
}

// appendFrames appends the frames that renew q's ids, each within
// MaxHeartbeatFrame, the first with a ping if asked.
func appendFrames(buf []byte, q []*beat, ping bool) []byte {
	start := len(buf)
	if ping {
		buf = append(buf, '?')
	}
	for i, b := range q {
		sep := i > 0 && buf[len(buf)-1] != '?' && buf[len(buf)-1] != '\n'
		if sep && len(buf)-start+1+len(b.id)+1 > MaxHeartbeatFrame {
			buf = append(buf, '\n')
			start, sep = len(buf), false
		}
		if sep {
			buf = append(buf, ' ')
		}
		buf = append(buf, b.id...)
	}
	return append(buf, '\n')
}

// dropLocked ends connection gen, if it is still the stream's; the next
// heartbeats go out as PUTs until a new one opens after the backoff.
// Callers hold mu.
func (s *leaseStream) dropLocked(gen int, why error) {
	if gen != s.gen || s.conn == nil {
		return
	}
	_ = s.conn.Close()
	s.conn = nil
	// A registry that restarts loses every stream at once: spread their
	// return over the backoff rather than all at its end.
	wait := s.backoff.Next()
	wait = wait/2 + rand.N(wait)
	s.notBefore = time.Now().Add(wait)
	logrus.WithError(why).WithFields(logrus.Fields{"registry": s.c.base, "retry_in": wait}).
		Debug("heartbeat stream lost; heartbeating with PUT until it is back")
}

// dial opens a stream, in the background.
func (s *leaseStream) dial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, ttl, err := s.c.openStream(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = false
	if err != nil {
		wait := s.backoff.Next()
		if errors.Is(err, errStreamUnsupported) {
			wait = streamRecheck
			logrus.WithError(err).WithField("registry", s.c.base).Info("no heartbeat stream; heartbeating with PUT")
		} else {
			logrus.WithError(err).WithFields(logrus.Fields{"registry": s.c.base, "retry_in": wait}).
				Debug("could not open a heartbeat stream; heartbeating with PUT meanwhile")
		}
		s.notBefore = time.Now().Add(wait)
		return
	}
	s.gen++
	s.conn, s.ttl = conn, ttl
	// The first frame pings: a proxy may take the upgrade and still not
	// pass the stream on.
	s.pingSent, s.lastPing = time.Time{}, time.Time{}
	go s.read(conn, br, s.gen)
}

// read takes the registry's answers on connection gen until it ends.
func (s *leaseStream) read(conn net.Conn, br *bufio.Reader, gen int) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			s.mu.Lock()
			s.dropLocked(gen, fmt.Errorf("stream ended: %w", err))
			s.mu.Unlock()
			return
		}
		line = strings.TrimSuffix(line, "\n")
		s.mu.Lock()
		switch {
		case line == ".":
			if gen == s.gen {
				s.pingSent = time.Time{}
				// The stream works end to end: the next loss starts
				// the backoff afresh.
				s.backoff.Reset()
			}
		case strings.HasPrefix(line, "missing "):
			s.missing[strings.TrimPrefix(line, "missing ")] = true
		case strings.HasPrefix(line, "error "):
			reason := strings.TrimPrefix(line, "error ")
			logrus.WithFields(logrus.Fields{"registry": s.c.base, "reason": reason}).
				Warn("registry refused a heartbeat frame and closed the stream; heartbeating with PUT")
			s.dropLocked(gen, errors.New(reason))
		}
		s.mu.Unlock()
	}
}

// openStream upgrades a request to a heartbeat stream. The connection is
// dialled here rather than by the http.Client, so that the stream has
// deadlines and a buffer of its own size.
func (c *Client) openStream(ctx context.Context) (net.Conn, *bufio.Reader, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+HeartbeatStreamPath, nil)
	if err != nil {
		return nil, nil, 0, err
	}
	tr, _ := c.http.Transport.(*http.Transport)
	if tr != nil && tr.Proxy != nil {
		if p, _ := tr.Proxy(req); p != nil {
			return nil, nil, 0, fmt.Errorf("%w through the forward proxy %s", errStreamUnsupported, p.Redacted())
		}
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", HeartbeatStreamProtocol)
	req.Header.Set("Authorization", "Bearer "+c.token)
	conn, err := dialStream(ctx, req.URL, tr)
	if err != nil {
		return nil, nil, 0, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	br := bufio.NewReaderSize(conn, 256)
	resp, err := func() (*http.Response, error) {
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		return http.ReadResponse(br, req)
	}()
	if err != nil {
		_ = conn.Close()
		return nil, nil, 0, fmt.Errorf("registry: open a heartbeat stream: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), HeartbeatStreamProtocol) {
		_ = conn.Close()
		err := fmt.Errorf("registry: open a heartbeat stream: %s", resp.Status)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			err = fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		default:
			// An older registry (404), or a proxy that would not pass the
			// upgrade on.
			err = fmt.Errorf("%w: %w", errStreamUnsupported, err)
		}
		return nil, nil, 0, err
	}
	ttl := 10 * time.Second
	if ms, err := strconv.ParseInt(resp.Header.Get(LeaseTTLHeader), 10, 64); err == nil && ms > 0 {
		ttl = time.Duration(ms) * time.Millisecond
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, ttl, nil
}

// dialStream dials u's host as the client's transport would, over TLS
// for https but offering HTTP/1.1 only: an upgrade is an HTTP/1.1 thing.
func dialStream(ctx context.Context, u *url.URL, tr *http.Transport) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if u.Scheme != "https" {
		return d.DialContext(ctx, "tcp", host)
	}
	cfg := &tls.Config{}
	if tr != nil && tr.TLSClientConfig != nil {
		cfg = tr.TLSClientConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	cfg.NextProtos = []string{"http/1.1"}
	return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", host)
}
