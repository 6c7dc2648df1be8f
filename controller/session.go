package controller

import (
	"context"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// session tracks the ZooKeeper session and its connection. A disconnect
// (a server failing over) pauses the leader without ending its session:
// if the connection comes back within the session timeout on the same
// session, its election node still stands and it leads on. If not, or if
// ZooKeeper says the session expired, the session is over and another
// controller may lead. The library drops events when its channel is full,
// so state comes from its event callback, which sees every one.
type session struct {
	timeout time.Duration

	mu        sync.Mutex
	connected bool          // a live session is connected now
	sid       int64         // the current session's id, 0 before the first
	lost      chan struct{} // closed when the current session is over
	gained    chan struct{} // closed while connected with a session
	grace     *time.Timer   // ends the session after a disconnect lasting its timeout
	sessionID func() int64
}

func newSession(timeout time.Duration) *session {
	s := &session{timeout: timeout, lost: make(chan struct{}), gained: make(chan struct{})}
	close(s.lost) // no session yet
	return s
}

// bind tells the session where to read the current session id.
func (s *session) bind(c *zk.Conn) {
	s.mu.Lock()
	s.sessionID = c.SessionID
	s.mu.Unlock()
}

func (s *session) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.State {
	case zk.StateHasSession:
		if s.grace != nil {
			s.grace.Stop()
			s.grace = nil
		}
		var sid int64
		if s.sessionID != nil {
			sid = s.sessionID()
		}
		if sid != s.sid || s.endedLocked() {
			// A new session, or one given up after a long disconnect:
			// whatever the old one held is gone, and it starts afresh.
			s.endLocked()
			s.sid = sid
			s.lost = make(chan struct{})
		}
		if !s.connected {
			s.connected = true
			close(s.gained)
		}
	case zk.StateDisconnected:
		if s.connected {
			s.connected = false
			s.gained = make(chan struct{})
			lost := s.lost
			s.grace = time.AfterFunc(s.timeout, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.lost == lost && !s.connected {
					s.endLocked()
				}
			})
		}
	case zk.StateExpired:
		s.endLocked()
	}
}

// endedLocked reports whether the current session is over; callers hold mu.
func (s *session) endedLocked() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// endLocked closes the current session's lost channel; callers hold mu.
func (s *session) endLocked() {
	select {
	case <-s.lost:
	default:
		close(s.lost)
	}
}

// Lost returns a channel closed once the current session is over; it is
// already closed when there is none.
func (s *session) Lost() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Connected reports whether a session is connected now.
func (s *session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// Wait blocks until a session is connected.
func (s *session) Wait(ctx context.Context) error {
	s.mu.Lock()
	ch := s.gained
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
