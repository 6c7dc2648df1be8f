package sdk_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
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
	url, done, err := local.ServeRegistry(sctx, registry.ServerConfig{Token: "secret", LeaseTTL: time.Minute})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); <-done })
	return &env{zk: z, reg: registry.NewClient(url, "secret"), url: url}
}

// startInstance runs a hello-like handler wrapped by the SDK.
func (e *env) startInstance(t *testing.T, zkAddr string) (*sdk.Instance, *httptest.Server) {
	t.Helper()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hi") })
	ts := httptest.NewUnstartedServer(nil)
	addr := ts.Listener.Addr().(*net.TCPAddr)
	inst, err := sdk.New(sdk.Config{
		Service: "hello", Color: "green", Address: "127.0.0.1", Port: addr.Port,
		ZK: []string{zkAddr}, ZKSessionTimeout: 2 * time.Second, Registry: e.reg, Token: "secret",
		HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
	})
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

func instruct(t *testing.T, base, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, base+sdk.StatusPath, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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
	for _, tc := range []struct {
		desc, token, body string
		want              int
		status            registry.Status
	}{
		{desc: "a wrong token is refused", token: "guess", body: `{"status":"UP"}`, want: 401, status: registry.StatusOutOfService},
		{desc: "no token is refused", body: `{"status":"UP"}`, want: 401, status: registry.StatusOutOfService},
		{desc: "malformed JSON is refused", token: "secret", body: `{"status":`, want: 400, status: registry.StatusOutOfService},
		{desc: "DOWN is not the controller's to set", token: "secret", body: `{"status":"DOWN"}`, want: 400, status: registry.StatusOutOfService},
		{desc: "UP is applied in the registry before the answer", token: "secret", body: `{"status":"UP"}`, want: 200, status: registry.StatusUp},
		{desc: "OUT_OF_SERVICE is applied", token: "secret", body: `{"status":"OUT_OF_SERVICE"}`, want: 200, status: registry.StatusOutOfService},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			code, body := instruct(t, ts.URL, tc.token, tc.body)
			if code != tc.want {
				t.Fatalf("answered %d %s, want %d", code, body, tc.want)
			}
			// Checked right after the answer: the ack means the registry has it.
			if st := status(t, e.reg, inst.ID()); st != tc.status {
				t.Fatalf("registry says %s, want %s", st, tc.status)
			}
		})
	}
}

func TestOutOfServiceInstanceClosesKeepAliveConnections(t *testing.T) {
	e := setup(t)
	_, ts := e.startInstance(t, e.zk.Addr)
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
	if code, body := instruct(t, ts.URL, "secret", `{"status":"UP"}`); code != 200 {
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
		Port: ts.Listener.Addr().(*net.TCPAddr).Port, ZK: []string{e.zk.Addr}, Registry: dead, Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = inst.Handler(app)
	ts.Start()
	defer ts.Close()
	if code, body := instruct(t, ts.URL, "secret", `{"status":"UP"}`); code != http.StatusBadGateway {
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
	waitFor(t, 15*time.Second, "the node to go with the session", func() bool {
		ok, _, err := conn.Exists(node)
		return err == nil && !ok
	})
	proxy.Heal()
	waitFor(t, 30*time.Second, "the node to come back on a new session", func() bool {
		_, st, err := conn.Get(node)
		return err == nil && st.EphemeralOwner != before.EphemeralOwner
	})
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShutdownDrainsAndLeaves(t *testing.T) {
	e := setup(t)
	inst, ts := e.startInstance(t, e.zk.Addr)
	if code, body := instruct(t, ts.URL, "secret", `{"status":"UP"}`); code != 200 {
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
