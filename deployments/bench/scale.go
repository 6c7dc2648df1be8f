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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/signing"
	"github.com/switchyard/switchyard/zkstate"
)

// scaleConns is the load's connections during the scale switches: fewer
// than the other loads', since the 1,000 instances and every process of
// the cluster already share the two cores.
const scaleConns = 8

// scale switches clusters of simulated instances, half blue and half
// green. Each instance is a real sdk.Instance (its own ZooKeeper session
// and ephemeral node, its registry lease and heartbeat, its own loopback
// listener serving the SDK's health and status endpoints) and they share
// this process, so the controller, registry and gateway processes do all
// of their real work.
func (b *bencher) scale(ctx context.Context) error {
	for _, n := range b.ScaleSizes {
		row := &ScaleRow{Instances: n, Blue: n / 2, Green: n - n/2}
		if err := b.scaleOne(ctx, row); err != nil {
			b.note("scale %d: %v", n, err)
		} else {
			b.r.Scale = append(b.r.Scale, row)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (b *bencher) scaleOne(ctx context.Context, row *ScaleRow) error {
	name := fmt.Sprintf("scale-%d", row.Instances)
	c, err := b.startCluster(ctx, name, "", 0)
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
	fleet, stopFleet, err := startFleet(ctx, c, reg, b.token, log, row.Blue, row.Green)
	defer stopFleet()
	if err != nil {
		return err
	}
	if err := waitUp(ctx, reg, zkstate.Blue, row.Blue, row.Instances, 5*time.Minute); err != nil {
		return err
	}
	b.logf("scale %d: %d blue UP and %d green standing by after %s", row.Instances, row.Blue, row.Green, time.Since(begin).Round(100*time.Millisecond))
	// Let the leader's start-up reconciles settle before the measured flip.
	_ = retry.Sleep(ctx, 2*time.Second)

	// The CPU time of every process, sampled across the flips, tells what
	// the first switch cost each once its start and end are known.
	pids := map[string]int{"bench process (the instances)": os.Getpid()}
	if pid, err := childRunning("ZooKeeperServerMain"); err == nil {
		pids["ZooKeeper"] = pid
	}
	for name, p := range map[string]*local.Proc{"registry": c.Registry, "gateway": c.Gateway, "controller-1": c.Controllers[0], "controller-2": c.Controllers[1]} {
		if pid, err := pidOf(p); err == nil {
			pids[name] = pid
		}
	}
	var samples []cpuSample
	stopCPU := every(100*time.Millisecond, func() {
		s := cpuSample{at: time.Now(), cpu: map[string]time.Duration{}}
		for name, pid := range pids {
			s.cpu[name], _ = cpuTime(pid)
		}
		samples = append(samples, s)
	})
	defer stopCPU()
	flips := 2
	if row.Instances >= 1000 {
		flips = 1
	}
	// Traffic goes through the gateway to the simulated instances across
	// the flips, with the client that never resends: a switch that batches
	// must still lose no request.
	ld := startLoad(ctx, strings.TrimPrefix(c.GatewayURL, "http://"), scaleConns, loadPause)
	defer ld.Stop()
	_ = retry.Sleep(ctx, 500*time.Millisecond)
	color := zkstate.Blue
	var first zkstate.Switch
	for i := range flips {
		color = color.Other()
		rec, at, err := flip(ctx, c, color, 5*time.Minute)
		if err != nil {
			return err
		}
		if i == 0 {
			first = rec
		}
		row.Durations = append(row.Durations, rec.Duration())
		row.Phases = append(row.Phases, phasesOf(rec, at))
		b.logf("scale %d: switch to %s took %s; %+v", row.Instances, color, rec.Duration(), row.Phases[i])
		_ = retry.Sleep(ctx, time.Second)
	}
	stopCPU()
	row.CPU, row.Wall = cpuBetween(samples, first.StartedAt, *first.FinishedAt)
	rs := ld.Stop()
	var fs []local.Result
	for _, r := range rs {
		if r.Err != "" {
			fs = append(fs, r)
		}
	}
	row.Requests, row.Failed, row.FailKinds = len(rs), len(fs), errorKinds(fs)
	b.logf("scale %d: %d requests through the gateway across the switches, %d failed %s", row.Instances, row.Requests, row.Failed, row.FailKinds)

	if costs, err := probeCosts(ctx, c, fleet, b.token, color); err != nil {
		b.logf("scale %d: timing the step's parts: %v", row.Instances, err)
	} else {
		row.Costs = costs
		b.logf("scale %d: step parts %+v", row.Instances, costs)
	}
	row.Mem = clusterMem(c)
	b.addMem(fmt.Sprintf("%d instances, after the switch", row.Instances), row.Mem, "controller (leader)", "registry", "gateway")
	return nil
}

type cpuSample struct {
	at  time.Time
	cpu map[string]time.Duration
}

// cpuBetween is the CPU time each process used from the last sample at or
// before from to the first at or after to, and that span.
func cpuBetween(samples []cpuSample, from, to time.Time) (map[string]time.Duration, time.Duration) {
	var a, b *cpuSample
	for i := range samples {
		if !samples[i].at.After(from) {
			a = &samples[i]
		}
		if b == nil && !samples[i].at.Before(to) {
			b = &samples[i]
		}
	}
	if a == nil || b == nil {
		return nil, 0
	}
	out := map[string]time.Duration{}
	for name, d := range b.cpu {
		out[name] = d - a.cpu[name]
	}
	return out, b.at.Sub(a.at)
}

// sim is one simulated instance in this process.
type sim struct {
	inst  *sdk.Instance
	srv   *http.Server
	color zkstate.Color
	addr  string
}

// startFleet starts blue and green instances, 32 at a time; stop stops
// those that started.
func startFleet(ctx context.Context, c *local.Cluster, reg registry.Backend, token string, log logrus.FieldLogger, blue, green int) (fleet []*sim, stop func(), err error) {
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(32)
	for i := range blue + green {
		color, n := zkstate.Blue, i
		if i >= blue {
			color, n = zkstate.Green, i-blue
		}
		g.Go(func() error {
			s, err := startSim(ctx, c, reg, token, log, color, n)
			if err == nil {
				mu.Lock()
				fleet = append(fleet, s)
				mu.Unlock()
			}
			return err
		})
	}
	err = g.Wait()
	// Shut every instance down as the SDK does, many at a time.
	stop = func() {
		var g errgroup.Group
		g.SetLimit(64)
		for _, s := range fleet {
			g.Go(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.inst.Shutdown(ctx, s.srv); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					_ = s.srv.Close()
				}
				return nil
			})
		}
		_ = g.Wait()
	}
	if err != nil {
		err = fmt.Errorf("%d of %d instances started: %w", len(fleet), blue+green, err)
	}
	return fleet, stop, err
}

func startSim(ctx context.Context, c *local.Cluster, reg registry.Backend, token string, log logrus.FieldLogger, color zkstate.Color, n int) (*sim, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	inst, err := sdk.New(sdk.Config{
		Service: "hello", Color: color, ID: fmt.Sprintf("sim-%s-%04d", color, n),
		Version: map[zkstate.Color]string{zkstate.Blue: "v1", zkstate.Green: "v2"}[color],
		Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
		ZK: []string{c.ZK.Addr}, ZKRoot: "/", Registry: reg, Token: token,
		DrainTimeout: 500 * time.Millisecond, Log: log,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: inst.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Switchyard-Color", string(color))
		_, _ = w.Write([]byte(string(color) + "\n"))
	}))}
	go func() { _ = srv.Serve(ln) }()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := inst.Start(sctx); err != nil {
		srv.Close()
		return nil, err
	}
	return &sim{inst: inst, srv: srv, color: color, addr: ln.Addr().String()}, nil
}

// probeCosts times each part of a switch step on its own, median of 20.
func probeCosts(ctx context.Context, c *local.Cluster, fleet []*sim, token string, active zkstate.Color) (StepCosts, error) {
	var sc StepCosts
	conn := c.ZKConn()
	raw, _, err := conn.Get(c.Paths.Switch())
	if err != nil {
		return sc, err
	}
	sc.RecordBytes = len(raw)
	const probe = "/switchyard/bench-probe"
	if _, err := conn.Create(probe, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return sc, err
	}
	defer func() { _ = conn.Delete(probe, -1) }()
	i := slices.IndexFunc(fleet, func(s *sim) bool { return s.color == active })
	if i < 0 {
		return sc, errors.New("no instance of the active color")
	}
	target := fleet[i]
	set := func(n int) func() error {
		data := bytes.Repeat([]byte("x"), max(n, 1))
		return func() error { _, err := conn.Set(probe, data, -1); return err }
	}
	// Instructions are signed with the instance's key and fenced by the
	// leader's epoch (the creation zxid of its election node): the probe
	// signs as the leader does, with the leader's own epoch, which the
	// instance has seen already, so it fences nothing.
	kids, _, err := conn.Children(c.Paths.Leader())
	if err != nil || len(kids) == 0 {
		return sc, fmt.Errorf("read the leader's election node: %v", err)
	}
	zkstate.SortCandidates(kids)
	_, lstat, err := conn.Get(c.Paths.Leader() + "/" + kids[0])
	if err != nil {
		return sc, err
	}
	keys, err := signing.ParseKeys(registry.InstanceToken(token, target.inst.ID()))
	if err != nil {
		return sc, err
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(method, path, body string) func() error {
		return func() error {
			req, _ := http.NewRequestWithContext(ctx, method, "http://"+target.addr+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if body != "" {
				if err := keys.Sign(req, []byte(body), signing.Claims{Subject: target.inst.ID(), Epoch: lstat.Czxid}); err != nil {
					return err
				}
			}
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
	for _, part := range []struct {
		into *time.Duration
		op   func() error
	}{
		{&sc.ZKSetSmall, set(200)},
		{&sc.ZKSetHalf, set(sc.RecordBytes / 2)},
		{&sc.ZKSetFull, set(sc.RecordBytes)},
		{&sc.ZKGet, func() error { _, _, err := conn.Get(c.Paths.ActiveColor()); return err }},
		{&sc.Health, call(http.MethodGet, sdk.HealthPath, "")},
		{&sc.Instruct, call(http.MethodPut, sdk.StatusPath, `{"status":"UP"}`)},
	} {
		var ds []time.Duration
		for range 20 {
			start := time.Now()
			if err := part.op(); err != nil {
				return sc, err
			}
			ds = append(ds, time.Since(start))
		}
		*part.into = pct(ds, 50)
	}
	return sc, nil
}

// goBench runs the gateway's routing-table benchmark for 10,000 instances
// (gateway/bench_test.go) so its figure lands in the same table.
func (b *bencher) goBench(ctx context.Context) error {
	out, err := b.command(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkTableBuild10000$", "-benchmem", "-count", "1", "./gateway/")
	if err != nil {
		return err
	}
	b.r.TableBuild = parseGoBench(out)
	if len(b.r.TableBuild) == 0 {
		return fmt.Errorf("no benchmark lines in:\n%s", out)
	}
	for _, g := range b.r.TableBuild {
		b.logf("%s: %s/op, %d B/op, %d allocs/op", g.Name, g.PerOp, g.BytesPerOp, g.AllocsPerOp)
	}
	return nil
}

// GoBench is one line of `go test -bench -benchmem` output.
type GoBench struct {
	Name        string
	PerOp       time.Duration
	BytesPerOp  uint64
	AllocsPerOp int64
}

var goBenchLine = regexp.MustCompile(`(?m)^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

func parseGoBench(out string) []GoBench {
	var res []GoBench
	for _, m := range goBenchLine.FindAllStringSubmatch(out, -1) {
		ns, _ := strconv.ParseFloat(m[2], 64)
		bytes, _ := strconv.ParseUint(m[3], 10, 64)
		allocs, _ := strconv.ParseInt(m[4], 10, 64)
		res = append(res, GoBench{Name: m[1], PerOp: time.Duration(ns), BytesPerOp: bytes, AllocsPerOp: allocs})
	}
	return res
}

// ScaleConns is the load's connections during the scale switches, for the
// report.
func (r *Report) ScaleConns() int { return scaleConns }
