package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

const secret = "heartbeat-secret-0123456789"

// registryWithGate is a real registry server in front of which the first
// single heartbeat waits until release is called, so that the test can
// queue others behind it; it counts the requests of each kind.
type registryWithGate struct {
	url            string
	singles, batch atomic.Int64
	gate           chan struct{}
	once           sync.Once
}

func (g *registryWithGate) release() { g.once.Do(func() { close(g.gate) }) }

// newRegistry serves a registry holding instances i0..i(n-1); with old it
// answers the batch route as a registry that predates it does.
func newRegistry(t *testing.T, n int, old bool) *registryWithGate {
	t.Helper()
	log := logrus.New()
	log.Out = io.Discard
	srv, err := server.New(server.Config{Token: secret, LeaseTTL: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := srv.Store().Register(registry.Instance{ID: fmt.Sprintf("i%d", i), Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
			t.Fatal(err)
		}
	}
	g := &registryWithGate{gate: make(chan struct{})}
	var first atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/heartbeats":
			g.batch.Add(1)
			if old {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`{"error":"Not Found"}`))
				return
			}
		case strings.HasSuffix(r.URL.Path, "/heartbeat"):
			g.singles.Add(1)
			if first.CompareAndSwap(false, true) {
				<-g.gate
			}
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(g.release)
	g.url = ts.URL
	return g
}

// beatAll heartbeats i0 first, waits until it is on the wire, queues the
// other ids behind it, then lets i0 through and returns every outcome.
func beatAll(t *testing.T, g *registryWithGate, c *registry.Client, ids ...string) map[string]error {
	t.Helper()
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	beat := func(id string) {
		wg.Go(func() {
			err := c.Heartbeat(context.Background(), id)
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		})
	}
	beat("i0")
	testutil.Eventually(t, 5*time.Second, "the first heartbeat on the wire", func() bool { return g.singles.Load() == 1 })
	for _, id := range ids {
		beat(id)
	}
	testutil.Eventually(t, 5*time.Second, "the others queued", func() bool { return c.QueuedHeartbeats() == len(ids) })
	g.release()
	wg.Wait()
	return errs
}

func TestHeartbeatsSentTogetherShareOneRequest(t *testing.T) {
	g := newRegistry(t, 50, false)
	c := registry.NewClient(g.url, secret)
	var ids []string
	for i := 1; i < 50; i++ {
		ids = append(ids, fmt.Sprintf("i%d", i))
	}
	errs := beatAll(t, g, c, append(ids, "gone")...)
	for id, err := range errs {
		if id == "gone" {
			if !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("heartbeat of an unknown instance: %v, want ErrNotFound", err)
			}
		} else if err != nil {
			t.Errorf("heartbeat of %s: %v", id, err)
		}
	}
	if s, b := g.singles.Load(), g.batch.Load(); s != 1 || b != 1 {
		t.Errorf("%d single heartbeats and %d batches for 51 heartbeats, want 1 and 1", s, b)
	}
}

func TestHeartbeatsGoOneByOneToARegistryWithoutBatches(t *testing.T) {
	g := newRegistry(t, 3, true)
	c := registry.NewClient(g.url, secret)
	for id, err := range beatAll(t, g, c, "i1", "i2", "gone") {
		if want := id == "gone"; errors.Is(err, registry.ErrNotFound) != want || !want && err != nil {
			t.Errorf("heartbeat of %s: %v", id, err)
		}
	}
	// The client has learnt: no more batches, however many beat at once.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if err := c.Heartbeat(context.Background(), fmt.Sprintf("i%d", i)); err != nil {
				t.Errorf("i%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if b := g.batch.Load(); b != 1 {
		t.Errorf("%d batches sent to a registry that refused the first, want 1", b)
	}
}

func TestAQueuedHeartbeatEndsWithItsContext(t *testing.T) {
	g := newRegistry(t, 2, false)
	c := registry.NewClient(g.url, secret)
	done := make(chan error, 1)
	go func() { done <- c.Heartbeat(context.Background(), "i0") }()
	testutil.Eventually(t, 5*time.Second, "the first heartbeat on the wire", func() bool { return g.singles.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Heartbeat(ctx, "i1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a queued heartbeat past its deadline: %v, want DeadlineExceeded", err)
	}
	g.release()
	if err := <-done; err != nil {
		t.Errorf("the first heartbeat: %v", err)
	}
}

func TestAnInstanceTokensHeartbeatsAreNeverBatched(t *testing.T) {
	g := newRegistry(t, 2, false)
	c := registry.NewClient(g.url, registry.InstanceToken(secret, "i0"))
	done := make(chan error, 1)
	go func() { done <- c.Heartbeat(context.Background(), "i0") }()
	testutil.Eventually(t, 5*time.Second, "the first heartbeat on the wire", func() bool { return g.singles.Load() == 1 })
	// Not queued behind i0's, and refused on its own: a batch would have
	// refused i0's too.
	if err := c.Heartbeat(context.Background(), "i1"); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("instance i0's token renewing i1: %v, want ErrUnauthorized", err)
	}
	g.release()
	if err := <-done; err != nil {
		t.Errorf("instance i0's own heartbeat: %v", err)
	}
}
