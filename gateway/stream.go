package gateway

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Long-lived exchanges (WebSocket, Server-Sent Events, gRPC and other
// HTTP/2 streams) would stay on the instance they started on for as long as
// they live, so after a switch "all traffic on green" would be false for
// them, and a rollback could not reach them. The gateway tracks them by
// instance; when an instance leaves the UP set, its streams get a grace
// period and are then ended the way their protocol ends a stream on
// purpose, so that the client's reconnect lands on the live color:
//   - WebSocket: a close frame with 1001 (going away) to both sides;
//   - SSE and other streamed HTTP answers: the end of the response (the
//     last chunk on HTTP/1.1, END_STREAM on HTTP/2);
//   - gRPC: the end of the stream with grpc-status 14 (UNAVAILABLE), which
//     gRPC clients treat as "try again".
// A routing change that keeps an instance UP ends none of its streams. The
// same ending serves the drain at shutdown, where HTTP/2 connections also
// get a GOAWAY from net/http.

// streamKind says how a stream is ended.
type streamKind uint8

const (
	streamHTTP streamKind = iota // SSE or another streamed answer
	streamGRPC
	streamWebSocket
)

func (k streamKind) String() string {
	switch k {
	case streamGRPC:
		return "grpc"
	case streamWebSocket:
		return "websocket"
	default:
		return "http"
	}
}

// streamOf says whether resp starts a long-lived exchange and of what kind.
func streamOf(resp *http.Response) (streamKind, bool) {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return streamWebSocket, true
	}
	ct := headerValue(resp.Header, "Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc"):
		return streamGRPC, true
	case strings.HasPrefix(ct, "text/event-stream"):
		return streamHTTP, true
	}
	return 0, false
}

// Why a stream was ended, as the close frame and gRPC message say it.
const (
	reasonMoved    = "instance left the live color; reconnect"
	reasonDraining = "gateway shutting down; reconnect"
	reasonIdle     = "idle timeout"
)

// stream is one tracked long-lived exchange.
type stream struct {
	kind     streamKind
	instance string
	once     sync.Once
	endFn    func(reason string)
}

// end ends the stream once; later calls do nothing.
func (s *stream) end(reason string) { s.once.Do(func() { s.endFn(reason) }) }

// streams tracks the open streams by instance and moves them off
// instances that left the UP set.
type streams struct {
	grace time.Duration

	mu      sync.Mutex
	up      *Table // the routing table as of the last change; nil before one
	byInst  map[string]map[*stream]struct{}
	pending map[string]*time.Timer // instance → its scheduled move
	open    sync.WaitGroup

	moved   atomic.Uint64 // streams ended because their instance left
	onMoved func(kind streamKind)
}

func newStreams(grace time.Duration) *streams {
	return &streams{grace: grace, byInst: map[string]map[*stream]struct{}{}, pending: map[string]*time.Timer{}}
}

// add tracks s until the returned func is called (when the exchange ends).
func (t *streams) add(s *stream) (done func()) {
	t.mu.Lock()
	m := t.byInst[s.instance]
	if m == nil {
		m = map[*stream]struct{}{}
		t.byInst[s.instance] = m
	}
	m[s] = struct{}{}
	t.open.Add(1)
	if t.up != nil && !t.up.isUp(s.instance) && t.pending[s.instance] == nil {
		// The answer began on an instance that left the UP set while the
		// request was on its way: its move is due as much as the others'.
		id := s.instance
		t.pending[id] = time.AfterFunc(t.grace, func() { t.move(id) })
	}
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.byInst[s.instance], s)
			if len(t.byInst[s.instance]) == 0 {
				delete(t.byInst, s.instance)
			}
			t.mu.Unlock()
			t.open.Done()
		})
	}
}

// changed is told which instances are UP after a routing change. Streams
// of an instance that is not UP any more are ended after the grace period,
// unless it comes back UP before then (a quick rollback).
func (t *streams) changed(up *Table) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.up = up
	for id, timer := range t.pending {
		if up.isUp(id) {
			timer.Stop()
			delete(t.pending, id)
		}
	}
	for id := range t.byInst {
		if up.isUp(id) || t.pending[id] != nil {
			continue
		}
		t.pending[id] = time.AfterFunc(t.grace, func() { t.move(id) })
	}
}

// move ends every stream of instance id, unless its move was called off.
func (t *streams) move(id string) {
	t.mu.Lock()
	if t.pending[id] == nil {
		t.mu.Unlock()
		return
	}
	delete(t.pending, id)
	victims := make([]*stream, 0, len(t.byInst[id]))
	for s := range t.byInst[id] {
		victims = append(victims, s)
	}
	t.mu.Unlock()
	for _, s := range victims {
		t.moved.Add(1)
		if t.onMoved != nil {
			t.onMoved(s.kind)
		}
		s.end(reasonMoved)
	}
}

// endAll ends every stream (the drain at shutdown) and waits until they
// are gone or ctx ends.
func (t *streams) endAll(ctx context.Context) {
	t.mu.Lock()
	for id, timer := range t.pending {
		timer.Stop()
		delete(t.pending, id)
	}
	var all []*stream
	for _, m := range t.byInst {
		for s := range m {
			all = append(all, s)
		}
	}
	t.mu.Unlock()
	for _, s := range all {
		s.end(reasonDraining)
	}
	done := make(chan struct{})
	go func() {
		t.open.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// counts returns the open streams by instance.
func (t *streams) counts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.byInst))
	for id, m := range t.byInst {
		out[id] = len(m)
	}
	return out
}

// total is the number of open streams.
func (t *streams) total() int {
	n := 0
	for _, c := range t.counts() {
		n += c
	}
	return n
}

// pendingMoves lists the instances whose streams are waiting out the grace.
func (t *streams) pendingMoves() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Sorted(maps.Keys(t.pending))
}

// streamBody is the body of a streamed HTTP answer (SSE, gRPC). Ending it
// cancels the upstream exchange and turns the resulting error into a clean
// end of the answer, with an UNAVAILABLE status for gRPC.
type streamBody struct {
	rc     io.ReadCloser
	resp   *http.Response
	kind   streamKind
	cancel context.CancelFunc
	ending atomic.Pointer[string] // the reason, once ended
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		if reason := b.ending.Load(); reason != nil {
			if b.kind == streamGRPC {
				// The upstream never sent its trailers: say why the stream
				// ended, as a gRPC server going away would.
				b.resp.Trailer = http.Header{"Grpc-Status": {"14"}, "Grpc-Message": {grpcMessage(*reason)}}
			}
			return n, io.EOF
		}
	}
	return n, err
}

func (b *streamBody) Close() error { return b.rc.Close() }

func (b *streamBody) end(reason string) {
	b.ending.Store(&reason)
	b.cancel()
}

// grpcMessage percent-encodes msg as grpc-message requires.
func grpcMessage(msg string) string {
	var sb strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			sb.WriteByte(c)
		} else {
			sb.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return sb.String()
}
