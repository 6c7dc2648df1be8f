package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

// startConsul runs a real `consul agent -dev` for the test; the first run
// on a machine builds Consul, which takes minutes.
func startConsul(t *testing.T) *local.Consul {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := local.StartConsul(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start consul: %v", err)
	}
	t.Logf("consul started in %s", time.Since(start))
	t.Cleanup(func() { s := time.Now(); c.Stop(); t.Logf("consul stopped in %s", time.Since(s)) })
	return c
}

func newConsulBackend(t *testing.T, c *local.Consul, cfg registry.ConsulConfig) *registry.Consul {
	t.Helper()
	cfg.Address = c.Addr()
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	b, err := registry.NewConsul(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func rawConsul(t *testing.T, c *local.Consul) *api.Client {
	t.Helper()
	cl, err := api.NewClient(&api.Config{Address: c.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// healthServer is a real instance endpoint on loopback whose health answer
// the test flips between 200 and 503.
type healthServer struct {
	host string
	port int
	code atomic.Int32
}

func newHealthServer(t *testing.T) *healthServer {
	t.Helper()
	h := &healthServer{}
	h.code.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_switchyard/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(h.code.Load()))
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	h.host = host
	h.port, _ = strconv.Atoi(port)
	return h
}

func (h *healthServer) instance(id, service string, st registry.Status) registry.Instance {
	return registry.Instance{ID: id, Service: service, Color: "blue", Version: "v1", Address: h.host, Port: h.port, Status: st}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last saw %s", what, within, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statusIn(snap registry.Snapshot, id string) registry.Status {
	for _, in := range snap.Instances {
		if in.ID == id {
			return in.Status
		}
	}
	return "absent"
}

// hasStatus polls the backend until id shows want.
func hasStatus(t *testing.T, b *registry.Consul, service, id string, want registry.Status) func() (bool, string) {
	return func() (bool, string) {
		snap, err := b.Instances(context.Background(), service, 0, 0)
		if err != nil {
			return false, err.Error()
		}
		got := statusIn(snap, id)
		return got == want, string(got)
	}
}

// passing lists the ids Consul itself considers healthy.
func passing(t *testing.T, raw *api.Client, service string) []string {
	t.Helper()
	entries, _, err := raw.Health().Service(service, "", true, nil)
	if err != nil {
		t.Fatalf("read passing instances of %s: %v", service, err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

// checkPassed waits until the agent's own probe of id passed, whatever the
// maintenance mode says.
func checkPassed(t *testing.T, raw *api.Client, id string) {
	t.Helper()
	eventually(t, 10*time.Second, "health check of "+id+" passes", func() (bool, string) {
		checks, err := raw.Agent().Checks()
		if err != nil {
			return false, err.Error()
		}
		ch, ok := checks["service:"+id]
		if !ok {
			return false, "no check"
		}
		return ch.Status == api.HealthPassing, ch.Status
	})
}

// registerOut registers id OUT_OF_SERVICE and waits until its check passed.
func registerOut(t *testing.T, b *registry.Consul, raw *api.Client, inst registry.Instance) {
	t.Helper()
	if err := b.Register(context.Background(), inst); err != nil {
		t.Fatalf("register %s: %v", inst.ID, err)
	}
	checkPassed(t, raw, inst.ID)
	eventually(t, 10*time.Second, inst.ID+" is listed OUT_OF_SERVICE", hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService))
}

func TestConsul(t *testing.T) {
	c := startConsul(t)
	raw := rawConsul(t, c)
	b := newConsulBackend(t, c, registry.ConsulConfig{})
	ctx := context.Background()

	t.Run("an instance registered OUT_OF_SERVICE is never passing, though healthy", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("out-1", "svc-out", registry.StatusOutOfService)
		stop := make(chan struct{})
		var leaked atomic.Value
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				entries, _, err := raw.Health().Service(inst.Service, "", true, nil)
				if err == nil && len(entries) > 0 {
					leaked.Store(fmt.Sprint(entries[0].Checks))
				}
			}
		}()
		registerOut(t, b, raw, inst)
		close(stop)
		wg.Wait()
		if v := leaked.Load(); v != nil {
			t.Fatalf("instance appeared passing during registration: %v", v)
		}
		if ids := passing(t, raw, inst.Service); len(ids) != 0 {
			t.Fatalf("passing = %v, want none while in maintenance", ids)
		}
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := inst
		if len(snap.Instances) != 1 || snap.Instances[0] != want {
			t.Fatalf("instances = %+v, want [%+v]", snap.Instances, want)
		}
	})

	t.Run("SetStatus UP makes the instance passing at the index it returns", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("up-1", "svc-up", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		idx, err := b.SetStatus(ctx, inst.ID, registry.StatusUp)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Index < idx || statusIn(snap, inst.ID) != registry.StatusUp {
			t.Fatalf("after SetStatus returned %d: index %d, status %s", idx, snap.Index, statusIn(snap, inst.ID))
		}
		if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
			t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
		}
		out, err := b.SetStatus(ctx, inst.ID, registry.StatusOutOfService)
		if err != nil {
			t.Fatal(err)
		}
		if out <= idx {
			t.Fatalf("OUT_OF_SERVICE at index %d, not after UP at %d", out, idx)
		}
		snap, _ = b.Instances(ctx, inst.Service, 0, 0)
		if snap.Index < out || statusIn(snap, inst.ID) != registry.StatusOutOfService {
			t.Fatalf("after SetStatus returned %d: index %d, status %s", out, snap.Index, statusIn(snap, inst.ID))
		}
		if ids := passing(t, raw, inst.Service); len(ids) != 0 {
			t.Fatalf("passing = %v, want none", ids)
		}
		again, err := b.SetStatus(ctx, inst.ID, registry.StatusOutOfService)
		if err != nil || again < out {
			t.Fatalf("setting the same status again: index %d, %v; want >= %d", again, err, out)
		}
	})

	t.Run("a failing health endpoint makes the instance DOWN until it recovers", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("flaky-1", "svc-flaky", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		if _, err := b.SetStatus(ctx, inst.ID, registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		h.code.Store(http.StatusServiceUnavailable)
		eventually(t, 10*time.Second, "instance goes DOWN", hasStatus(t, b, inst.Service, inst.ID, registry.StatusDown))
		if ids := passing(t, raw, inst.Service); len(ids) != 0 {
			t.Fatalf("passing = %v, want none while the endpoint answers 503", ids)
		}
		h.code.Store(http.StatusOK)
		eventually(t, 10*time.Second, "instance is UP again", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
		if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
			t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
		}
	})

	t.Run("SetStatus UP fails and leaves the instance out while its check fails", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("sick-1", "svc-sick", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		h.code.Store(http.StatusServiceUnavailable)
		eventually(t, 10*time.Second, "check goes critical", func() (bool, string) {
			checks, _ := raw.Agent().Checks()
			if ch, ok := checks["service:"+inst.ID]; ok {
				return ch.Status == api.HealthCritical, ch.Status
			}
			return false, "no check"
		})
		fast := newConsulBackend(t, c, registry.ConsulConfig{StatusTimeout: 1500 * time.Millisecond})
		_, err := fast.SetStatus(ctx, inst.ID, registry.StatusUp)
		if err == nil {
			t.Fatal("SetStatus UP succeeded for an instance whose health check fails")
		}
		t.Log(err)
		if got := hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService); !func() bool { ok, _ := got(); return ok }() {
			_, st := got()
			t.Fatalf("after the failed SetStatus the instance is %s, want OUT_OF_SERVICE", st)
		}
	})

	t.Run("a blocking Instances call returns the change SetStatus made", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("block-1", "svc-block", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		for _, service := range []string{inst.Service, ""} {
			snap, err := b.Instances(ctx, service, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := registry.StatusUp
			if statusIn(snap, inst.ID) == registry.StatusUp {
				want = registry.StatusOutOfService
			}
			got := make(chan registry.Snapshot, 1)
			errc := make(chan error, 1)
			go func() {
				// Anything else changing wakes the call too: keep waiting
				// until the change shows, well before the 30s wait ends.
				index := snap.Index
				for {
					s, err := b.Instances(ctx, service, index, 30*time.Second)
					if err != nil {
						errc <- err
						return
					}
					if statusIn(s, inst.ID) == want {
						got <- s
						return
					}
					index = s.Index
				}
			}()
			idx, err := b.SetStatus(ctx, inst.ID, want)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-got:
				if service != "" && s.Index < idx {
					t.Fatalf("woke at index %d, before SetStatus's %d", s.Index, idx)
				}
			case err := <-errc:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatalf("blocking Instances(%q) did not return %s within 10s of SetStatus", service, want)
			}
		}
	})

	t.Run("registering UP leaves maintenance, registering OUT_OF_SERVICE enters it", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("rereg-1", "svc-rereg", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		inst.Status = registry.StatusUp
		if err := b.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "instance is UP", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
		inst.Status = registry.StatusOutOfService
		if err := b.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "instance is OUT_OF_SERVICE", hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService))
		if ids := passing(t, raw, inst.Service); len(ids) != 0 {
			t.Fatalf("passing = %v, want none", ids)
		}
	})

	t.Run("only switchyard's instances are listed, of every service", func(t *testing.T) {
		h := newHealthServer(t)
		a := h.instance("all-a", "svc-all-a", registry.StatusOutOfService)
		z := h.instance("all-z", "svc-all-z", registry.StatusOutOfService)
		z.Color, z.Version = "green", ""
		registerOut(t, b, raw, a)
		registerOut(t, b, raw, z)
		for _, foreign := range []*api.AgentServiceRegistration{
			{ID: "foreign-same-name", Name: a.Service, Port: 1},
			{ID: "foreign-other", Name: "not-switchyard", Port: 2},
		} {
			if err := raw.Agent().ServiceRegister(foreign); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, "foreign services are in the catalog", func() (bool, string) {
			svcs, _, err := raw.Catalog().Services(nil)
			_, ok := svcs["not-switchyard"]
			return err == nil && ok, fmt.Sprint(svcs)
		})
		snap, err := b.Instances(ctx, a.Service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Instances) != 1 || snap.Instances[0] != a {
			t.Fatalf("instances of %s = %+v, want only %+v", a.Service, snap.Instances, a)
		}
		all, err := b.Instances(ctx, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if all.Index == 0 {
			t.Fatal("listing all services has no index to wait on")
		}
		byID := map[string]registry.Instance{}
		for _, in := range all.Instances {
			byID[in.ID] = in
		}
		if byID[a.ID] != a || byID[z.ID] != z {
			t.Fatalf("all instances = %+v, want %+v and %+v among them", all.Instances, a, z)
		}
		for id := range byID {
			if id == "foreign-same-name" || id == "foreign-other" {
				t.Fatalf("listed %s, which switchyard did not register", id)
			}
		}
	})

	t.Run("Deregister removes the instance", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("gone-1", "svc-gone", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		if err := b.Deregister(ctx, inst.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "instance is gone", hasStatus(t, b, inst.Service, inst.ID, "absent"))
		if err := b.Heartbeat(ctx, inst.ID); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("heartbeat after deregister = %v, want ErrNotFound", err)
		}
	})

	t.Run("gateway reports round-trip and expire", func(t *testing.T) {
		gw := newConsulBackend(t, c, registry.ConsulConfig{GatewayTTL: time.Second, KVPrefix: "gw-test"})
		a := registry.GatewayReport{ID: "gw-a@127.0.0.1:8088", Applied: map[string]uint64{"hello": 42}}
		z := registry.GatewayReport{ID: "gw/z", Applied: map[string]uint64{"hello": 7, "web": 9}}
		for _, r := range []registry.GatewayReport{z, a} {
			if err := gw.ReportGateway(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := raw.KV().Put(&api.KVPair{Key: "gw-test/gateways/broken", Value: []byte("{not json")}, nil); err != nil {
			t.Fatal(err)
		}
		got, err := gw.Gateways(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != a.ID || got[1].ID != z.ID || got[0].Applied["hello"] != 42 || got[1].Applied["web"] != 9 {
			t.Fatalf("gateways = %+v, want %+v and %+v", got, a, z)
		}
		// Only z keeps reporting; a must expire.
		eventually(t, 10*time.Second, "the silent gateway expires", func() (bool, string) {
			if err := gw.ReportGateway(ctx, z); err != nil {
				return false, err.Error()
			}
			got, err := gw.Gateways(ctx)
			if err != nil {
				return false, err.Error()
			}
			return len(got) == 1 && got[0].ID == z.ID, fmt.Sprint(got)
		})
		if pair, _, _ := raw.KV().Get("gw-test/gateways/"+a.ID, nil); pair != nil {
			t.Fatalf("the expired report is still stored: %s", pair.Value)
		}
	})

	t.Run("bad input is refused with the registry's errors", func(t *testing.T) {
		h := newHealthServer(t)
		good := h.instance("bad-input-ok", "svc-bad", registry.StatusOutOfService)
		registerOut(t, b, raw, good)
		noPort := good
		noPort.Port = 0
		down := good
		down.Status = registry.StatusDown
		for _, tc := range []struct {
			desc string
			call func() error
			want error
		}{
			{"register without a port", func() error { return b.Register(ctx, noPort) }, registry.ErrInvalid},
			{"register DOWN, which the health check decides", func() error { return b.Register(ctx, down) }, registry.ErrInvalid},
			{"unknown status", func() error { _, err := b.SetStatus(ctx, good.ID, "SIDEWAYS"); return err }, registry.ErrInvalid},
			{"set STARTING", func() error { _, err := b.SetStatus(ctx, good.ID, registry.StatusStarting); return err }, registry.ErrInvalid},
			{"set status of an unknown id", func() error { _, err := b.SetStatus(ctx, "nobody", registry.StatusUp); return err }, registry.ErrNotFound},
			{"heartbeat of an unknown id", func() error { return b.Heartbeat(ctx, "nobody") }, registry.ErrNotFound},
			{"deregister an unknown id", func() error { return b.Deregister(ctx, "nobody") }, registry.ErrNotFound},
			{"report a gateway without an id", func() error { return b.ReportGateway(ctx, registry.GatewayReport{}) }, registry.ErrInvalid},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				err := tc.call()
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				t.Log(err)
			})
		}
		if err := b.Heartbeat(ctx, good.ID); err != nil {
			t.Fatalf("heartbeat of a registered instance: %v", err)
		}
	})

	t.Run("Open understands consul URLs", func(t *testing.T) {
		be, err := registry.Open(c.URL()+"?check_interval=2s&warmup=1s", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := be.Instances(ctx, "svc-none", 0, 0); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{c.URL() + "?warmup=soon", c.URL() + "?no_such=1"} {
			if _, err := registry.Open(bad, ""); err == nil {
				t.Errorf("Open(%q) accepted it", bad)
			}
		}
	})
}

// TestConsulRestart covers a Consul that comes back empty: heartbeats ask
// for a new registration, the instance comes back UP, and views are not
// Ready until the instances had time to return, so a watching gateway keeps
// its table.
func TestConsulRestart(t *testing.T) {
	c := startConsul(t)
	raw := rawConsul(t, c)
	const warmup = 2 * time.Second
	b := newConsulBackend(t, c, registry.ConsulConfig{Warmup: warmup})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	h := newHealthServer(t)
	inst := h.instance("phoenix-1", "svc-phoenix", registry.StatusOutOfService)
	registerOut(t, b, raw, inst)
	if _, err := b.SetStatus(ctx, inst.ID, registry.StatusUp); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "views are Ready", func() (bool, string) {
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		return err == nil && snap.Ready, fmt.Sprint(snap.Ready, err)
	})

	// A watch, as the gateway runs it, with a wait far longer than the test.
	var mu sync.Mutex
	var seen []registry.Snapshot
	restarted := make(chan struct{})
	back := make(chan struct{})
	go func() {
		var after bool
		for snap := range registry.Watch(ctx, b, inst.Service, registry.WatchOptions{Wait: time.Minute, Log: quietLog()}) {
			select {
			case <-restarted:
				after = true
			default:
			}
			if !after {
				continue
			}
			mu.Lock()
			seen = append(seen, snap)
			mu.Unlock()
			if snap.Ready && statusIn(snap, inst.ID) == registry.StatusUp {
				close(back)
				return
			}
		}
	}()

	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart consul: %v", err)
	}
	close(restarted)
	restartedAt := time.Now()

	snap, err := b.Instances(ctx, inst.Service, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Ready {
		t.Fatalf("right after the restart the view is Ready: %+v", snap)
	}
	if err := b.Heartbeat(ctx, inst.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("heartbeat after the restart = %v, want ErrNotFound", err)
	}
	// What the SDK does on ErrNotFound: register again with its status.
	inst.Status = registry.StatusUp
	if err := b.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "instance is UP again", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
	if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
		t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
	}
	eventually(t, warmup+5*time.Second, "views are Ready again", func() (bool, string) {
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		return err == nil && snap.Ready, fmt.Sprint(snap.Ready, err)
	})
	if since := time.Since(restartedAt); since < warmup {
		t.Fatalf("views were Ready %s after the restart, before the %s warm-up", since, warmup)
	}

	select {
	case <-back:
	case <-time.After(15 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the watch did not deliver a Ready view with the instance UP; it saw %+v", seen)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0].Ready {
		t.Fatalf("the watch's first view after the restart must not be Ready: %+v", seen)
	}
}

// TestConsulWakeLatency measures how long a blocked Instances call takes
// to return a SetStatus; it asserts nothing about time.
func TestConsulWakeLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	c := startConsul(t)
	raw := rawConsul(t, c)
	b := newConsulBackend(t, c, registry.ConsulConfig{})
	ctx := context.Background()
	h := newHealthServer(t)
	inst := h.instance("latency-1", "svc-latency", registry.StatusOutOfService)
	registerOut(t, b, raw, inst)

	var wake, set []time.Duration
	for i := range 20 {
		want := registry.StatusUp
		if i%2 == 1 {
			want = registry.StatusOutOfService
		}
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		woke := make(chan time.Time, 1)
		go func() {
			index := snap.Index
			for {
				s, err := b.Instances(ctx, inst.Service, index, 30*time.Second)
				if err != nil {
					return
				}
				if statusIn(s, inst.ID) == want {
					woke <- time.Now()
					return
				}
				index = s.Index
			}
		}()
		start := time.Now()
		if _, err := b.SetStatus(ctx, inst.ID, want); err != nil {
			t.Fatal(err)
		}
		set = append(set, time.Since(start))
		select {
		case at := <-woke:
			wake = append(wake, at.Sub(start))
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up for %s", want)
		}
	}
	t.Logf("SetStatus took %s; SetStatus start to blocked Instances returning: %s", quantiles(set), quantiles(wake))
}

func quantiles(d []time.Duration) string {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("min %s p50 %s p90 %s max %s (n=%d)", q(0), q(0.5), q(0.9), q(1), len(d))
}
