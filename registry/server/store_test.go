package server

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/switchyard/switchyard/registry"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func inst(id string, st registry.Status) registry.Instance {
	return registry.Instance{ID: id, Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 8080, Status: st}
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
			if _, err := s.SetStatus("a", registry.StatusUp, 0); err != nil {
				t.Fatal(err)
			}
			c.advance(9 * time.Second)
			s.Expire()
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			s := NewStore(10*time.Second, 0, c.now)
			if _, err := s.Register(inst("a", registry.StatusOutOfService)); err != nil {
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
	if err := s.Heartbeat("nobody"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestIndexMovesOnlyOnChange(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	i1, _ := s.Register(inst("a", registry.StatusOutOfService))
	i2, _ := s.SetStatus("a", registry.StatusOutOfService, 0)
	if i2 != i1 {
		t.Errorf("setting the same status moved the index %d -> %d", i1, i2)
	}
	i3, _ := s.SetStatus("a", registry.StatusUp, 0)
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
	idx, _ := a.Register(inst("a", registry.StatusUp))
	b := NewStore(time.Minute, 0, nil)
	if got := b.Instances(context.Background(), "", 0, 0).Index; got <= idx-1 {
		t.Errorf("a fresh store starts at index %d, behind the old store's %d", got, idx)
	}
}

func TestBlockingQueryWakesOnChange(t *testing.T) {
	// In a bubble, synctest.Wait tells when the query waits, and the fake
	// clock stands still until everyone waits, so an answer that came
	// before the clock moved came from the change, not the timeout.
	synctest.Test(t, func(t *testing.T) {
		s := NewStore(time.Minute, 0, nil)
		idx, _ := s.Register(inst("a", registry.StatusOutOfService))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // a failed test leaves no query waiting in the bubble
		got := make(chan registry.Snapshot, 1)
		go func() { got <- s.Instances(ctx, "hello", idx, time.Minute) }()
		synctest.Wait() // the query waits on idx
		if _, err := s.SetStatus("a", registry.StatusUp, 0); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select {
		case snap := <-got:
			if snap.Index <= idx || snap.Instances[0].Status != registry.StatusUp {
				t.Fatalf("woke with %+v", snap)
			}
		default:
			t.Fatal("a blocking query did not wake on a change")
		}
	})
}

func TestChangeToOtherServiceDoesNotWakeAWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewStore(time.Minute, 0, nil)
		idx, _ := s.Register(inst("a", registry.StatusOutOfService))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // a failed test leaves no query waiting in the bubble
		got := make(chan registry.Snapshot, 1)
		go func() { got <- s.Instances(ctx, "hello", idx, time.Minute) }()
		synctest.Wait() // the query waits on idx
		other := inst("b", registry.StatusUp)
		other.Service = "api"
		if _, err := s.Register(other); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the query has seen the change to api and waits again, or returned
		select {
		case snap := <-got:
			t.Fatalf("a change to api returned hello's blocking query with %+v", snap)
		default:
		}
		if snap := s.Instances(context.Background(), "hello", 0, 0); snap.Index != idx {
			t.Fatalf("hello's index moved from %d to %d on a change to api", idx, snap.Index)
		}
		// The query was waiting all along: a change to hello returns it.
		up, err := s.SetStatus("a", registry.StatusUp, 0)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		select {
		case snap := <-got:
			if snap.Index != up {
				t.Fatalf("hello's query returned at index %d, want %d", snap.Index, up)
			}
		default:
			t.Fatal("a change to hello did not wake hello's blocking query")
		}
	})
}

func TestWarmupAfterStart(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewStore(10*time.Second, 3*time.Second, c.now)
	idx, _ := s.Register(inst("a", registry.StatusUp))
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
		inst registry.Instance
	}{
		{desc: "no id", inst: registry.Instance{Service: "hello", Address: "127.0.0.1", Port: 1, Status: registry.StatusUp}},
		{desc: "no service", inst: registry.Instance{ID: "a", Address: "127.0.0.1", Port: 1, Status: registry.StatusUp}},
		{desc: "port out of range", inst: registry.Instance{ID: "a", Service: "hello", Address: "127.0.0.1", Port: 70000, Status: registry.StatusUp}},
		{desc: "unknown status", inst: registry.Instance{ID: "a", Service: "hello", Address: "127.0.0.1", Port: 1, Status: "HAPPY"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := s.Register(tc.inst); !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if n := len(s.Instances(context.Background(), "", 0, 0).Instances); n != 0 {
		t.Fatalf("bad registrations left %d instances", n)
	}
}

func TestStatusChangeRecordsItsSwitch(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	if _, err := s.Register(inst("a", registry.StatusOutOfService)); err != nil {
		t.Fatal(err)
	}
	switchOf := func() int64 {
		t.Helper()
		snap := s.Instances(context.Background(), "hello", 0, 0)
		if len(snap.Instances) != 1 {
			t.Fatalf("instances = %+v", snap.Instances)
		}
		return snap.Instances[0].Switch
	}
	up, err := s.SetStatus("a", registry.StatusUp, 7)
	if err != nil || switchOf() != 7 {
		t.Fatalf("after UP for switch 7: switch %d, %v", switchOf(), err)
	}
	// The same status again changes nothing: the switch that moved the
	// instance stays its label.
	again, err := s.SetStatus("a", registry.StatusUp, 9)
	if err != nil || again != up || switchOf() != 7 {
		t.Fatalf("UP again for switch 9: index %d (was %d), switch %d, %v; want nothing changed", again, up, switchOf(), err)
	}
	// A change that names no switch (a drain) leaves none named.
	if _, err := s.SetStatus("a", registry.StatusOutOfService, 0); err != nil || switchOf() != 0 {
		t.Fatalf("OUT without a switch: switch %d, %v; want 0", switchOf(), err)
	}
	if _, err := s.SetStatus("a", registry.StatusUp, 12); err != nil || switchOf() != 12 {
		t.Fatalf("UP for switch 12: switch %d, %v", switchOf(), err)
	}
	// A registration replaces the record, its label with it.
	if _, err := s.Register(inst("a", registry.StatusUp)); err != nil || switchOf() != 0 {
		t.Fatalf("registered again: switch %d, %v; want 0, what the registration carries", switchOf(), err)
	}
}

func TestANegativeSwitchIsRefusedAndChangesNothing(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewStore(10*time.Second, 0, c.now)
	idx, err := s.Register(inst("a", registry.StatusOutOfService))
	if err != nil {
		t.Fatal(err)
	}
	c.advance(9 * time.Second)
	if _, err := s.SetStatus("a", registry.StatusUp, -1); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	snap := s.Instances(context.Background(), "hello", 0, 0)
	if snap.Index != idx || snap.Instances[0].Status != registry.StatusOutOfService || snap.Instances[0].Switch != 0 {
		t.Fatalf("after a refused change: %+v", snap)
	}
	// Nor did the refused change renew the lease.
	c.advance(2 * time.Second)
	if s.Expire(); len(s.Instances(context.Background(), "hello", 0, 0).Instances) != 0 {
		t.Fatal("a refused status change renewed the lease")
	}
	bad := inst("b", registry.StatusUp)
	bad.Switch = -3
	if _, err := s.Register(bad); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("registering with switch -3: %v, want ErrInvalid", err)
	}
}

// The store keeps its instances by id and by service: whatever registers,
// moves between services, leaves or runs out of lease, each service's view
// is the instances of the whole view with that service, and the changes
// since any index list each service that changed with exactly those.
func TestEachServicesViewIsItsPartOfTheWholeView(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		c := &clock{t: time.Unix(1000, 0)}
		// A warm-up, when drawn, ends at some expiry: every service counts
		// as changed then.
		s := NewStore(10*time.Second, time.Duration(rapid.IntRange(0, 8).Draw(rt, "warmup"))*time.Second, c.now)
		ids := rapid.SampledFrom([]string{"a", "b", "c", "d", "e"})
		services := []string{"s1", "s2", "s3"}
		last := s.Instances(context.Background(), "", 0, 0)
		since := last.Index
		rt.Repeat(map[string]func(*rapid.T){
			"register": func(rt *rapid.T) {
				i := inst(ids.Draw(rt, "id"), registry.StatusUp)
				i.Service = rapid.SampledFrom(services).Draw(rt, "service")
				if _, err := s.Register(i); err != nil {
					rt.Fatal(err)
				}
			},
			"deregister": func(rt *rapid.T) { _, _ = s.Deregister(ids.Draw(rt, "id")) },
			"heartbeat":  func(rt *rapid.T) { _ = s.Heartbeat(ids.Draw(rt, "id")) },
			"expire": func(rt *rapid.T) {
				c.advance(time.Duration(rapid.IntRange(0, 6).Draw(rt, "seconds")) * time.Second)
				s.Expire()
			},
			"": func(rt *rapid.T) {
				all := s.Instances(context.Background(), "", 0, 0)
				s.mu.RLock()
				changes := s.changesSince(since)
				s.mu.RUnlock()
				of := func(snap registry.Snapshot, svc string) (out []registry.Instance) {
					for _, i := range snap.Instances {
						if i.Service == svc {
							out = append(out, i)
						}
					}
					return out
				}
				if changes.Index != all.Index || changes.Ready != all.Ready {
					rt.Fatalf("the changes are at index %d, ready %v; the whole view at %d, ready %v", changes.Index, changes.Ready, all.Index, all.Ready)
				}
				for _, svc := range services {
					want := of(all, svc)
					got := s.Instances(context.Background(), svc, 0, 0).Instances
					if !slices.Equal(got, want) && len(got)+len(want) > 0 {
						rt.Fatalf("%s's view is %v; the whole view has %v", svc, got, want)
					}
					ch, listed := changes.Services[svc]
					switch {
					case listed && !slices.Equal(ch, want) && len(ch)+len(want) > 0:
						rt.Fatalf("the changes list %s as %v; the whole view has %v", svc, ch, want)
					case !listed && !slices.Equal(of(last, svc), want):
						rt.Fatalf("%s went from %v to %v, and the changes do not list it", svc, of(last, svc), want)
					case !listed && last.Ready != all.Ready && len(want) > 0:
						rt.Fatalf("the warm-up ended and the changes do not list %s", svc)
					}
				}
				last, since = all, all.Index
			},
		})
	})
}
