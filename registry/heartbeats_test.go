package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
// answers the batch route as a registry that predates it does. Its
// clients heartbeat with PUT: these tests are of the batches.
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
	c := registry.NewClient(g.url, secret, registry.WithoutHeartbeatStream())
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
	c := registry.NewClient(g.url, secret, registry.WithoutHeartbeatStream())
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
	c := registry.NewClient(g.url, secret, registry.WithoutHeartbeatStream())
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
	c := registry.NewClient(g.url, registry.InstanceToken(secret, "i0"), registry.WithoutHeartbeatStream())
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

// sniffingListener counts the heartbeat requests and stream upgrades a
// server reads, and can break every connection it accepted.
type sniffingListener struct {
	net.Listener
	puts, upgrades atomic.Int64
	mu             sync.Mutex
	conns          []net.Conn
}

func (l *sniffingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	return &sniffingConn{Conn: c, l: l}, nil
}

// breakAll closes every connection under the server, as a proxy or a
// network that drops them does.
func (l *sniffingListener) breakAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
}

type sniffingConn struct {
	net.Conn
	l *sniffingListener
}

func (c *sniffingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.puts.Add(int64(bytes.Count(p[:n], []byte("/heartbeat HTTP/1.1"))))
	c.l.upgrades.Add(int64(bytes.Count(p[:n], []byte("GET "+registry.HeartbeatStreamPath+" "))))
	return n, err
}

// serveReal runs a real registry on loopback, its leases lasting ttl,
// holding i0 and i1.
func serveReal(t *testing.T, ttl time.Duration) (*server.Server, *sniffingListener, string) {
	t.Helper()
	log := logrus.New()
	log.Out = io.Discard
	srv, err := server.New(server.Config{Token: secret, LeaseTTL: ttl, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := srv.Store().Register(registry.Instance{ID: fmt.Sprintf("i%d", i), Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
			t.Fatal(err)
		}
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &sniffingListener{Listener: inner}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, ln, "http://" + inner.Addr().String()
}

func live(srv *server.Server, id string) bool {
	for _, in := range srv.Store().Instances(context.Background(), "", 0, 0).Instances {
		if in.ID == id {
			return true
		}
	}
	return false
}

// beatFor heartbeats id every period for d and fails on an error.
func beatFor(t *testing.T, c *registry.Client, id string, period, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(period) {
		if err := c.Heartbeat(context.Background(), id); err != nil {
			t.Fatalf("heartbeat of %s: %v", id, err)
		}
	}
}

func TestAClientRenewsItsLeaseOverItsStream(t *testing.T) {
	const ttl = time.Second
	srv, ln, url := serveReal(t, ttl)
	c := registry.NewClient(url, secret)
	if err := c.Heartbeat(context.Background(), "i0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the stream to open", c.StreamOpen)
	puts := ln.puts.Load()
	const beats = 30
	beatFor(t, c, "i0", 3*ttl/beats, 3*ttl)
	// On a loaded machine a ping may go unanswered in time and a few
	// heartbeats go out as PUTs until the stream is back; most must not.
	if got := ln.puts.Load() - puts; got > beats/3 {
		t.Errorf("%d of %d heartbeats were PUTs, want most over the stream", got, beats)
	}
	// The stream renewed i0 over three leases; i1, silent, lapsed as ever.
	if !live(srv, "i0") || live(srv, "i1") {
		t.Errorf("after 3 leases i0 live = %v (want true), i1 live = %v (want false)", live(srv, "i0"), live(srv, "i1"))
	}
}

func TestABrokenStreamFallsBackToPUTAtOnceAndReconnects(t *testing.T) {
	const ttl = time.Second
	srv, ln, url := serveReal(t, ttl)
	c := registry.NewClient(url, secret)
	if err := c.Heartbeat(context.Background(), "i0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the stream to open", c.StreamOpen)
	beatFor(t, c, "i0", ttl/10, ttl/2)
	for round := 2; round <= 3; round++ {
		puts := ln.puts.Load()
		ln.breakAll()
		// The stream's loss is noticed, and the heartbeats go out as PUTs
		// without a gap, until the stream is back after its backoff.
		testutil.Eventually(t, 5*time.Second, "a PUT heartbeat after the stream broke", func() bool {
			if err := c.Heartbeat(context.Background(), "i0"); err != nil {
				t.Fatalf("heartbeat after the stream broke: %v", err)
			}
			time.Sleep(ttl / 10)
			return ln.puts.Load() > puts
		})
		testutil.Eventually(t, 10*time.Second, "the stream to open again", func() bool {
			if err := c.Heartbeat(context.Background(), "i0"); err != nil {
				t.Fatalf("heartbeat while the stream reopens: %v", err)
			}
			time.Sleep(ttl / 10)
			return ln.upgrades.Load() >= int64(round) && c.StreamOpen()
		})
		if !live(srv, "i0") {
			t.Fatalf("i0's lease lapsed across a reconnect")
		}
	}
}

func TestAnInstancesStreamRenewsItsOwnLeaseOnly(t *testing.T) {
	const ttl = 500 * time.Millisecond
	srv, _, url := serveReal(t, ttl)
	c := registry.NewClient(url, registry.InstanceToken(secret, "i0"))
	if err := c.Heartbeat(context.Background(), "i0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the stream to open", c.StreamOpen)
	for range 3 * 10 {
		if err := c.Heartbeat(context.Background(), "i1"); !errors.Is(err, registry.ErrUnauthorized) {
			t.Fatalf("instance i0's token renewing i1: %v, want ErrUnauthorized", err)
		}
		if err := c.Heartbeat(context.Background(), "i0"); err != nil {
			t.Fatalf("instance i0's own heartbeat: %v", err)
		}
		time.Sleep(ttl / 10)
	}
	if !live(srv, "i0") || live(srv, "i1") {
		t.Errorf("i0 live = %v (want true), i1 live = %v (want false: only its own instance may renew it)", live(srv, "i0"), live(srv, "i1"))
	}
}

func TestALeaseTheRegistryLostIsReportedOverTheStream(t *testing.T) {
	srv, _, url := serveReal(t, time.Minute)
	c := registry.NewClient(url, secret)
	if err := c.Heartbeat(context.Background(), "i0"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the stream to open", c.StreamOpen)
	if _, err := srv.Store().Deregister("i0"); err != nil {
		t.Fatal(err)
	}
	// The registry names i0 back; a heartbeat soon answers ErrNotFound,
	// which tells the SDK to register again.
	testutil.Eventually(t, 5*time.Second, "a heartbeat to answer ErrNotFound", func() bool {
		err := c.Heartbeat(context.Background(), "i0")
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("heartbeat of a lost lease: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
		return err != nil
	})
	if err := c.Register(context.Background(), registry.Instance{ID: "i0", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
		t.Fatal(err)
	}
	beatFor(t, c, "i0", 10*time.Millisecond, 200*time.Millisecond)
	if !c.StreamOpen() {
		t.Errorf("the stream closed over a lease the registry did not know")
	}
}

func TestHeartbeatsFallBackToPUTWithoutAStream(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		answer func(w http.ResponseWriter)
	}{
		{desc: "a registry that predates streams answers 404", answer: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"Not Found"}`))
		}},
		{desc: "a proxy that dropped the Upgrade header gets 426", answer: func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusUpgradeRequired)
		}},
		{desc: "a proxy answers with a page of its own", answer: func(w http.ResponseWriter) {
			_, _ = w.Write([]byte("<html>hello</html>"))
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			log := logrus.New()
			log.Out = io.Discard
			srv, err := server.New(server.Config{Token: secret, LeaseTTL: time.Minute, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Store().Register(registry.Instance{ID: "i0", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
				t.Fatal(err)
			}
			var upgrades, puts atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == registry.HeartbeatStreamPath {
					upgrades.Add(1)
					tc.answer(w)
					return
				}
				if strings.HasSuffix(r.URL.Path, "/heartbeat") {
					puts.Add(1)
				}
				srv.Handler().ServeHTTP(w, r)
			}))
			t.Cleanup(ts.Close)
			c := registry.NewClient(ts.URL, secret)
			for i := range 20 {
				if err := c.Heartbeat(context.Background(), "i0"); err != nil {
					t.Fatalf("heartbeat %d: %v", i, err)
				}
				if i == 0 {
					testutil.Eventually(t, 5*time.Second, "the upgrade to be tried", func() bool { return upgrades.Load() == 1 })
				}
			}
			if p, u := puts.Load(), upgrades.Load(); p != 20 || u != 1 {
				t.Errorf("%d PUT heartbeats and %d upgrades for 20 heartbeats, want 20 and 1", p, u)
			}
			if err := c.Heartbeat(context.Background(), "gone"); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("heartbeat of an unknown instance: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestManyHeartbeatsAtOnceGoOutInFramesWithinTheLimit(t *testing.T) {
	var ids []string
	for i := range 1000 {
		ids = append(ids, fmt.Sprintf("%d-%s", i, strings.Repeat("x", i%registry.MaxNameLen)))
	}
	ids = append(ids, strings.Repeat("y", registry.MaxNameLen))
	for _, ping := range []bool{false, true} {
		out := string(registry.FramesFor(ids, ping))
		if !strings.HasSuffix(out, "\n") {
			t.Fatalf("the frames do not end with a newline")
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if strings.HasPrefix(lines[0], "?") != ping {
			t.Errorf("ping %v, first frame %.20q", ping, lines[0])
		}
		var got []string
		for i, l := range lines {
			if len(l)+1 > registry.MaxHeartbeatFrame {
				t.Fatalf("frame %d is %d bytes with its newline, over %d", i, len(l)+1, registry.MaxHeartbeatFrame)
			}
			if i > 0 && strings.HasPrefix(l, "?") {
				t.Fatalf("frame %d pings too", i)
			}
			got = append(got, strings.Fields(strings.TrimPrefix(l, "?"))...)
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Fatalf("the frames carry %d ids, not the %d heartbeats", len(got), len(ids))
		}
	}
	if out := string(registry.FramesFor([]string{"a"}, true)); out != "?a\n" {
		t.Errorf("one heartbeat with a ping = %q, want %q", out, "?a\n")
	}
}
