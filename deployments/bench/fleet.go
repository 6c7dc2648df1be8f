package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/procfs"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// The fleet section switches many services at once behind many gateways,
// with instances cheap enough that 10,000 fit in the bench process: each
// speaks the SDK's protocol (its registration and lease, its ephemeral
// node with the SDK's node data, and the SDK's own health and signed
// instruction endpoints on a loopback port of its own), but the instances
// of one service share a ZooKeeper session and all of them share one
// registry client, whose heartbeats go out together, as those of many
// sdk.Instances in one process do.

// FleetSize is one size of the fleet section: Instances in all, half blue
// and half green, spread evenly over Services.
type FleetSize struct{ Instances, Services int }

func (s FleetSize) String() string { return fmt.Sprintf("%d/%d", s.Instances, s.Services) }

// ParseFleetSizes reads sizes such as "1000/10,10000/100": instances and
// services, each service with as many blue as green instances.
func ParseFleetSizes(s string) ([]FleetSize, error) {
	var out []FleetSize
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		is, ss, ok := strings.Cut(f, "/")
		n, err1 := strconv.Atoi(is)
		svcs, err2 := strconv.Atoi(ss)
		switch {
		case !ok || err1 != nil || err2 != nil:
			return nil, fmt.Errorf("fleet size %q: want INSTANCES/SERVICES, e.g. 10000/100", f)
		case svcs < 1 || svcs > 1000:
			return nil, fmt.Errorf("fleet size %q: want 1 to 1000 services", f)
		case n < 2*svcs || n%(2*svcs) != 0:
			return nil, fmt.Errorf("fleet size %q: instances must be a positive multiple of twice the services (as many blue as green in each)", f)
		case n > 30000:
			return nil, fmt.Errorf("fleet size %q: at most 30000 instances (one loopback port each)", f)
		}
		out = append(out, FleetSize{Instances: n, Services: svcs})
	}
	return out, nil
}

// Dist is the nearest-rank p50, p99 and the largest of N durations.
type Dist struct {
	N             int
	P50, P99, Max time.Duration
}

func distOf(ds []time.Duration) Dist {
	return Dist{N: len(ds), P50: pct(ds, 50), P99: pct(ds, 99), Max: pct(ds, 100)}
}

// FleetRow is one size of the fleet table.
type FleetRow struct {
	FleetSize
	Gateways int
	Ready    time.Duration // the fakes' start until blue was UP and every gateway had applied it
	Switch   time.Duration // the switch record's duration
	Total    time.Duration // the ZooKeeper write until the record's end
	Reason   string        // the record's note (a gateway that did not confirm in time)
	// Unfinished says why the switch did not finish within the limit;
	// StepsDone counts the steps its record has by then (or at its end).
	Unfinished string
	StepsDone  int
	// Propagation is, for each gateway and service, the ZooKeeper write
	// until the gateway had applied the service's final state; Lag the
	// service's last instruction (confirmed by the registry) until then.
	Propagation, Lag Dist
	Pairs, Unapplied int // gateway×service pairs, and those that never applied the final state
	// CPU is each role's utime+stime from the write until the last gateway
	// applied its last service (or the record's end, if later), over Wall;
	// "gateways" is their sum, GatewayMax the busiest one's.
	CPU        map[string]time.Duration
	GatewayMax time.Duration
	Wall       time.Duration
	// Busy is the cores the whole machine used over Wall, every process
	// included (other work on the machine too), IdleBusy the same before
	// the flip.
	Busy, IdleBusy float64
	Idle           map[string]float64 // cores each role used in the seconds before the flip (leases, pings, reports)
	Mem            map[string]Mem     // after the switch; "gateways" is their sum
	GatewayMem     Mem                // the largest gateway's
	FDs            map[string]int     // open file descriptors: the leader's and registry's peak, the others after the switch
	Waiters        int                // blocking queries the registry held before the flip
	WatchFails     int                // gateway log lines of a failed registry watch (429s among them)
	Beats          int64              // heartbeats sent by the fakes, and those that failed
	BeatFails      int64
	Expired        int64 // ZooKeeper sessions of the fakes that expired (each takes its nodes with it)
	// Probes are one request per gateway and service after the switch,
	// ProbesNew those the new color answered.
	Probes, ProbesNew int
}

// Roles of the fleet's CPU and memory columns, in table order.
const (
	roleLeader    = "controller (leader)"
	roleRegistry  = "registry"
	roleZooKeeper = "ZooKeeper"
	roleGateways  = "gateways"
	roleFakes     = "bench process (the instances)"
	machine       = "the machine"
)

// fleetPoll is how often each gateway's applied indexes are read during
// a switch; a propagation figure is late by up to that much.
const fleetPoll = 50 * time.Millisecond

func fleetService(i int) string { return fmt.Sprintf("svc-%03d", i) }

func (b *bencher) fleet(ctx context.Context) error {
	if err := raiseFileLimit(1 << 16); err != nil {
		b.logf("fleet: could not raise the file limit: %v", err)
	}
	for _, size := range b.FleetSizes {
		row := &FleetRow{FleetSize: size, Gateways: b.FleetGateways}
		if err := b.fleetOne(ctx, row); err != nil {
			b.note("fleet %s: %v", size, err)
		} else {
			b.r.Fleet = append(b.r.Fleet, row)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// raiseFileLimit lifts this process's RLIMIT_NOFILE, and so that of every
// process it starts from now on, to at least n: each fake holds a
// listener, and the controller a connection to each instance it talks to.
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n && lim.Max >= n {
		return nil
	}
	want := syscall.Rlimit{Cur: max(lim.Cur, n), Max: max(lim.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Without privilege only the soft limit can move, up to the hard one.
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err2 != nil {
			return errors.Join(err, err2)
		}
		return fmt.Errorf("soft limit raised only to the hard limit %d: %w", lim.Max, err)
	}
	return nil
}

func (b *bencher) fleetOne(ctx context.Context, row *FleetRow) error {
	name := fmt.Sprintf("fleet-%d", row.Instances)
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sw := filepath.Join(b.bin, "switchyard")
	regAddr, err := freeAddr()
	if err != nil {
		return err
	}
	// The registry is started here rather than by the harness to set its
	// caps: all gateways share 127.0.0.1 on one host, where in production
	// each has an address of its own, so the per-client cap on blocking
	// queries is raised to the total cap (4,096, the default, kept).
	regProc, err := startProc(ctx, dir, "registry", regAddr, []string{"SWITCHYARD_TOKEN=" + b.token}, sw, "registry",
		"--listen", regAddr, "--max-waiters-per-client", "4096")
	if err != nil {
		return err
	}
	defer regProc.stop(syscall.SIGTERM, 5*time.Second)
	regURL := "http://" + regAddr

	var cfg strings.Builder
	cfg.WriteString("routes:\n")
	for i := range row.Services {
		fmt.Fprintf(&cfg, "  - match: {prefix: /%s}\n    service: %s\n    strip_prefix: true\n", fleetService(i), fleetService(i))
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	c, err := b.startCluster(ctx, name, regURL, 0, "--config", cfgPath, "--access-log", "off")
	if err != nil {
		return err
	}
	defer c.Stop()
	gws := []fleetGateway{{id: "gateway-1", url: c.GatewayURL, admin: strings.TrimPrefix(c.GatewayAdminURL, "http://"), log: filepath.Join(dir, "gateway.log")}}
	if gws[0].pid, err = pidOf(c.Gateway); err != nil {
		return fmt.Errorf("gateway-1: %w", err)
	}
	addrs, err := lowPorts(2 * (row.Gateways - 1))
	if err != nil {
		return err
	}
	reg := registry.NewClient(regURL, b.token)

	logf, err := os.Create(filepath.Join(dir, "instances.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := logrus.New()
	log.SetOutput(logf)
	log.SetLevel(logrus.WarnLevel)
	begin := time.Now()
	fl, err := startFakes(ctx, c, reg, b.token, log, row.FleetSize, zkstate.Blue)
	if fl != nil {
		defer fl.stop()
	}
	if err != nil {
		return err
	}
	b.logf("fleet %s: %d instances registered and announced in %s; waiting for blue UP", row.FleetSize, row.Instances, time.Since(begin).Round(100*time.Millisecond))
	// The other gateways start on a registry that holds the fleet: each
	// registration is a change that every gateway would read whole.
	for k := 2; k <= row.Gateways; k++ {
		listen, admin := addrs[2*(k-2)], addrs[2*(k-2)+1]
		id := fmt.Sprintf("gateway-%d", k)
		p, err := startProc(ctx, dir, id, admin, nil, sw, "gateway", "--id", id, "--listen", listen, "--admin", admin,
			"--token", registry.ReadToken(b.token), "--config", cfgPath, "--access-log", "off", "--registry", regURL)
		if err != nil {
			return err
		}
		defer p.stop(syscall.SIGTERM, 5*time.Second)
		gws = append(gws, fleetGateway{id: id, url: "http://" + listen, admin: admin, log: filepath.Join(dir, id+".log"), pid: p.pid()})
	}
	if err := waitFleetUp(ctx, reg, zkstate.Blue, row.Instances, 5*time.Minute); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	idx, err := serviceIndexes(ctx, reg, row.Services)
	if err != nil {
		return err
	}
	if err := waitApplied(ctx, hc, gws, idx, 2*time.Minute); err != nil {
		return err
	}
	row.Ready = time.Since(begin)
	b.logf("fleet %s: blue UP and applied by %d gateways %s after the start", row.FleetSize, len(gws), row.Ready.Round(100*time.Millisecond))
	// Let the leader's start-up reconciles and the gateways' reports settle.
	_ = retry.Sleep(ctx, 2*time.Second)

	pids := map[string]int{roleFakes: os.Getpid(), roleRegistry: regProc.pid()}
	if pid, err := childRunning("ZooKeeperServerMain"); err == nil {
		pids[roleZooKeeper] = pid
	}
	for _, p := range c.Controllers {
		if pid, err := pidOf(p); err == nil {
			pids[p.Name] = pid
		}
	}
	for _, g := range gws {
		pids[g.id] = g.pid
	}
	var samples []cpuSample
	peakFDs := map[string]int{}
	procFS, _ := procfs.NewDefaultFS()
	n := 0
	stopCPU := every(100*time.Millisecond, func() {
		s := cpuSample{at: time.Now(), cpu: map[string]time.Duration{}}
		// Reading a few thousand descriptors costs; once a second will do.
		fds := n%10 == 0
		n++
		// Every process of the machine, other people's included: whether
		// the cores were free is what tells a wait from a shortage.
		if st, err := procFS.Stat(); err == nil {
			t := st.CPUTotal
			s.cpu[machine] = time.Duration((t.User + t.Nice + t.System + t.IRQ + t.SoftIRQ + t.Steal) * float64(time.Second))
		}
		for name, pid := range pids {
			s.cpu[name], _ = cpuTime(pid)
			if fds && (name == roleRegistry || strings.HasPrefix(name, "controller-")) {
				peakFDs[name] = max(peakFDs[name], fdCount(pid))
			}
		}
		samples = append(samples, s)
	})
	defer stopCPU()
	if g, err := scrape(ctx, hc, regURL+"/metrics", "switchyard_registry_waiters"); err == nil {
		row.Waiters = int(g["switchyard_registry_waiters"])
	}
	idleFrom := time.Now()
	_ = retry.Sleep(ctx, 3*time.Second)
	idleTo := time.Now()

	pollers := pollApplied(ctx, hc, gws)
	rec, at, err := flip(ctx, c, zkstate.Green, b.FleetLimit)
	if at.IsZero() {
		pollers.stop()
		return fmt.Errorf("flip to green: %w", err)
	}
	end := time.Now()
	if err != nil {
		// What the switch got done within the limit, and what each part
		// cost until then, is the measurement at a size past the limit.
		pollers.stop()
		row.Unfinished = firstLine(err.Error())
		if r, rerr := c.Record(); rerr == nil {
			rec = r
		}
		row.StepsDone = max(rec.StepsTotal, len(rec.Steps))
		b.logf("fleet %s: the switch did not finish: %s; %d steps done", row.FleetSize, row.Unfinished, row.StepsDone)
	} else if end, err = row.propagation(ctx, reg, fl, pollers, gws, rec, at); err != nil {
		return err
	}
	// A sample at or after the end must exist before the sampler stops.
	_ = retry.Sleep(ctx, 250*time.Millisecond)
	stopCPU()
	cpu, wall := cpuBetween(samples, at, end)
	idle, idleWall := cpuBetween(samples, idleFrom, idleTo)
	leader := rec.Leader
	if leader == "" {
		// The record could not be read: the leader is the controller that
		// worked.
		leader = slices.MaxFunc([]string{"controller-1", "controller-2"}, func(x, y string) int { return cmp.Compare(cpu[x], cpu[y]) })
	}
	row.rollUp(cpu, wall, idle, idleWall, leader)
	b.logf("fleet %s: switch %s (write → done %s), propagation to %d gateway×service pairs p50 %s p99 %s max %s; %d never applied; note %q",
		row.FleetSize, ms(row.Switch), ms(row.Total), row.Propagation.N, ms(row.Propagation.P50), ms(row.Propagation.P99), ms(row.Propagation.Max), row.Unapplied, row.Reason)

	if row.Unfinished == "" {
		row.Probes, row.ProbesNew = probeFleet(ctx, gws, row.Services, zkstate.Green)
	}
	row.readProcs(pids, peakFDs, leader)
	for _, g := range gws {
		row.WatchFails += countLines(g.log, "registry watch failed")
	}
	row.Beats, row.BeatFails, row.Expired = fl.beats.Load(), fl.beatFails.Load(), fl.expired.Load()
	b.logf("fleet %s: CPU over %s: %v (gateway max %s); idle cores %v; probes %d of %d answered green; waiters %d; watch failures %d; heartbeats %d (%d failed); expired sessions %d",
		row.FleetSize, wall.Round(time.Millisecond), row.CPU, row.GatewayMax, row.Idle, row.ProbesNew, row.Probes, row.Waiters, row.WatchFails, row.Beats, row.BeatFails, row.Expired)
	b.addMem(fmt.Sprintf("fleet of %d instances, %d services, %d gateways, after the switch", row.Instances, row.Services, row.Gateways),
		map[string]Mem{"controller (leader)": row.Mem[roleLeader], "registry": row.Mem[roleRegistry], "gateway": row.GatewayMem},
		"controller (leader)", "registry", "gateway")
	return nil
}

// propagation fills r's switch and propagation figures from a finished
// switch and returns when the last gateway applied its last service (or
// the record's end, if later).
func (r *FleetRow) propagation(ctx context.Context, reg registry.Backend, fl *fakeFleet, pollers *appliedPollers, gws []fleetGateway, rec zkstate.Switch, at time.Time) (time.Time, error) {
	r.Switch, r.Reason = rec.Duration(), rec.Reason
	end := at
	if rec.FinishedAt != nil {
		r.Total, end = rec.FinishedAt.Sub(at), *rec.FinishedAt
	}
	r.StepsDone = max(rec.StepsTotal, len(rec.Steps))
	final, err := serviceIndexes(ctx, reg, r.Services)
	if err != nil {
		pollers.stop()
		return end, err
	}
	// The gateways have confirmed by the record's end unless it says one
	// did not; give a laggard a few seconds more before counting it out.
	_ = retry.Until(ctx, 10*time.Second, func() (bool, error) { return pollers.all(final), nil })
	applied := pollers.stop()
	var props, lags []time.Duration
	last := fl.lastChanges(at)
	for _, g := range gws {
		for s, want := range final {
			t, ok := applied[g.id].firstAt(s, want)
			if !ok {
				r.Unapplied++
				continue
			}
			props = append(props, t.Sub(at))
			if l, ok := last[s]; ok {
				lags = append(lags, max(t.Sub(l), 0))
			}
			if t.After(end) {
				end = t
			}
		}
	}
	r.Pairs, r.Propagation, r.Lag = len(gws)*len(final), distOf(props), distOf(lags)
	return end, nil
}

// lowPorts finds n free loopback addresses below the kernel's ephemeral
// range, which the fakes' listeners (port 0) fill: a port probed free
// there stays free until a gateway binds it.
func lowPorts(n int) ([]string, error) {
	first := 32768 // Linux's default
	if raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(raw)); len(f) == 2 {
			first, _ = strconv.Atoi(f[0])
		}
	}
	lo := max(first-12000, 1024) + mrand.IntN(8000)
	var out []string
	for p := lo; p < first && len(out) < n; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		out = append(out, ln.Addr().String())
		ln.Close()
	}
	if len(out) < n {
		return nil, fmt.Errorf("only %d of %d free loopback ports between %d and %d", len(out), n, lo, first-1)
	}
	return out, nil
}

// rollUp sums the CPU of each process over the switch (cpu, over wall)
// and before it (idle, over idleWall) by role.
func (r *FleetRow) rollUp(cpu map[string]time.Duration, wall time.Duration, idle map[string]time.Duration, idleWall time.Duration, leader string) {
	r.CPU, r.Idle, r.Wall = map[string]time.Duration{}, map[string]float64{}, wall
	for name, d := range cpu {
		role := name
		switch {
		case name == machine:
			if wall > 0 {
				r.Busy = d.Seconds() / wall.Seconds()
			}
			if idleWall > 0 {
				r.IdleBusy = idle[name].Seconds() / idleWall.Seconds()
			}
			continue
		case strings.HasPrefix(name, "gateway-"):
			role = roleGateways
			r.GatewayMax = max(r.GatewayMax, d)
		case name == leader:
			role = roleLeader
		case strings.HasPrefix(name, "controller-"):
			continue // the standby
		}
		r.CPU[role] += d
		if idleWall > 0 {
			r.Idle[role] += idle[name].Seconds() / idleWall.Seconds()
		}
	}
}

// readProcs reads the memory and open files of each process by role; the
// leader's and registry's open files are the largest of peak and now.
func (r *FleetRow) readProcs(pids map[string]int, peakFDs map[string]int, leader string) {
	r.Mem, r.FDs = map[string]Mem{}, map[string]int{}
	for name, pid := range pids {
		m, _ := memOf(pid)
		role := name
		switch {
		case strings.HasPrefix(name, "gateway-"):
			role = roleGateways
			r.GatewayMem = Mem{max(r.GatewayMem.RSS, m.RSS), max(r.GatewayMem.HWM, m.HWM)}
		case name == leader:
			role = roleLeader
		case strings.HasPrefix(name, "controller-"):
			continue
		}
		r.Mem[role] = Mem{r.Mem[role].RSS + m.RSS, r.Mem[role].HWM + m.HWM}
		switch role {
		case roleLeader, roleRegistry:
			r.FDs[role] = max(peakFDs[name], fdCount(pid))
		case roleGateways:
			r.FDs[role] = max(r.FDs[role], fdCount(pid))
		default:
			r.FDs[role] = fdCount(pid)
		}
	}
}

// fleetGateway is one of the fleet's gateway processes.
type fleetGateway struct {
	id, url, admin, log string
	pid                 int
}

// fake is one simulated instance: the SDK's control endpoints over the
// shared registry client, on a loopback port of its own.
type fake struct {
	inst    *sdk.Instance
	h       http.Handler
	service string
	color   zkstate.Color
	port    int
	changed atomic.Int64 // when an instruction last changed its status, Unix ns
	leased  atomic.Bool  // registered: its lease is to be renewed
}

func (f *fake) record() registry.Instance {
	return registry.Instance{ID: f.inst.ID(), Service: f.service, Color: string(f.color), Version: fakeVersion[f.color],
		Address: "127.0.0.1", Port: f.port, Status: f.inst.Status()}
}

var fakeVersion = map[zkstate.Color]string{zkstate.Blue: "v1", zkstate.Green: "v2"}

// fakeFleet is every fake of a size and what they share.
type fakeFleet struct {
	fakes    []*fake
	reg      *registry.Client
	srv      *http.Server
	sessions []*zk.Conn
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	beats, beatFails, expired atomic.Int64
}

// startFakes starts size's fakes: a listener each, served by one
// http.Server that hands each request to its port's fake; the
// registrations, those of color active UP, the others OUT_OF_SERVICE as
// the SDK makes them; then, per service,
// one ZooKeeper session holding the ephemeral nodes of its instances, with
// the SDK's node data; then a heartbeat of every lease each second. The
// returned fleet, when not nil, must be stopped.
func startFakes(ctx context.Context, c *local.Cluster, reg *registry.Client, token string, log logrus.FieldLogger, size FleetSize, active zkstate.Color) (*fakeFleet, error) {
	bg, cancel := context.WithCancel(context.Background())
	fl := &fakeFleet{reg: reg, cancel: cancel}
	perColor := size.Instances / size.Services / 2
	byPort := map[int]*fake{}
	var lns []net.Listener
	for s := range size.Services {
		for _, color := range zkstate.Colors {
			for k := range perColor {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					closeAll(lns)
					return nil, fmt.Errorf("listener %d: %w", len(lns)+1, err)
				}
				lns = append(lns, ln)
				f := &fake{service: fleetService(s), color: color, port: ln.Addr().(*net.TCPAddr).Port}
				id := fmt.Sprintf("%s-%s-%03d", f.service, color, k)
				f.inst, err = sdk.New(sdk.Config{
					Service: f.service, Color: color, ID: id, Version: fakeVersion[color],
					Address: "127.0.0.1", Port: f.port, ZK: []string{c.ZK.Addr}, ZKRoot: "/", Registry: reg, Token: token, Log: log,
				})
				if err != nil {
					closeAll(lns)
					return nil, err
				}
				f.h = f.inst.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					// What hello answers, so that local.Send can read it.
					w.Header().Set("X-Switchyard-Color", string(color))
					w.Header().Set("Content-Type", "application/json")
					_, _ = fmt.Fprintf(w, "{\"instance\":%q}\n", id)
				}))
				fl.fakes = append(fl.fakes, f)
				byPort[f.port] = f
			}
		}
	}
	// Idle connections close after 2 s: the fakes share this process's
	// file limit (20,000 here, which it may not raise), and at 10,000
	// instances their listeners and the connections the leader and the
	// gateways keep to each would pass it, where instances in processes
	// of their own each have a limit of their own.
	fl.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			addr, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
			if addr == nil || byPort[addr.Port] == nil {
				http.NotFound(w, r)
				return
			}
			byPort[addr.Port].serve(w, r)
		})}
	for _, ln := range lns {
		go func() { _ = fl.srv.Serve(ln) }()
	}

	// Each lease is renewed from its registration on: registering 10,000
	// takes longer than a lease on a busy machine.
	fl.wg.Go(func() { fl.heartbeat(bg) })
	var g errgroup.Group
	g.SetLimit(32)
	for _, f := range fl.fakes {
		g.Go(func() error {
			// A running fleet before a deploy: blue UP, green standing by.
			// Blue registers UP and the SDK then confirms UP, which the
			// registry answers without a change; the SDK remembers it, as
			// after the controller's instruction.
			rec := f.record()
			if f.color == active {
				rec.Status = registry.StatusUp
			}
			if err := reg.Register(ctx, rec); err != nil {
				return fmt.Errorf("register %s: %w", f.inst.ID(), err)
			}
			f.leased.Store(true)
			if f.color == active {
				if _, err := f.inst.SetStatus(ctx, registry.StatusUp); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fl, err
	}
	paths, _ := zkstate.NewPaths("/")
	byService := map[string][]*fake{}
	for _, f := range fl.fakes {
		byService[f.service] = append(byService[f.service], f)
	}
	var mu sync.Mutex
	g.SetLimit(8)
	for svc, fs := range byService {
		g.Go(func() error {
			conn, events, err := zkstate.Connect(ctx, []string{c.ZK.Addr}, 10*time.Second, "", zkQuiet{})
			if err != nil {
				return err
			}
			mu.Lock()
			fl.sessions = append(fl.sessions, conn)
			mu.Unlock()
			fl.wg.Go(func() { fl.watchSession(bg, events) })
			for _, p := range paths.Persistent() {
				if err := zkstate.EnsurePath(conn, p, zk.WorldACL(zk.PermAll)); err != nil {
					return err
				}
			}
			ops := make([]any, 0, len(fs))
			for _, f := range fs {
				data, _ := jsonNode(f)
				ops = append(ops, &zk.CreateRequest{Path: paths.Instance(f.color, f.inst.ID()), Data: data, Acl: zk.WorldACL(zk.PermAll), Flags: zk.FlagEphemeral})
			}
			if _, err := conn.Multi(ops...); err != nil {
				return fmt.Errorf("announce the instances of %s: %w", svc, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fl, err
	}
	return fl, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// jsonNode is f's node data, as the SDK writes it.
func jsonNode(f *fake) ([]byte, error) {
	return json.Marshal(zkstate.InstanceNode{Service: f.service, ID: f.inst.ID(), Address: "127.0.0.1", Port: f.port,
		Version: fakeVersion[f.color], StartedAt: time.Now().UTC()})
}

// serve is the SDK's handler, noting when an instruction was applied.
func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut || r.URL.Path != sdk.StatusPath {
		f.h.ServeHTTP(w, r)
		return
	}
	before := f.inst.Status()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	f.h.ServeHTTP(sw, r)
	if sw.code == http.StatusOK && f.inst.Status() != before {
		f.changed.Store(time.Now().UnixNano())
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// heartbeat renews every lease each second, all at once, as the SDK's
// instances sharing a batching registry client do; a lease the registry
// lost is registered again with the status last confirmed.
func (fl *fakeFleet) heartbeat(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range fl.fakes {
			if !f.leased.Load() {
				continue
			}
			fl.wg.Go(func() {
				hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				err := fl.reg.Heartbeat(hctx, f.inst.ID())
				if errors.Is(err, registry.ErrNotFound) {
					err = fl.reg.Register(hctx, f.record())
				}
				fl.beats.Add(1)
				if err != nil && ctx.Err() == nil {
					fl.beatFails.Add(1)
				}
			})
		}
	}
}

// watchSession counts a shared session's expiry: it took the nodes of a
// whole service with it, which makes the run's figures meaningless.
func (fl *fakeFleet) watchSession(ctx context.Context, events <-chan zk.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.State == zk.StateExpired {
				fl.expired.Add(1)
			}
		}
	}
}

// lastChanges is, per service, when its last instruction after since was
// applied.
func (fl *fakeFleet) lastChanges(since time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, f := range fl.fakes {
		if ns := f.changed.Load(); ns > since.UnixNano() {
			if t := time.Unix(0, ns); t.After(out[f.service]) {
				out[f.service] = t
			}
		}
	}
	return out
}

// stop ends the heartbeats, closes the sessions (their nodes go) and the
// listeners. The registrations are left to the registry process, which
// stops next.
func (fl *fakeFleet) stop() {
	fl.cancel()
	for _, s := range fl.sessions {
		s.Close()
	}
	_ = fl.srv.Close()
	fl.wg.Wait()
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

// waitFleetUp waits until the registry lists total instances of which
// half, those of color, are UP and no other is.
func waitFleetUp(ctx context.Context, reg registry.Backend, color zkstate.Color, total int, within time.Duration) error {
	var up, others, all int
	err := retry.Until(ctx, within, func() (bool, error) {
		snap, err := reg.Instances(ctx, "", 0, 0)
		if err != nil || !snap.Ready {
			return false, err
		}
		up, others, all = 0, 0, len(snap.Instances)
		for _, in := range snap.Instances {
			switch {
			case in.Status == registry.StatusUp && zkstate.Color(in.Color) == color:
				up++
			case in.Status == registry.StatusUp:
				others++
			}
		}
		return up == total/2 && others == 0 && all == total, nil
	})
	if err != nil {
		return fmt.Errorf("registry shows %d of %d %s instances UP and %d others among %d registered of %d: %w", up, total/2, color, others, all, total, err)
	}
	return nil
}

// serviceIndexes is the registry index of each service's view now.
func serviceIndexes(ctx context.Context, reg registry.Backend, services int) (map[string]uint64, error) {
	out := make(map[string]uint64, services)
	for i := range services {
		snap, err := reg.Instances(ctx, fleetService(i), 0, 0)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", fleetService(i), err)
		}
		out[fleetService(i)] = snap.Index
	}
	return out, nil
}

// waitApplied waits until every gateway has applied at least idx of each
// service.
func waitApplied(ctx context.Context, hc *http.Client, gws []fleetGateway, idx map[string]uint64, within time.Duration) error {
	var lagging string
	err := retry.Until(ctx, within, func() (bool, error) {
		for _, g := range gws {
			applied, err := appliedIndexes(ctx, hc, g.admin)
			if err != nil || !covers(applied, idx) {
				lagging = g.id
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%s has not applied every service: %w", lagging, err)
	}
	return nil
}

func covers(applied, want map[string]uint64) bool {
	for s, i := range want {
		if applied[s] < i {
			return false
		}
	}
	return true
}

// appliedLog is one gateway's applied index of each service over time:
// each change, in the order polled.
type appliedLog map[string][]appliedAt

type appliedAt struct {
	at    time.Time
	index uint64
}

// firstAt is when the log first shows service at index want or later.
func (l appliedLog) firstAt(service string, want uint64) (time.Time, bool) {
	for _, a := range l[service] {
		if a.index >= want {
			return a.at, true
		}
	}
	return time.Time{}, false
}

// note adds a poll's reading, keeping changes only.
func (l appliedLog) note(at time.Time, applied map[string]uint64) {
	for s, i := range applied {
		if h := l[s]; len(h) == 0 || h[len(h)-1].index != i {
			l[s] = append(h, appliedAt{at, i})
		}
	}
}

// appliedPollers read every gateway's applied indexes every fleetPoll.
type appliedPollers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	logs   map[string]appliedLog
	now    map[string]map[string]uint64 // each gateway's newest reading
}

func pollApplied(ctx context.Context, hc *http.Client, gws []fleetGateway) *appliedPollers {
	ctx, cancel := context.WithCancel(ctx)
	p := &appliedPollers{cancel: cancel, logs: map[string]appliedLog{}, now: map[string]map[string]uint64{}}
	for _, g := range gws {
		p.logs[g.id] = appliedLog{}
		p.wg.Go(func() {
			for ctx.Err() == nil {
				// The time the poll was sent: the gateway had applied what it
				// answers by then, or within the round trip after it.
				at := time.Now()
				if applied, err := appliedIndexes(ctx, hc, g.admin); err == nil {
					p.mu.Lock()
					p.logs[g.id].note(at, applied)
					p.now[g.id] = applied
					p.mu.Unlock()
				}
				_ = retry.Sleep(ctx, fleetPoll)
			}
		})
	}
	return p
}

// all reports whether every gateway's newest reading covers want.
func (p *appliedPollers) all(want map[string]uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.logs {
		if !covers(p.now[id], want) {
			return false
		}
	}
	return true
}

// stop ends the polls and returns each gateway's log.
func (p *appliedPollers) stop() map[string]appliedLog {
	p.cancel()
	p.wg.Wait()
	return p.logs
}

// probeFleet sends one request per gateway and service and counts those
// that an instance of that service and color answered.
func probeFleet(ctx context.Context, gws []fleetGateway, services int, color zkstate.Color) (sent, ok int) {
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, g := range gws {
		for i := range services {
			got, inst, err := local.Send(ctx, hc, http.MethodGet, g.url+"/"+fleetService(i)+"/")
			sent++
			if err == nil && got == color && strings.HasPrefix(inst, fleetService(i)+"-") {
				ok++
			}
		}
	}
	return sent, ok
}

// fdCount is how many files pid has open; 0 when it cannot be read.
func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// countLines counts the lines of a log file that contain s.
func countLines(path, s string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(raw), s)
}

// Outcome is the switch's duration, or how far it got within the limit.
func (r *FleetRow) Outcome() string {
	if r.Unfinished != "" {
		return fmt.Sprintf("**not done**: %d of %d steps", r.StepsDone, r.Instances)
	}
	return ms(r.Switch)
}

// Poll is how often the gateways were read during the switch.
func (r *FleetRow) Poll() time.Duration { return fleetPoll }

// Cores renders a role's share of cores before the flip.
func (r *FleetRow) Cores(role string) string { return fmt.Sprintf("%.2f", r.Idle[role]) }

// CPUOf renders a role's CPU seconds during the switch and its share of
// the wall time in cores.
func (r *FleetRow) CPUOf(role string) string {
	d := r.CPU[role]
	if r.Wall <= 0 {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.2f s (%.2f)", d.Seconds(), d.Seconds()/r.Wall.Seconds())
}

// MachineShare is the CPU of every measured process during the switch in
// percent of what the machine's cores offered over the wall time.
func (r *FleetRow) MachineShare(cpus int) string {
	var total time.Duration
	for _, d := range r.CPU {
		total += d
	}
	if r.Wall <= 0 || cpus <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*total.Seconds()/r.Wall.Seconds()/float64(cpus))
}
