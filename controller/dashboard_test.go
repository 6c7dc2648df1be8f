package controller_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
	"github.com/switchyard/switchyard/zkstate"
)

const boardToken = "dashboard-key-0123456789"

// startBoard runs a controller with its API on loopback, against a real
// ZooKeeper and registry, and returns its base URL and a ZooKeeper
// connection of the test's own.
func startBoard(t *testing.T) (string, *zk.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	url, _, err := local.ServeRegistry(ctx, server.Config{Token: boardToken, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	c, err := controller.New(controller.Config{ID: "ctl-1", ZK: []string{z.Addr}, Registry: registry.NewClient(url, boardToken),
		Token: boardToken, Listen: fmt.Sprintf("127.0.0.1:%d", port), Resync: 100 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 30*time.Second, "the controller to lead", c.Leading)
	conn, _, err := zk.Connect([]string{z.Addr}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return fmt.Sprintf("http://127.0.0.1:%d", port), conn
}

func activeColor(t *testing.T, conn *zk.Conn) string {
	t.Helper()
	b, _, err := conn.Get("/active_color")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func post(t *testing.T, url, auth, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestDashboardActionsNeedTheTokenAndChangeNothingOtherwise(t *testing.T) {
	base, conn := startBoard(t)
	testutil.Eventually(t, 10*time.Second, "the default /active_color", func() bool {
		b, _, err := conn.Get("/active_color")
		return err == nil && string(b) == "blue"
	})
	bearer := "Bearer " + boardToken
	for _, tc := range []struct {
		name, path, auth, ct, body string
		code                       int
		says                       string
	}{
		{"no token", "/v1/switch", "", "application/json", `{"color":"green"}`, 401, "a token is required"},
		{"wrong token", "/v1/switch", "Bearer not-the-token-at-all", "application/json", `{"color":"green"}`, 401, "the token is wrong"},
		{"the read token", "/v1/switch", "Bearer " + registry.ReadToken(boardToken), "application/json", `{"color":"green"}`, 401, "the token is wrong"},
		{"an instance token", "/v1/rollback", "Bearer " + registry.InstanceToken(boardToken, "a"), "application/json", `{}`, 401, "the token is wrong"},
		{"a form post", "/v1/switch", bearer, "application/x-www-form-urlencoded", `color=green`, 415, "must be JSON"},
		{"a bad color", "/v1/switch", bearer, "application/json", `{"color":"purple"}`, 400, "purple"},
		{"no color", "/v1/switch", bearer, "application/json", `{}`, 400, "nothing was changed"},
		{"an unknown field", "/v1/switch", bearer, "application/json", `{"color":"green","force":true}`, 400, "unknown field"},
		{"not JSON", "/v1/switch", bearer, "application/json", `green`, 400, "not a switch request"},
		{"oversized", "/v1/switch", bearer, "application/json", `{"color":"green","x":"` + strings.Repeat("a", 4096) + `"}`, 413, "over 1024 bytes"},
		{"a rollback with a color", "/v1/rollback", bearer, "application/json", `{"color":"blue"}`, 400, "takes no color"},
		{"an abort with nothing in flight", "/v1/abort", bearer, "application/json", `{}`, 409, "no switch in flight"},
		{"an abort without a token", "/v1/abort", "", "application/json", `{}`, 401, "a token is required"},
	} {
		code, body := post(t, base+tc.path, tc.auth, tc.ct, tc.body)
		if code != tc.code || !strings.Contains(body, tc.says) || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.name, code, body, tc.code, tc.says)
		}
		if got := activeColor(t, conn); got != "blue" {
			t.Fatalf("%s changed /active_color to %q", tc.name, got)
		}
	}

	code, body := post(t, base+"/v1/switch", bearer, "application/json", `{"color":"green"}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"target":"green"`) {
		t.Fatalf("switch with the token: %d %s, want 202 for green", code, body)
	}
	if got := activeColor(t, conn); got != "green" {
		t.Fatalf("/active_color after a switch with the token = %q, want green", got)
	}
	var out struct{ Switch int64 }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	paths, _ := zkstate.NewPaths("/")
	if r, ok, err := zkstate.ReadRequest(conn, paths, out.Switch); err != nil || !ok || r.AskedBy != "dashboard 127.0.0.1" {
		t.Fatalf("the request note = %+v %v %v, want asked by dashboard 127.0.0.1", r, ok, err)
	}
	code, body = post(t, base+"/v1/rollback", bearer, "application/json", ``)
	if code != http.StatusAccepted || !strings.Contains(body, `"target":"blue"`) {
		t.Fatalf("rollback with the token: %d %s, want 202 for blue", code, body)
	}
	if got := activeColor(t, conn); got != "blue" {
		t.Fatalf("/active_color after a rollback = %q, want blue", got)
	}
}

func TestDashboardPageAndEvents(t *testing.T) {
	base, conn := startBoard(t)
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page), `<script src="/dashboard.js"`) {
		t.Fatalf("GET / = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("GET / Content-Security-Policy = %q", csp)
	}
	for _, f := range []string{"/dashboard.js", "/dashboard.css"} {
		res, err := http.Get(base + f)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("GET %s = %d", f, res.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("GET /v1/events Content-Type = %q", ct)
	}
	boards := make(chan controller.Board)
	go func() {
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var b controller.Board
			if err := json.Unmarshal([]byte(data), &b); err != nil {
				t.Errorf("an event that is not a board: %v: %s", err, data)
				return
			}
			select {
			case boards <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func(want func(controller.Board) bool, what string) controller.Board {
		t.Helper()
		for {
			select {
			case b := <-boards:
				if want(b) {
					return b
				}
			case <-ctx.Done():
				t.Fatalf("no board with %s", what)
			}
		}
	}
	b := next(func(b controller.Board) bool { return b.View.ActiveColor == "blue" }, "blue active")
	if b.Controller != "ctl-1" || !b.Leading || b.View.Leader == nil || b.View.Leader.ID != "ctl-1" {
		t.Fatalf("first board: controller %q leading %v leader %+v", b.Controller, b.Leading, b.View.Leader)
	}
	// A write with no tool of switchyard's, as zkCli's set, reaches the
	// page by the watch, then its switch's outcome and history.
	if _, err := conn.Set("/active_color", []byte("green"), -1); err != nil {
		t.Fatal(err)
	}
	next(func(b controller.Board) bool { return b.View.ActiveColor == "green" }, "green active")
	b = next(func(b controller.Board) bool {
		return b.View.Switch != nil && b.View.Switch.Target == zkstate.Green && b.View.Switch.Phase.Finished() && len(b.History) > 0
	}, "the switch to green finished and in the history")
	if b.Progress == nil || b.Progress.Done != b.Progress.Total {
		t.Fatalf("a finished switch's progress = %+v, want complete", b.Progress)
	}
	// Planted data never reaches the page as markup: the page sets text,
	// and the board carries it as a JSON string.
	if _, err := conn.Set("/active_color", []byte("<img src=x onerror=alert(1)>"), -1); err != nil {
		t.Fatal(err)
	}
	b = next(func(b controller.Board) bool { return !b.View.Valid }, "the refused value")
	if !strings.Contains(b.View.ActiveColor, "<img") {
		t.Fatalf("the bad value was shown as %q", b.View.ActiveColor)
	}
}
