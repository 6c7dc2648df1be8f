package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
)

// leases starts a built-in registry process, registers Leases instances
// and heartbeats each once a second (the SDK's default) through the same
// registry client the SDK uses, while it reads the process's CPU time from
// /proc.
func (b *bencher) leases(ctx context.Context) error {
	r := &LeaseResult{Leases: b.Leases, Interval: time.Second}
	dir := filepath.Join(b.dir, "leases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := startProc(ctx, dir, "registry", addr, []string{"SWITCHYARD_TOKEN=" + b.token},
		filepath.Join(b.bin, "switchyard"), "registry", "--listen", addr, "--warmup", "0s", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer p.stop(syscall.SIGTERM, 5*time.Second)
	// The SDK's client keeps 16 idle connections per registry; several
	// clients keep every heartbeat worker on a kept-alive connection.
	const clients, workers = 4, 64
	var cs []*registry.Client
	for range clients {
		cs = append(cs, registry.NewClient("http://"+addr, b.token))
	}
	id := func(i int) string { return fmt.Sprintf("lease-%05d", i) }
	begin := time.Now()
	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			for i := w; i < r.Leases; i += workers {
				inst := registry.Instance{ID: id(i), Service: "lease", Color: "blue", Address: "127.0.0.1", Port: 10000 + i%50000, Status: registry.StatusOutOfService}
				if err := cs[w%clients].Register(ctx, inst); err != nil {
					return fmt.Errorf("register leases: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	b.logf("leases: %d registered in %s; heartbeating each every %s for %s", r.Leases, time.Since(begin).Round(100*time.Millisecond), r.Interval, b.LeaseRun)

	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	hctx, cancel := context.WithTimeout(ctx, b.LeaseRun)
	defer cancel()
	var beats, errs atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c := cs[w%clients]
			// Spread the workers over the interval, as independent
			// instances' tickers are.
			for next := t0.Add(r.Interval * time.Duration(w) / workers); retry.Sleep(hctx, time.Until(next)) == nil; next = next.Add(r.Interval) {
				for i := w; i < r.Leases && hctx.Err() == nil; i += workers {
					if err := c.Heartbeat(hctx, id(i)); err == nil {
						beats.Add(1)
					} else if hctx.Err() == nil {
						errs.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	run := time.Since(t0)
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return err
	}
	r.Run, r.CPU, r.Heartbeats, r.Errors = run, cpu1-cpu0, beats.Load(), errs.Load()
	r.Mem, _ = memOf(p.pid())
	var lists []time.Duration
	for range 3 {
		start := time.Now()
		snap, err := cs[0].Instances(ctx, "lease", 0, 0)
		if err != nil {
			return fmt.Errorf("list leases: %w", err)
		}
		lists = append(lists, time.Since(start))
		r.Live = len(snap.Instances)
	}
	r.List = pct(lists, 50)
	b.r.Leases = r
	b.r.addMem("registry", fmt.Sprintf("%d heartbeating leases", r.Leases), r.Mem)
	b.logf("leases: %d heartbeats (%.0f/s), %d errors, registry CPU %s over %s = %.0f%% of one core, RSS %s, %d live, full list %s",
		r.Heartbeats, r.Rate(), r.Errors, r.CPU, r.Run.Round(time.Millisecond), r.Share(), mb(r.Mem.RSS), r.Live, r.List.Round(time.Millisecond))
	return nil
}
