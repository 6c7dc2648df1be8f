package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
)

// leaseWay is one way a fleet's instances heartbeat.
type leaseWay struct {
	name string
	// separate gives each instance a registry client of its own, with its
	// own instance token, as separate processes have; otherwise every
	// instance shares one client with the shared token, as instances in
	// one process do, and beats at the same moment, as the SDK has them.
	separate bool
	opts     []registry.ClientOption
}

var leaseWays = []leaseWay{
	{name: "heartbeat stream, a client per instance", separate: true},
	{name: "one PUT per heartbeat, a client per instance", separate: true, opts: []registry.ClientOption{registry.WithoutHeartbeatStream()}},
	{name: "PUT batches, one client shared by every instance", opts: []registry.ClientOption{registry.WithoutHeartbeatStream()}},
	{name: "heartbeat stream, one client shared by every instance"},
}

// leaseWarmup lets every client open its connection or stream before the
// CPU is counted: what a steady fleet costs is measured, not its start.
const leaseWarmup = 3 * time.Second

// leases measures, for each way of heartbeating, a fresh built-in registry
// process holding Leases leases that heartbeat once a second (the SDK's
// default) through the SDK's registry client, while it reads the
// registry's CPU time from /proc. The clients all live in the bench
// process; only the registry's CPU counts.
func (b *bencher) leases(ctx context.Context) error {
	var first *LeaseResult
	for i, way := range leaseWays {
		r, err := b.leaseRun(ctx, way, i)
		if err != nil {
			return fmt.Errorf("%s: %w", way.name, err)
		}
		if first == nil {
			first = r
			b.r.Leases = r
			b.r.addMem("registry", fmt.Sprintf("%d leases on heartbeat streams", r.Leases), r.Mem)
		} else {
			first.Others = append(first.Others, r)
		}
	}
	return nil
}

func (b *bencher) leaseRun(ctx context.Context, way leaseWay, n int) (*LeaseResult, error) {
	r := &LeaseResult{Leases: b.Leases, Interval: time.Second, Way: way.name}
	dir := filepath.Join(b.dir, fmt.Sprintf("leases-%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProc(ctx, dir, "registry", addr, []string{"SWITCHYARD_TOKEN=" + b.token},
		filepath.Join(b.bin, "switchyard"), "registry", "--listen", addr, "--warmup", "0s", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer p.stop(syscall.SIGTERM, 5*time.Second)
	base := "http://" + addr
	id := func(i int) string { return fmt.Sprintf("lease-%05d", i) }
	// A few clients register the leases; they never heartbeat.
	const admins, workers = 4, 64
	var as []*registry.Client
	for range admins {
		as = append(as, registry.NewClient(base, b.token))
	}
	begin := time.Now()
	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			for i := w; i < r.Leases; i += workers {
				inst := registry.Instance{ID: id(i), Service: "lease", Color: "blue", Address: "127.0.0.1", Port: 10000 + i%50000, Status: registry.StatusOutOfService}
				if err := as[w%admins].Register(ctx, inst); err != nil {
					return fmt.Errorf("register leases: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	clients := make([]*registry.Client, r.Leases)
	shared := registry.NewClient(base, b.token, way.opts...)
	for i := range clients {
		clients[i] = shared
		if way.separate {
			clients[i] = registry.NewClient(base, registry.InstanceToken(b.token, id(i)), way.opts...)
		}
	}
	// Each client's first heartbeat opens its connection or stream, a few
	// at a time: a fleet's instances start over minutes, not in the same
	// second, and a thundering herd of 10,000 connections is not what
	// this measures.
	opened := time.Now()
	for w := range workers {
		g.Go(func() error {
			for i := w; i < r.Leases; i += workers {
				if err := clients[i].Heartbeat(ctx, id(i)); err != nil {
					return fmt.Errorf("first heartbeat: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	b.logf("leases: %d registered in %s, their clients connected in %s; %s: heartbeating each every %s for %s after %s of warm-up",
		r.Leases, opened.Sub(begin).Round(100*time.Millisecond), time.Since(opened).Round(100*time.Millisecond), way.name, r.Interval, b.LeaseRun, leaseWarmup)

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var counting atomic.Bool
	var beats, errs atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now().Add(100 * time.Millisecond)
	for i := range r.Leases {
		wg.Go(func() {
			// Separate processes' tickers are spread over the interval;
			// the instances of one process beat at its phase.
			next := t0
			if way.separate {
				next = t0.Add(r.Interval * time.Duration(i) / time.Duration(r.Leases))
			}
			for ; retry.Sleep(hctx, time.Until(next)) == nil; next = next.Add(r.Interval) {
				err := clients[i].Heartbeat(hctx, id(i))
				if errors.Is(err, registry.ErrNotFound) {
					// As the SDK does: the lease lapsed, register again.
					inst := registry.Instance{ID: id(i), Service: "lease", Color: "blue", Address: "127.0.0.1", Port: 10000 + i%50000, Status: registry.StatusOutOfService}
					_ = as[i%admins].Register(hctx, inst)
				}
				if !counting.Load() {
					continue
				}
				if err == nil {
					beats.Add(1)
				} else if hctx.Err() == nil {
					errs.Add(1)
				}
			}
		})
	}
	if err := retry.Sleep(ctx, time.Until(t0.Add(leaseWarmup))); err != nil {
		return nil, err
	}
	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	counting.Store(true)
	if err := retry.Sleep(ctx, b.LeaseRun); err != nil {
		return nil, err
	}
	counting.Store(false)
	r.Streams = openStreams(ctx, base)
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return nil, err
	}
	r.Run, r.CPU, r.Heartbeats, r.Errors = time.Since(start), cpu1-cpu0, beats.Load(), errs.Load()
	r.Mem, _ = memOf(p.pid())
	cancel()
	wg.Wait()
	var lists []time.Duration
	for range 3 {
		begin := time.Now()
		snap, err := as[0].Instances(ctx, "lease", 0, 0)
		if err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		lists = append(lists, time.Since(begin))
		r.Live = len(snap.Instances)
	}
	r.List = pct(lists, 50)
	b.logf("leases: %s: %d heartbeats (%.0f/s), %d errors, registry CPU %s over %s = %.1f%% of one core (goal ≤ %.0f%%), %d heartbeat streams open, RSS %s, %d live, full list %s",
		way.name, r.Heartbeats, r.Rate(), r.Errors, r.CPU, r.Run.Round(time.Millisecond), r.Share(), leaseGoal, r.Streams, mb(r.Mem.RSS), r.Live, r.List.Round(time.Millisecond))
	return r, nil
}

// openStreams is the registry's count of open heartbeat streams, which
// tells the stream from the PUTs it falls back to; -1 if unknown.
func openStreams(ctx context.Context, base string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "switchyard_registry_heartbeat_streams "); ok {
			if n, err := strconv.ParseFloat(v, 64); err == nil {
				return int(n)
			}
		}
	}
	return -1
}
