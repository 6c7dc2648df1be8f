package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
)

// quietLog discards output but keeps entries for assertions.
func quietLog() (*logrus.Logger, *logtest.Hook) {
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.InfoLevel
	return l, logtest.NewLocal(l)
}

// logged reports whether an entry whose message contains msg was logged.
func logged(h *logtest.Hook, msg string) bool {
	for _, e := range h.AllEntries() {
		if strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// fakeSource answers each blocking query with the next scripted snapshot
// and records reports.
type fakeSource struct {
	next      chan registry.Snapshot
	reportErr error

	mu      sync.Mutex
	reports []registry.GatewayReport
}

func newFakeSource() *fakeSource { return &fakeSource{next: make(chan registry.Snapshot)} }

func (f *fakeSource) Instances(ctx context.Context, _ string, _ uint64, _ time.Duration) (registry.Snapshot, error) {
	select {
	case s := <-f.next:
		return s, nil
	case <-ctx.Done():
		return registry.Snapshot{}, ctx.Err()
	}
}

func (f *fakeSource) ReportGateway(_ context.Context, r registry.GatewayReport) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, r)
	return f.reportErr
}

func (f *fakeSource) lastReport() (registry.GatewayReport, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) == 0 {
		return registry.GatewayReport{}, 0
	}
	return f.reports[len(f.reports)-1], len(f.reports)
}

func TestNew(t *testing.T) {
	src := newFakeSource()
	tests := []struct {
		desc string
		cfg  Config
		err  string
	}{
		{desc: "source is required", cfg: Config{Routes: []Route{{Prefix: "/", Service: "hello"}}}, err: "source is required"},
		{desc: "a route is required", cfg: Config{Source: src}, err: "at least one route"},
		{desc: "bad route is refused", cfg: Config{Source: src, Routes: []Route{{Prefix: "api", Service: "api"}}}, err: `must start with "/"`},
		{desc: "duplicate prefix is refused", cfg: Config{Source: src, Routes: []Route{{Prefix: "/api", Service: "a"}, {Prefix: "/api/", Service: "b"}}}, err: "routes to both"},
		{desc: "good config", cfg: Config{Source: src, Routes: []Route{{Prefix: "/", Service: "hello"}, {Prefix: "/api", Service: "api"}, {Prefix: "/v1", Service: "api"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			g, err := New(tt.cfg)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("New() error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(): %v", err)
			}
			if g.cfg.ID == "" || !strings.HasSuffix(g.cfg.ID, "@"+defaultListen) {
				t.Fatalf("default ID = %q, want hostname@%s", g.cfg.ID, defaultListen)
			}
			if g.cfg.ReportInterval != time.Second {
				t.Fatalf("default ReportInterval = %s", g.cfg.ReportInterval)
			}
			if pools := g.table.Load().pools; len(pools) != 2 || pools["hello"] == nil || pools["api"] == nil {
				t.Fatalf("pools = %v, want one per distinct service", slices.Sorted(maps.Keys(pools)))
			}
			if len(g.Applied()) != 0 {
				t.Fatalf("Applied() before any snapshot = %v", g.Applied())
			}
		})
	}
}

func TestApplyKeepsTableWhileRegistryWarmsUp(t *testing.T) {
	a := inst("a", "hello", 1, registry.StatusUp)
	b := inst("b", "hello", 2, registry.StatusUp)
	notReady := func(index uint64, insts ...registry.Instance) registry.Snapshot {
		return registry.Snapshot{Index: index, Ready: false, Instances: insts}
	}
	tests := []struct {
		desc    string
		snaps   []registry.Snapshot
		index   uint64
		up      string
		changes int
	}{
		{
			desc:  "first snapshot is applied even when the registry is not ready",
			snaps: []registry.Snapshot{notReady(10, a)},
			index: 10, up: "[a]", changes: 1,
		},
		{
			desc:  "not-ready snapshot does not replace a ready one",
			snaps: []registry.Snapshot{snapOf(10, a, b), notReady(20, b)},
			index: 10, up: "[a b]", changes: 1,
		},
		{
			desc:  "empty not-ready snapshot does not wipe the table",
			snaps: []registry.Snapshot{snapOf(10, a, b), notReady(20)},
			index: 10, up: "[a b]", changes: 1,
		},
		{
			desc:  "ready snapshot after the warm-up is applied",
			snaps: []registry.Snapshot{snapOf(10, a, b), notReady(20, b), snapOf(21, b)},
			index: 21, up: "[b]", changes: 2,
		},
		{
			desc:  "partial view replaces an older partial view",
			snaps: []registry.Snapshot{notReady(10, a), notReady(11, a, b)},
			index: 11, up: "[a b]", changes: 2,
		},
		{
			desc:  "ready snapshot with nothing UP empties the pool",
			snaps: []registry.Snapshot{snapOf(10, a), snapOf(11, inst("a", "hello", 1, registry.StatusDown))},
			index: 11, up: "[]", changes: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			log, _ := quietLog()
			g, err := New(Config{Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: newFakeSource(), Log: log})
			if err != nil {
				t.Fatal(err)
			}
			changes := 0
			for _, s := range tt.snaps {
				g.apply("hello", s)
				select {
				case <-g.changed:
					changes++
				default:
				}
			}
			if got := g.Applied()["hello"]; got != tt.index {
				t.Fatalf("applied index = %d, want %d", got, tt.index)
			}
			p, _ := g.table.Load().Lookup("/")
			if got := fmt.Sprint(ids(p)); got != tt.up {
				t.Fatalf("UP endpoints = %s, want %s", got, tt.up)
			}
			if changes != tt.changes {
				t.Fatalf("report triggers = %d, want %d (one per applied snapshot)", changes, tt.changes)
			}
		})
	}
}

func TestGatewayReportsRightAfterEachChange(t *testing.T) {
	src := newFakeSource()
	src.reportErr = errors.New("registry unreachable")
	log, hook := quietLog()
	// A heartbeat of an hour leaves only the reports that changes trigger.
	g, err := New(Config{ID: "gw-fake", Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: src, ReportInterval: time.Hour, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	host, port := splitHostPort(t, backend.Listener.Addr().String())
	up := registry.Instance{ID: "a", Service: "hello", Address: host, Port: port, Status: registry.StatusUp}

	ctx, cancel := context.WithCancel(t.Context())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.RunListener(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunListener: %v", err)
		}
	}()

	testutil.Eventually(t, 5*time.Second, "the start-up report", func() bool { _, n := src.lastReport(); return n >= 1 })
	src.next <- snapOf(100, up)
	testutil.Eventually(t, 5*time.Second, "a report of index 100", func() bool { r, _ := src.lastReport(); return r.Applied["hello"] == 100 })
	r, _ := src.lastReport()
	if r.ID != "gw-fake" {
		t.Fatalf("report ID = %q, want gw-fake", r.ID)
	}
	if !logged(hook, "gateway report failed") {
		t.Fatal("a failed report was not logged")
	}

	// Failed reports leave routing alone.
	res := get(t, "http://"+ln.Addr().String()+"/")
	if res.code != http.StatusOK || res.body != "ok" {
		t.Fatalf("GET / = %d %q, want 200 ok", res.code, res.body)
	}

	// A registry restarted and warming up knows nothing yet.
	src.next <- registry.Snapshot{Index: 200, Ready: false, Instances: []registry.Instance{}}
	testutil.Eventually(t, 5*time.Second, "the not-ready snapshot to be seen", func() bool { return logged(hook, "registry is warming up") })
	if got := g.Applied()["hello"]; got != 100 {
		t.Fatalf("applied index after a not-ready snapshot = %d, want 100 still", got)
	}
	if res := get(t, "http://"+ln.Addr().String()+"/"); res.code != http.StatusOK {
		t.Fatalf("GET / after a not-ready snapshot = %d %q, want 200: the table was wiped", res.code, res.body)
	}

	src.next <- snapOf(201, up, inst("b", "hello", 2, registry.StatusDown))
	testutil.Eventually(t, 5*time.Second, "a report of index 201", func() bool { r, _ := src.lastReport(); return r.Applied["hello"] == 201 })
	// The two GETs above went to a, and the report counts them, so that
	// the dashboard can show each instance's rate.
	if r, _ := src.lastReport(); r.Traffic["a"] != (registry.Traffic{Requests: 2}) {
		t.Fatalf("report traffic = %+v, want a: 2 requests, 0 errors", r.Traffic)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for _, r := range src.reports {
		if r.Applied["hello"] == 200 {
			t.Fatal("the not-ready snapshot's index was reported as applied")
		}
	}
}

func splitHostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	if _, err := fmt.Sscan(p, &port); err != nil {
		t.Fatal(err)
	}
	return host, port
}
