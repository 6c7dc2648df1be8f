package server_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

// lists records every answer to GET /v1/instances a server sent: whether
// it was the changes since an index, and its size.
type lists struct {
	mu      sync.Mutex
	answers []listAnswer
}

type listAnswer struct {
	changes bool
	bytes   int
}

type recorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.body.Write(p)
	return r.ResponseWriter.Write(p)
}

// record serves h, recording its lists.
func (l *lists) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/instances" {
			h.ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.answers = append(l.answers, listAnswer{changes: bytes.Contains(rec.body.Bytes(), []byte(`"since":`)), bytes: rec.body.Len()})
	})
}

func (l *lists) last() listAnswer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answers[len(l.answers)-1]
}

func newServer(t interface {
	Helper()
	Fatal(...any)
}) *server.Server {
	t.Helper()
	srv, err := server.New(server.Config{Token: "secret", LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// sameView fails unless got is the store's own view of all services.
func sameView(t interface {
	Helper()
	Fatalf(string, ...any)
}, what string, got registry.Snapshot, store *server.Store) {
	t.Helper()
	want := store.Instances(context.Background(), "", 0, 0)
	if got.Index != want.Index || got.Ready != want.Ready || !slices.Equal(got.Instances, want.Instances) {
		t.Fatalf("%s: the client's view of all is\n%+v\nthe registry's\n%+v", what, got, want)
	}
}

// A client that lists all services over and over, as a gateway's watch
// does, gets the whole view once and then only what changed, and what it
// assembles is always the registry's view, whatever changed in between:
// registrations, a service's last instance leaving, an instance moving to
// another service, status changes.
func TestTheViewOfAllAssembledFromChangesIsTheRegistrysView(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		srv := newServer(rt)
		var l lists
		hs := httptest.NewServer(l.record(srv.Handler()))
		defer hs.Close()
		c := registry.NewClient(hs.URL, "secret")
		ctx := context.Background()
		ids := rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f", "g", "h"})
		services := rapid.SampledFrom([]string{"s1", "s2", "s3"})
		statuses := rapid.SampledFrom([]registry.Status{registry.StatusUp, registry.StatusOutOfService, registry.StatusDown})
		lists := 0
		rt.Repeat(map[string]func(*rapid.T){
			"register": func(rt *rapid.T) {
				inst := registry.Instance{ID: ids.Draw(rt, "id"), Service: services.Draw(rt, "service"), Color: "blue",
					Address: "127.0.0.1", Port: rapid.IntRange(1, 3).Draw(rt, "port"), Status: statuses.Draw(rt, "status")}
				if err := c.Register(ctx, inst); err != nil {
					rt.Fatal(err)
				}
			},
			"status": func(rt *rapid.T) {
				_, _ = c.SetStatus(ctx, ids.Draw(rt, "id"), statuses.Draw(rt, "status"))
			},
			"deregister": func(rt *rapid.T) {
				_ = c.Deregister(ctx, ids.Draw(rt, "id"))
			},
			"": func(rt *rapid.T) {
				snap, err := c.Instances(ctx, "", 0, 0)
				if err != nil {
					rt.Fatal(err)
				}
				lists++
				sameView(rt, fmt.Sprintf("list %d", lists), snap, srv.Store())
				if a := l.last(); a.changes != (lists > 1) {
					rt.Fatalf("list %d was answered with the changes: %v; want the changes after the first", lists, a.changes)
				}
			},
		})
	})
}

// After one status change among 1,000 instances of 100 services, what the
// registry sends a watcher of all services is that service, not the fleet.
func TestAChangeSendsAWatcherOfAllOnlyItsService(t *testing.T) {
	srv := newServer(t)
	var l lists
	hs := httptest.NewServer(l.record(srv.Handler()))
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 1000 {
		inst := registry.Instance{ID: fmt.Sprintf("i-%04d", i), Service: fmt.Sprintf("svc-%02d", i%100), Color: "blue", Address: "127.0.0.1", Port: 8000 + i, Status: registry.StatusUp}
		if err := c.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	watch := registry.Watch(ctx, c, "", registry.WatchOptions{Wait: 10 * time.Second})
	first := <-watch
	sameView(t, "first", first, srv.Store())
	whole := l.last()
	if whole.changes || len(first.Instances) != 1000 {
		t.Fatalf("first answer %+v with %d instances; want the whole view of 1,000", whole, len(first.Instances))
	}
	if _, err := c.SetStatus(ctx, "i-0042", registry.StatusOutOfService); err != nil {
		t.Fatal(err)
	}
	second := <-watch
	sameView(t, "after a status change", second, srv.Store())
	got := l.last()
	if !got.changes || got.bytes*50 > whole.bytes {
		t.Fatalf("the change was sent as %+v; want the changes, at most a 50th of the whole view's %d bytes", got, whole.bytes)
	}
	if i := slices.IndexFunc(second.Instances, func(inst registry.Instance) bool { return inst.ID == "i-0042" }); second.Instances[i].Status != registry.StatusOutOfService {
		t.Fatalf("i-0042 is %s in the watch", second.Instances[i].Status)
	}
}

// A client's index means nothing to another registry, a restarted one
// included, even when the numbers would fit: the new registry answers its
// whole view, and nothing of the old one stays in the client's.
func TestARestartedRegistryAnswersItsWholeView(t *testing.T) {
	var current atomic.Pointer[server.Server]
	current.Store(newServer(t))
	var l lists
	hs := httptest.NewServer(l.record(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().Handler().ServeHTTP(w, r)
	})))
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx := context.Background()
	reg := func(id, svc string) {
		t.Helper()
		if err := c.Register(ctx, registry.Instance{ID: id, Service: svc, Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
			t.Fatal(err)
		}
	}
	reg("old", "gone")
	if _, err := c.Instances(ctx, "", 0, 0); err != nil {
		t.Fatal(err)
	}
	// The new registry's indexes pass the client's, so the client's index
	// is one the new registry could have given.
	next := newServer(t)
	current.Store(next)
	reg("new", "kept")
	snap, err := c.Instances(ctx, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameView(t, "after the restart", snap, next.Store())
	if l.last().changes {
		t.Fatal("the new registry answered changes to an index the old one gave")
	}
	// And from there on it answers the changes again.
	reg("new2", "kept")
	snap, err = c.Instances(ctx, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameView(t, "a change after the restart", snap, next.Store())
	if !l.last().changes {
		t.Fatal("the new registry did not answer the changes since its own view")
	}
}

// A registry that knows nothing of changes (an older one) ignores since
// and answers its whole view each time: the client follows it as before.
func TestAClientFollowsARegistryThatAnswersWholeViews(t *testing.T) {
	srv := newServer(t)
	var l lists
	older := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		q.Del("since")
		q.Del("epoch")
		r.URL.RawQuery = q.Encode()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			if k != server.EpochHeader {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	hs := httptest.NewServer(l.record(older))
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx := context.Background()
	for i, svc := range []string{"a", "b", "a"} {
		if err := c.Register(ctx, registry.Instance{ID: fmt.Sprint("i", i), Service: svc, Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
			t.Fatal(err)
		}
		snap, err := c.Instances(ctx, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		sameView(t, fmt.Sprint("list ", i), snap, srv.Store())
		if l.last().changes {
			t.Fatal("an older registry's answer read as changes")
		}
	}
}

// The changes a client assembles its view from are checked: an instance
// listed under a service not its own fails the list, and the next one
// starts over from the whole view.
func TestChangesThatDoNotFitTheViewAreRefused(t *testing.T) {
	srv := newServer(t)
	var tamper atomic.Value // func([]byte) []byte
	tamper.Store(func(b []byte) []byte { return b })
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(tamper.Load().(func([]byte) []byte)(rec.Body.Bytes()))
	}))
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx := context.Background()
	for _, inst := range []registry.Instance{
		{ID: "a1", Service: "a", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp},
		{ID: "b1", Service: "b", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp},
	} {
		if err := c.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Instances(ctx, "", 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc, from, to, want string
	}{
		{desc: "an instance under another service", from: `"services":{"a":[{"id":"a1","service":"a"`, to: `"services":{"a":[{"id":"a1","service":"b"`, want: "under"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := c.SetStatus(ctx, "a1", registry.StatusOutOfService); err != nil {
				t.Fatal(err)
			}
			if _, err := c.SetStatus(ctx, "a1", registry.StatusUp); err != nil {
				t.Fatal(err)
			}
			tamper.Store(func(b []byte) []byte {
				if !bytes.Contains(b, []byte(tc.from)) {
					t.Errorf("no %s in %s", tc.from, b)
				}
				return bytes.Replace(b, []byte(tc.from), []byte(tc.to), 1)
			})
			_, err := c.Instances(ctx, "", 0, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("tampered changes answered %v; want an error with %q", err, tc.want)
			}
			tamper.Store(func(b []byte) []byte { return b })
			snap, err := c.Instances(ctx, "", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			sameView(t, "the next list", snap, srv.Store())
		})
	}
}

// A watch of all services through the built-in registry's client names
// the services each view changed, and each view is the registry's.
func TestAWatchOfAllNamesTheServicesThatChanged(t *testing.T) {
	srv := newServer(t)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := func(id, svc string, st registry.Status) {
		t.Helper()
		if err := c.Register(ctx, registry.Instance{ID: id, Service: svc, Color: "blue", Address: "127.0.0.1", Port: 9, Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range []string{"a", "b", "c"} {
		reg(svc+"1", svc, registry.StatusUp)
		reg(svc+"2", svc, registry.StatusOutOfService)
	}
	views := registry.WatchView(ctx, c, registry.WatchOptions{Wait: 10 * time.Second})
	check := func(what string, wantChanged []string) {
		t.Helper()
		var v *registry.View
		select {
		case v = <-views:
		case <-ctx.Done():
			t.Fatalf("%s: no view", what)
		}
		sameView(t, what, v.Snapshot(), srv.Store())
		var changed []string
		if v.Changed != nil {
			changed = slices.Sorted(maps.Keys(v.Changed))
		}
		if !slices.Equal(changed, wantChanged) {
			t.Fatalf("%s: the view names %v as changed; want %v", what, changed, wantChanged)
		}
	}
	check("the first view", nil)
	if _, err := c.SetStatus(ctx, "b2", registry.StatusUp); err != nil {
		t.Fatal(err)
	}
	check("a status change", []string{"b"})
	if err := c.Deregister(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	check("a deregistration", []string{"c"})
	if err := c.Deregister(ctx, "c2"); err != nil {
		t.Fatal(err)
	}
	check("a service's last instance leaving", []string{"c"})
	reg("a2", "d", registry.StatusUp)
	check("an instance moving to a new service", []string{"a", "d"})
}
