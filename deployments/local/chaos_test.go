package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// The fault suite runs a 3-node ZooKeeper ensemble on loopback under load.
// `make chaos` runs it alone and writes each case's figures to the file
// named by SWITCHYARD_CHAOS_REPORT; docs/reliability.md holds a run.

var chaosReport struct {
	sync.Mutex
	rows []string
}

// report records one fault case: requests sent and failed, and how long
// until the system did its job again.
func report(t *testing.T, fault string, results []Result, recovered time.Duration, note string) {
	t.Helper()
	row := fmt.Sprintf("| %s | %d | %d | %s | %s |", fault, len(results), len(Failures(results)), recovered.Round(time.Millisecond), note)
	t.Log(row)
	path := os.Getenv("SWITCHYARD_CHAOS_REPORT")
	if path == "" {
		return
	}
	chaosReport.Lock()
	defer chaosReport.Unlock()
	chaosReport.rows = append(chaosReport.rows, row)
	out := "| fault | requests | failed | recovered in | what was checked |\n|---|---|---|---|---|\n" + strings.Join(chaosReport.rows, "\n") + "\n"
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Errorf("write %s: %v", path, err)
	}
}

func startEnsembleCluster(t *testing.T) *Cluster {
	t.Helper()
	var c *Cluster
	// Registered before the cluster's own cleanup, so it runs after it:
	// the ensemble's ports are given up once everything has stopped.
	t.Cleanup(func() {
		if c != nil {
			c.ZK.Close()
		}
	})
	c, _ = startCluster(t, builtin(), 2, 2, func(o *Options) { o.Ensemble = 3 })
	// Why an ensemble stopped serving is only in its members' own logs.
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.ZK.LogTail(8000))
		}
	})
	return c
}

// statusWatch records every change of any instance's registry status.
type statusWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	first  map[string]registry.Status
	change []string
}

func watchStatuses(ctx context.Context, t *testing.T, c *Cluster) *statusWatch {
	reg, err := c.Backend()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &statusWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for snap := range registry.Watch(ctx, reg, "hello", registry.WatchOptions{Wait: 5 * time.Second}) {
			w.mu.Lock()
			now := map[string]registry.Status{}
			for _, in := range snap.Instances {
				now[in.ID] = in.Status
			}
			if w.first == nil {
				w.first = now
			} else {
				for id, st := range now {
					if w.first[id] != st {
						w.change = append(w.change, fmt.Sprintf("%s %s -> %s", id, w.first[id], st))
					}
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *statusWatch) stop() []string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.change
}

func TestChaosZooKeeperLeaderKilledMidSwitch(t *testing.T) {
	c := startEnsembleCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	var worst time.Duration
	for i, color := range []zkstate.Color{zkstate.Green, zkstate.Blue, zkstate.Green} {
		id, _, err := c.Flip(ctx, string(color))
		if err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		leader := c.ZK.Leader()
		if leader == nil {
			t.Fatal("the ensemble has no leader")
		}
		leader.Stop() // the switch is in flight
		rec, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool { return r.ID >= id && r.Phase.Finished() })
		if err != nil {
			t.Fatalf("flip %d: %v", i+1, err)
		}
		if rec.Phase != zkstate.PhaseDone || rec.Target != color {
			t.Fatalf("flip %d to %s with the ZooKeeper leader killed ended %s (%s)", i+1, color, rec.Phase, rec.Reason)
		}
		if err := c.WaitServing(ctx, color, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(killedAt))
		if err := leader.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	results := load.Stop()
	assertServed(t, results, "while ZooKeeper leaders were killed mid-switch")
	report(t, "ZooKeeper leader killed with a switch in flight (3 times)", results, worst, "each switch completes done, on the right color")
}

// A member listens on its quorum port only while it leads, and a stopped
// member on none of its ports. If another process could take one of them
// meanwhile (an example instance asks for port 0), the member elected next
// could not bind it, and the ensemble would have no leader for as long as
// the other held it.
func TestChaosEnsemblePortsStayReservedWhileUnbound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := StartEnsemble(ctx, t.TempDir(), 3, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	leader := e.Leader()
	if leader == nil {
		t.Fatal("the ensemble has no leader")
	}
	leader.Stop()
	for _, m := range e.Members {
		for _, port := range memberPorts(t, m) {
			// A plain bind, without SO_REUSEADDR, succeeds on a port
			// that port 0 could hand out.
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
			syscall.Close(fd)
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("member %d (alive %v): anyone may bind its port %d (%v)", m.ID, m.Alive(), port, err)
			}
		}
	}
}

// memberPorts reads an ensemble member's client, quorum and election ports
// from its config.
func memberPorts(t *testing.T, m *ZooKeeper) []int {
	t.Helper()
	b, err := os.ReadFile(m.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var client, quorum, election int
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "clientPort="); ok {
			client, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(line, fmt.Sprintf("server.%d=127.0.0.1:", m.ID)); ok {
			_, _ = fmt.Sscanf(v, "%d:%d", &quorum, &election)
		}
	}
	if client == 0 || quorum == 0 || election == 0 {
		t.Fatalf("member %d: no ports in %s:\n%s", m.ID, m.cfgPath, b)
	}
	return []int{client, quorum, election}
}

func TestChaosQuorumLostFor30s(t *testing.T) {
	c := startEnsembleCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	waitSent(t, load, 100)
	watch := watchStatuses(ctx, t, c)
	var down []*ZooKeeper
	for _, m := range c.ZK.Members {
		if len(down) < 2 {
			m.Stop()
			down = append(down, m)
		}
	}
	// A hold, not a wait: the outage must last 30 s.
	time.Sleep(30 * time.Second)
	if changes := watch.stop(); len(changes) > 0 {
		t.Errorf("statuses changed while ZooKeeper had no quorum: %v", changes)
	}
	healed := time.Now()
	for _, m := range down {
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	flipAndMeasure(t, ctx, c, zkstate.Green)
	recovered := time.Since(healed)
	results := load.Stop()
	assertServed(t, results, "through 30 s without a ZooKeeper quorum")
	report(t, "ZooKeeper quorum lost for 30 s", results, recovered, "no status changed during the outage; the gateway kept its table; the next flip is done")
}

func TestChaosWholeEnsembleDownPastTheSessionTimeout(t *testing.T) {
	// Instances reach the ensemble through proxies, so that they stay cut
	// off for a while after it is back: past their 2 s session timeout,
	// ZooKeeper expires their sessions and deletes every instance node.
	var proxies []*Partition
	c, _ := startCluster(t, builtin(), 2, 2, func(o *Options) {
		o.Ensemble = 3
		o.InstanceZK = func(zkAddr string) (string, error) {
			if proxies == nil {
				for _, addr := range strings.Split(zkAddr, ",") {
					p, err := NewPartition(addr)
					if err != nil {
						return "", err
					}
					t.Cleanup(p.Close)
					proxies = append(proxies, p)
				}
			}
			var via []string
			for _, p := range proxies {
				via = append(via, p.Addr())
			}
			return strings.Join(via, ","), nil
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	owners := func() map[string]int64 {
		out := map[string]int64{}
		for _, color := range zkstate.Colors {
			ids, _, err := c.ZKConn().Children(c.Paths.Color(color))
			if err != nil {
				return nil
			}
			for _, id := range ids {
				if _, st, err := c.ZKConn().Get(c.Paths.Instance(color, id)); err == nil {
					out[string(color)+"/"+id] = st.EphemeralOwner
				}
			}
		}
		return out
	}
	before := owners()
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	waitSent(t, load, 100)
	watch := watchStatuses(ctx, t, c)
	for _, p := range proxies {
		p.Cut()
	}
	c.ZK.Stop()
	back := time.Now()
	for _, m := range c.ZK.Members {
		if err := m.launch(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.ZK.Members {
		if err := m.waitServing(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, time.Minute, "the instance nodes to go with their expired sessions", func() bool {
		now := owners()
		return now != nil && len(now) == 0
	})
	for _, p := range proxies {
		p.Heal()
	}
	testutil.Eventually(t, time.Minute, "every instance node to be back on a new session", func() bool {
		now := owners()
		if len(now) != len(before) {
			return false
		}
		for node, owner := range now {
			if before[node] == owner {
				return false
			}
		}
		return true
	})
	if changes := watch.stop(); len(changes) > 0 {
		t.Errorf("statuses changed while every instance node vanished and came back: %v", changes)
	}
	flipAndMeasure(t, ctx, c, zkstate.Green)
	recovered := time.Since(back)
	results := load.Stop()
	assertServed(t, results, "with the whole ensemble down and every session expired")
	held := false
	for _, p := range c.Controllers {
		b, _ := os.ReadFile(filepath.Join(c.opts.Dir, p.Name+".log"))
		held = held || strings.Contains(string(b), "self-preservation")
	}
	if !held {
		t.Error("no controller held statuses (self-preservation) while every instance node was gone")
	}
	report(t, "whole ensemble down, every instance session expired", results, recovered,
		fmt.Sprintf("all %d instance nodes deleted and re-created; the leader held every status (self-preservation); none changed; the next flip is done", len(before)))
}

func TestChaosRegistryKilledAndRestarted(t *testing.T) {
	c := startEnsembleCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	waitSent(t, load, 100)
	c.Registry.Kill()
	killed := time.Now()
	if err := c.StartRegistry(ctx); err != nil {
		t.Fatal(err)
	}
	assertStatuses(t, ctx, c, zkstate.Blue)
	flipAndMeasure(t, ctx, c, zkstate.Green)
	recovered := time.Since(killed)
	results := load.Stop()
	assertServed(t, results, "across the registry restart")
	report(t, "registry SIGKILLed and restarted", results, recovered, "statuses restored by the instances; the next flip is done")
}

func TestChaosControllerCutOffFromZooKeeperButNotTheRegistry(t *testing.T) {
	c := startEnsembleCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A controller that reaches ZooKeeper only through proxies we can cut.
	var proxies []*Partition
	var via []string
	for _, m := range c.ZK.Members {
		p, err := NewPartition(m.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		proxies = append(proxies, p)
		via = append(via, p.Addr())
	}
	_, err := c.StartController(ctx, "controller-cut", "", "--zk", strings.Join(via, ","))
	if err != nil {
		t.Fatal(err)
	}
	cutAPI := c.ControllerAPIs[len(c.ControllerAPIs)-1]
	// Make it the leader: stop the others, then start a standby.
	for _, p := range c.Controllers[:len(c.Controllers)-1] {
		p.Stop(3 * time.Second)
	}
	testutil.Eventually(t, time.Minute, "the cut-off-to-be controller to lead", func() bool { return leading(cutAPI) })
	if _, err := c.StartController(ctx, "controller-standby", ""); err != nil {
		t.Fatal(err)
	}
	standbyAPI := c.ControllerAPIs[len(c.ControllerAPIs)-1]
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	flipAndMeasure(t, ctx, c, zkstate.Green)

	at := time.Now()
	for _, p := range proxies {
		p.Cut()
	}
	// It must stop before anyone else can lead: never two leaders.
	testutil.EventuallyWhy(t, time.Minute, "the standby to take over", func() (bool, string) {
		l, s := leading(cutAPI), leading(standbyAPI)
		if l && s {
			t.Fatal("two controllers lead at once")
		}
		return s, fmt.Sprintf("cut leads %v, standby leads %v", l, s)
	})
	flipAndMeasure(t, ctx, c, zkstate.Blue)
	recovered := time.Since(at)
	if leading(cutAPI) {
		t.Error("the cut-off controller leads again without ZooKeeper")
	}
	results := load.Stop()
	assertServed(t, results, "while the leader was cut off from ZooKeeper")
	b, _ := os.ReadFile(filepath.Join(c.opts.Dir, "controller-cut.log"))
	if !strings.Contains(string(b), "stopping all leader actions") {
		t.Errorf("the cut-off leader never said it stopped acting:\n%s", tail(b, 2000))
	}
	report(t, "leader controller cut off from ZooKeeper, not from the registry", results, recovered,
		"it stops acting at the disconnect and gives up leading once its session timeout passes; never two leaders; the standby's flip is done")
}

// leading asks a controller's /healthz whether it leads.
func leading(api string) bool {
	resp, err := http.Get(api + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Leading bool `json:"leading"`
	}
	return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Leading
}
