package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

func TestBatchSizes(t *testing.T) {
	for _, tc := range []struct {
		desc string
		b    *batcher
		n    int
		want []int
	}{
		{desc: "bringing up starts with a canary of one, then doubles up to the cap", b: upBatcher(64), n: 500,
			want: []int{1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64, 53}},
		{desc: "a cap of 4 stops the doubling at 4", b: upBatcher(4), n: 10, want: []int{1, 2, 4, 3}},
		{desc: "a cap of 1 brings up one at a time", b: upBatcher(1), n: 3, want: []int{1, 1, 1}},
		{desc: "a single target instance is the canary and the whole make phase", b: upBatcher(64), n: 1, want: []int{1}},
		{desc: "a cap below 1 is taken as 1", b: upBatcher(0), n: 2, want: []int{1, 1}},
		{desc: "taking out goes at the cap from the first batch", b: outBatcher(64), n: 200, want: []int{64, 64, 64, 8}},
		{desc: "taking out with a cap of 1 goes one at a time", b: outBatcher(1), n: 2, want: []int{1, 1}},
		{desc: "nothing to do is no batch", b: upBatcher(64), n: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got := batchSizes(tc.b, tc.n)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("batches = %v, want %v", got, tc.want)
			}
			sum := 0
			for _, k := range got {
				sum += k
			}
			if sum != tc.n {
				t.Fatalf("batches %v instruct %d instances, want %d", got, sum, tc.n)
			}
		})
	}
}

func TestCanaryStaysOneUntilAnInstanceCameUp(t *testing.T) {
	b := upBatcher(8)
	rest := make([]Member, 30)
	var sizes []int
	for _, ok := range []bool{false, false, true, true, false, true, true} {
		var batch []Member
		batch, rest = b.take(rest)
		sizes = append(sizes, len(batch))
		b.grow(ok)
	}
	// Two failed canaries, the third comes UP; then 2 and 4; a batch with
	// nothing UP keeps its size 4; then 8, the cap.
	if want := []int{1, 1, 1, 2, 4, 4, 8}; !slices.Equal(sizes, want) {
		t.Fatalf("batch sizes = %v, want %v", sizes, want)
	}
}

// fakeFleet is a set of instances, each an HTTP server answering the
// SDK's health and status endpoints, and a registry whose gateways have
// applied every change. It logs what happens, in order.
type fakeFleet struct {
	mu        sync.Mutex
	events    []string
	inflight  int
	maxFlight int
	index     uint64
	unhealthy map[string]bool
	up        map[string]bool // the registry's UP set
	gateways  int             // Gateways calls
	members   []Member
}

func (f *fakeFleet) Instances(context.Context, string, uint64, time.Duration) (registry.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap := registry.Snapshot{Index: f.index, Ready: true}
	for _, m := range f.members {
		st := registry.StatusOutOfService
		if f.up[m.ID] {
			st = registry.StatusUp
		}
		snap.Instances = append(snap.Instances, registry.Instance{ID: m.ID, Service: m.Service, Color: string(m.Color), Status: st})
	}
	return snap, nil
}

func (f *fakeFleet) WatchGateways(ctx context.Context, _ uint64, _ time.Duration) ([]registry.GatewayReport, uint64, error) {
	gws, err := f.Gateways(ctx)
	return gws, 0, err
}

func (f *fakeFleet) Gateways(context.Context) ([]registry.GatewayReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gateways++
	f.events = append(f.events, "gateways")
	return []registry.GatewayReport{{ID: "gw", Applied: map[string]uint64{"hello": f.index}}}, nil
}

// start serves one instance per id and returns them as members.
func (f *fakeFleet) start(t *testing.T, color zkstate.Color, status registry.Status, ids ...string) []Member {
	var out []Member
	for _, id := range ids {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				f.mu.Lock()
				bad := f.unhealthy[id]
				f.mu.Unlock()
				if bad {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
				return
			}
			var body struct{ Status registry.Status }
			_ = json.NewDecoder(r.Body).Decode(&body)
			f.mu.Lock()
			if body.Status == registry.StatusUp && f.unhealthy[id] {
				// As the SDK answers: it checks its health before UP.
				f.mu.Unlock()
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"status":"unhealthy","error":"health check failing"}`)
				return
			}
			f.inflight++
			f.maxFlight = max(f.maxFlight, f.inflight)
			f.events = append(f.events, string(body.Status)+" "+id)
			f.mu.Unlock()
			time.Sleep(5 * time.Millisecond) // long enough for a batch's instructions to overlap
			f.mu.Lock()
			f.inflight--
			f.index++
			f.up[id] = body.Status == registry.StatusUp
			idx := f.index
			f.mu.Unlock()
			_, _ = io.WriteString(w, `{"index":`+strconv.FormatUint(idx, 10)+`}`)
		}))
		t.Cleanup(srv.Close)
		host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		p, _ := strconv.Atoi(port)
		m := Member{ID: id, Service: "hello", Color: color, Address: host, Port: p, Status: status}
		out = append(out, m)
		f.mu.Lock()
		f.members = append(f.members, m)
		f.up[id] = status == registry.StatusUp
		f.mu.Unlock()
	}
	return out
}

// testController is a leader with a connected session that never talks
// to ZooKeeper in these tests.
func testController(t *testing.T, reg Registry, maxBatch int) *Controller {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	c, err := New(Config{ZK: []string{"127.0.0.1:1"}, Registry: reg, Token: "instruction-key-0123456789", MaxBatch: maxBatch,
		GatewayTimeout: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	c.sess.onEvent(zk.Event{Type: zk.EventSession, State: zk.StateHasSession})
	c.rec = newRecorder(nil, "", log)
	c.epoch.Store(1)
	return c
}

func ids10(prefix string) []string {
	var out []string
	for i := range 10 {
		out = append(out, fmt.Sprintf("%s%02d", prefix, i))
	}
	return out
}

func TestBringUpCanaryFirstThenGrowingBatches(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		unhealthy []string
		batches   []int // the batch of each step, in plan order
		canary    string
	}{
		{desc: "the first instance goes alone and is confirmed by the gateways; then 2, then 4 at most",
			batches: []int{1, 2, 2, 3, 3, 3, 3, 4, 4, 4}, canary: "g00"},
		{desc: "a canary that fails its health check is skipped and the next instance is the canary",
			unhealthy: []string{"g00"}, batches: []int{1, 2, 3, 3, 4, 4, 4, 4, 5, 5}, canary: "g01"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := &fakeFleet{up: map[string]bool{}, unhealthy: map[string]bool{}}
			for _, id := range tc.unhealthy {
				f.unhealthy[id] = true
			}
			ups := f.start(t, zkstate.Green, registry.StatusOutOfService, ids10("g")...)
			c := testController(t, f, 4)
			healthy := map[string]bool{}
			for _, m := range ups {
				healthy[m.ID] = true // the pre-flight saw every one healthy
			}
			rec := zkstate.Switch{Target: zkstate.Green}
			targetUp, indexes := map[string]int{}, map[string]uint64{}
			if err := c.bringUp(context.Background(), c.log, &rec, ups, healthy, targetUp, indexes); err != nil {
				t.Fatal(err)
			}
			var batches []int
			for _, s := range rec.Steps {
				batches = append(batches, s.Batch)
			}
			if !slices.Equal(batches, tc.batches) {
				t.Errorf("steps went out in batches %v, want %v", batches, tc.batches)
			}
			if want := 10 - len(tc.unhealthy); targetUp["hello"] != want {
				t.Errorf("counted %d UP, want %d", targetUp["hello"], want)
			}
			// An instance that refused UP on its health check is skipped at
			// once, not retried.
			for _, s := range rec.Steps {
				if slices.Contains(tc.unhealthy, s.Instance) && (s.State != zkstate.StepSkipped || s.Attempts != 1 || !strings.Contains(s.Error, "failed its health check")) {
					t.Errorf("step of unhealthy %s: %s after %d attempts (%q); want skipped after 1", s.Instance, s.State, s.Attempts, s.Error)
				}
			}
			if f.maxFlight > 4 {
				t.Errorf("%d instructions were in flight at once, more than the cap of 4", f.maxFlight)
			}
			if f.maxFlight < 2 {
				t.Errorf("at most %d instruction was in flight: the batches did not run in parallel", f.maxFlight)
			}
			// The canary's UP, then the gateways, before any other UP.
			if len(f.events) < 3 || f.events[0] != "UP "+tc.canary || f.events[1] != "gateways" {
				t.Errorf("events begin %v, want [UP %s gateways ...]", f.events[:min(3, len(f.events))], tc.canary)
			}
			if indexes["hello"] != f.index {
				t.Errorf("index of the last change = %d, want %d", indexes["hello"], f.index)
			}
		})
	}
}

func TestTakeOutInBatchesNeverTheLastUp(t *testing.T) {
	t.Run("the old color goes out in batches of the cap, in parallel", func(t *testing.T) {
		f := &fakeFleet{up: map[string]bool{}}
		f.start(t, zkstate.Green, registry.StatusUp, ids10("g")...)
		outs := f.start(t, zkstate.Blue, registry.StatusUp, ids10("b")...)
		c := testController(t, f, 4)
		rec := zkstate.Switch{Target: zkstate.Green, Steps: []zkstate.Step{{Batch: 3}}}
		if err := c.takeOut(context.Background(), c.log, &rec, f.members, outs, map[string]int{"hello": 10}, map[string]uint64{}); err != nil {
			t.Fatal(err)
		}
		var batches []int
		for _, s := range rec.Steps[1:] {
			batches = append(batches, s.Batch)
			if s.State != zkstate.StepDone {
				t.Errorf("step %s is %s", s.Instance, s.State)
			}
		}
		if want := []int{4, 4, 4, 4, 5, 5, 5, 5, 6, 6}; !slices.Equal(batches, want) {
			t.Errorf("steps went out in batches %v, want %v (numbered on from the resumed record)", batches, want)
		}
		if f.maxFlight > 4 || f.maxFlight < 2 {
			t.Errorf("%d instructions in flight at most, want 2 to 4", f.maxFlight)
		}
	})
	t.Run("a service whose target instances the registry no longer has UP keeps its old color", func(t *testing.T) {
		f := &fakeFleet{up: map[string]bool{}}
		f.start(t, zkstate.Green, registry.StatusOutOfService, "g0") // went DOWN or OUT since it was counted
		outs := f.start(t, zkstate.Blue, registry.StatusUp, ids10("b")...)
		c := testController(t, f, 4)
		rec := zkstate.Switch{Target: zkstate.Green}
		if err := c.takeOut(context.Background(), c.log, &rec, f.members, outs, map[string]int{"hello": 1}, map[string]uint64{}); err != nil {
			t.Fatal(err)
		}
		if len(rec.Steps) != 0 {
			t.Errorf("took out %d instances with no target instance UP", len(rec.Steps))
		}
		for _, m := range outs {
			if !f.up[m.ID] {
				t.Errorf("%s was taken out", m.ID)
			}
		}
	})
}
