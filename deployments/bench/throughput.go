package bench

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/deployments/local"
)

// Target names of the throughput table.
const (
	TargetDirect  = "backends directly"
	TargetGateway = "switchyard gateway"
	TargetNginx   = "nginx"
	TargetCaddy   = "Caddy"
)

// TargetResult is one row of the throughput table: every wrk run against
// one target.
type TargetResult struct {
	Name    string
	Config  string
	Runs    []WrkResult
	Missing string // why the target could not be measured
}

// ThroughputResult is the throughput table.
type ThroughputResult struct {
	Threads, Conns int
	Duration       time.Duration
	Rounds         int
	Order          []string
	Targets        []*TargetResult
}

func (t *ThroughputResult) target(name string) *TargetResult {
	for _, r := range t.Targets {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// MeanRPS averages the runs.
func (r *TargetResult) MeanRPS() float64 {
	var s float64
	for _, w := range r.Runs {
		s += w.RPS
	}
	return s / float64(max(len(r.Runs), 1))
}

// MeanP50 and MeanP99 average the runs' percentiles.
func (r *TargetResult) MeanP50() time.Duration {
	return meanOf(r.Runs, func(w WrkResult) time.Duration { return w.P50 })
}
func (r *TargetResult) MeanP99() time.Duration {
	return meanOf(r.Runs, func(w WrkResult) time.Duration { return w.P99 })
}

func meanOf(runs []WrkResult, f func(WrkResult) time.Duration) time.Duration {
	var s time.Duration
	for _, w := range runs {
		s += f(w)
	}
	return s / time.Duration(max(len(runs), 1))
}

// Errors adds up the runs' errors.
func (r *TargetResult) Errors() int64 {
	var n int64
	for _, w := range r.Runs {
		n += w.Errors
	}
	return n
}

// throughput runs wrk against the two blue hello backends directly, the
// cluster's gateway, nginx and Caddy, all in front of the same backends,
// in interleaved rounds.
func (b *bencher) throughput(ctx context.Context, c *local.Cluster) error {
	var backends []string
	for _, in := range c.Instances {
		if in.Color == layout.Blue {
			backends = append(backends, in.Addr)
		}
	}
	if len(backends) < 2 {
		return fmt.Errorf("want two blue backends, have %d", len(backends))
	}
	res := &ThroughputResult{Threads: 2, Conns: b.opts.Conns, Duration: b.opts.WrkTime, Rounds: b.opts.Rounds}
	b.report.Throughput = res
	dir := filepath.Join(b.dir, "throughput")

	type target struct {
		*TargetResult
		url, script string
		pid         func() (int, error)
	}
	spread, err := wrkSpread(b.dir, backends)
	if err != nil {
		return err
	}
	gwPID := func() (int, error) { return pidOf(c.Gateway) }
	targets := []*target{
		{TargetResult: &TargetResult{Name: TargetDirect, Config: "one wrk thread per backend, 16 connections each"},
			url: "http://" + backends[0] + "/", script: spread},
		{TargetResult: &TargetResult{Name: TargetGateway, Config: "switchyard gateway, route / to hello"},
			url: c.GatewayURL + "/", pid: gwPID},
	}
	nginxAddr, err := freeAddr()
	if err != nil {
		return err
	}
	ng, err := startNginx(ctx, filepath.Join(dir, "nginx"), nginxKeepaliveServer(nginxAddr, backends), nginxAddr)
	nt := &target{TargetResult: &TargetResult{Name: TargetNginx, Config: "nginx " + b.report.Machine.Nginx + ", upstream keepalive 64, worker_processes auto"}}
	if err != nil {
		nt.Missing = firstLine(err.Error())
	} else {
		defer ng.Stop()
		nt.url = "http://" + nginxAddr + "/"
		nt.pid = func() (int, error) { return ng.PID(), nil }
	}
	targets = append(targets, nt)

	ct := &target{TargetResult: &TargetResult{Name: TargetCaddy, Config: "Caddy " + b.report.Machine.Caddy + ", reverse_proxy, lb_policy round_robin"}}
	if bin, err := b.ensureCaddy(ctx); err != nil {
		ct.Missing = firstLine(err.Error())
	} else if caddyAddr, err := freeAddr(); err != nil {
		return err
	} else if cd, err := startCaddy(ctx, bin, filepath.Join(dir, "caddy"), caddyAddr, backends); err != nil {
		ct.Missing = firstLine(err.Error())
	} else {
		defer cd.Stop()
		ct.url = "http://" + caddyAddr + "/"
		ct.pid = func() (int, error) { return cd.PID(), nil }
	}
	targets = append(targets, ct)
	for _, t := range targets {
		res.Targets = append(res.Targets, t.TargetResult)
	}

	// Every target must answer with a backend before it is measured.
	var live []*target
	for _, t := range targets {
		if t.Missing != "" {
			b.logf("throughput: %s not available: %s", t.Name, t.Missing)
			continue
		}
		if t.script == "" {
			color, err := local.GetColor(ctx, http.DefaultClient, t.url)
			if err != nil || color != layout.Blue {
				t.Missing = fmt.Sprintf("answered %q, %v instead of a blue backend", color, err)
				continue
			}
		}
		live = append(live, t)
	}
	// Warm every target up once (connection pools, JIT-free but not
	// page-fault-free), then measure in rounds whose order alternates, so
	// that a slow phase of the shared machine does not land on one target.
	for _, t := range live {
		if _, _, err := wrkRun(ctx, 2, b.opts.Conns, time.Second, t.url, t.script); err != nil {
			b.logf("throughput: warm-up of %s failed: %v", t.Name, err)
		}
	}
	for round := range b.opts.Rounds {
		order := live
		if round%2 == 1 {
			order = reversed(live)
		}
		var names []string
		for _, t := range order {
			names = append(names, t.Name)
			var sampler *rssSampler
			if t.pid != nil {
				if pid, err := t.pid(); err == nil {
					read := func() (Mem, error) { return memOfTree(pid) }
					sampler = sampleRSS(read, 250*time.Millisecond)
				}
			}
			w, _, err := wrkRun(ctx, 2, b.opts.Conns, b.opts.WrkTime, t.url, t.script)
			var m Mem
			if sampler != nil {
				m = sampler.Stop()
			}
			if err != nil {
				b.logf("throughput: %s round %d: %v", t.Name, round+1, err)
				continue
			}
			t.Runs = append(t.Runs, w)
			b.logf("throughput: round %d %-20s %8.0f rps  p50 %-8s p99 %-8s errors %d  rss %.1f MB",
				round+1, t.Name, w.RPS, w.P50, w.P99, w.Errors, mb(m.RSS))
			if m.RSS > 0 {
				b.report.addMem(t.Name, "under wrk load (largest sample)", m)
			}
		}
		res.Order = append(res.Order, strings.Join(names, " → "))
	}
	return nil
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
