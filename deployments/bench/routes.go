package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
)

// RouteSizes are the route counts of the memory-per-route curve, and
// ConsulRouteSizes those with Consul.
var (
	RouteSizes       = []int{10, 100, 1000, 10000}
	ConsulRouteSizes = []int{10, 100, 1000}
)

// RouteRow is the gateway holding Routes routes, each to a service of its
// own with one or two registered instances.
type RouteRow struct {
	Registry          string // "built-in" or "Consul"
	Routes, Instances int
	AppliedServices   int           // when the gateway did not apply them all
	Applied           time.Duration // gateway start until every service was applied
	Mem               Mem           // settled, after every service was applied
	Goroutines        int
	Heap              uint64        // Go heap in use (go_memstats_heap_inuse_bytes)
	Change            time.Duration // median of a few status changes until the gateway routed by them
	base              *RouteRow     // the smallest size with the same registry
}

// routes measures what the gateway's memory grows with: for each size it
// starts a built-in registry process, registers that many services (odd
// ones with two instances; no listener stands behind them, the gateway
// only has to route to them), starts the real gateway binary with a
// --config of one route per service, waits until it has applied them all
// and reads its memory from /proc and its goroutines and heap from its
// own /metrics. Then it does the same with Consul (routesConsul).
func (b *bencher) routes(ctx context.Context) error {
	var base *RouteRow
	for _, n := range RouteSizes {
		row := &RouteRow{Registry: "built-in", Routes: n, base: base}
		if err := b.routesOne(ctx, row); err != nil {
			b.note("routes %d: %v", n, err)
		} else {
			b.r.Routes = append(b.r.Routes, row)
			base = cmp.Or(base, row)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return b.routesConsul(ctx)
}

// routesConsul is the same curve with a Consul agent as the registry.
// Its instances point at one listener of the bench's that passes Consul's
// health checks, so that they are UP.
func (b *bencher) routesConsul(ctx context.Context) error {
	agent, err := b.consulAgent(ctx, "routes-consul")
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	dir := filepath.Join(b.dir, "routes-consul") // the agent's, and each size's gateway below it
	defer agent.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	healthy := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = healthy.Serve(ln) }()
	defer healthy.Close()
	// Instances registered here must outlive the run without heartbeats.
	reg, err := backends.Open(agent.URL()+"?check_interval=10s&deregister_after=1h", b.token)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	var base *RouteRow
	for _, n := range ConsulRouteSizes {
		row := &RouteRow{Registry: "Consul", Routes: n, base: base}
		insts := routeInstances(n, host, func(int) int { return p })
		if err := registerAll(ctx, reg, insts); err != nil {
			return err
		}
		row.Instances = len(insts)
		if err := b.measureGateway(ctx, filepath.Join(dir, strconv.Itoa(n)), row, agent.URL(), reg); err != nil {
			b.note("routes %d with Consul: %v", n, err)
		}
		if row.Mem.RSS > 0 {
			b.r.Routes = append(b.r.Routes, row)
			base = cmp.Or(base, row)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// routeInstances are the instances of n services: the odd ones have two.
func routeInstances(n int, host string, port func(i int) int) []registry.Instance {
	var insts []registry.Instance
	for i := range n {
		for k := range 1 + i%2 {
			insts = append(insts, registry.Instance{ID: fmt.Sprintf("%s-%d", routeService(i), k), Service: routeService(i),
				Color: "blue", Address: host, Port: port(2*i + k), Status: registry.StatusUp})
		}
	}
	return insts
}

func registerAll(ctx context.Context, reg registry.Backend, insts []registry.Instance) error {
	var g errgroup.Group
	g.SetLimit(16)
	for _, inst := range insts {
		g.Go(func() error { return reg.Register(ctx, inst) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("register instances: %w", err)
	}
	return nil
}

func routeService(i int) string { return fmt.Sprintf("svc-%05d", i) }

func (b *bencher) routesOne(ctx context.Context, row *RouteRow) error {
	dir := filepath.Join(b.dir, fmt.Sprintf("routes-%d", row.Routes))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	regAddr, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{"SWITCHYARD_TOKEN=" + b.token}
	// The caps on blocking queries are raised so that a gateway holding one
	// per service is measured as it is, not slowed down by 429s.
	reg, err := startProc(ctx, dir, "registry", regAddr, env, filepath.Join(b.bin, "switchyard"), "registry",
		"--listen", regAddr, "--warmup", "0s", "--lease-ttl", "10m", "--log-level", "warn",
		"--max-waiters", "100000", "--max-waiters-per-client", "100000")
	if err != nil {
		return err
	}
	defer reg.stop(syscall.SIGTERM, 5*time.Second)
	c := registry.NewClient("http://"+regAddr, b.token)
	insts := routeInstances(row.Routes, "127.0.0.1", func(i int) int { return 10000 + i%50000 })
	row.Instances = len(insts)
	if err := registerAll(ctx, c, insts); err != nil {
		return err
	}
	return b.measureGateway(ctx, dir, row, "http://"+regAddr, c)
}

// measureGateway starts the gateway with one route per service of row
// on the registry at url, waits until it has applied them all, reads its
// memory and times changes made through c until its routing shows them.
func (b *bencher) measureGateway(ctx context.Context, dir string, row *RouteRow, url string, c registry.Backend) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	env := []string{"SWITCHYARD_TOKEN=" + b.token}
	var cfg strings.Builder
	cfg.WriteString("routes:\n")
	for i := range row.Routes {
		fmt.Fprintf(&cfg, "  - match: {prefix: /%s}\n    service: %s\n", routeService(i), routeService(i))
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	start := time.Now()
	gw, err := startProc(ctx, dir, "gateway", admin, env, filepath.Join(b.bin, "switchyard"), "gateway",
		"--registry", url, "--config", cfgPath, "--listen", listen, "--admin", admin,
		"--access-log", "off", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer gw.stop(syscall.SIGTERM, 5*time.Second)
	hc := &http.Client{Timeout: 10 * time.Second}
	// A gateway that holds a watch per Consul service applies them in
	// seconds or never: the agent answers 429 to a client past 200
	// connections (limits.http_max_conns_per_client).
	within := time.Minute
	err = retry.Until(ctx, within, func() (bool, error) {
		n, err := appliedServices(ctx, hc, admin)
		row.AppliedServices = max(row.AppliedServices, n)
		return err == nil && n == row.Routes, nil
	})
	row.Applied = time.Since(start)
	if err != nil {
		// What a gateway that cannot follow every service costs is a
		// figure too: read it, then say so.
		if m, merr := memOf(gw.pid()); merr == nil {
			row.Mem = m
		}
		if g, serr := scrape(ctx, hc, "http://"+admin+"/metrics", "go_goroutines", "go_memstats_heap_inuse_bytes"); serr == nil {
			row.Goroutines, row.Heap = int(g["go_goroutines"]), uint64(g["go_memstats_heap_inuse_bytes"])
		}
		return fmt.Errorf("gateway applied %d of %d services within %s (%w); its last warning: %s",
			row.AppliedServices, row.Routes, row.Applied.Round(time.Second), err, lastWarning(filepath.Join(dir, "gateway.log")))
	}
	// Let the start's garbage be collected and the heap settle.
	if retry.Sleep(ctx, 3*time.Second) != nil {
		return ctx.Err()
	}
	if row.Mem, err = memOf(gw.pid()); err != nil {
		return err
	}
	gauges, err := scrape(ctx, hc, "http://"+admin+"/metrics", "go_goroutines", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}
	row.Goroutines, row.Heap = int(gauges["go_goroutines"]), uint64(gauges["go_memstats_heap_inuse_bytes"])

	if row.Change, err = changeToGateway(ctx, c, listen, row.Routes); err != nil {
		b.note("routes %d with the %s registry: %v", row.Routes, row.Registry, err)
	}
	b.logf("routes: %s registry, %d routes (%d instances) applied in %s; gateway RSS %s (peak %s), %d goroutines, heap %s; a change reached it in %s",
		row.Registry, row.Routes, row.Instances, row.Applied.Round(time.Millisecond), mb(row.Mem.RSS), mb(row.Mem.HWM),
		row.Goroutines, mb(row.Heap), ms(row.Change))
	return nil
}

// lastWarning is the last warning a log file holds.
func lastWarning(path string) string {
	raw, _ := os.ReadFile(path)
	lines := strings.Split(string(raw), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "level=warning") {
			return lines[i]
		}
	}
	return "none"
}

// appliedServices is how many services the gateway's /healthz says it
// has applied; an error while it warms up.
func appliedServices(ctx context.Context, hc *http.Client, admin string) (int, error) {
	applied, err := appliedIndexes(ctx, hc, admin)
	return len(applied), err
}

// appliedIndexes is the applied index of each service from the gateway's
// /healthz; an error while it warms up.
func appliedIndexes(ctx context.Context, hc *http.Client, admin string) (map[string]uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/healthz", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h struct {
		Applied map[string]uint64 `json:"applied"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return h.Applied, fmt.Errorf("healthz: %s", resp.Status)
	}
	return h.Applied, nil
}

// changeToGateway takes the only instance of a service out of service
// and back, three times over, and times each change until the gateway's
// answer for the service shows it: 503 (no UP instance) once it is out,
// anything else (502: nothing listens behind it) once it is back. The
// answers are cheap to poll, unlike the gateway's applied map, whose
// size grows with the routes.
func changeToGateway(ctx context.Context, c registry.Backend, listen string, routes int) (time.Duration, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	var took []time.Duration
	for k := range 6 {
		svc := routeService(((k / 2) * routes / 3) &^ 1) // even services have one instance
		out := k%2 == 0
		st := registry.StatusUp
		if out {
			st = registry.StatusOutOfService
		}
		start := time.Now()
		if _, err := c.SetStatus(ctx, svc+"-0", st); err != nil {
			return 0, err
		}
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/"+svc, nil)
			if err != nil {
				return 0, err
			}
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if (resp.StatusCode == http.StatusServiceUnavailable) == out {
					break
				}
			}
			if time.Since(start) > 30*time.Second {
				return 0, fmt.Errorf("status %s of %s never reached the gateway", st, svc)
			}
			if retry.Sleep(ctx, time.Millisecond) != nil {
				return 0, ctx.Err()
			}
		}
		took = append(took, time.Since(start))
	}
	return pct(took, 50), nil
}

// scrape reads the named gauges from a Prometheus text page.
func scrape(ctx context.Context, hc *http.Client, url string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		for _, n := range names {
			if ok && name == n {
				if v, err := strconv.ParseFloat(val, 64); err == nil {
					out[n] = v
				}
			}
		}
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s has no %s", url, n)
		}
	}
	return out, sc.Err()
}

// PerRoute is the memory each route adds above the smallest size's with
// the same registry.
func (r *RouteRow) PerRoute() string {
	base := r.base
	if base == nil || r.Routes <= base.Routes {
		return "—"
	}
	return fmt.Sprintf("%.1f KB", (float64(r.Mem.RSS)-float64(base.Mem.RSS))/float64(r.Routes-base.Routes)/1024)
}
