package controller

import (
	"context"
	"sync"

	"github.com/go-zookeeper/zk"
)

// session tracks whether the ZooKeeper connection has a live session. The
// library drops events when its channel is full, so state comes from its
// event callback, which sees every one.
type session struct {
	mu     sync.Mutex
	has    bool
	lost   chan struct{} // closed when the current session is lost
	gained chan struct{} // closed when a session is (re)established
}

func newSession() *session {
	s := &session{lost: make(chan struct{}), gained: make(chan struct{})}
	close(s.lost) // no session yet
	return s
}

func (s *session) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.State {
	case zk.StateHasSession:
		if !s.has {
			s.has = true
			s.lost = make(chan struct{})
			close(s.gained)
		}
	case zk.StateDisconnected, zk.StateExpired:
		if s.has {
			s.has = false
			s.gained = make(chan struct{})
			close(s.lost)
		}
	}
}

// Lost returns a channel closed once the current session is lost; it is
// already closed when there is none.
func (s *session) Lost() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Wait blocks until there is a session.
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
