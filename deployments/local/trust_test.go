package local

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/zkstate"
)

// Planted and duplicated ZooKeeper nodes must neither receive the token
// nor count toward the never-zero-UP guard: with green unhealthy, a node
// that duplicates a live blue id under /green once made a switch to green
// report done with zero instances UP.
func TestChaosPlantedNodesNeitherLeakTheTokenNorCountTowardTheGuard(t *testing.T) {
	c := startEnsembleCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var trapped atomic.Int64
	var sawToken atomic.Bool
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trapped.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawToken.Store(true)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"index":1,"status":"ok"}`))
	}))
	defer trap.Close()
	trapHost, trapPort := splitHostPort(t, strings.TrimPrefix(trap.URL, "http://"))

	var blue, green []*Instance
	for _, in := range c.Instances {
		if in.Color == zkstate.Blue {
			blue = append(blue, in)
		} else {
			green = append(green, in)
		}
	}
	for _, in := range green { // green is unhealthy: a switch to it must be refused
		if err := in.Signal(sigUSR1); err != nil {
			t.Fatal(err)
		}
	}
	plant := func(color zkstate.Color, name, id string) string {
		p := c.Paths.Instance(color, name)
		data, _ := json.Marshal(zkstate.InstanceNode{Service: "hello", ID: id, Address: trapHost, Port: trapPort})
		if _, err := c.ZKConn().Create(p, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("plant %s: %v", p, err)
		}
		return p
	}
	planted := []string{
		plant(zkstate.Green, blue[0].ID, blue[0].ID), // a live blue id, duplicated under green
		plant(zkstate.Blue, "ghost", "ghost"),        // an id nobody registered
	}

	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	since := time.Now()
	out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "60s")
	if err == nil || !strings.Contains(out, "refused") {
		t.Errorf("a switch to an unhealthy green was not refused with planted nodes present: %v\n%s", err, out)
	}
	rec, err := c.Record()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != zkstate.PhaseRefused || len(rec.Quarantined) < 3 {
		t.Errorf("record %s with quarantined %+v; want refused, naming both planted nodes and the duplicated live one", rec.Phase, rec.Quarantined)
	}
	status, err := c.CLI(ctx, "status")
	if err != nil || !strings.Contains(status, "quarantined green/"+blue[0].ID) || !strings.Contains(status, "quarantined blue/ghost") {
		t.Errorf("status does not show the quarantined nodes: %v\n%s", err, status)
	}
	waitSent(t, load, load.Sent()+200) // resyncs pass with the planted nodes in place

	// Healed and cleaned, the refused switch goes ahead by itself.
	for _, p := range planted {
		if err := c.ZKConn().Delete(p, -1); err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range green {
		if err := in.Signal(sigUSR1); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitServing(ctx, zkstate.Green, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	assertStatuses(t, ctx, c, zkstate.Green)
	results := load.Stop()
	assertServed(t, results, "with planted nodes in ZooKeeper")
	if n := trapped.Load(); n > 0 || sawToken.Load() {
		t.Errorf("the planted address received %d requests (token seen: %v)", n, sawToken.Load())
	}
	testutil.Eventually(t, 10*time.Second, "the quarantine to clear from the record", func() bool {
		r, err := c.Record()
		return err == nil && r.Phase == zkstate.PhaseDone && len(r.Quarantined) == 0
	})
	report(t, "planted and duplicate instance nodes (a live id under the other color, an unregistered id) with green unhealthy", results, time.Since(since),
		"the switch to unhealthy green is refused; the planted address gets no request and no token; quarantined nodes shown in status and the record; once cleaned and healthy the switch goes ahead")
}

func splitHostPort(t *testing.T, hostport string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, n
}
