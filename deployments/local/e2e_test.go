package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/registry"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchyard-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// backend is a registry the suite runs against.
type backend struct {
	name string
	// start returns the registry URL to use ("" for the built-in server)
	// and a restart function for the external registry.
	start func(t *testing.T) (url string, restart func() error)
}

func builtin() backend {
	return backend{name: "builtin", start: func(*testing.T) (string, func() error) { return "", nil }}
}

// forEachBackend runs the test against every registry backend.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

func token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startCluster starts a cluster on b and returns it with a function that
// restarts its registry.
func startCluster(t *testing.T, b backend, blue, green int, tweaks ...func(*Options)) (*Cluster, func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	url, restart := b.start(t)
	opts := Options{Bin: binDir, Dir: dir, Token: token(), Blue: blue, Green: green, Fast: true, RegistryURL: url}
	for _, tweak := range tweaks {
		tweak(&opts)
	}
	c, err := Start(ctx, opts)
	if err != nil {
		dumpLogs(t, dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	if restart == nil {
		restart = func() error {
			c.Registry.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return c.StartRegistry(ctx)
		}
	}
	return c, restart
}

func dumpLogs(t *testing.T, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		t.Logf("==== %s\n%s", filepath.Base(f), tail(b, 6000))
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func failuresText(fs []Result) string {
	var b strings.Builder
	for i, f := range fs {
		if i == 10 {
			fmt.Fprintf(&b, "... and %d more\n", len(fs)-10)
			break
		}
		fmt.Fprintf(&b, "%s %s\n", f.Start.Format("15:04:05.000"), f.Err)
	}
	return b.String()
}

// flipAndMeasure flips to color with zkCli, waits for the leader's done
// record for that write and for the gateway to serve only color.
func flipAndMeasure(t *testing.T, ctx context.Context, c *Cluster, color string) (id int64, at time.Time, rec layout.Switch) {
	t.Helper()
	id, at, err := c.Flip(ctx, color)
	if err != nil {
		t.Fatal(err)
	}
	rec, err = c.WaitRecord(ctx, 20*time.Second, func(r layout.Switch) bool {
		return r.ID >= id && r.Target == color && r.Phase.Finished()
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != layout.PhaseDone {
		t.Fatalf("switch to %s ended %s: %s", color, rec.Phase, rec.Reason)
	}
	if err := c.WaitServing(ctx, color, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return id, at, rec
}

func TestSwitchUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		reg, _ := c.Backend()
		probe := StartProbe(ctx, reg, "hello")
		load := StartLoad(ctx, c.GatewayURL+"/", 8, time.Millisecond)

		type flip struct {
			color string
			at    time.Time
			rec   layout.Switch
		}
		var flips []flip
		for i := range 10 {
			color := []string{layout.Green, layout.Blue}[i%2]
			_, at, rec := flipAndMeasure(t, ctx, c, color)
			flips = append(flips, flip{color, at, rec})
		}
		results := load.Stop()
		views, violations := probe.Stop()

		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d of %d requests failed:\n%s", len(fs), len(results), failuresText(fs))
		}
		if len(violations) > 0 {
			t.Errorf("the probe saw no instance UP %d times: %v", len(violations), violations)
		}
		if views < 20 {
			t.Errorf("the probe saw only %d registry views over 10 flips; it was not watching", views)
		}
		var props, durs []time.Duration
		for i, f := range flips {
			until := time.Now()
			if i+1 < len(flips) {
				until = flips[i+1].at
			}
			p, ok := Propagation(results, f.at, until, f.color)
			if !ok {
				t.Errorf("flip %d to %s: responses never all came from %s", i+1, f.color, f.color)
				continue
			}
			props, durs = append(props, p), append(durs, f.rec.Duration())
		}
		t.Logf("%s: %d requests, %d failed, %d flips; propagation p50 %s max %s; switch duration p50 %s max %s; probe views %d",
			b.name, len(results), len(Failures(results)), len(flips), percentile(props, 0.5), percentile(props, 1),
			percentile(durs, 0.5), percentile(durs, 1), views)
	})
}

func TestRefusedSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for range 2 {
			if _, err := c.StartInstance(ctx, layout.Green, "--healthy=false"); err != nil {
				t.Fatal(err)
			}
		}
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "60s")
		results := load.Stop()
		if err == nil {
			t.Fatalf("switch to an unhealthy color succeeded: %s", out)
		}
		if !strings.Contains(out, "refused") || !strings.Contains(out, "no healthy green instance") {
			t.Errorf("switch --wait did not give the reason: %s", out)
		}
		rec, err := c.Record()
		if err != nil || rec.Phase != layout.PhaseRefused || rec.Active != layout.Blue {
			t.Errorf("record = %+v, %v; want refused with blue active", rec, err)
		}
		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
		}
		for _, r := range results {
			if r.Color != layout.Blue {
				t.Fatalf("a request was answered by %q during a refused switch", r.Color)
			}
		}
		// Once green is healthy, the wanted switch goes ahead.
		for _, in := range c.Instances {
			if in.Color == layout.Green {
				_ = in.Signal(sigUSR1)
			}
		}
		if err := c.WaitServing(ctx, layout.Green, 30*time.Second); err != nil {
			t.Errorf("green never took over once healthy: %v", err)
		}
	})
}

func TestBadActiveColorValues(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		big := make([]byte, 1000*1000)
		for i := range big {
			big[i] = 'x'
		}
		for _, tc := range []struct {
			desc  string
			value []byte
			cli   bool
		}{
			{desc: "a color that does not exist, with zkCli", value: []byte("purple"), cli: true},
			{desc: "an empty value", value: []byte{}},
			{desc: "binary data", value: []byte{0xff, 0x00, 0xfe, 0x01, 0x80}},
			{desc: "a megabyte", value: big},
			{desc: "a color with a suffix", value: []byte("greenish")},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				var id int64
				if tc.cli {
					var err error
					if id, _, err = c.Flip(ctx, string(tc.value)); err != nil {
						t.Fatal(err)
					}
				} else {
					stat, err := c.ZKConn().Set("/active_color", tc.value, -1)
					if err != nil {
						t.Fatal(err)
					}
					id = stat.Mzxid
				}
				rec, err := c.WaitRecord(ctx, 15*time.Second, func(r layout.Switch) bool { return r.ID == id })
				if err != nil {
					t.Fatal(err)
				}
				if rec.Phase != layout.PhaseRefused || !strings.Contains(rec.Reason, "not blue or green") {
					t.Errorf("record = phase %s reason %q; want refused, not blue or green", rec.Phase, rec.Reason)
				}
				if rec.Active != layout.Blue {
					t.Errorf("serving color became %q", rec.Active)
				}
				if len(rec.Target) > 100 {
					t.Errorf("the record quotes %d bytes of the bad value", len(rec.Target))
				}
			})
		}
		for _, p := range c.Controllers {
			if !p.Alive() {
				t.Errorf("%s died on bad input", p.Name)
			}
		}
		// Routing stayed on blue throughout, and a real flip still works.
		results := load.Stop()
		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
		}
		for _, r := range results {
			if r.Color != layout.Blue {
				t.Fatalf("a bad value moved traffic to %q", r.Color)
			}
		}
		flipAndMeasure(t, ctx, c, layout.Green)
	})
}

func TestLeaderKilledMidSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// Slow health checks make the switch long enough to interrupt.
		for range 4 {
			if _, err := c.StartInstance(ctx, layout.Green, "--health-delay", "400ms"); err != nil {
				t.Fatal(err)
			}
		}
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		id, _, err := c.Flip(ctx, layout.Green)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := c.WaitRecord(ctx, 20*time.Second, func(r layout.Switch) bool {
			return r.ID == id && r.Phase == layout.PhaseSwitching && len(r.Steps) >= 1
		})
		if err != nil {
			t.Fatal(err)
		}
		var leader *Proc
		for _, p := range c.Controllers {
			if p.Name == rec.Leader {
				leader = p
			}
		}
		if leader == nil {
			t.Fatalf("leader %q is not one of ours", rec.Leader)
		}
		leader.Kill()
		t.Logf("killed leader %s after %d step(s)", leader.Name, len(rec.Steps))

		done, err := c.WaitRecord(ctx, 30*time.Second, func(r layout.Switch) bool { return r.ID == id && r.Phase.Finished() })
		if err != nil {
			t.Fatal(err)
		}
		if done.Phase != layout.PhaseDone || done.Target != layout.Green || done.Leader == leader.Name {
			t.Fatalf("after the leader died: phase %s target %s leader %s", done.Phase, done.Target, done.Leader)
		}
		if !done.StartedAt.Equal(rec.StartedAt) {
			t.Errorf("the new leader started a new switch instead of completing the same one")
		}
		if err := c.WaitServing(ctx, layout.Green, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		results := load.Stop()
		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
		}
		assertStatuses(t, ctx, c, layout.Green)
	})
}

// assertStatuses checks the registry: active color UP, the other OUT.
func assertStatuses(t *testing.T, ctx context.Context, c *Cluster, active string) {
	t.Helper()
	reg, _ := c.Backend()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		snap, err := reg.Instances(ctx, "hello", 0, 0)
		if err == nil {
			ok, bad := true, []string{}
			live := 0
			for _, in := range snap.Instances {
				if !c.alive(in.ID) {
					continue
				}
				live++
				want := registry.StatusOutOfService
				if in.Color == active {
					want = registry.StatusUp
				}
				if in.Status != want {
					ok = false
					bad = append(bad, fmt.Sprintf("%s is %s", in.ID, in.Status))
				}
			}
			if ok && live > 0 {
				return
			}
			last = strings.Join(bad, ", ")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("statuses never settled with %s active: %s", active, last)
}

func (c *Cluster) alive(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.Instances {
		if in.ID == id {
			return in.Alive()
		}
	}
	return false
}

func TestInstanceKilledUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 3, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		load := StartLoad(ctx, c.GatewayURL+"/?sleep=5ms", 8, 0)
		time.Sleep(500 * time.Millisecond) // traffic before the kill
		c.Instances[0].Kill()
		// Long enough for the lease (3s) to run out and the instance to leave.
		time.Sleep(4 * time.Second)
		results := load.Stop()
		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d of %d requests failed after SIGKILL:\n%s", len(fs), len(results), failuresText(fs))
		}
		if len(results) < 100 {
			t.Errorf("only %d requests ran; the load did not run", len(results))
		}
		t.Logf("%s: %d requests through a SIGKILL, %d failed", b.name, len(results), len(Failures(results)))
	})
}

func TestRegistryRestartUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, restart := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		if err := restart(); err != nil {
			t.Fatal(err)
		}
		assertStatuses(t, ctx, c, layout.Blue)
		results := load.Stop()
		if fs := Failures(results); len(fs) > 0 {
			t.Errorf("%d of %d requests failed across the registry restart:\n%s", len(fs), len(results), failuresText(fs))
		}
		// The restored registry still drives a switch.
		flipAndMeasure(t, ctx, c, layout.Green)
		assertStatuses(t, ctx, c, layout.Green)
	})
}

func TestCLI(t *testing.T) {
	c, _ := startCluster(t, builtin(), 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		desc    string
		args    []string
		wantErr bool
		want    string
	}{
		{desc: "a bad color is refused before anything is written", args: []string{"switch", "purple"}, wantErr: true, want: "not blue or green"},
		{desc: "switch --wait reports the finished switch", args: []string{"switch", "green", "--wait"}, want: "switched to green"},
		{desc: "status shows the instances", args: []string{"status"}, want: "hello-green-2"},
		{desc: "rollback returns to the previous color", args: []string{"rollback", "--wait"}, want: "switched to blue"},
		{desc: "switching to the active color is acknowledged", args: []string{"switch", "blue", "--wait"}, want: "switched to blue"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			out, err := c.CLI(ctx, tc.args...)
			if (err != nil) != tc.wantErr || !strings.Contains(out, tc.want) {
				t.Fatalf("switchyard %v: err %v, output:\n%s", tc.args, err, out)
			}
		})
	}
	raw, _, err := c.ZKConn().Get("/active_color")
	if err != nil || string(raw) != layout.Blue {
		t.Errorf("/active_color = %q, %v after the bad switch and rollback", raw, err)
	}
	leaders := 0
	for _, api := range c.ControllerAPIs {
		resp, err := http.Get(api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if slices.Contains(strings.Split(string(b), "\n"), "switchyard_controller_leading 1") {
			leaders++
			if !strings.Contains(string(b), `switchyard_switches_total{phase="done"}`) {
				t.Errorf("the leader's metrics count no done switch:\n%s", b)
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d controllers report leading in /metrics, want 1", leaders)
	}
	resp, err := http.Get(c.GatewayAdminURL + "/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	routes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(routes), `"id":"hello-blue-1"`) || strings.Contains(string(routes), "hello-green") {
		t.Errorf("gateway /v1/routes with blue active = %d %s", resp.StatusCode, routes)
	}
	out, err := c.CLI(ctx, "status", "--json")
	if err != nil || !strings.Contains(out, `"active_color": "blue"`) || !strings.Contains(out, `"leader"`) {
		t.Errorf("status --json: %v\n%s", err, out)
	}
}

func TestRapidFlipsConvergeOnTheLastValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		var last int64
		// blue -> green -> blue -> green within milliseconds.
		for _, color := range []string{layout.Green, layout.Blue, layout.Green} {
			stat, err := c.ZKConn().Set("/active_color", []byte(color), -1)
			if err != nil {
				t.Fatal(err)
			}
			last = stat.Mzxid
		}
		rec, err := c.WaitRecord(ctx, 30*time.Second, func(r layout.Switch) bool {
			return r.ID >= last && r.Phase.Finished()
		})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Phase != layout.PhaseDone || rec.Active != layout.Green {
			t.Fatalf("after rapid flips: phase %s, active %s; want done on green", rec.Phase, rec.Active)
		}
		if err := c.WaitServing(ctx, layout.Green, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		assertStatuses(t, ctx, c, layout.Green)
		if fs := Failures(load.Stop()); len(fs) > 0 {
			t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
		}
	})
}

func TestInstanceThatStopsAnsweringDoesNotAbortTheSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var frozen *Instance
		for _, in := range c.Instances {
			if in.Color == layout.Green {
				frozen = in
				break
			}
		}
		// A frozen process neither answers health checks nor instructions.
		if err := frozen.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		id, _, err := c.Flip(ctx, layout.Green)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := frozen.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		rec, err := c.WaitRecord(ctx, 30*time.Second, func(r layout.Switch) bool { return r.ID == id && r.Phase.Finished() })
		if err != nil {
			t.Fatal(err)
		}
		if rec.Phase != layout.PhaseDone {
			t.Fatalf("switch ended %s: %s", rec.Phase, rec.Reason)
		}
		// Once it answers again it is brought UP like any active instance.
		assertStatuses(t, ctx, c, layout.Green)
		if err := c.WaitServing(ctx, layout.Green, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFailingHealthCheckTakesAnInstanceOutOfRouting(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sick, well := c.Instances[0], c.Instances[1]
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		// Only the gateway's view decides: wait until just one instance answers.
		answers := func(want map[string]bool) error {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				seen := map[string]bool{}
				for range 40 {
					if _, inst, err := Get(ctx, http.DefaultClient, c.GatewayURL+"/"); err == nil {
						seen[inst] = true
					}
				}
				if maps.Equal(seen, want) {
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fmt.Errorf("the gateway never routed to exactly %v", want)
		}
		if err := sick.Signal(sigUSR1); err != nil { // health now fails
			t.Fatal(err)
		}
		if err := answers(map[string]bool{well.ID: true}); err != nil {
			t.Fatal(err)
		}
		if err := sick.Signal(sigUSR1); err != nil { // and recovers
			t.Fatal(err)
		}
		if err := answers(map[string]bool{well.ID: true, sick.ID: true}); err != nil {
			t.Fatal(err)
		}
		if fs := Failures(load.Stop()); len(fs) > 0 {
			t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
		}
	})
}

func TestDigestModeLocksSwitchyardNodes(t *testing.T) {
	auth := "switchyard:" + token()
	c, _ := startCluster(t, builtin(), 2, 2, func(o *Options) { o.ZKAuth = auth })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)

	out, err := ZkCli(ctx, c.ZK.Addr, "set", "/active_color", "green")
	if err == nil || !strings.Contains(out, "Insufficient permission") {
		t.Errorf("an unauthenticated zkCli write was not refused: %v\n%s", err, out)
	}
	anon := c.ZKConn() // the harness's own session has no credentials
	if _, err := anon.Create("/green/intruder", []byte(`{"service":"hello","id":"intruder","address":"127.0.0.1","port":1}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("an unauthenticated session announced an instance: %v", err)
	}
	if err := anon.Delete("/blue/hello-blue-1", -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("an unauthenticated session deleted an instance node: %v", err)
	}
	if out, err := c.CLI(ctx, "switch", "green", "--zk-auth", "switchyard:wrong"); err == nil || !strings.Contains(out, "SWITCHYARD_ZK_AUTH") {
		t.Errorf("a wrong password switched: %v\n%s", err, out)
	}
	if raw, _, err := anon.Get("/active_color"); err != nil || string(raw) != layout.Blue {
		t.Fatalf("/active_color = %q, %v after refused writes; everyone may still read it", raw, err)
	}

	// CI's way: log in, then write, in one zkCli session.
	if out, err := ZkCliScript(ctx, c.ZK.Addr, "addauth digest "+auth, "set /active_color green"); err != nil {
		t.Fatalf("authenticated zkCli: %v\n%s", err, out)
	}
	if err := c.WaitServing(ctx, layout.Green, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := c.CLI(ctx, "switch", "blue", "--wait"); err != nil {
		t.Fatalf("switchyard switch with SWITCHYARD_ZK_AUTH: %v\n%s", err, out)
	}
	if err := c.WaitServing(ctx, layout.Blue, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if fs := Failures(load.Stop()); len(fs) > 0 {
		t.Errorf("%d requests failed:\n%s", len(fs), failuresText(fs))
	}
}
