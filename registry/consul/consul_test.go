package consul_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
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
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/registry/consul"
	"github.com/switchyard/switchyard/registry/registrytest"
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

func newConsulBackend(t *testing.T, c *local.Consul, cfg consul.Config) *consul.Registry {
	t.Helper()
	cfg.Address = c.Addr()
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	b, err := consul.New(cfg)
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

func statusIn(snap registry.Snapshot, id string) registry.Status {
	for _, in := range snap.Instances {
		if in.ID == id {
			return in.Status
		}
	}
	return "absent"
}

// hasStatus polls the backend until id shows want.
func hasStatus(t *testing.T, b *consul.Registry, service, id string, want registry.Status) func() (bool, string) {
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
	testutil.EventuallyWhy(t, 10*time.Second, "health check of "+id+" passes", func() (bool, string) {
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
func registerOut(t *testing.T, b *consul.Registry, raw *api.Client, inst registry.Instance) {
	t.Helper()
	if err := b.Register(context.Background(), inst); err != nil {
		t.Fatalf("register %s: %v", inst.ID, err)
	}
	checkPassed(t, raw, inst.ID)
	testutil.EventuallyWhy(t, 10*time.Second, inst.ID+" is listed OUT_OF_SERVICE", hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService))
}

func TestConsul(t *testing.T) {
	c := startConsul(t)
	raw := rawConsul(t, c)
	b := newConsulBackend(t, c, consul.Config{})
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

	t.Run("the switch that took an instance out reads back from its maintenance; UP names none", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("switch-1", "svc-switch", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		// Read through both views: a service's, as per-service watches
		// read it, and all services', as a gateway's one watch does.
		switchIs := func(want int64) {
			t.Helper()
			for _, svc := range []string{inst.Service, ""} {
				snap, err := b.Instances(ctx, svc, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, in := range snap.Instances {
					if in.ID != inst.ID {
						continue
					}
					found = true
					if in.Switch != want {
						t.Fatalf("view of %q: %s reads switch %d, want %d", svc, in.Status, in.Switch, want)
					}
				}
				if !found {
					t.Fatalf("view of %q lacks %s", svc, inst.ID)
				}
			}
		}
		switchIs(0)
		if _, err := b.SetStatus(registry.WithSwitch(ctx, 6), inst.ID, registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		switchIs(0) // maintenance off leaves nothing to carry it
		if _, err := b.SetStatus(registry.WithSwitch(ctx, 7), inst.ID, registry.StatusOutOfService); err != nil {
			t.Fatal(err)
		}
		switchIs(7)
		// Already out: nothing changes, the label included.
		if _, err := b.SetStatus(registry.WithSwitch(ctx, 8), inst.ID, registry.StatusOutOfService); err != nil {
			t.Fatal(err)
		}
		switchIs(7)
		// A registration replaces the label with its own.
		again := inst
		again.Switch = 9
		registerOut(t, b, raw, again)
		switchIs(9)
		// Maintenance that someone else turned on names no switch.
		if err := raw.Agent().DisableServiceMaintenance(inst.ID); err != nil {
			t.Fatal(err)
		}
		if err := raw.Agent().EnableServiceMaintenance(inst.ID, "switchyard: OUT_OF_SERVICE (switch 09)"); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, "the hand-made maintenance to show", func() (bool, string) {
			snap, err := b.Instances(ctx, inst.Service, 0, 0)
			if err != nil {
				return false, err.Error()
			}
			for _, in := range snap.Instances {
				if in.ID == inst.ID {
					return in.Status == registry.StatusOutOfService && in.Switch == 0, fmt.Sprintf("%s switch %d", in.Status, in.Switch)
				}
			}
			return false, "absent"
		})
	})

	t.Run("a failing health endpoint makes the instance DOWN until it recovers", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("flaky-1", "svc-flaky", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		if _, err := b.SetStatus(ctx, inst.ID, registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		h.code.Store(http.StatusServiceUnavailable)
		testutil.EventuallyWhy(t, 10*time.Second, "instance goes DOWN", hasStatus(t, b, inst.Service, inst.ID, registry.StatusDown))
		if ids := passing(t, raw, inst.Service); len(ids) != 0 {
			t.Fatalf("passing = %v, want none while the endpoint answers 503", ids)
		}
		h.code.Store(http.StatusOK)
		testutil.EventuallyWhy(t, 10*time.Second, "instance is UP again", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
		if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
			t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
		}
	})

	t.Run("SetStatus UP fails and leaves the instance out while its check fails", func(t *testing.T) {
		h := newHealthServer(t)
		inst := h.instance("sick-1", "svc-sick", registry.StatusOutOfService)
		registerOut(t, b, raw, inst)
		h.code.Store(http.StatusServiceUnavailable)
		waitCritical(t, raw, inst.ID)
		fast := newConsulBackend(t, c, consul.Config{StatusTimeout: 1500 * time.Millisecond})
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

	t.Run("an UP that fails puts back the maintenance the registering backend left", func(t *testing.T) {
		// The backend that registered the instance knows it is in
		// maintenance without asking the agent; it must still restore it.
		own := newConsulBackend(t, c, consul.Config{StatusTimeout: 1500 * time.Millisecond})
		h := newHealthServer(t)
		inst := h.instance("sick-own-1", "svc-sick-own", registry.StatusOutOfService)
		registerOut(t, own, raw, inst)
		h.code.Store(http.StatusServiceUnavailable)
		waitCritical(t, raw, inst.ID)
		if _, err := own.SetStatus(ctx, inst.ID, registry.StatusUp); err == nil {
			t.Fatal("SetStatus UP succeeded for an instance whose health check fails")
		}
		if ok, st := hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService)(); !ok {
			t.Fatalf("after the failed SetStatus the instance is %s, want OUT_OF_SERVICE", st)
		}
		// Healthy again, the same backend brings it UP and out again.
		h.code.Store(http.StatusOK)
		checkPassed(t, raw, inst.ID)
		up, err := own.SetStatus(ctx, inst.ID, registry.StatusUp)
		if err != nil {
			t.Fatal(err)
		}
		if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
			t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
		}
		out, err := own.SetStatus(ctx, inst.ID, registry.StatusOutOfService)
		if err != nil || out <= up {
			t.Fatalf("OUT_OF_SERVICE at index %d (%v), want after UP at %d", out, err, up)
		}
	})

	t.Run("SetStatus finds an instance registered again under another service", func(t *testing.T) {
		h := newHealthServer(t)
		first := h.instance("moved-1", "svc-moved-a", registry.StatusOutOfService)
		registerOut(t, b, raw, first)
		// Another process registers the same id under another name.
		other := newConsulBackend(t, c, consul.Config{})
		moved := first
		moved.Service = "svc-moved-b"
		registerOut(t, other, raw, moved)
		if _, err := b.SetStatus(ctx, moved.ID, registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		idx, err := b.SetStatus(ctx, moved.ID, registry.StatusOutOfService)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := b.Instances(ctx, moved.Service, 0, 0)
		if err != nil || snap.Index < idx || statusIn(snap, moved.ID) != registry.StatusOutOfService {
			t.Fatalf("%s after SetStatus returned %d: index %d, status %s, %v", moved.Service, idx, snap.Index, statusIn(snap, moved.ID), err)
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
		testutil.EventuallyWhy(t, 10*time.Second, "instance is UP", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
		inst.Status = registry.StatusOutOfService
		if err := b.Register(ctx, inst); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, "instance is OUT_OF_SERVICE", hasStatus(t, b, inst.Service, inst.ID, registry.StatusOutOfService))
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
		testutil.EventuallyWhy(t, 10*time.Second, "foreign services are in the catalog", func() (bool, string) {
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
		testutil.EventuallyWhy(t, 10*time.Second, "instance is gone", hasStatus(t, b, inst.Service, inst.ID, "absent"))
		if err := b.Heartbeat(ctx, inst.ID); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("heartbeat after deregister = %v, want ErrNotFound", err)
		}
	})

	t.Run("gateway reports round-trip and expire", func(t *testing.T) {
		gw := newConsulBackend(t, c, consul.Config{GatewayTTL: time.Second, KVPrefix: "gw-test"})
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
		testutil.EventuallyWhy(t, 10*time.Second, "the silent gateway expires", func() (bool, string) {
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

	t.Run("a report wakes a blocking query on the reports", func(t *testing.T) {
		registrytest.AReportWakesABlockingQuery(t, newConsulBackend(t, c, consul.Config{KVPrefix: "gw-watch"}), nil)
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
			{"take an unknown id out", func() error { _, err := b.SetStatus(ctx, "nobody", registry.StatusOutOfService); return err }, registry.ErrNotFound},
			{"set status of an id no instance can have", func() error { _, err := b.SetStatus(ctx, `a" or "1"=="1`, registry.StatusUp); return err }, registry.ErrInvalid},
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
		be, err := backends.Open(c.URL()+"?check_interval=2s&warmup=1s", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := be.Instances(ctx, "svc-none", 0, 0); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{c.URL() + "?warmup=soon", c.URL() + "?no_such=1"} {
			if _, err := backends.Open(bad, ""); err == nil {
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
	b := newConsulBackend(t, c, consul.Config{Warmup: warmup})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	h := newHealthServer(t)
	inst := h.instance("phoenix-1", "svc-phoenix", registry.StatusOutOfService)
	registerOut(t, b, raw, inst)
	if _, err := b.SetStatus(ctx, inst.ID, registry.StatusUp); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWhy(t, 10*time.Second, "views are Ready", func() (bool, string) {
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

	// The watch may notice the lost data, and start the warm-up, while
	// Restart is still waiting for the new agent's leader: the warm-up can
	// end no sooner than a warm-up after the restart began.
	restartBegan := time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart consul: %v", err)
	}
	close(restarted)

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
	testutil.EventuallyWhy(t, 10*time.Second, "instance is UP again", hasStatus(t, b, inst.Service, inst.ID, registry.StatusUp))
	if ids := passing(t, raw, inst.Service); !slices.Equal(ids, []string{inst.ID}) {
		t.Fatalf("passing = %v, want [%s]", ids, inst.ID)
	}
	testutil.EventuallyWhy(t, warmup+5*time.Second, "views are Ready again", func() (bool, string) {
		snap, err := b.Instances(ctx, inst.Service, 0, 0)
		return err == nil && snap.Ready, fmt.Sprint(snap.Ready, err)
	})
	if since := time.Since(restartBegan); since < warmup {
		t.Fatalf("views were Ready %s after the restart began, before the %s warm-up", since, warmup)
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

// consulProxy forwards to Consul and counts the blocking queries it has
// written to it, so a test knows a query waits in Consul before it changes
// something.
type consulProxy struct {
	addr     string
	blocked  atomic.Int64
	lastWait atomic.Int64 // the wait the last blocking query asked for

	mu    sync.Mutex
	paths map[string]int // GETs forwarded, by path
}

// reads tells how many GETs of path the proxy forwarded since the last
// call for path, and starts counting it again.
func (p *consulProxy) reads(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.paths[path]
	delete(p.paths, path)
	return n
}

func newConsulProxy(t *testing.T, c *local.Consul) *consulProxy {
	t.Helper()
	target, err := url.Parse("http://" + c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p := &consulProxy{paths: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			p.mu.Lock()
			p.paths[r.URL.Path]++
			p.mu.Unlock()
		}
		if q := r.URL.Query(); q.Has("index") {
			wait, _ := time.ParseDuration(q.Get("wait"))
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
				p.lastWait.Store(int64(wait))
				p.blocked.Add(1)
			}}
			r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// TestConsulWakeLatency shows that a blocking Instances call with a long
// wait returns because of a SetStatus, not because its wait ran out: the
// call is in Consul before the change, and it returns the change at a new
// index in far less than its wait. It logs how long that took; how fast is
// for benchmarks, not asserted here.
func TestConsulWakeLatency(t *testing.T) {
	c := startConsul(t)
	raw := rawConsul(t, c)
	b := newConsulBackend(t, c, consul.Config{})
	// The watcher reads through a proxy that tells when its query is sent.
	proxy := newConsulProxy(t, c)
	w, err := consul.New(consul.Config{Address: proxy.addr, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h := newHealthServer(t)
	inst := h.instance("latency-1", "svc-latency", registry.StatusOutOfService)
	registerOut(t, b, raw, inst)
	// Until the view is Ready a blocking query waits no longer than the
	// warm-up; the queries below must wait the full 30s.
	testutil.EventuallyWhy(t, 10*time.Second, "the watcher's view to be Ready", func() (bool, string) {
		snap, err := w.Instances(ctx, inst.Service, 0, 0)
		return err == nil && snap.Ready, fmt.Sprint(snap.Ready, err)
	})

	const wait = 30 * time.Second
	type woke struct {
		snap  registry.Snapshot
		index uint64 // the index the returning call waited on
		at    time.Time
	}
	var wake, set []time.Duration
	for i := range 20 {
		want := registry.StatusUp
		if i%2 == 1 {
			want = registry.StatusOutOfService
		}
		snap, err := w.Instances(ctx, inst.Service, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		sent := proxy.blocked.Load()
		got := make(chan woke, 1)
		errc := make(chan error, 1)
		go func() {
			// Anything else changing wakes the call too: keep waiting
			// until the change shows.
			index := snap.Index
			for {
				s, err := w.Instances(ctx, inst.Service, index, wait)
				if err != nil {
					errc <- err
					return
				}
				if statusIn(s, inst.ID) == want {
					got <- woke{snap: s, index: index, at: time.Now()}
					return
				}
				index = s.Index
			}
		}()
		testutil.Eventually(t, 10*time.Second, "the blocking query to reach consul", func() bool { return proxy.blocked.Load() > sent })
		if d := time.Duration(proxy.lastWait.Load()); d < wait {
			t.Fatalf("the blocking query asked Consul to wait %s, not %s", d, wait)
		}
		start := time.Now()
		if _, err := b.SetStatus(ctx, inst.ID, want); err != nil {
			t.Fatal(err)
		}
		set = append(set, time.Since(start))
		select {
		case r := <-got:
			took := r.at.Sub(start)
			if r.snap.Index <= r.index {
				t.Fatalf("the blocked query returned %s at index %d, not past the %d it waited on", want, r.snap.Index, r.index)
			}
			if took >= wait/3 {
				t.Fatalf("the blocked query returned %s %s after SetStatus began, with a wait of %s: it ran out its wait instead of waking on the change", want, took, wait)
			}
			wake = append(wake, took)
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(2 * wait):
			t.Fatalf("the blocked query did not return %s within twice its %s wait", want, wait)
		}
	}
	t.Logf("SetStatus took %s; SetStatus start to blocked Instances returning: %s", quantiles(set), quantiles(wake))
}

func quantiles(d []time.Duration) string {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("min %s p50 %s p90 %s max %s (n=%d)", q(0), q(0.5), q(0.9), q(1), len(d))
}

// waitCritical waits until the agent has id's health check critical.
func waitCritical(t *testing.T, raw *api.Client, id string) {
	t.Helper()
	testutil.EventuallyWhy(t, 10*time.Second, "check goes critical", func() (bool, string) {
		checks, _ := raw.Agent().Checks()
		if ch, ok := checks["service:"+id]; ok {
			return ch.Status == api.HealthCritical, ch.Status
		}
		return false, "no check"
	})
}

// TestConsulViewOfAllReadsOnlyWhatChanged shows that a view of all
// services reads a service's instances again only when its checks, or its
// node's, changed: one service's change costs the checks and that
// service's read, not a read of every service.
func TestConsulViewOfAllReadsOnlyWhatChanged(t *testing.T) {
	c := startConsul(t)
	raw := rawConsul(t, c)
	p := newConsulProxy(t, c)
	b, err := consul.New(consul.Config{Address: p.addr, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := newHealthServer(t)
	a := h.instance("view-a", "svc-view-a", registry.StatusOutOfService)
	z := h.instance("view-z", "svc-view-z", registry.StatusOutOfService)
	registerOut(t, b, raw, a)
	registerOut(t, b, raw, z)
	// The agent syncs a check's first passing result to the catalog a
	// moment after its own state shows it: until both did, their checks
	// may still change.
	for _, inst := range []registry.Instance{a, z} {
		testutil.EventuallyWhy(t, 10*time.Second, "the catalog has "+inst.ID+"'s check passing", func() (bool, string) {
			checks, _, err := raw.Health().Checks(inst.Service, nil)
			if err != nil {
				return false, err.Error()
			}
			for _, ch := range checks {
				if ch.CheckID == "service:"+inst.ID {
					return ch.Status == api.HealthPassing, ch.Status
				}
			}
			return false, "no check"
		})
	}
	const pathA, pathZ = "/v1/health/service/svc-view-a", "/v1/health/service/svc-view-z"
	// all reads the view of all services and checks what it shows of a and z.
	all := func(t *testing.T, wantA, wantZ registry.Status) {
		t.Helper()
		snap, err := b.Instances(ctx, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ga, gz := statusIn(snap, a.ID), statusIn(snap, z.ID); ga != wantA || gz != wantZ {
			t.Fatalf("view of all: %s is %s and %s is %s, want %s and %s", a.ID, ga, z.ID, gz, wantA, wantZ)
		}
	}
	all(t, registry.StatusOutOfService, registry.StatusOutOfService)
	p.reads(pathA)
	p.reads(pathZ)

	t.Run("nothing changed: no service is read again", func(t *testing.T) {
		all(t, registry.StatusOutOfService, registry.StatusOutOfService)
		if n, m := p.reads(pathA), p.reads(pathZ); n+m != 0 {
			t.Fatalf("read %s %d times and %s %d times, want neither", pathA, n, pathZ, m)
		}
	})
	t.Run("one service's status changed: only it is read again", func(t *testing.T) {
		if _, err := b.SetStatus(ctx, a.ID, registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		p.reads(pathA)
		all(t, registry.StatusUp, registry.StatusOutOfService)
		if n, m := p.reads(pathA), p.reads(pathZ); n != 1 || m != 0 {
			t.Fatalf("read %s %d times and %s %d times, want once and never", pathA, n, pathZ, m)
		}
	})
	t.Run("the node's maintenance takes every service out, and back", func(t *testing.T) {
		if err := raw.Agent().EnableNodeMaintenance("test"); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, "the node's maintenance shows in the view of all", func() (bool, string) {
			snap, err := b.Instances(ctx, "", 0, 0)
			if err != nil {
				return false, err.Error()
			}
			return statusIn(snap, a.ID) == registry.StatusOutOfService, string(statusIn(snap, a.ID))
		})
		if err := raw.Agent().DisableNodeMaintenance(); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, "the node's maintenance ends in the view of all", func() (bool, string) {
			snap, err := b.Instances(ctx, "", 0, 0)
			if err != nil {
				return false, err.Error()
			}
			return statusIn(snap, a.ID) == registry.StatusUp, string(statusIn(snap, a.ID))
		})
		all(t, registry.StatusUp, registry.StatusOutOfService)
	})
	t.Run("a registration again on another port is read again", func(t *testing.T) {
		// The same health check (its control port stays), which the agent
		// carries over with its status: only the registration changed.
		moved := a
		moved.Status, moved.ControlPort, moved.Port = registry.StatusUp, h.port, h.port+1
		if err := b.Register(ctx, moved); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, "the view of all shows the new port", func() (bool, string) {
			snap, err := b.Instances(ctx, "", 0, 0)
			if err != nil {
				return false, err.Error()
			}
			for _, in := range snap.Instances {
				if in.ID == a.ID {
					return in.Port == moved.Port && in.Status == registry.StatusUp, fmt.Sprintf("port %d, %s", in.Port, in.Status)
				}
			}
			return false, "absent"
		})
	})
	t.Run("a deregistered service leaves the view", func(t *testing.T) {
		if err := b.Deregister(ctx, z.ID); err != nil {
			t.Fatal(err)
		}
		testutil.EventuallyWhy(t, 10*time.Second, z.ID+" leaves the view of all", func() (bool, string) {
			snap, err := b.Instances(ctx, "", 0, 0)
			if err != nil {
				return false, err.Error()
			}
			return statusIn(snap, z.ID) == "absent", string(statusIn(snap, z.ID))
		})
		all(t, registry.StatusUp, "absent")
	})
}
