package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

// PropagationResult is one registry backend's row: flips made by the real
// zkCli.sh under load through the gateway.
type PropagationResult struct {
	Backend     string
	Missing     string // why it could not be measured
	Conns       int
	Pause       time.Duration
	Flips       int
	Requests    int
	Failed      int
	FailKinds   string
	Propagation []time.Duration // the write until every response is the new color
	Durations   []time.Duration // the switch record's own duration
	Unfinished  int             // flips that did not finish done or never took over
	PerFlip     []int           // failed requests from each flip's write to the next one's
	Phases      []Phases        // where each switch's time went
}

// startCluster runs the local topology with the production defaults (no
// Fast timings) for the benchmark.
func (b *bencher) startCluster(ctx context.Context, name, registryURL string, blue, green int) (*local.Cluster, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := local.Start(ctx, local.Options{
		Bin: b.bin, Dir: dir, Token: b.token, Controllers: 2, Blue: blue, Green: green, RegistryURL: registryURL,
	})
	if err != nil {
		return nil, fmt.Errorf("start cluster (logs in %s): %w", dir, err)
	}
	return c, nil
}

// builtinCluster measures throughput and propagation on one cluster with
// the built-in registry: two blue backends that every proxy shares, and two
// green ones to switch to.
func (b *bencher) builtinCluster(ctx context.Context) error {
	c, err := b.startCluster(ctx, "builtin", "", 2, 2)
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := b.waitSettled(ctx, c, layout.Blue); err != nil {
		return err
	}
	if b.wants(SectionThroughput) {
		b.runSection("gateway throughput", func() error { return b.throughput(ctx, c) })
	}
	if b.wants(SectionPropagation) {
		b.runSection("switch propagation (built-in registry)", func() error {
			r, err := b.propagation(ctx, c, "built-in", "under the switch load, after the flips")
			b.report.Propagation = append(b.report.Propagation, r)
			return err
		})
	}
	return nil
}

// consul measures propagation with the Consul registry, when the Consul
// backend works on this checkout.
func (b *bencher) consul(ctx context.Context) error {
	r := &PropagationResult{Backend: "Consul"}
	b.report.Propagation = append(b.report.Propagation, r)
	dir := filepath.Join(b.dir, "consul-agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	agent, err := local.StartConsul(sctx, dir)
	cancel()
	if err != nil {
		r.Missing = "consul agent: " + firstLine(err.Error())
		return nil
	}
	defer agent.Stop()
	reg, err := registry.Open(agent.URL(), b.token)
	if err == nil {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = reg.Instances(qctx, "", 0, 0)
		cancel()
	}
	if err != nil {
		r.Missing = "registry.Open(consul://...): " + firstLine(err.Error())
		return nil
	}
	c, err := b.startCluster(ctx, "consul", agent.URL(), 2, 2)
	if err != nil {
		r.Missing = firstLine(err.Error())
		return nil
	}
	defer c.Stop()
	if err := b.waitSettled(ctx, c, layout.Blue); err != nil {
		r.Missing = firstLine(err.Error())
		return nil
	}
	got, err := b.propagation(ctx, c, "Consul", "under the switch load with Consul, after the flips")
	*r = *got
	return err
}

// waitSettled waits until the controller has finished its start-up work
// and the gateway serves only color.
func (b *bencher) waitSettled(ctx context.Context, c *local.Cluster, color string) error {
	if err := c.WaitServing(ctx, color, time.Minute); err != nil {
		return err
	}
	// The leader brings the active color UP and the other color's new
	// instances stay OUT_OF_SERVICE; give its last steps a moment.
	time.Sleep(time.Second)
	return nil
}

// propagation flips /active_color with zkCli.sh Flips times under load and
// measures each flip.
func (b *bencher) propagation(ctx context.Context, c *local.Cluster, name, memWhen string) (*PropagationResult, error) {
	r := &PropagationResult{Backend: name, Conns: b.opts.Conns, Pause: b.opts.LoadPause}
	addr := strings.TrimPrefix(c.GatewayURL, "http://")
	ld := startLoad(ctx, LoadConfig{Addr: addr, Conns: b.opts.Conns, Pause: b.opts.LoadPause, MaxDuration: 10 * time.Minute})
	stopped := false
	defer func() {
		if !stopped {
			ld.Stop()
		}
	}()
	time.Sleep(time.Second)
	type flip struct {
		color string
		at    time.Time
		rec   layout.Switch
		ok    bool
	}
	var flips []flip
	color := layout.Blue
	for i := range b.opts.Flips {
		color = layout.Other(color)
		id, at, err := c.Flip(ctx, color)
		if err != nil {
			return r, fmt.Errorf("flip %d: %w", i+1, err)
		}
		rec, err := c.WaitRecord(ctx, 90*time.Second, func(s layout.Switch) bool {
			return s.ID >= id && s.Target == color && s.Phase.Finished()
		})
		f := flip{color: color, at: at, rec: rec, ok: err == nil && rec.Phase == layout.PhaseDone}
		flips = append(flips, f)
		if !f.ok {
			b.logf("%s: flip %d to %s did not finish done: %v %s", name, i+1, color, err, rec.Reason)
			continue
		}
		b.logf("%s: flip %2d to %-5s switch %s", name, i+1, color, rec.Duration().Round(time.Millisecond))
	}
	// Let the last flip's tail show in the results.
	time.Sleep(time.Second)
	b.sampleClusterMem(c, memWhen)
	rs := ld.Stop()
	stopped = true

	fs := local.Failures(rs)
	r.Flips, r.Requests, r.Failed, r.FailKinds = len(flips), len(rs), len(fs), errorKinds(fs)
	for i, f := range flips {
		until := time.Now()
		if i+1 < len(flips) {
			until = flips[i+1].at
		}
		r.PerFlip = append(r.PerFlip, len(local.Failures(between(rs, f.at, until))))
		p, took := local.Propagation(rs, f.at, until, f.color)
		if !f.ok || !took {
			r.Unfinished++
			continue
		}
		r.Propagation = append(r.Propagation, p)
		r.Durations = append(r.Durations, f.rec.Duration())
		r.Phases = append(r.Phases, phasesOf(f.rec, f.at))
	}
	b.logf("%s: %d flips, %d requests, %d failed; propagation p50 %s p99 %s max %s",
		name, r.Flips, r.Requests, r.Failed, pct(r.Propagation, 50), pct(r.Propagation, 99), pct(r.Propagation, 100))
	return r, nil
}

// sampleClusterMem records the memory of the cluster's long-running
// processes.
func (b *bencher) sampleClusterMem(c *local.Cluster, when string) {
	add := func(name string, p *local.Proc) {
		pid, err := pidOf(p)
		if err != nil {
			return
		}
		if m, err := memOf(pid); err == nil {
			b.report.addMem(name, when, m)
		}
	}
	add("gateway", c.Gateway)
	if c.Registry != nil {
		add("registry", c.Registry)
	}
	leader := ""
	if rec, err := c.Record(); err == nil {
		leader = rec.Leader
	}
	for _, p := range c.Controllers {
		role := "controller (standby)"
		if p.Name == leader {
			role = "controller (leader)"
		}
		add(role, p)
	}
}
