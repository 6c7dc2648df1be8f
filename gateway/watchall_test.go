package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

// startRegistryURL is startRegistry that also gives the registry's URL,
// for its own /metrics.
func startRegistryURL(t testing.TB) (*registry.Client, string) {
	t.Helper()
	log, _ := quietLog()
	ctx, cancel := context.WithCancel(context.Background())
	url, done, err := local.ServeRegistry(ctx, server.Config{Token: testToken, LeaseTTL: time.Minute, Log: log})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	return registry.NewClient(url, testToken), url
}

// heldQueries is how many blocking queries the registry at url holds.
func heldQueries(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "switchyard_registry_waiters "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("registry /metrics has no switchyard_registry_waiters")
	return 0
}

// upAddrs lists the host:ports service's pool routes to.
func upAddrs(g *Gateway, service string) []string {
	var out []string
	for _, e := range g.pool(service).Endpoints() {
		out = append(out, e.HostPort())
	}
	return out
}

func TestGatewayFollowsManyServicesWithOneWatch(t *testing.T) {
	c, url := startRegistryURL(t)
	const n = 300
	svc := func(i int) string { return fmt.Sprintf("svc-%03d", i) }
	addr := func(i, k int) string { return fmt.Sprintf("127.0.0.1:%d", 20000+10*i+k) }
	var routes []string
	for i := range n {
		register(t, c, svc(i)+"-a", svc(i), addr(i, 0), registry.StatusUp)
		routes = append(routes, "/"+svc(i)+"="+svc(i))
	}
	register(t, c, svc(50)+"-b", svc(50), addr(50, 1), registry.StatusOutOfService)
	g, _, _ := startGateway(t, c, routes...)
	testutil.Eventually(t, 10*time.Second, "every service to be applied", func() bool { return len(g.Applied()) == n })
	// One watch per service would hold n; these are all below the
	// registry's per-client cap, so nothing else keeps them down.
	testutil.Eventually(t, 5*time.Second, "the gateway to hold a single blocking query", func() bool { return heldQueries(t, url) == 1 })
	for i := range n {
		if got := upAddrs(g, svc(i)); !slices.Equal(got, []string{addr(i, 0)}) {
			t.Fatalf("%s routes to %v, want %s", svc(i), got, addr(i, 0))
		}
	}
	pools := map[string]*Pool{}
	for i := range n {
		pools[svc(i)] = g.pool(svc(i))
	}

	type change struct {
		desc    string
		service string
		change  func() uint64
		want    []string // the pool's endpoints after it
		same    bool     // the pool is kept: its UP set did not change
	}
	changes := []change{
		{"an instance taken out empties its pool", svc(10), func() uint64 {
			return setStatus(t, c, svc(10)+"-a", registry.StatusOutOfService)
		}, nil, false},
		{"a second instance joins its pool", svc(20), func() uint64 {
			register(t, c, svc(20)+"-b", svc(20), addr(20, 1), registry.StatusUp)
			return currentIndex(t, c, svc(20))
		}, []string{addr(20, 0), addr(20, 1)}, false},
		{"a deregistered instance leaves its pool", svc(30), func() uint64 {
			if err := c.Deregister(context.Background(), svc(30)+"-a"); err != nil {
				t.Fatal(err)
			}
			return currentIndex(t, c, svc(30))
		}, nil, false},
		{"an instance registered again on another port moves", svc(40), func() uint64 {
			register(t, c, svc(40)+"-a", svc(40), addr(40, 5), registry.StatusUp)
			return currentIndex(t, c, svc(40))
		}, []string{addr(40, 5)}, false},
		{"an index that moves without changing the UP set keeps the pool", svc(50), func() uint64 {
			return setStatus(t, c, svc(50)+"-b", registry.StatusDown)
		}, []string{addr(50, 0)}, true},
	}
	var last uint64
	for _, ch := range changes {
		t.Run(ch.desc, func(t *testing.T) {
			idx := ch.change()
			last = max(last, idx)
			waitApplied(t, g, ch.service, idx)
			if got := upAddrs(g, ch.service); !slices.Equal(got, ch.want) {
				t.Fatalf("%s routes to %v, want %v", ch.service, got, ch.want)
			}
			if same := g.pool(ch.service) == pools[ch.service]; same != ch.same {
				t.Fatalf("%s kept its pool: %v, want %v", ch.service, same, ch.same)
			}
		})
	}

	changed := map[string]bool{}
	for _, ch := range changes {
		changed[ch.service] = !ch.same
	}
	applied := g.Applied()
	for i := range n {
		s := svc(i)
		if !changed[s] && g.pool(s) != pools[s] {
			t.Errorf("%s got a new pool though its instances did not change", s)
		}
		if applied[s] < last {
			t.Errorf("applied index of %s = %d, want at least %d: the view it was checked against", s, applied[s], last)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the registry to have the gateway's report of every change", func() bool {
		gws, err := c.Gateways(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, gw := range gws {
			if gw.ID == "gw-test" && len(gw.Applied) == n {
				return !slices.ContainsFunc(changes, func(ch change) bool { return gw.Applied[ch.service] < last })
			}
		}
		return false
	})
	if held := heldQueries(t, url); held != 1 {
		t.Errorf("the registry holds %d blocking queries after the changes, want 1", held)
	}
}

func TestGatewayAppliesANewRouteWithoutWaitingForARegistryChange(t *testing.T) {
	c, url := startRegistryURL(t)
	register(t, c, "a", "hello", "127.0.0.1:20001", registry.StatusUp)
	register(t, c, "l", "late", "127.0.0.1:20002", registry.StatusUp)
	idx := currentIndex(t, c, "")
	g, _, _ := startGateway(t, c, "/=hello")
	waitApplied(t, g, "hello", idx)
	// The watch now waits on the registry's newest index, which nothing
	// moves: without a fresh read, "late" would wait out the 30s wait.
	testutil.Eventually(t, 5*time.Second, "the watch to block", func() bool { return heldQueries(t, url) == 1 })
	if err := g.SetRoutes(parseRoutes(t, "/=hello", "/late=late")); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, g, "late", idx)
	if got := upAddrs(g, "late"); !slices.Equal(got, []string{"127.0.0.1:20002"}) {
		t.Fatalf("late routes to %v, want 127.0.0.1:20002", got)
	}

	if err := g.SetRoutes(parseRoutes(t, "/late=late")); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Applied()["hello"]; ok {
		t.Errorf("applied = %v still lists hello, which no route names", g.Applied())
	}
	testutil.Eventually(t, 5*time.Second, "a single blocking query after the reloads", func() bool { return heldQueries(t, url) == 1 })
}

// switchAllSource is switchSource that follows all services with one
// watch, as the registry client does.
type switchAllSource struct{ switchSource }

func (*switchAllSource) ListsAllAtOnce() bool { return true }

// switchViewSource is switchAllSource that also asks for the changes
// since its last view, as the registry client does.
type switchViewSource struct{ switchAllSource }

func (s *switchViewSource) View(ctx context.Context, prev *registry.View, waitIndex uint64, wait time.Duration) (*registry.View, error) {
	return s.cur.Load().View(ctx, prev, waitIndex, wait)
}

func TestGatewayWatchOfAllServicesKeepsReadyPoolsThroughRegistryWarmup(t *testing.T) {
	for _, tc := range []struct {
		desc string
		src  func() (Source, *atomic.Pointer[registry.Client])
	}{
		{"the registry's changes", func() (Source, *atomic.Pointer[registry.Client]) {
			s := &switchViewSource{}
			return s, &s.cur
		}},
		{"whole views", func() (Source, *atomic.Pointer[registry.Client]) {
			s := &switchAllSource{}
			return s, &s.cur
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src, cur := tc.src()
			keepsReadyPoolsThroughWarmup(t, src, cur)
		})
	}
}

// keepsReadyPoolsThroughWarmup follows a registry through a restart with a
// warm-up: the pools are kept while it warms up, and once it is ready a
// service it no longer has routes nowhere, though no change names it.
func keepsReadyPoolsThroughWarmup(t *testing.T, src Source, cur *atomic.Pointer[registry.Client]) {
	c1, _, stop := startStoppableRegistry(t, 0)
	register(t, c1, "a", "hello", "127.0.0.1:20001", registry.StatusUp)
	register(t, c1, "x", "other", "127.0.0.1:20003", registry.StatusUp)
	cur.Store(c1)
	g, _, hook := startGateway(t, src, "/=hello", "/other=other")
	waitApplied(t, g, "hello", currentIndex(t, c1, ""))
	// A change to a service no route names moves every applied index
	// past the one the pools were built at.
	register(t, c1, "u", "unrouted", "127.0.0.1:20009", registry.StatusUp)
	waitApplied(t, g, "hello", currentIndex(t, c1, ""))
	waitApplied(t, g, "other", currentIndex(t, c1, ""))
	before := g.Applied()
	if before["hello"] <= g.pool("hello").Index() {
		t.Fatalf("applied = %v, want hello past its pool's own index %d", before, g.pool("hello").Index())
	}

	stop()
	testutil.Eventually(t, 5*time.Second, "the watch to notice the registry is gone", func() bool { return logged(hook, "registry watch failed") })

	// The registry comes back warming up and hears first from b only.
	c2, srv2, _ := startStoppableRegistry(t, 10*time.Millisecond)
	register(t, c2, "b", "hello", "127.0.0.1:20002", registry.StatusUp)
	cur.Store(c2)
	testutil.Eventually(t, 10*time.Second, "the gateway to reach the warming registry", func() bool { return logged(hook, "registry is warming up") })
	if got := upAddrs(g, "hello"); !slices.Equal(got, []string{"127.0.0.1:20001"}) {
		t.Fatalf("hello routes to %v while the registry warms up, want a only: the partial view replaced the table", got)
	}
	if got := g.Applied(); got["hello"] != before["hello"] || got["other"] != before["other"] {
		t.Fatalf("applied = %v while the registry warms up, want %v: the kept pools do not reflect the partial view", got, before)
	}

	ready := waitWarmedUp(t, c2, srv2, "")
	waitApplied(t, g, "hello", ready)
	waitApplied(t, g, "other", ready)
	if got := upAddrs(g, "hello"); !slices.Equal(got, []string{"127.0.0.1:20002"}) {
		t.Fatalf("hello routes to %v after the warm-up, want b only", got)
	}
	if got := upAddrs(g, "other"); len(got) != 0 {
		t.Fatalf("other routes to %v after the warm-up, want nothing: the registry no longer has it", got)
	}
}

func TestServiceMetricsReadAsClientGolangWould(t *testing.T) {
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ref", Buckets: durationBuckets})
	var h histogram
	for _, v := range []float64{0, 0.0001, 0.0005, 0.0007, 0.001, 0.02, 0.5, 3, 16.384, 17, 1000} {
		ref.Observe(v)
		h.Observe(v)
	}
	var want, got dto.Metric
	if err := ref.Write(&want); err != nil {
		t.Fatal(err)
	}
	if err := h.metric("hello", "blue").Write(&got); err != nil {
		t.Fatal(err)
	}
	wh, gh := want.GetHistogram(), got.GetHistogram()
	if gh.GetSampleCount() != wh.GetSampleCount() || gh.GetSampleSum() != wh.GetSampleSum() {
		t.Fatalf("count, sum = %d, %g; want %d, %g", gh.GetSampleCount(), gh.GetSampleSum(), wh.GetSampleCount(), wh.GetSampleSum())
	}
	if len(gh.GetBucket()) != len(wh.GetBucket()) {
		t.Fatalf("%d buckets, want %d", len(gh.GetBucket()), len(wh.GetBucket()))
	}
	for i, b := range wh.GetBucket() {
		if g := gh.GetBucket()[i]; g.GetUpperBound() != b.GetUpperBound() || g.GetCumulativeCount() != b.GetCumulativeCount() {
			t.Errorf("bucket %d = le %g: %d, want le %g: %d", i, g.GetUpperBound(), g.GetCumulativeCount(), b.GetUpperBound(), b.GetCumulativeCount())
		}
	}
}
