package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// A heartbeat stream (registry.HeartbeatStreamPath) is one upgraded
// connection per client process over which it renews its leases, as
// etcd's LeaseKeepAlive is one gRPC stream per client. A heartbeat then
// costs the registry one small read, not an HTTP request: no parsing of
// headers, no routing, no token check, no response. The token is checked
// once, at the upgrade. The registry answers only pings and ids it does
// not know; a stream silent for longer than a lease is closed, so the
// leases of a peer that vanished lapse as they always did.

// streams counts the open heartbeat streams, in total and per client, and
// closes them all when the server stops: a hijacked connection is no
// longer the http.Server's to close.
type streams struct {
	max, perClient int

	mu       sync.Mutex
	total    int
	byClient map[string]int
	open     map[*leaseStream]struct{}
	closed   bool
	poll     *poller // the streams read in batches; nil where they cannot be
}

func newStreams(max, perClient int) *streams {
	return &streams{max: max, perClient: perClient, byClient: map[string]int{}, open: map[*leaseStream]struct{}{}}
}

// acquire takes a place for client, or says which cap is reached.
func (s *streams) acquire(client string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, errors.New("registry is stopping")
	case s.total >= s.max:
		return nil, fmt.Errorf("registry holds its maximum of %d heartbeat streams; heartbeat with PUT or retry", s.max)
	case s.byClient[client] >= s.perClient:
		return nil, fmt.Errorf("client %s holds its maximum of %d heartbeat streams; heartbeat with PUT or retry", client, s.perClient)
	}
	s.total++
	s.byClient[client]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.total--
		if s.byClient[client]--; s.byClient[client] == 0 {
			delete(s.byClient, client)
		}
	}, nil
}

// add tracks st until remove; false if the server stopped.
func (s *streams) add(st *leaseStream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[st] = struct{}{}
	return true
}

func (s *streams) remove(st *leaseStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, st)
}

// closeAll ends every stream; their leases then lapse or are renewed by
// PUT, as the clients fall back.
func (s *streams) closeAll() {
	s.mu.Lock()
	s.closed = true
	open := make([]*leaseStream, 0, len(s.open))
	for st := range s.open {
		open = append(open, st)
	}
	s.mu.Unlock()
	for _, st := range open {
		st.close()
	}
}

// stopped reports whether closeAll was called.
func (s *streams) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// held is how many streams are open now.
func (s *streams) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

func (s *streams) gauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_registry_heartbeat_streams", Help: "Heartbeat streams open now.",
	}, func() float64 { return float64(s.held()) })
}

// heartbeatStream upgrades an authenticated request to a heartbeat stream.
// The shared token may renew any lease over it, an instance token only its
// own; a refused upgrade renews nothing.
func (s *Server) heartbeatStream(c echo.Context) error {
	r := c.Request()
	own, shared, err := s.heartbeatCaller(r)
	if err != nil {
		return err
	}
	if !upgradeAsked(r) {
		c.Response().Header().Set("Upgrade", registry.HeartbeatStreamProtocol)
		return echo.NewHTTPError(http.StatusUpgradeRequired,
			"this route takes Connection: Upgrade and Upgrade: "+registry.HeartbeatStreamProtocol)
	}
	// An instance token renews one lease, whatever address its instance
	// moves to; a shared token may renew any, so its streams count by the
	// peer's own address, as blocking queries do.
	client := own
	if shared {
		client, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	release, err := s.streams.acquire(client)
	if err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return echo.NewHTTPError(http.StatusTooManyRequests, err.Error())
	}
	conn, rw, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		release()
		return echo.NewHTTPError(http.StatusBadRequest, "this connection cannot be upgraded (HTTP/2?): heartbeat with PUT")
	}
	st := &leaseStream{srv: s, peer: r.RemoteAddr, own: own, release: release, buf: make([]byte, registry.MaxHeartbeatFrame)}
	// Bytes the client sent right after its request are already buffered.
	if n := rw.Reader.Buffered(); n > 0 {
		early, _ := rw.Reader.Peek(n)
		st.n = copy(st.buf, early)
		if n > len(st.buf) {
			st.n = len(st.buf) // refused as too long by take
		}
	}
	ttl := s.cfg.LeaseTTL
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+registry.HeartbeatStreamProtocol+
		"\r\n"+registry.LeaseTTLHeader+": "+strconv.FormatInt(ttl.Milliseconds(), 10)+"\r\n\r\n"); err != nil {
		release()
		_ = conn.Close()
		return nil
	}
	// Where it can, the registry reads all streams in batches, a few times
	// a second, rather than being woken for every heartbeat of each.
	if s.streams.pollStream(st, conn, ttl) {
		return nil
	}
	st.send = func(b []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, err := conn.Write(b)
		return err == nil
	}
	st.close = func() { _ = conn.Close() }
	if !s.streams.add(st) {
		release()
		_ = conn.Close()
		return nil
	}
	go st.serve(conn, ttl)
	return nil
}

// upgradeAsked reports whether r asks to switch to the heartbeat protocol.
func upgradeAsked(r *http.Request) bool {
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), registry.HeartbeatStreamProtocol) {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// leaseStream is one client's open heartbeat stream.
type leaseStream struct {
	srv     *Server
	peer    string
	own     string // the instance an instance token acts for; "" for the shared token
	release func()
	ids     [][]byte // the parsed frame, reused
	buf     []byte   // what was read and not yet taken, buf[:n]
	n       int
	// send writes a line to the client; close ends the stream. They are
	// set by whatever reads the stream.
	send  func([]byte) bool
	close func()
}

// serve reads st from conn, in a goroutine of its own, until the client
// leaves, stays silent past a lease, or sends a frame it must refuse.
func (st *leaseStream) serve(conn net.Conn, ttl time.Duration) {
	s := st.srv
	defer st.release()
	defer s.streams.remove(st)
	defer conn.Close()
	// The deadline moves only every quarter lease, not on every frame: a
	// stream is closed after one to one and a quarter leases of silence,
	// when the leases it renewed have lapsed anyway.
	var deadline time.Time
	refresh := func(now time.Time) {
		if now.Add(ttl).After(deadline) {
			deadline = now.Add(ttl + ttl/4)
			_ = conn.SetReadDeadline(deadline)
		}
	}
	refresh(time.Now())
	for st.take() {
		m, err := conn.Read(st.buf[st.n:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				st.silent(ttl)
			}
			return
		}
		st.n += m
		refresh(time.Now())
	}
}

// silent logs the end of a stream that sent nothing for a lease.
func (st *leaseStream) silent(ttl time.Duration) {
	st.srv.cfg.Log.WithFields(logrus.Fields{"peer": st.peer, "silent_for": ttl}).
		Info("heartbeat stream silent for a lease; closed, its leases lapse unless renewed otherwise")
}

// take handles every whole frame read so far and keeps the rest; it
// reports whether the stream goes on.
func (st *leaseStream) take() bool {
	start := 0
	for {
		i := bytes.IndexByte(st.buf[start:st.n], '\n')
		if i < 0 {
			break
		}
		if !st.frame(st.buf[start : start+i]) {
			return false
		}
		start += i + 1
	}
	st.n = copy(st.buf, st.buf[start:st.n])
	if st.n == len(st.buf) {
		st.refuse(fmt.Sprintf("frame longer than %d bytes", registry.MaxHeartbeatFrame))
		return false
	}
	return true
}

// frame renews the leases one frame names and answers a ping; it reports
// whether the stream goes on.
func (st *leaseStream) frame(line []byte) bool {
	ping, ids, err := parseFrame(line, st.ids[:0])
	st.ids = ids
	if err != nil {
		st.refuse(err.Error())
		return false
	}
	if st.own != "" {
		for _, id := range ids {
			if string(id) != st.own {
				st.refuse("the token of instance " + strconv.Quote(st.own) + " may not renew " + strconv.Quote(string(id)))
				return false
			}
		}
	}
	ok := true
	st.srv.store.renewStream(ids, func(id []byte) {
		// The client's instance must register again, as a 404 asks.
		ok = ok && st.send([]byte("missing "+string(id)+"\n"))
	})
	if ping && ok {
		ok = st.send(pong)
	}
	return ok
}

// refuse tells the client why its stream ends; nothing of the frame was
// renewed.
func (st *leaseStream) refuse(reason string) {
	st.srv.cfg.Log.WithFields(logrus.Fields{"peer": st.peer, "reason": reason}).
		Warn("heartbeat stream refused a frame; closed, the client falls back to PUT heartbeats")
	st.send([]byte("error " + reason + "\n"))
}

// pong answers a ping.
var pong = []byte(".\n")

// errFrame is a frame the registry refuses.
type errFrame string

func (e errFrame) Error() string { return "malformed frame: " + string(e) }

// parseFrame parses one frame without its '\n': an optional '?' that asks
// for an answer, then ids separated by single spaces, each a valid
// instance id (registry.CheckName). The ids point into line and are
// appended to ids. A frame with an error renews nothing.
func parseFrame(line []byte, ids [][]byte) (ping bool, _ [][]byte, _ error) {
	if len(line) > 0 && line[0] == '?' {
		ping, line = true, line[1:]
		if len(line) == 0 {
			return true, ids, nil
		}
	}
	if len(line) == 0 {
		return false, ids, errFrame("empty frame")
	}
	for len(line) > 0 {
		id := line
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			id, line = line[:i], line[i+1:]
			if len(line) == 0 {
				return false, ids, errFrame("trailing space")
			}
		} else {
			line = nil
		}
		if len(id) == 0 || len(id) > registry.MaxNameLen {
			return false, ids, errFrame(fmt.Sprintf("instance ids must be 1 to %d characters", registry.MaxNameLen))
		}
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':') {
				return false, ids, errFrame(fmt.Sprintf("byte %q is not allowed in an instance id", c))
			}
		}
		ids = append(ids, id)
	}
	return ping, ids, nil
}

// renewStream renews the leases of ids, as Heartbeats does, and calls
// missing for each it does not know, without allocating: it runs for
// every frame of every stream.
func (s *Store) renewStream(ids [][]byte, missing func(id []byte)) {
	var unknown [][]byte
	s.mu.RLock()
	now := s.now()
	for _, id := range ids {
		if l, ok := s.instances[string(id)]; ok {
			s.renew(&l.expires, now)
		} else {
			unknown = append(unknown, id)
		}
	}
	s.mu.RUnlock()
	// Answered outside the lock: a write may wait on the client.
	for _, id := range unknown {
		missing(id)
	}
}

// closeStreamsWith ends every stream when ctx ends.
func (s *Server) closeStreamsWith(ctx context.Context) {
	context.AfterFunc(ctx, s.streams.closeAll)
}
