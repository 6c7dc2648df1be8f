package sdk_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// TestControlPort covers what `switchyard agent` builds on: an instance
// whose traffic goes to one port while the SDK answers on another, whose
// status the host program follows, and which can leave at once.
func TestControlPort(t *testing.T) {
	e := setup(t)
	inst, err := sdk.New(sdk.Config{
		Service: "hello", Color: "green", ID: "agent-1", Address: "127.0.0.1", Port: 18080, ControlPort: 18081,
		ZK: []string{e.zk.Addr}, ZKSessionTimeout: 2 * time.Second, Registry: e.reg, Token: key,
		HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	states := inst.States(ctx)
	if got := <-states; got != registry.StatusOutOfService {
		t.Fatalf("first state %s, want OUT_OF_SERVICE", got)
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("the registration and the node both name the control port", func(t *testing.T) {
		snap, err := e.reg.Instances(ctx, "hello", 0, 0)
		if err != nil || len(snap.Instances) != 1 {
			t.Fatalf("instances %+v, %v", snap.Instances, err)
		}
		if in := snap.Instances[0]; in.Port != 18080 || in.ControlPort != 18081 || in.ControlHostPort() != "127.0.0.1:18081" {
			t.Errorf("registration %+v: want traffic on 18080, control on 18081", in)
		}
		conn, _, err := zk.Connect([]string{e.zk.Addr}, 2*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		b, _, err := conn.Get("/green/agent-1")
		if err != nil {
			t.Fatal(err)
		}
		n, err := zkstate.ParseInstanceNode(b)
		if err != nil || n.Port != 18080 || n.ControlPort != 18081 {
			t.Errorf("node %s: %+v, %v", b, n, err)
		}
	})

	t.Run("the host program follows each status the registry confirmed", func(t *testing.T) {
		for _, st := range []registry.Status{registry.StatusUp, registry.StatusOutOfService} {
			if _, err := inst.SetStatus(ctx, st); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-states:
				if got != st {
					t.Fatalf("state %s, want %s", got, st)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no state after %s", st)
			}
		}
	})

	t.Run("the control handler answers the health gate and nothing else", func(t *testing.T) {
		ts := httptest.NewServer(inst.ControlHandler())
		defer ts.Close()
		resp, err := http.Get(ts.URL + sdk.HealthPath)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || body["id"] != "agent-1" {
			t.Errorf("health = %d %v", resp.StatusCode, body)
		}
		if resp, err := http.Get(ts.URL + "/"); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET / on the control handler = %v, %v; want 404", resp, err)
		}
	})

	t.Run("Leave removes the instance at once, and States closes with ctx", func(t *testing.T) {
		if err := inst.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		snap, err := e.reg.Instances(ctx, "hello", 0, 0)
		if err != nil || len(snap.Instances) != 0 {
			t.Errorf("after Leave the registry has %+v, %v", snap.Instances, err)
		}
		if err := inst.Shutdown(ctx, nil); err == nil || !strings.Contains(err.Error(), "already") {
			t.Errorf("Shutdown after Leave = %v, want already shutting down", err)
		}
		cancel()
		closed := time.After(10 * time.Second)
		for open := true; open; {
			select {
			case _, open = <-states:
			case <-closed:
				t.Fatal("States did not close its channel after its context ended")
			}
		}
	})
}

func TestHTTPHealth(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/hang":
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}
	}))
	defer ts.Close()
	for _, tc := range []struct {
		desc, path, want string
	}{
		{desc: "a 2xx passes", path: "/ok"},
		{desc: "a 500 fails with its status", path: "/fail", want: "500 Internal Server Error"},
		{desc: "a redirect is not followed and fails", path: "/moved", want: "302 Found"},
		{desc: "a hung application fails at the timeout", path: "/hang", want: "deadline exceeded"},
		{desc: "nothing listening fails", path: "", want: "connection refused"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			url := ts.URL + tc.path
			if tc.path == "" {
				url = "http://127.0.0.1:1/health"
			}
			err := sdk.HTTPHealth(url, 200*time.Millisecond)(context.Background())
			if tc.want == "" && err != nil {
				t.Fatalf("%s: %v, want healthy", url, err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("%s: %v, want an error saying %q", url, err, tc.want)
			}
		})
	}
}
