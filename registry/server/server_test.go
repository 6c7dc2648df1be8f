package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/registrytest"
	"github.com/switchyard/switchyard/registry/server"
)

func serve(t *testing.T, token string) string {
	t.Helper()
	srv, err := server.New(server.Config{Token: token, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func TestServerRefusesWritesWithoutTheToken(t *testing.T) {
	url := serve(t, "secret")
	ctx := context.Background()
	good := registry.NewClient(url, "secret")
	inst := registry.Instance{ID: "a", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}
	if err := good.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc  string
		token string
		read  bool // may read and report, not change instances
	}{
		{desc: "a wrong token", token: "guess"},
		{desc: "no token", token: ""},
		{desc: "the token with a suffix", token: "secretX"},
		{desc: "the read token, which may not change instances", token: registry.ReadToken("secret"), read: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bad := registry.NewClient(url, tc.token)
			if _, err := bad.SetStatus(ctx, "a", registry.StatusUp); !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("SetStatus err = %v, want ErrUnauthorized", err)
			}
			if err := bad.Deregister(ctx, "a"); !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("Deregister err = %v, want ErrUnauthorized", err)
			}
			if err := bad.Register(ctx, registry.Instance{ID: "x", Service: "hello", Color: "green", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("Register err = %v, want ErrUnauthorized", err)
			}
			if tc.read {
				if _, err := bad.Instances(ctx, "hello", 0, 0); err != nil {
					t.Errorf("the read token cannot read: %v", err)
				}
				return
			}
			if _, err := bad.Instances(ctx, "hello", 0, 0); !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("Instances err = %v, want ErrUnauthorized: reads are authenticated", err)
			}
			if err := bad.ReportGateway(ctx, registry.GatewayReport{ID: "g", Applied: map[string]uint64{"hello": 1 << 62}}); !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("ReportGateway err = %v, want ErrUnauthorized", err)
			}
		})
	}
	snap, err := good.Instances(ctx, "hello", 0, 0)
	if err != nil || len(snap.Instances) != 1 || snap.Instances[0].Status != registry.StatusOutOfService {
		t.Fatalf("after refused writes: %+v, %v", snap, err)
	}
	if gws, _ := good.Gateways(ctx); len(gws) != 0 {
		t.Fatalf("a refused gateway report was stored: %+v", gws)
	}
}

func TestServerAnswersBadRequestsClearly(t *testing.T) {
	url := serve(t, "secret")
	for _, tc := range []struct {
		desc, method, path, body string
		want                     int
		wantText                 string
	}{
		{desc: "malformed JSON", method: "PUT", path: "/v1/instances/a", body: "{", want: 400, wantText: "malformed JSON"},
		{desc: "unknown field", method: "PUT", path: "/v1/instances/a", body: `{"id":"a","colour":"blue"}`, want: 400, wantText: "unknown field"},
		{desc: "id differs from the path", method: "PUT", path: "/v1/instances/a", body: `{"id":"b","service":"s","address":"h","port":1,"status":"UP"}`, want: 400, wantText: "differs"},
		{desc: "unknown status", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"blue","address":"h","port":1,"status":"HAPPY"}`, want: 400, wantText: "unknown status"},
		{desc: "two JSON documents", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"blue","address":"h","port":1,"status":"UP"}{}`, want: 400, wantText: "trailing data"},
		{desc: "an oversized address", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"blue","address":"` + strings.Repeat("a", 900) + `","port":1,"status":"UP"}`, want: 400, wantText: "address"},
		{desc: "an address that is not a host", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"blue","address":"h/../x","port":1,"status":"UP"}`, want: 400, wantText: "address"},
		{desc: "a service name with a slash", method: "PUT", path: "/v1/instances/a", body: `{"service":"s/t","color":"blue","address":"h","port":1,"status":"UP"}`, want: 400, wantText: "service"},
		{desc: "a color that is neither blue nor green", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"purple","address":"h","port":1,"status":"UP"}`, want: 400, wantText: "color"},
		{desc: "a version with control characters", method: "PUT", path: "/v1/instances/a", body: `{"service":"s","color":"blue","address":"h","port":1,"status":"UP","version":"v1\u0000"}`, want: 400, wantText: "version"},
		{desc: "status of an unknown instance", method: "PUT", path: "/v1/instances/zz/status", body: `{"status":"UP"}`, want: 404, wantText: "not found"},
		{desc: "bad index", method: "GET", path: "/v1/instances?index=x", want: 400, wantText: "index"},
		{desc: "bad wait", method: "GET", path: "/v1/instances?index=1&wait=forever", want: 400, wantText: "wait"},
		{desc: "bad since", method: "GET", path: "/v1/instances?since=-1", want: 400, wantText: "since"},
		{desc: "since with a service", method: "GET", path: "/v1/instances?since=1&service=s", want: 400, wantText: "no service"},
		{desc: "oversized body", method: "PUT", path: "/v1/instances/a", body: `{"id":"` + strings.Repeat("a", 2<<20) + `"}`, want: 413},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer secret")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			buf := new(strings.Builder)
			_, _ = io.Copy(buf, resp.Body)
			if resp.StatusCode != tc.want || !strings.Contains(buf.String(), tc.wantText) {
				t.Fatalf("%s %s: %d %s; want %d with %q", tc.method, tc.path, resp.StatusCode, buf, tc.want, tc.wantText)
			}
		})
	}
	snap, err := registry.NewClient(url, registry.ReadToken("secret")).Instances(context.Background(), "", 0, 0)
	if err != nil || len(snap.Instances) != 0 {
		t.Fatalf("bad requests changed the registry: %+v %v", snap, err)
	}
}

func TestWatchSeesChangesAndSkipsUnchanged(t *testing.T) {
	url := serve(t, "secret")
	c := registry.NewClient(url, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst := registry.Instance{ID: "a", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}
	if err := c.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	l := &countingLister{Lister: c}
	ch := registry.Watch(ctx, l, "hello", registry.WatchOptions{Wait: 200 * time.Millisecond})
	first := <-ch
	if len(first.Instances) != 1 || first.Instances[0].Status != registry.StatusOutOfService {
		t.Fatalf("first snapshot %+v", first)
	}
	if _, err := c.SetStatus(ctx, "a", registry.StatusUp); err != nil {
		t.Fatal(err)
	}
	select {
	case snap := <-ch:
		if snap.Instances[0].Status != registry.StatusUp || snap.Index <= first.Index {
			t.Fatalf("second snapshot %+v", snap)
		}
	case <-ctx.Done():
		t.Fatal("the watch missed a change")
	}
	// Blocking queries time out every 200ms with nothing new: none may be
	// sent. Three more queries started mean at least two came back
	// unchanged and were handled.
	asked := l.calls.Load()
	testutil.Eventually(t, 10*time.Second, "the watch to ask three more times", func() bool { return l.calls.Load() >= asked+3 })
	select {
	case snap := <-ch:
		t.Fatalf("the watch sent an unchanged snapshot %+v", snap)
	default:
	}
}

// countingLister counts the queries a watch starts.
type countingLister struct {
	registry.Lister
	calls atomic.Int64
}

func (l *countingLister) Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error) {
	l.calls.Add(1)
	return l.Lister.Instances(ctx, service, waitIndex, wait)
}

func TestMetricsShowInstancesByStatus(t *testing.T) {
	url := serve(t, "secret")
	c := registry.NewClient(url, "secret")
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := c.Register(ctx, registry.Instance{ID: id, Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := c.SetStatus(ctx, "a", registry.StatusUp)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReportGateway(ctx, registry.GatewayReport{ID: "gw1", Applied: map[string]uint64{"hello": 7}}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`switchyard_registry_instances{color="blue",service="hello",status="UP"} 1`,
		`switchyard_registry_instances{color="blue",service="hello",status="OUT_OF_SERVICE"} 1`,
		`switchyard_registry_evictions_total 0`,
		`switchyard_registry_leases{kind="instance"} 2`,
		`switchyard_registry_leases{kind="gateway"} 1`,
		`switchyard_registry_service_index{service="hello"} ` + strconv.FormatFloat(float64(idx), 'g', -1, 64) + "\n",
		`switchyard_registry_waiters_max `,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestKeyRotationWithoutDowntime(t *testing.T) {
	ctx := context.Background()
	inst := registry.Instance{ID: "a", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}
	// Step 1: the registry accepts both keys; an instance still on the old
	// key and one already on "new,old" both work, and so do both read tokens.
	during := serve(t, "new-key-0123456789,old-key-0123456789")
	for _, token := range []string{"old-key-0123456789", "new-key-0123456789,old-key-0123456789"} {
		if err := registry.NewClient(during, token).Register(ctx, inst); err != nil {
			t.Errorf("with %q during the rotation: %v", token, err)
		}
		if _, err := registry.NewClient(during, registry.ReadToken(token)).Instances(ctx, "", 0, 0); err != nil {
			t.Errorf("read token of %q during the rotation: %v", token, err)
		}
	}
	// Step 2: the registry keeps only the new key; a client holding
	// "new,old" sends the new one, and the old key alone is refused.
	after := serve(t, "new-key-0123456789")
	if err := registry.NewClient(after, "new-key-0123456789,old-key-0123456789").Register(ctx, inst); err != nil {
		t.Errorf("a client on new,old after the rotation: %v", err)
	}
	if err := registry.NewClient(after, "old-key-0123456789").Register(ctx, inst); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("the retired key: %v, want ErrUnauthorized", err)
	}
}

func TestAnInstanceTokenActsForItsOwnInstanceOnly(t *testing.T) {
	url := serve(t, "secret")
	ctx := context.Background()
	admin := registry.NewClient(url, "secret")
	other := registry.Instance{ID: "b", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 10, Status: registry.StatusUp}
	if err := admin.Register(ctx, other); err != nil {
		t.Fatal(err)
	}
	a := registry.NewClient(url, registry.InstanceToken("secret", "a"))
	if err := a.Register(ctx, registry.Instance{ID: "a", Service: "hello", Color: "green", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}); err != nil {
		t.Fatalf("instance a registering itself: %v", err)
	}
	if _, err := a.SetStatus(ctx, "a", registry.StatusUp); err != nil {
		t.Fatalf("instance a setting its own status: %v", err)
	}
	if _, err := a.SetStatus(ctx, "b", registry.StatusOutOfService); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("instance a setting b's status: %v, want ErrUnauthorized", err)
	}
	if err := a.Deregister(ctx, "b"); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("instance a deregistering b: %v, want ErrUnauthorized", err)
	}
	if err := a.ReportGateway(ctx, registry.GatewayReport{ID: "g", Applied: map[string]uint64{"hello": 1 << 62}}); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("instance a faking a gateway report: %v, want ErrUnauthorized", err)
	}
	if _, err := a.Gateways(ctx); err != nil {
		t.Errorf("instance a reading the gateways (its drain needs it): %v", err)
	}
	forged := registry.NewClient(url, "instance.b.0000000000000000000000000000000000000000000000000000000000000000")
	if _, err := forged.SetStatus(ctx, "b", registry.StatusOutOfService); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("a forged instance token: %v, want ErrUnauthorized", err)
	}
	snap, err := admin.Instances(ctx, "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range snap.Instances {
		if in.ID == "b" && in.Status != registry.StatusUp {
			t.Errorf("b is %s after refused writes", in.Status)
		}
	}
}

func TestAGatewayRoutingTenThousandServicesCanReport(t *testing.T) {
	base := serve(t, "secret")
	c := registry.NewClient(base, registry.ReadToken("secret"))
	r := registry.GatewayReport{ID: "gw-big", Applied: map[string]uint64{}}
	for i := range 10000 {
		r.Applied[fmt.Sprintf("service-%05d", i)] = uint64(1_000_000 + i)
	}
	if err := c.ReportGateway(context.Background(), r); err != nil {
		t.Fatalf("a report of 10,000 services (%d services' worth of JSON over 64 KiB) was refused: %v", len(r.Applied), err)
	}
	gws, err := c.Gateways(context.Background())
	if err != nil || len(gws) != 1 || len(gws[0].Applied) != 10000 {
		t.Fatalf("gateways = %d reports, %v; want the one with 10,000 services", len(gws), err)
	}
}

// A controller waiting for gateways to confirm a change holds a blocking
// query on their reports: it returns when a report lands, not before, and
// not on an instance's change, which moves the instances' index only.
func TestAGatewayReportWakesABlockingQueryOnTheReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := serve(t, "secret")
	registrytest.AReportWakesABlockingQuery(t, registry.NewClient(base, registry.ReadToken("secret")), func() {
		err := registry.NewClient(base, "secret").Register(ctx, registry.Instance{ID: "a", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9000, Status: registry.StatusUp})
		if err != nil {
			t.Fatal(err)
		}
	})
	// A malformed index or wait is refused, as on the instances.
	for _, q := range []string{"index=x", "index=1&wait=-1s"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/gateways?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+registry.ReadToken("secret"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/gateways?%s answered %s, want 400", q, resp.Status)
		}
	}
}

func TestStatusChangesCarryTheirSwitchOverHTTP(t *testing.T) {
	log := logrus.New()
	log.Out = io.Discard
	hook := logtest.NewLocal(log)
	srv, err := server.New(server.Config{Token: "secret", LeaseTTL: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// The bodies and switch headers of status writes as they arrive, to
	// see what the client puts on the wire.
	var mu sync.Mutex
	var bodies []string
	tap := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/status") {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b)+" "+registry.SwitchHeader+":"+r.Header.Get(registry.SwitchHeader))
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		srv.Handler().ServeHTTP(w, r)
	})
	hs := httptest.NewServer(tap)
	defer hs.Close()
	c := registry.NewClient(hs.URL, "secret")
	ctx := context.Background()
	if err := c.Register(ctx, registry.Instance{ID: "a", Service: "hello", Color: "green", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}); err != nil {
		t.Fatal(err)
	}
	read := func() registry.Instance {
		t.Helper()
		snap, err := c.Instances(ctx, "hello", 0, 0)
		if err != nil || len(snap.Instances) != 1 {
			t.Fatalf("instances = %+v, %v", snap.Instances, err)
		}
		return snap.Instances[0]
	}

	t.Run("an UP for switch 7 records switch 7 and the registry's line names it", func(t *testing.T) {
		if _, err := c.SetStatus(registry.WithSwitch(ctx, 7), "a", registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		if in := read(); in.Status != registry.StatusUp || in.Switch != 7 {
			t.Fatalf("instance = %+v, want UP for switch 7", in)
		}
		last := hook.LastEntry()
		if last == nil || last.Message != "status changed" || last.Data["switch"] != int64(7) {
			t.Fatalf("last registry line = %+v, want status changed with switch 7", last)
		}
	})
	t.Run("the same status for another switch keeps the switch that moved it", func(t *testing.T) {
		if _, err := c.SetStatus(registry.WithSwitch(ctx, 8), "a", registry.StatusUp); err != nil {
			t.Fatal(err)
		}
		if in := read(); in.Switch != 7 {
			t.Fatalf("switch = %d, want 7 still", in.Switch)
		}
	})
	t.Run("a change without a switch sends none and leaves none named", func(t *testing.T) {
		if _, err := c.SetStatus(ctx, "a", registry.StatusOutOfService); err != nil {
			t.Fatal(err)
		}
		if in := read(); in.Status != registry.StatusOutOfService || in.Switch != 0 {
			t.Fatalf("instance = %+v, want OUT_OF_SERVICE without a switch", in)
		}
		mu.Lock()
		defer mu.Unlock()
		// The body is always what registries before the label accept, so
		// a newer client still talks to them: the switch is in a header,
		// which they ignore.
		want := []string{`{"status":"UP"} Switchyard-Switch:7`, `{"status":"UP"} Switchyard-Switch:8`, `{"status":"OUT_OF_SERVICE"} Switchyard-Switch:`}
		if strings.Join(bodies, " ") != strings.Join(want, " ") {
			t.Fatalf("bodies sent = %q, want %q", bodies, want)
		}
		if _, ok := hook.LastEntry().Data["switch"]; ok {
			t.Fatalf("the registry's line names a switch no request named: %+v", hook.LastEntry().Data)
		}
	})
	for _, bad := range []struct{ header, body string }{
		{"-1", `{"status":"UP"}`}, {"0", `{"status":"UP"}`}, {"7x", `{"status":"UP"}`}, {"9223372036854775808", `{"status":"UP"}`},
		{"", `{"status":"UP","switch":7}`},
	} {
		body := bad.body
		t.Run("a bad switch is a 400 that changes nothing: "+bad.header+" "+body, func(t *testing.T) {
			before, err := c.Instances(ctx, "hello", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPut, hs.URL+"/v1/instances/a/status", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer secret")
			if bad.header != "" {
				req.Header.Set(registry.SwitchHeader, bad.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), `"error"`) {
				t.Fatalf("%s: %d %s, want 400 with an error", body, resp.StatusCode, msg)
			}
			after, err := c.Instances(ctx, "hello", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if after.Index != before.Index || after.Instances[0] != before.Instances[0] {
				t.Fatalf("%s changed the registry: %+v -> %+v", body, before, after)
			}
		})
	}
}
