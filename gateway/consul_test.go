package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/consul"
)

// TestGatewayFollowsMoreConsulServicesThanTheAgentAllowsConnections routes
// more services than a Consul agent accepts connections from one client
// (200 by default): a blocking query per service could not all be held, so
// past a few services the gateway follows them all with one.
func TestGatewayFollowsMoreConsulServicesThanTheAgentAllowsConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	agent, err := local.StartConsul(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start consul: %v", err)
	}
	t.Cleanup(agent.Stop)
	log, _ := quietLog()
	b, err := consul.New(consul.Config{Address: agent.Addr(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Every instance's health endpoint, which the agent probes.
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_switchyard/health" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(health.Close)
	host, p, _ := net.SplitHostPort(health.Listener.Addr().String())
	port, _ := strconv.Atoi(p)

	const n = 250
	svc := func(i int) string { return fmt.Sprintf("svc-%03d", i) }
	var g errgroup.Group
	g.SetLimit(16)
	routes := make([]string, n)
	for i := range n {
		routes[i] = "/" + svc(i) + "=" + svc(i)
		g.Go(func() error {
			return b.Register(ctx, registry.Instance{ID: svc(i) + "-a", Service: svc(i), Color: "blue", Version: "v1",
				Address: host, Port: port, Status: registry.StatusUp})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	gw, _, _ := startGateway(t, b, routes...)
	want := []string{health.Listener.Addr().String()}
	testutil.EventuallyWhy(t, time.Minute, "every service routes to its instance", func() (bool, string) {
		for i := range n {
			if got := upAddrs(gw, svc(i)); !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s routes to %v", svc(i), got)
			}
		}
		return true, ""
	})
	// A watch each would hold 250 connections (the agent refuses those
	// past 200); the view of all holds one, and reads a few services at a
	// time besides. The registrations' idle connections count too.
	if conns := connsTo(t, agent.Addr()); conns > 64 {
		t.Fatalf("%d connections to the agent, want far fewer than its 200 per client", conns)
	}
	// The index a status change returns is what the controller waits for
	// the gateways to confirm: the view of all reaches it too.
	for _, st := range []registry.Status{registry.StatusOutOfService, registry.StatusUp, registry.StatusOutOfService} {
		idx, err := b.SetStatus(ctx, svc(7)+"-a", st)
		if err != nil {
			t.Fatal(err)
		}
		waitApplied(t, gw, svc(7), idx)
		if got, up := upAddrs(gw, svc(7)), st == registry.StatusUp; up != slices.Equal(got, want) {
			t.Fatalf("%s routes to %v once it applied index %d of its instance set %s", svc(7), got, idx, st)
		}
	}
	if got := upAddrs(gw, svc(8)); !slices.Equal(got, want) {
		t.Fatalf("%s routes to %v after another service's change, want %v", svc(8), got, want)
	}

	// Routes reloaded below the threshold and back: a watch each, then
	// the one of all again, each seeing the next change.
	for _, k := range []int{3, n} {
		if err := gw.SetRoutes(parseRoutes(t, routes[:k]...)); err != nil {
			t.Fatal(err)
		}
		for _, st := range []registry.Status{registry.StatusOutOfService, registry.StatusUp} {
			idx, err := b.SetStatus(ctx, svc(1)+"-a", st)
			if err != nil {
				t.Fatal(err)
			}
			waitApplied(t, gw, svc(1), idx)
			if got, up := upAddrs(gw, svc(1)), st == registry.StatusUp; up != slices.Equal(got, want) {
				t.Fatalf("with %d routes, %s routes to %v once it applied index %d of its instance set %s", k, svc(1), got, idx, st)
			}
		}
	}
}

// connsTo counts the established TCP connections to addr (a loopback
// host:port) in /proc/net/tcp.
func connsTo(t *testing.T, addr string) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[2], want) && fields[3] == "01" {
			n++
		}
	}
	return n
}
