package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

func TestAdminServesMetricsRoutesAndHealth(t *testing.T) {
	c := startRegistry(t)
	a := newBackend(t, "a", nil)
	register(t, c, "a", "hello", a.addr(), registry.StatusUp)
	register(t, c, "b", "hello", newBackend(t, "b", nil).addr(), registry.StatusOutOfService)
	// A green instance of another service: its answers must count under
	// green, and a service with no instance at all under "".
	host, gport := splitHostPort(t, newBackend(t, "g", nil).addr())
	if err := c.Register(context.Background(), registry.Instance{ID: "g", Service: "world", Color: "green", Address: host, Port: gport, Status: registry.StatusUp}); err != nil {
		t.Fatal(err)
	}

	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	log, _ := quietLog()
	g, base := runGateway(t, Config{ID: "gw", Routes: parseRoutes(t, "/=hello", "/w=world", "/none=nobody"), Source: c, Admin: admin, Log: log})
	waitApplied(t, g, "hello", currentIndex(t, c, "hello"))
	waitApplied(t, g, "world", currentIndex(t, c, "world"))
	for range 5 {
		if r := get(t, base+"/"); r.code != 200 {
			t.Fatalf("GET = %d", r.code)
		}
	}
	for range 2 {
		if r := get(t, base+"/w"); r.code != 200 {
			t.Fatalf("GET /w = %d", r.code)
		}
	}
	if r := get(t, base+"/none"); r.code < 500 {
		t.Fatalf("GET /none = %d; want a 5xx with no instance", r.code)
	}
	get(t, base+"/_switchyard/status") // refused at the edge, not counted against hello

	read := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := read("/healthz")
	if code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("/healthz = %d %s", code, body)
	}
	_, body = read("/metrics")
	lines := strings.Split(body, "\n")
	for _, want := range []string{
		`switchyard_gateway_requests_total{code="2xx",service="hello",upstream_color="blue"} 5`,
		`switchyard_gateway_requests_total{code="2xx",service="hello",upstream_color="green"} 0`,
		`switchyard_gateway_requests_total{code="2xx",service="world",upstream_color="green"} 2`,
		`switchyard_gateway_requests_total{code="5xx",service="nobody",upstream_color=""} 1`,
		`switchyard_gateway_instances_up{service="hello"} 1`,
		`switchyard_gateway_request_duration_seconds_count{service="hello",upstream_color="blue"} 5`,
		`switchyard_gateway_request_duration_seconds_count{service="hello",upstream_color="green"} 0`,
		`switchyard_gateway_request_duration_seconds_count{service="world",upstream_color="green"} 2`,
	} {
		found := false
		for _, l := range lines {
			found = found || l == want
		}
		if !found {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_, body = read("/v1/routes")
	var routes []RouteView
	if err := json.Unmarshal([]byte(body), &routes); err != nil {
		t.Fatal(err)
	}
	var hello []RouteView
	for _, r := range routes {
		if r.Service == "hello" {
			hello = append(hello, r)
		}
	}
	if len(routes) != 3 || len(hello) != 1 || len(hello[0].Instances) != 1 || hello[0].Instances[0].ID != "a" {
		t.Errorf("/v1/routes = %s; want hello routed to a only", body)
	}
}
