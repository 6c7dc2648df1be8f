package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// LeaseResult is the registry holding many leases that heartbeat.
type LeaseResult struct {
	Leases     int
	Interval   time.Duration // each lease's heartbeat interval, the SDK's default
	Run        time.Duration // the measured window
	Heartbeats int64
	Errors     int64
	CPU        time.Duration // the registry process's CPU time in the window
	Mem        Mem
	Live       int           // leases still held at the end
	List       time.Duration // one full listing of every lease (median of 3)
	Missing    string
}

// CPUShare is the registry's CPU time over the window, as a fraction of
// one core.
func (r *LeaseResult) CPUShare() float64 {
	if r.Run <= 0 {
		return 0
	}
	return r.CPU.Seconds() / r.Run.Seconds()
}

// leases starts a built-in registry process, registers Leases instances
// and heartbeats each once a second (sdk's default) through the same
// registry client the SDK uses, while it reads the process's CPU time from
// /proc.
func (b *bencher) leases(ctx context.Context) error {
	r := &LeaseResult{Leases: b.opts.Leases, Interval: time.Second}
	b.report.Leases = r
	dir := filepath.Join(b.dir, "leases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := startProc(dir, "registry", []string{"SWITCHYARD_TOKEN=" + b.token},
		filepath.Join(b.bin, "switchyard"), "registry", "--listen", addr, "--warmup", "0s", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer p.stop(syscall.SIGTERM, 5*time.Second)
	if err := waitTCP(ctx, p, addr, 10*time.Second); err != nil {
		return err
	}
	base := "http://" + addr
	// The SDK's client keeps 16 idle connections per registry; several
	// clients keep every heartbeat worker on a kept-alive connection.
	const clients, perClient = 4, 16
	var cs []*registry.Client
	for range clients {
		cs = append(cs, registry.NewClient(base, b.token))
	}
	id := func(i int) string { return fmt.Sprintf("lease-%05d", i) }

	begin := time.Now()
	var wg sync.WaitGroup
	var regErr atomic.Value
	for w := range clients * perClient {
		wg.Go(func() {
			c := cs[w%clients]
			for i := w; i < r.Leases; i += clients * perClient {
				inst := registry.Instance{ID: id(i), Service: "lease", Color: "blue", Address: "127.0.0.1", Port: 10000 + i%50000, Status: registry.StatusOutOfService}
				if err := c.Register(ctx, inst); err != nil {
					regErr.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := regErr.Load().(error); ok {
		return fmt.Errorf("register leases: %w", err)
	}
	b.logf("leases: %d registered in %s; heartbeating each every %s for %s", r.Leases, time.Since(begin).Round(100*time.Millisecond), r.Interval, b.opts.LeaseRun)

	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	hctx, cancel := context.WithTimeout(ctx, b.opts.LeaseRun)
	defer cancel()
	var beats, errs atomic.Int64
	workers := clients * perClient
	for w := range workers {
		wg.Go(func() {
			c := cs[w%clients]
			// Spread the workers over the interval, as independent
			// instances' tickers are.
			next := t0.Add(r.Interval * time.Duration(w) / time.Duration(workers))
			for hctx.Err() == nil {
				pause(hctx, time.Until(next))
				for i := w; i < r.Leases && hctx.Err() == nil; i += workers {
					if err := c.Heartbeat(hctx, id(i)); err != nil {
						if hctx.Err() == nil {
							errs.Add(1)
						}
						continue
					}
					beats.Add(1)
				}
				next = next.Add(r.Interval)
			}
		})
	}
	wg.Wait()
	r.Run = time.Since(t0)
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return err
	}
	r.CPU, r.Heartbeats, r.Errors = cpu1-cpu0, beats.Load(), errs.Load()
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
	sort.Slice(lists, func(i, j int) bool { return lists[i] < lists[j] })
	r.List = lists[1]
	b.report.addMem("registry", fmt.Sprintf("%d heartbeating leases", r.Leases), r.Mem)
	b.logf("leases: %d heartbeats (%.0f/s), %d errors, registry CPU %s over %s = %.0f%% of one core, RSS %.1f MB, %d live, full list %s",
		r.Heartbeats, float64(r.Heartbeats)/r.Run.Seconds(), r.Errors, r.CPU, r.Run.Round(time.Millisecond), 100*r.CPUShare(), mb(r.Mem.RSS), r.Live, r.List.Round(time.Millisecond))
	return nil
}
