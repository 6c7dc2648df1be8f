package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

// ScaleRow is one size of the scale table.
type ScaleRow struct {
	Instances   int
	Blue, Green int
	Startup     time.Duration   // all instances started, blue UP and routed
	Durations   []time.Duration // each switch record's duration
	Phases      []Phases
	LeaderMem   Mem
	RegistryMem Mem
	GatewayMem  Mem
	Costs       StepCosts
	// CPU is the CPU time each process used during the first measured
	// switch (sampled every 100 ms, so only meaningful for long switches),
	// over Wall.
	CPU     map[string]time.Duration
	Wall    time.Duration
	Missing string
}

// StepCosts are the pieces a switch step is made of, each timed on its own
// right after the switch (median of 20): what the controller's per-step
// work would cost on an idle cluster.
type StepCosts struct {
	RecordBytes int           // the finished switch record
	ZKSetSmall  time.Duration // a ZooKeeper write of 200 bytes
	ZKSetHalf   time.Duration // a write of half the final record: the mean record write of the switch
	ZKSetFull   time.Duration // a write of the final record's size
	ZKGet       time.Duration // a read of /active_color, as checkTarget does per step
	Health      time.Duration // GET /_switchyard/health on an instance
	Instruct    time.Duration // PUT /_switchyard/status with the status it has: SDK and registry, no change
}

// scale switches clusters of simulated instances, half blue and half
// green. Each instance is a real sdk.Instance (its own ZooKeeper session
// and ephemeral node, its registry lease and heartbeat, its own loopback
// listener serving the SDK's health and status endpoints) and they share
// this process, so the controller, registry and gateway processes do all
// of their real work.
func (b *bencher) scale(ctx context.Context) error {
	for _, n := range b.opts.ScaleSizes {
		row := &ScaleRow{Instances: n, Blue: n / 2, Green: n - n/2}
		b.report.Scale = append(b.report.Scale, row)
		if err := b.scaleOne(ctx, row); err != nil {
			row.Missing = firstLine(err.Error())
			b.logf("scale %d: %v", n, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (b *bencher) scaleOne(ctx context.Context, row *ScaleRow) error {
	name := fmt.Sprintf("scale-%d", row.Instances)
	c, err := b.startCluster(ctx, name, "", 0, 0)
	if err != nil {
		return err
	}
	defer c.Stop()
	reg, err := c.Backend()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.dir, name, "instances.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := logrus.New()
	log.SetOutput(logf)
	log.SetLevel(logrus.WarnLevel)

	begin := time.Now()
	fleet, err := startFleet(ctx, c, reg, b.token, log, row.Blue, row.Green)
	defer fleet.stop()
	if err != nil {
		return err
	}
	if err := waitUp(ctx, reg, layout.Blue, row.Blue, row.Instances, 5*time.Minute); err != nil {
		return err
	}
	row.Startup = time.Since(begin)
	b.logf("scale %d: %d blue UP and %d green standing by after %s", row.Instances, row.Blue, row.Green, row.Startup.Round(100*time.Millisecond))
	// Let the leader's start-up reconciles settle before the measured flip.
	time.Sleep(2 * time.Second)

	flips := 2
	if row.Instances >= 1000 {
		flips = 1
	}
	pids := map[string]int{"bench process (the instances)": os.Getpid()}
	if pid, err := childRunning("ZooKeeperServerMain"); err == nil {
		pids["ZooKeeper"] = pid
	}
	if pid, err := pidOf(c.Registry); err == nil {
		pids["registry"] = pid
	}
	if pid, err := pidOf(c.Gateway); err == nil {
		pids["gateway"] = pid
	}
	for i, p := range c.Controllers {
		if pid, err := pidOf(p); err == nil {
			pids[fmt.Sprintf("controller-%d", i+1)] = pid
		}
	}
	cpu := sampleCPU(pids, 100*time.Millisecond)
	defer cpu.Stop()
	color := layout.Blue
	for range flips {
		color = layout.Other(color)
		id, at, err := c.Flip(ctx, color)
		if err != nil {
			return err
		}
		rec, err := c.WaitRecord(ctx, 5*time.Minute, func(s layout.Switch) bool {
			return s.ID >= id && s.Target == color && s.Phase.Finished()
		})
		if err != nil {
			return err
		}
		if rec.Phase != layout.PhaseDone {
			return fmt.Errorf("switch to %s ended %s: %s", color, rec.Phase, rec.Reason)
		}
		ph := phasesOf(rec, at)
		if row.CPU == nil && rec.FinishedAt != nil {
			time.Sleep(150 * time.Millisecond) // one more sample after the end
			row.CPU, row.Wall = cpu.Between(rec.StartedAt, *rec.FinishedAt)
		}
		row.Durations = append(row.Durations, rec.Duration())
		row.Phases = append(row.Phases, ph)
		b.logf("scale %d: switch to %s took %s (write to done %s; react %s, prepare %s, %d UP in %s, gateways %s, %d OUT in %s, finish %s)",
			row.Instances, color, rec.Duration().Round(time.Millisecond), ph.Total.Round(time.Millisecond),
			ph.React.Round(time.Millisecond), ph.Prepare.Round(time.Millisecond), ph.UpSteps, ph.Up.Round(time.Millisecond),
			ph.Gateways.Round(time.Millisecond), ph.OutSteps, ph.Out.Round(time.Millisecond), ph.Finish.Round(time.Millisecond))
		time.Sleep(time.Second)
	}
	if costs, err := probeCosts(ctx, c, fleet, b.token, color); err != nil {
		b.logf("scale %d: timing the step's parts: %v", row.Instances, err)
	} else {
		row.Costs = costs
		b.logf("scale %d: record %d B; ZooKeeper write 200 B %s, %d B %s, %d B %s; read %s; health %s; no-op instruction %s",
			row.Instances, costs.RecordBytes, costs.ZKSetSmall, costs.RecordBytes/2, costs.ZKSetHalf, costs.RecordBytes, costs.ZKSetFull,
			costs.ZKGet, costs.Health, costs.Instruct)
	}
	leader := ""
	if rec, err := c.Record(); err == nil {
		leader = rec.Leader
	}
	for _, p := range c.Controllers {
		if p.Name != leader {
			continue
		}
		if pid, err := pidOf(p); err == nil {
			row.LeaderMem, _ = memOf(pid)
		}
	}
	if pid, err := pidOf(c.Registry); err == nil {
		row.RegistryMem, _ = memOf(pid)
	}
	if pid, err := pidOf(c.Gateway); err == nil {
		row.GatewayMem, _ = memOf(pid)
	}
	when := fmt.Sprintf("%d instances, after the switch", row.Instances)
	b.report.addMem("controller (leader)", when, row.LeaderMem)
	b.report.addMem("registry", when, row.RegistryMem)
	b.report.addMem("gateway", when, row.GatewayMem)
	return nil
}

// waitUp waits until the registry lists total instances of which want of
// color are UP and no other is.
func waitUp(ctx context.Context, reg registry.Backend, color string, want, total int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var up, all int
	for time.Now().Before(deadline) && ctx.Err() == nil {
		snap, err := reg.Instances(ctx, "hello", 0, 0)
		if err == nil && snap.Ready {
			up, all = 0, len(snap.Instances)
			others := 0
			for _, in := range snap.Instances {
				if in.Status == registry.StatusUp {
					if in.Color == color {
						up++
					} else {
						others++
					}
				}
			}
			if up == want && all == total && others == 0 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("registry shows %d of %d %s instances UP among %d registered of %d after %s", up, want, color, all, total, within)
}

// fleet is many sdk.Instances in this process.
type fleet struct {
	mu    sync.Mutex
	insts []*simInstance
}

type simInstance struct {
	inst  *sdk.Instance
	srv   *http.Server
	color string
	addr  string
}

func startFleet(ctx context.Context, c *local.Cluster, reg registry.Backend, token string, log logrus.FieldLogger, blue, green int) (*fleet, error) {
	f := &fleet{}
	type job struct {
		color string
		n     int
	}
	jobs := make(chan job)
	errs := make(chan error, blue+green)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for j := range jobs {
				si, err := startSim(ctx, c, reg, token, log, j.color, j.n)
				if err != nil {
					errs <- err
					continue
				}
				f.mu.Lock()
				f.insts = append(f.insts, si)
				f.mu.Unlock()
			}
		})
	}
	for i := range blue + green {
		color, n := layout.Blue, i
		if i >= blue {
			color, n = layout.Green, i-blue
		}
		jobs <- job{color, n}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		return f, fmt.Errorf("%d of %d instances did not start: %w", len(all), blue+green, all[0])
	}
	return f, nil
}

func startSim(ctx context.Context, c *local.Cluster, reg registry.Backend, token string, log logrus.FieldLogger, color string, n int) (*simInstance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	inst, err := sdk.New(sdk.Config{
		Service: "hello", Color: color, ID: fmt.Sprintf("sim-%s-%04d", color, n),
		Version: map[string]string{layout.Blue: "v1", layout.Green: "v2"}[color],
		Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
		ZK: []string{c.ZK.Addr}, ZKRoot: "/", Registry: reg, Token: token,
		DrainTimeout: 500 * time.Millisecond, Log: log,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: inst.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Switchyard-Color", color)
		_, _ = w.Write([]byte(color + "\n"))
	}))}
	go func() { _ = srv.Serve(ln) }()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := inst.Start(sctx); err != nil {
		srv.Close()
		return nil, err
	}
	return &simInstance{inst: inst, srv: srv, color: color, addr: ln.Addr().String()}, nil
}

// stop shuts every instance down as the SDK does, many at a time.
func (f *fleet) stop() {
	f.mu.Lock()
	insts := f.insts
	f.insts = nil
	f.mu.Unlock()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, si := range insts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := si.inst.Shutdown(ctx, si.srv); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				_ = si.srv.Close()
			}
		})
	}
	wg.Wait()
}

// probeCosts times each part of a switch step on its own.
func probeCosts(ctx context.Context, c *local.Cluster, f *fleet, token, active string) (StepCosts, error) {
	var sc StepCosts
	conn := c.ZKConn()
	paths, _ := layout.NewPaths("/")
	raw, _, err := conn.Get(paths.Switch())
	if err != nil {
		return sc, err
	}
	sc.RecordBytes = len(raw)
	const probe = "/switchyard/bench-probe"
	if _, err := conn.Create(probe, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return sc, err
	}
	defer func() { _ = conn.Delete(probe, -1) }()
	timeIt := func(op func() error) (time.Duration, error) {
		var ds []time.Duration
		for range 20 {
			start := time.Now()
			if err := op(); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(start))
		}
		return pct(ds, 50), nil
	}
	set := func(n int) func() error {
		data := bytes.Repeat([]byte("x"), max(n, 1))
		return func() error { _, err := conn.Set(probe, data, -1); return err }
	}
	if sc.ZKSetSmall, err = timeIt(set(200)); err != nil {
		return sc, err
	}
	if sc.ZKSetHalf, err = timeIt(set(sc.RecordBytes / 2)); err != nil {
		return sc, err
	}
	if sc.ZKSetFull, err = timeIt(set(sc.RecordBytes)); err != nil {
		return sc, err
	}
	if sc.ZKGet, err = timeIt(func() error { _, _, err := conn.Get(paths.ActiveColor()); return err }); err != nil {
		return sc, err
	}
	var target *simInstance
	f.mu.Lock()
	for _, si := range f.insts {
		if si.color == active {
			target = si
			break
		}
	}
	f.mu.Unlock()
	if target == nil {
		return sc, errors.New("no instance of the active color")
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(method, path, body string) func() error {
		return func() error {
			req, _ := http.NewRequestWithContext(ctx, method, "http://"+target.addr+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s %s answered %s", method, path, resp.Status)
			}
			return nil
		}
	}
	if sc.Health, err = timeIt(call(http.MethodGet, sdk.HealthPath, "")); err != nil {
		return sc, err
	}
	if sc.Instruct, err = timeIt(call(http.MethodPut, sdk.StatusPath, `{"status":"UP"}`)); err != nil {
		return sc, err
	}
	return sc, nil
}
