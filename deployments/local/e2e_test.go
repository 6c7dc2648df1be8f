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

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
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
	for _, b := range registries() {
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

// assertServed fails t unless every request of a load succeeded and the
// load sent each of methods: a switch must fail no request, and the bodies
// of POSTs, which are never retried, must cross it too.
func assertServed(t *testing.T, results []Result, during string, methods ...string) {
	t.Helper()
	if len(methods) == 0 {
		methods = []string{http.MethodGet, http.MethodPost}
	}
	for _, m := range methods {
		if Count(results, m) == 0 {
			t.Errorf("the load sent no %s %s; it did not run", m, during)
		}
	}
	if fs := Failures(results); len(fs) > 0 {
		t.Errorf("%d of %d requests failed %s:\n%s", len(fs), len(results), during, failuresText(fs))
	}
}

// waitSent waits until the load has sent n requests.
func waitSent(t *testing.T, load *Load, n int) {
	t.Helper()
	testutil.Eventually(t, time.Minute, fmt.Sprintf("%d requests through the gateway", n), func() bool { return load.Sent() >= n })
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
func flipAndMeasure(t *testing.T, ctx context.Context, c *Cluster, color zkstate.Color) (id int64, at time.Time, rec zkstate.Switch) {
	t.Helper()
	id, at, err := c.Flip(ctx, string(color))
	if err != nil {
		t.Fatal(err)
	}
	rec, err = c.WaitRecord(ctx, 20*time.Second, func(r zkstate.Switch) bool {
		return r.ID >= id && r.Target == color && r.Phase.Finished()
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != zkstate.PhaseDone {
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
			color zkstate.Color
			at    time.Time
			rec   zkstate.Switch
		}
		var flips []flip
		for i := range 10 {
			color := []zkstate.Color{zkstate.Green, zkstate.Blue}[i%2]
			_, at, rec := flipAndMeasure(t, ctx, c, color)
			flips = append(flips, flip{color, at, rec})
		}
		results := load.Stop()
		views, violations := probe.Stop()

		assertServed(t, results, "through the flips")
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
			if _, err := c.StartInstance(ctx, zkstate.Green, "--healthy=false"); err != nil {
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
		if err != nil || rec.Phase != zkstate.PhaseRefused || rec.Active != zkstate.Blue {
			t.Errorf("record = %+v, %v; want refused with blue active", rec, err)
		}
		assertServed(t, results, "during the switch")
		for _, r := range results {
			if r.Color != zkstate.Blue {
				t.Fatalf("a request was answered by %q during a refused switch", r.Color)
			}
		}
		// Once green is healthy, the wanted switch goes ahead.
		for _, in := range c.Instances {
			if in.Color == zkstate.Green {
				_ = in.Signal(sigUSR1)
			}
		}
		if err := c.WaitServing(ctx, zkstate.Green, 30*time.Second); err != nil {
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
				rec, err := c.WaitRecord(ctx, 15*time.Second, func(r zkstate.Switch) bool { return r.ID == id })
				if err != nil {
					t.Fatal(err)
				}
				if rec.Phase != zkstate.PhaseRefused || !strings.Contains(rec.Reason, "not blue or green") {
					t.Errorf("record = phase %s reason %q; want refused, not blue or green", rec.Phase, rec.Reason)
				}
				if rec.Active != zkstate.Blue {
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
		assertServed(t, results, "during the switch")
		for _, r := range results {
			if r.Color != zkstate.Blue {
				t.Fatalf("a bad value moved traffic to %q", r.Color)
			}
		}
		flipAndMeasure(t, ctx, c, zkstate.Green)
	})
}

func TestLeaderKilledMidSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// Slow health checks make the switch long enough to interrupt.
		for range 4 {
			if _, err := c.StartInstance(ctx, zkstate.Green, "--health-delay", "400ms"); err != nil {
				t.Fatal(err)
			}
		}
		load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
		id, _, err := c.Flip(ctx, string(zkstate.Green))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := c.WaitRecord(ctx, 20*time.Second, func(r zkstate.Switch) bool {
			return r.ID == id && r.Phase == zkstate.PhaseSwitching && len(r.Steps) >= 1
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

		done, err := c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool { return r.ID == id && r.Phase.Finished() })
		if err != nil {
			t.Fatal(err)
		}
		if done.Phase != zkstate.PhaseDone || done.Target != zkstate.Green || done.Leader == leader.Name {
			t.Fatalf("after the leader died: phase %s target %s leader %s", done.Phase, done.Target, done.Leader)
		}
		if !done.StartedAt.Equal(rec.StartedAt) {
			t.Errorf("the new leader started a new switch instead of completing the same one")
		}
		if err := c.WaitServing(ctx, zkstate.Green, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		results := load.Stop()
		assertServed(t, results, "during the switch")
		assertStatuses(t, ctx, c, zkstate.Green)
	})
}

// assertStatuses checks the registry: active color UP, the other OUT.
func assertStatuses(t *testing.T, ctx context.Context, c *Cluster, active zkstate.Color) {
	t.Helper()
	reg, _ := c.Backend()
	var last string
	err := retry.Until(ctx, 15*time.Second, func() (bool, error) {
		snap, err := reg.Instances(ctx, "hello", 0, 0)
		if err != nil {
			return false, err
		}
		var bad []string
		live := 0
		for _, in := range snap.Instances {
			if !c.alive(in.ID) {
				continue
			}
			live++
			want := registry.StatusOutOfService
			if zkstate.Color(in.Color) == active {
				want = registry.StatusUp
			}
			if in.Status != want {
				bad = append(bad, fmt.Sprintf("%s is %s", in.ID, in.Status))
			}
		}
		last = strings.Join(bad, ", ")
		return len(bad) == 0 && live > 0, nil
	})
	if err != nil {
		t.Errorf("statuses never settled with %s active (%s): %v", active, last, err)
	}
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
		// GET only: a POST in flight to a killed instance cannot be resent
		// safely, so the gateway answers 502 for it, as nginx does.
		load := StartLoadMethods(ctx, c.GatewayURL+"/?sleep=5ms", 8, 0, http.MethodGet)
		waitSent(t, load, 100) // traffic before the kill
		killed := c.Instances[0]
		killed.Kill()
		reg, err := c.Backend()
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, time.Minute, "the killed instance to leave routing", func() bool {
			snap, err := reg.Instances(ctx, "hello", 0, 0)
			if err != nil {
				return false
			}
			for _, in := range snap.Instances {
				if in.ID == killed.ID && in.Status == registry.StatusUp {
					return false
				}
			}
			return true
		})
		waitSent(t, load, load.Sent()+200) // traffic after it left
		results := load.Stop()
		assertServed(t, results, "after SIGKILL", http.MethodGet)
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
		waitSent(t, load, 50)
		if err := restart(); err != nil {
			t.Fatal(err)
		}
		assertStatuses(t, ctx, c, zkstate.Blue)
		results := load.Stop()
		assertServed(t, results, "across the registry restart")
		// The restored registry still drives a switch.
		flipAndMeasure(t, ctx, c, zkstate.Green)
		assertStatuses(t, ctx, c, zkstate.Green)
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
	if err != nil || string(raw) != string(zkstate.Blue) {
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
		for _, color := range []zkstate.Color{zkstate.Green, zkstate.Blue, zkstate.Green} {
			stat, err := c.ZKConn().Set("/active_color", []byte(color), -1)
			if err != nil {
				t.Fatal(err)
			}
			last = stat.Mzxid
		}
		rec, err := c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool {
			return r.ID >= last && r.Phase.Finished()
		})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Phase != zkstate.PhaseDone || rec.Active != zkstate.Green {
			t.Fatalf("after rapid flips: phase %s, active %s; want done on green", rec.Phase, rec.Active)
		}
		if err := c.WaitServing(ctx, zkstate.Green, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		assertStatuses(t, ctx, c, zkstate.Green)
		assertServed(t, load.Stop(), "during the test")
	})
}

func TestInstanceThatStopsAnsweringDoesNotAbortTheSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var frozen *Instance
		for _, in := range c.Instances {
			if in.Color == zkstate.Green {
				frozen = in
				break
			}
		}
		// A frozen process neither answers health checks nor instructions.
		if err := frozen.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		id, _, err := c.Flip(ctx, string(zkstate.Green))
		if err != nil {
			t.Fatal(err)
		}
		// A hold, not a wait: the leader must meet the frozen instance.
		time.Sleep(time.Second)
		if err := frozen.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		rec, err := c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool { return r.ID == id && r.Phase.Finished() })
		if err != nil {
			t.Fatal(err)
		}
		if rec.Phase != zkstate.PhaseDone {
			t.Fatalf("switch ended %s: %s", rec.Phase, rec.Reason)
		}
		// Once it answers again it is brought UP like any active instance.
		assertStatuses(t, ctx, c, zkstate.Green)
		if err := c.WaitServing(ctx, zkstate.Green, 10*time.Second); err != nil {
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
			err := retry.Until(ctx, 30*time.Second, func() (bool, error) {
				seen := map[string]bool{}
				for range 40 {
					if _, inst, err := Send(ctx, http.DefaultClient, http.MethodGet, c.GatewayURL+"/"); err == nil {
						seen[inst] = true
					}
				}
				return maps.Equal(seen, want), nil
			})
			if err != nil {
				return fmt.Errorf("the gateway never routed to exactly %v: %w", want, err)
			}
			return nil
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
		assertServed(t, load.Stop(), "during the test")
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
	if raw, _, err := anon.Get("/active_color"); err != nil || string(raw) != string(zkstate.Blue) {
		t.Fatalf("/active_color = %q, %v after refused writes; everyone may still read it", raw, err)
	}

	// CI's way: log in, then write, in one zkCli session.
	if out, err := ZkCliScript(ctx, c.ZK.Addr, "addauth digest "+auth, "set /active_color green"); err != nil {
		t.Fatalf("authenticated zkCli: %v\n%s", err, out)
	}
	if err := c.WaitServing(ctx, zkstate.Green, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := c.CLI(ctx, "switch", "blue", "--wait"); err != nil {
		t.Fatalf("switchyard switch with SWITCHYARD_ZK_AUTH: %v\n%s", err, out)
	}
	if err := c.WaitServing(ctx, zkstate.Blue, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	assertServed(t, load.Stop(), "in digest mode")
}
