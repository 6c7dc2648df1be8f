package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
	"github.com/switchyard/switchyard/signing"
)

type env struct {
	zk  *local.ZooKeeper
	reg *registry.Client
	url string
}

func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	sctx, stop := context.WithCancel(context.Background())
	url, done, err := local.ServeRegistry(sctx, server.Config{Token: "secret", LeaseTTL: time.Minute})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); <-done })
	return &env{zk: z, reg: registry.NewClient(url, "secret"), url: url}
}

// startInstance runs a hello-like handler wrapped by the SDK.
func (e *env) startInstance(t *testing.T, zkAddr string, tweaks ...func(*sdk.Config)) (*sdk.Instance, *httptest.Server) {
	t.Helper()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hi") })
	ts := httptest.NewUnstartedServer(nil)
	addr := ts.Listener.Addr().(*net.TCPAddr)
	cfg := sdk.Config{
		Service: "hello", Color: "green", Address: "127.0.0.1", Port: addr.Port,
		ZK: []string{zkAddr}, ZKSessionTimeout: 2 * time.Second, Registry: e.reg, Token: key,
		HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	inst, err := sdk.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = inst.Handler(app)
	ts.Start()
	if err := inst.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = inst.Shutdown(ctx, ts.Config)
		ts.Close()
	})
	return inst, ts
}

func status(t *testing.T, reg *registry.Client, id string) registry.Status {
	t.Helper()
	snap, err := reg.Instances(context.Background(), "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range snap.Instances {
		if in.ID == id {
			return in.Status
		}
	}
	return ""
}

// key signs the controller's instructions in these tests.
const key = "instruction-key-0123456789"

// instruction is one PUT /_switchyard/status as a controller (or an
// attacker) would send it.
type instruction struct {
	key     string // the shared token the signing key derives from; "" sends no signature
	keyFor  string // the instance whose key signs; default subject
	bearer  string // sent as a bearer token instead
	subject string // the instance the signature names
	epoch   int64
	body    string
}

func (in instruction) request(t *testing.T, base string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, base+sdk.StatusPath, strings.NewReader(in.body))
	if err != nil {
		t.Fatal(err)
	}
	if in.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+in.bearer)
	}
	if in.key != "" {
		whose := in.keyFor
		if whose == "" {
			whose = in.subject
		}
		keys, err := signing.ParseKeys(registry.InstanceToken(in.key, whose))
		if err != nil {
			t.Fatal(err)
		}
		if err := keys.Sign(req, []byte(in.body), signing.Claims{Subject: in.subject, Epoch: in.epoch}); err != nil {
			t.Fatal(err)
		}
	}
	return req
}

// instruct sends a correctly signed instruction to the instance id.
func instruct(t *testing.T, base, id, body string) (int, string) {
	t.Helper()
	return do(t, instruction{key: key, subject: id, epoch: 1, body: body}.request(t, base))
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestInstanceRegistersOutOfServiceAndAnnouncesItself(t *testing.T) {
	e := setup(t)
	inst, _ := e.startInstance(t, e.zk.Addr)
	if st := status(t, e.reg, inst.ID()); st != registry.StatusOutOfService {
		t.Fatalf("registered as %q, want OUT_OF_SERVICE", st)
	}
	conn, _, err := zk.Connect([]string{e.zk.Addr}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, stat, err := conn.Get("/green/" + inst.ID())
	if err != nil || stat.EphemeralOwner == 0 || !strings.Contains(string(b), `"service":"hello"`) {
		t.Fatalf("ephemeral node: %q %+v %v", b, stat, err)
	}
}

func TestInstructions(t *testing.T) {
	e := setup(t)
	inst, ts := e.startInstance(t, e.zk.Addr)
	id := inst.ID()
	for _, tc := range []struct {
		desc   string
		in     instruction
		want   int
		status registry.Status
	}{
		{desc: "a wrong key is refused", in: instruction{key: "guessed-key-0123456789", subject: id, epoch: 1, body: `{"status":"UP"}`}, want: 401, status: registry.StatusOutOfService},
		{desc: "no signature is refused", in: instruction{subject: id, body: `{"status":"UP"}`}, want: 401, status: registry.StatusOutOfService},
		{desc: "the key sent as a bearer token is refused: no secret travels", in: instruction{bearer: key, body: `{"status":"UP"}`}, want: 401, status: registry.StatusOutOfService},
		{desc: "an instruction signed for another instance fails this instance's key", in: instruction{key: key, subject: "hello-green-other", epoch: 1, body: `{"status":"UP"}`}, want: 401, status: registry.StatusOutOfService},
		{desc: "an instruction with this instance's key naming another instance is refused", in: instruction{key: key, keyFor: id, subject: "hello-green-other", epoch: 1, body: `{"status":"UP"}`}, want: 403, status: registry.StatusOutOfService},
		{desc: "a made-up instance key is refused", in: instruction{key: "instance.x." + key, keyFor: "ignored", subject: id, epoch: 1, body: `{"status":"UP"}`}, want: 401, status: registry.StatusOutOfService},
		{desc: "malformed JSON is refused", in: instruction{key: key, subject: id, epoch: 1, body: `{"status":`}, want: 400, status: registry.StatusOutOfService},
		{desc: "two JSON documents are refused", in: instruction{key: key, subject: id, epoch: 1, body: `{"status":"OUT_OF_SERVICE"}{"status":"UP"}`}, want: 400, status: registry.StatusOutOfService},
		{desc: "DOWN is not the controller's to set", in: instruction{key: key, subject: id, epoch: 1, body: `{"status":"DOWN"}`}, want: 400, status: registry.StatusOutOfService},
		{desc: "UP is applied in the registry before the answer", in: instruction{key: key, subject: id, epoch: 5, body: `{"status":"UP"}`}, want: 200, status: registry.StatusUp},
		{desc: "an older leader's epoch is refused once a newer leader was heard", in: instruction{key: key, subject: id, epoch: 4, body: `{"status":"OUT_OF_SERVICE"}`}, want: 409, status: registry.StatusUp},
		{desc: "OUT_OF_SERVICE from the current leader is applied", in: instruction{key: key, subject: id, epoch: 5, body: `{"status":"OUT_OF_SERVICE"}`}, want: 200, status: registry.StatusOutOfService},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			code, body := do(t, tc.in.request(t, ts.URL))
			if code != tc.want {
				t.Fatalf("answered %d %s, want %d", code, body, tc.want)
			}
			// Checked right after the answer: the ack means the registry has it.
			if st := status(t, e.reg, id); st != tc.status {
				t.Fatalf("registry says %s, want %s", st, tc.status)
			}
		})
	}
}

// An instance checks its own health as it takes an UP: one that fails it
// refuses with the health endpoint's answer and stays out; an OUT needs no
// health.
func TestAnUnhealthyInstanceRefusesToGoUp(t *testing.T) {
	e := setup(t)
	var sick atomic.Bool
	sick.Store(true)
	inst, ts := e.startInstance(t, e.zk.Addr, func(c *sdk.Config) {
		c.Health = func(context.Context) error {
			if sick.Load() {
				return errors.New("database unreachable")
			}
			return nil
		}
	})
	id := inst.ID()
	code, body := instruct(t, ts.URL, id, `{"status":"UP"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"unhealthy"`) || !strings.Contains(body, "database unreachable") {
		t.Fatalf("UP while unhealthy answered %d %s; want 503 with the health check's error", code, body)
	}
	if st := status(t, e.reg, id); st != registry.StatusOutOfService {
		t.Fatalf("registry says %s after a refused UP, want OUT_OF_SERVICE", st)
	}
	if code, body := instruct(t, ts.URL, id, `{"status":"OUT_OF_SERVICE"}`); code != http.StatusOK {
		t.Fatalf("OUT while unhealthy answered %d %s, want 200", code, body)
	}
	sick.Store(false)
	if code, body := instruct(t, ts.URL, id, `{"status":"UP"}`); code != http.StatusOK {
		t.Fatalf("UP once healthy answered %d %s, want 200", code, body)
	}
	if st := status(t, e.reg, id); st != registry.StatusUp {
		t.Fatalf("registry says %s, want UP", st)
	}
	// A draining instance answers as its health endpoint does.
	if err := inst.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := instruct(t, ts.URL, id, `{"status":"UP"}`); code != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"draining"`) {
		t.Fatalf("UP while draining answered %d %s, want 503 draining", code, body)
	}
	if st := status(t, e.reg, id); st != registry.StatusOutOfService {
		t.Fatalf("registry says %s after the drain, want OUT_OF_SERVICE", st)
	}
}

func TestACapturedInstructionCannotBeReplayed(t *testing.T) {
	e := setup(t)
	inst, ts := e.startInstance(t, e.zk.Addr)
	in := instruction{key: key, subject: inst.ID(), epoch: 1, body: `{"status":"UP"}`}
	first := in.request(t, ts.URL)
	again := first.Clone(context.Background())
	again.Body = io.NopCloser(strings.NewReader(in.body))
	if code, body := do(t, first); code != 200 {
		t.Fatalf("the original answered %d %s", code, body)
	}
	if code, body := do(t, again); code != 401 || !strings.Contains(body, "replayed") {
		t.Fatalf("the replay answered %d %s; want 401 replayed", code, body)
	}
}

func TestOutOfServiceInstanceClosesKeepAliveConnections(t *testing.T) {
	e := setup(t)
	inst, ts := e.startInstance(t, e.zk.Addr)
	get := func() *http.Response {
		resp, err := http.Get(ts.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(); !resp.Close || resp.StatusCode != 200 {
		t.Fatalf("an OUT_OF_SERVICE instance must still serve (got %d) and send Connection: close (close=%v)", resp.StatusCode, resp.Close)
	}
	if code, body := instruct(t, ts.URL, inst.ID(), `{"status":"UP"}`); code != 200 {
		t.Fatal(body)
	}
	if resp := get(); resp.Close {
		t.Fatal("an UP instance closed a keep-alive connection")
	}
}

func TestInstructionFailsWhenTheRegistryCannotConfirm(t *testing.T) {
	e := setup(t)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	ts := httptest.NewUnstartedServer(nil)
	// A registry that is not there: the instruction must not be acknowledged.
	dead := registry.NewClient("http://127.0.0.1:1", "secret")
	inst, err := sdk.New(sdk.Config{Service: "hello", Color: "blue", Address: "127.0.0.1",
		Port: ts.Listener.Addr().(*net.TCPAddr).Port, ZK: []string{e.zk.Addr}, Registry: dead, Token: key})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = inst.Handler(app)
	ts.Start()
	defer ts.Close()
	if code, body := instruct(t, ts.URL, inst.ID(), `{"status":"UP"}`); code != http.StatusBadGateway {
		t.Fatalf("answered %d %s, want 502", code, body)
	}
	if inst.Status() != registry.StatusOutOfService {
		t.Fatalf("the SDK believes %s although the registry never confirmed", inst.Status())
	}
}

func TestNodeIsRecreatedAfterSessionExpiry(t *testing.T) {
	e := setup(t)
	proxy, err := local.NewPartition(e.zk.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	inst, _ := e.startInstance(t, proxy.Addr())
	conn, _, err := zk.Connect([]string{e.zk.Addr}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node := "/green/" + inst.ID()
	_, before, err := conn.Get(node)
	if err != nil {
		t.Fatal(err)
	}
	// Cut the instance off for longer than its 2s session: ZooKeeper
	// expires the session and deletes the node.
	proxy.Cut()
	testutil.Eventually(t, 15*time.Second, "the node to go with the session", func() bool {
		ok, _, err := conn.Exists(node)
		return err == nil && !ok
	})
	proxy.Heal()
	testutil.Eventually(t, 30*time.Second, "the node to come back on a new session", func() bool {
		_, st, err := conn.Get(node)
		return err == nil && st.EphemeralOwner != before.EphemeralOwner
	})
}

func TestShutdownDrainsAndLeaves(t *testing.T) {
	e := setup(t)
	inst, ts := e.startInstance(t, e.zk.Addr)
	if code, body := instruct(t, ts.URL, inst.ID(), `{"status":"UP"}`); code != 200 {
		t.Fatal(body)
	}
	// A gateway that has applied everything up to a high index lets the
	// drain finish at once; one that lags would hold it up to DrainTimeout.
	if err := e.reg.ReportGateway(context.Background(), registry.GatewayReport{ID: "g", Applied: map[string]uint64{"hello": 1 << 62}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := inst.Shutdown(ctx, ts.Config); err != nil {
		t.Fatal(err)
	}
	if st := status(t, e.reg, inst.ID()); st != "" {
		t.Fatalf("still registered as %s after shutdown", st)
	}
	conn, _, _ := zk.Connect([]string{e.zk.Addr}, 5*time.Second, zk.WithLogInfo(false))
	defer conn.Close()
	if ok, _, err := conn.Exists("/green/" + inst.ID()); err != nil || ok {
		t.Fatalf("node still there after shutdown (%v)", err)
	}
	if err := inst.Shutdown(ctx, ts.Config); err == nil {
		t.Fatal("a second shutdown was accepted")
	}
}

func TestAnInstructionsSwitchReachesTheRegistry(t *testing.T) {
	e := setup(t)
	// Heartbeats an hour apart (the first at a random point of it) keep a
	// heartbeat's own registration out of the way of the one the last
	// case makes.
	inst, ts := e.startInstance(t, e.zk.Addr, func(c *sdk.Config) { c.HeartbeatInterval = time.Hour })
	id := inst.ID()
	recorded := func() registry.Instance {
		t.Helper()
		snap, err := e.reg.Instances(context.Background(), "hello", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range snap.Instances {
			if in.ID == id {
				return in
			}
		}
		t.Fatalf("%s is not in the registry", id)
		return registry.Instance{}
	}
	for _, tc := range []struct {
		desc, body, header string
		deregister         bool // the registry lost the instance first, so it registers again
		want               registry.Status
		sw                 int64
	}{
		{desc: "UP for switch 42 is recorded with it", body: `{"status":"UP"}`, header: "42", want: registry.StatusUp, sw: 42},
		{desc: "OUT without a switch leaves none named", body: `{"status":"OUT_OF_SERVICE"}`, want: registry.StatusOutOfService, sw: 0},
		{desc: "a header that is not a positive id names no switch and decides nothing", body: `{"status":"UP"}`, header: "-5", want: registry.StatusUp, sw: 0},
		{desc: "a registration that an instruction makes carries its switch", body: `{"status":"OUT_OF_SERVICE"}`, header: "43", deregister: true, want: registry.StatusOutOfService, sw: 43},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.deregister {
				if err := e.reg.Deregister(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			}
			req := instruction{key: key, subject: id, epoch: 1, body: tc.body}.request(t, ts.URL)
			if tc.header != "" {
				req.Header.Set(registry.SwitchHeader, tc.header)
			}
			if code, body := do(t, req); code != http.StatusOK {
				t.Fatalf("answered %d %s", code, body)
			}
			if in := recorded(); in.Status != tc.want || in.Switch != tc.sw {
				t.Fatalf("registry has %s for switch %d, want %s for switch %d", in.Status, in.Switch, tc.want, tc.sw)
			}
		})
	}
}

// A Start that registered but could not reach ZooKeeper takes the
// registration back rather than leave it until its lease runs out.
func TestAStartThatFailsAfterRegisteringDeregisters(t *testing.T) {
	e := setup(t)
	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	inst, err := sdk.New(sdk.Config{
		Service: "hello", Color: "green", Address: "127.0.0.1", Port: 1,
		ZK: []string{fmt.Sprintf("127.0.0.1:%d", port)}, ZKSessionTimeout: time.Second, Registry: e.reg, Token: key,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := inst.Start(ctx); err == nil {
		t.Fatal("Start succeeded without ZooKeeper")
	}
	snap, err := e.reg.Instances(context.Background(), "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Instances) != 0 {
		t.Fatalf("after the failed Start the registry still lists %+v", snap.Instances)
	}
}
