package controller

import (
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/internal/testutil"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSession(t *testing.T) {
	ev := func(st zk.State) zk.Event { return zk.Event{Type: zk.EventSession, State: st} }
	t.Run("a short disconnect pauses without ending the session", func(t *testing.T) {
		sid := int64(1)
		s := newSession(time.Hour)
		s.sessionID = func() int64 { return sid }
		s.onEvent(ev(zk.StateHasSession))
		lost := s.Lost()
		s.onEvent(ev(zk.StateDisconnected))
		if s.Connected() || closed(lost) {
			t.Fatalf("after a disconnect: connected %v, lost %v; want paused, not lost", s.Connected(), closed(lost))
		}
		s.onEvent(ev(zk.StateHasSession))
		if !s.Connected() || closed(lost) || s.Lost() != lost {
			t.Fatal("back on the same session, the leader must resume with the same session")
		}
	})
	t.Run("a disconnect past the session timeout ends the session", func(t *testing.T) {
		s := newSession(20 * time.Millisecond)
		s.sessionID = func() int64 { return 1 }
		s.onEvent(ev(zk.StateHasSession))
		lost := s.Lost()
		s.onEvent(ev(zk.StateDisconnected))
		testutil.Eventually(t, 5*time.Second, "the session to be given up", func() bool { return closed(lost) })
		s.onEvent(ev(zk.StateHasSession)) // even the same session id starts afresh
		if closed(s.Lost()) || !s.Connected() {
			t.Fatal("a session given up must start afresh when the connection returns")
		}
	})
	t.Run("expiry and a new session id end the session", func(t *testing.T) {
		sid := int64(1)
		s := newSession(time.Hour)
		s.sessionID = func() int64 { return sid }
		s.onEvent(ev(zk.StateHasSession))
		first := s.Lost()
		s.onEvent(ev(zk.StateExpired))
		if !closed(first) {
			t.Fatal("expiry did not end the session")
		}
		sid = 2
		s.onEvent(ev(zk.StateHasSession))
		second := s.Lost()
		if closed(second) {
			t.Fatal("the new session is already over")
		}
		sid = 3
		s.onEvent(ev(zk.StateHasSession))
		if !closed(second) {
			t.Fatal("a different session id did not end the previous session")
		}
	})
}
