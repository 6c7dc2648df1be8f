package registry

import (
	"context"
	"errors"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func inst(id string, st Status) Instance {
	return Instance{ID: id, Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 8080, Status: st}
}

func TestLeases(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		steps   func(s *Store, c *clock)
		present bool
	}{
		{desc: "an instance that heartbeats within its TTL stays", present: true, steps: func(s *Store, c *clock) {
			for range 5 {
				c.advance(8 * time.Second)
				if err := s.Heartbeat("a"); err != nil {
					t.Fatal(err)
				}
				s.Expire()
			}
		}},
		{desc: "an instance silent for longer than its TTL is evicted", present: false, steps: func(s *Store, c *clock) {
			c.advance(10*time.Second + time.Millisecond)
			s.Expire()
		}},
		{desc: "an instance silent for exactly its TTL is not evicted yet", present: true, steps: func(s *Store, c *clock) {
			c.advance(10 * time.Second)
			s.Expire()
		}},
		{desc: "a status change renews the lease", present: true, steps: func(s *Store, c *clock) {
			c.advance(9 * time.Second)
			if _, err := s.SetStatus("a", StatusUp); err != nil {
				t.Fatal(err)
			}
			c.advance(9 * time.Second)
			s.Expire()
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			s := NewStore(10*time.Second, 0, c.now)
			if _, err := s.Register(inst("a", StatusOutOfService)); err != nil {
				t.Fatal(err)
			}
			tc.steps(s, c)
			got := len(s.Instances(context.Background(), "hello", 0, 0).Instances) == 1
			if got != tc.present {
				t.Fatalf("present = %v, want %v", got, tc.present)
			}
		})
	}
}

func TestHeartbeatOfUnknownInstanceAsksToRegister(t *testing.T) {
	s := NewStore(time.Second, 0, nil)
	if err := s.Heartbeat("nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestIndexMovesOnlyOnChange(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	i1, _ := s.Register(inst("a", StatusOutOfService))
	i2, _ := s.SetStatus("a", StatusOutOfService)
	if i2 != i1 {
		t.Errorf("setting the same status moved the index %d -> %d", i1, i2)
	}
	i3, _ := s.SetStatus("a", StatusUp)
	if i3 <= i2 {
		t.Errorf("a status change did not move the index: %d -> %d", i2, i3)
	}
	if err := s.Heartbeat("a"); err != nil {
		t.Fatal(err)
	}
	if snap := s.Instances(context.Background(), "hello", 0, 0); snap.Index != i3 {
		t.Errorf("a heartbeat moved the index to %d", snap.Index)
	}
}

func TestIndexesMoveForwardAcrossRestarts(t *testing.T) {
	a := NewStore(time.Minute, 0, nil)
	idx, _ := a.Register(inst("a", StatusUp))
	b := NewStore(time.Minute, 0, nil)
	if got := b.Instances(context.Background(), "", 0, 0).Index; got <= idx-1 {
		t.Errorf("a fresh store starts at index %d, behind the old store's %d", got, idx)
	}
}

func TestBlockingQueryWakesOnChange(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	idx, _ := s.Register(inst("a", StatusOutOfService))
	got := make(chan Snapshot, 1)
	go func() { got <- s.Instances(context.Background(), "hello", idx, time.Minute) }()
	if _, err := s.SetStatus("a", StatusUp); err != nil {
		t.Fatal(err)
	}
	select {
	case snap := <-got:
		if snap.Index <= idx || snap.Instances[0].Status != StatusUp {
			t.Fatalf("woke with %+v", snap)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocking query did not wake on a change")
	}
}

func TestChangeToOtherServiceDoesNotWakeAWatch(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	idx, _ := s.Register(inst("a", StatusUp))
	other := inst("b", StatusUp)
	other.Service = "api"
	if _, err := s.Register(other); err != nil {
		t.Fatal(err)
	}
	snap := s.Instances(context.Background(), "hello", idx, 50*time.Millisecond)
	if snap.Index != idx {
		t.Fatalf("hello's index moved from %d to %d on a change to api", idx, snap.Index)
	}
}

func TestWarmupAfterStart(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewStore(10*time.Second, 3*time.Second, c.now)
	idx, _ := s.Register(inst("a", StatusUp))
	if s.Instances(context.Background(), "hello", 0, 0).Ready {
		t.Fatal("a fresh store is ready before its warm-up")
	}
	c.advance(3 * time.Second)
	s.Expire()
	snap := s.Instances(context.Background(), "hello", 0, 0)
	if !snap.Ready || snap.Index <= idx {
		t.Fatalf("after the warm-up: ready %v index %d (was %d); watchers must wake", snap.Ready, snap.Index, idx)
	}
}

func TestBadInputIsRefused(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	for _, tc := range []struct {
		desc string
		inst Instance
	}{
		{desc: "no id", inst: Instance{Service: "hello", Address: "127.0.0.1", Port: 1, Status: StatusUp}},
		{desc: "no service", inst: Instance{ID: "a", Address: "127.0.0.1", Port: 1, Status: StatusUp}},
		{desc: "port out of range", inst: Instance{ID: "a", Service: "hello", Address: "127.0.0.1", Port: 70000, Status: StatusUp}},
		{desc: "unknown status", inst: Instance{ID: "a", Service: "hello", Address: "127.0.0.1", Port: 1, Status: "HAPPY"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := s.Register(tc.inst); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if n := len(s.Instances(context.Background(), "", 0, 0).Instances); n != 0 {
		t.Fatalf("bad registrations left %d instances", n)
	}
}
