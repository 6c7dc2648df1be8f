package registry_test

import (
	"context"
	"io"
	"maps"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

// listerOnly is a Lister that says nothing about its view of all services.
type listerOnly struct{ registry.Lister }

func TestListsAllAtOnce(t *testing.T) {
	for _, tc := range []struct {
		desc string
		l    registry.Lister
		want bool
	}{
		{"the built-in registry's client lists all services in one query", registry.NewClient("http://127.0.0.1:1", "t"), true},
		{"a lister that does not say so is followed service by service", listerOnly{}, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := registry.ListsAllAtOnce(tc.l); got != tc.want {
				t.Fatalf("ListsAllAtOnce = %v, want %v", got, tc.want)
			}
		})
	}
}

// manyLister is a Lister that watches all services past above of them.
type manyLister struct {
	registry.Lister
	above int
}

func (m manyLister) AllAbove() int { return m.above }

func TestWatchesAll(t *testing.T) {
	for _, tc := range []struct {
		desc string
		l    registry.Lister
		n    int
		want bool
	}{
		{"the built-in registry's client: one watch of all for one service", registry.NewClient("http://127.0.0.1:1", "t"), 1, true},
		{"a plain lister: a watch per service, however many", listerOnly{}, 10000, false},
		{"a many-lister at its limit: a watch per service", manyLister{above: 16}, 16, false},
		{"a many-lister past its limit: one watch of all", manyLister{above: 16}, 17, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := registry.WatchesAll(tc.l, tc.n); got != tc.want {
				t.Fatalf("WatchesAll(%d) = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}

// next waits for the watch's next snapshot.
func next(t *testing.T, snaps <-chan registry.Snapshot) registry.Snapshot {
	t.Helper()
	select {
	case s, ok := <-snaps:
		if !ok {
			t.Fatal("watch ended")
		}
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot within 5s")
	}
	return registry.Snapshot{}
}

func TestWatchOfAllServicesSeesAChangeToAnyService(t *testing.T) {
	log := logrus.New()
	log.Out = io.Discard
	srv, err := server.New(server.Config{Token: "t", LeaseTTL: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	c := registry.NewClient(hs.URL, "t")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	register := func(id, service string, st registry.Status) {
		t.Helper()
		if err := c.Register(ctx, registry.Instance{ID: id, Service: service, Color: "blue", Address: "127.0.0.1", Port: 9000, Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	register("a", "one", registry.StatusUp)
	snaps := registry.Watch(ctx, c, "", registry.WatchOptions{Log: log})
	first := next(t, snaps)
	if len(first.Instances) != 1 || first.Instances[0].ID != "a" {
		t.Fatalf("first snapshot = %+v, want instance a", first.Instances)
	}

	register("b", "two", registry.StatusOutOfService)
	second := next(t, snaps)
	if second.Index <= first.Index || len(second.Instances) != 2 {
		t.Fatalf("after registering b in another service: index %d (was %d), %d instances; want a higher index and both", second.Index, first.Index, len(second.Instances))
	}
	idx, err := c.SetStatus(ctx, "b", registry.StatusUp)
	if err != nil {
		t.Fatal(err)
	}
	third := next(t, snaps)
	// The index of the view of all services is the registry's, never
	// below a service's own: a watcher that applies it may report it for
	// every service.
	if third.Index < idx {
		t.Fatalf("index %d after a change at %d", third.Index, idx)
	}
	one, err := c.Instances(ctx, "one", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if third.Index < one.Index {
		t.Fatalf("index of all services %d is below service one's %d", third.Index, one.Index)
	}
}

// scriptedViewer answers its views in turn, then blocks; served counts
// the calls.
type scriptedViewer struct {
	registry.Lister
	views  []*registry.View
	served chan int
	// gate holds the second call until the reader has the first view,
	// which it would otherwise replace.
	gate chan struct{}
}

func (s *scriptedViewer) View(ctx context.Context, prev *registry.View, waitIndex uint64, wait time.Duration) (*registry.View, error) {
	n := len(s.served)
	if n == 1 {
		<-s.gate
	}
	s.served <- n
	if n < len(s.views) {
		return s.views[n], nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A reader that falls behind gets only the newest view, naming every
// service the views it never got changed; one that missed a whole view
// gets a view in which any service may have changed.
func TestAWatchOfViewsKeepsWhatASlowReaderMissed(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		missed  map[string]bool
		newest  map[string]bool
		changed []string
	}{
		{"two changes", map[string]bool{"a": true}, map[string]bool{"c": true}, []string{"a", "c"}},
		{"a whole view missed", nil, map[string]bool{"c": true}, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			v := &scriptedViewer{served: make(chan int, 10), gate: make(chan struct{}), views: []*registry.View{
				{Index: 1, Ready: true},
				{Index: 2, Ready: true, Changed: tc.missed},
				{Index: 3, Ready: true, Changed: tc.newest},
			}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			views := registry.WatchView(ctx, v, registry.WatchOptions{Log: quietLogger()})
			if first := <-views; first.Index != 1 {
				t.Fatalf("first view at %d", first.Index)
			}
			close(v.gate)
			for len(v.served) < 4 { // the fourth call blocks: all three were sent
				time.Sleep(time.Millisecond)
			}
			got := <-views
			var changed []string
			if got.Changed != nil {
				changed = slices.Sorted(maps.Keys(got.Changed))
			}
			if got.Index != 3 || !slices.Equal(changed, tc.changed) {
				t.Fatalf("the slow reader got index %d changing %v; want index 3 changing %v", got.Index, changed, tc.changed)
			}
			if len(tc.newest) != 1 {
				t.Fatal("the newest view itself was changed")
			}
		})
	}
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
