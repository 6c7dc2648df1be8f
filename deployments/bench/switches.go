package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// startCluster runs the local topology with the production timings (not
// Fast). With instances it also waits until the registry shows the blue
// ones UP and the green ones standing by, and the gateway serves blue.
func (b *bencher) startCluster(ctx context.Context, name, registryURL string, perColor int, gatewayArgs ...string) (*local.Cluster, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := local.Start(sctx, local.Options{
		Bin: b.bin, Dir: dir, Token: b.token, Controllers: 2, Blue: perColor, Green: perColor, RegistryURL: registryURL,
		GatewayArgs: gatewayArgs,
	})
	if err != nil {
		return nil, fmt.Errorf("start cluster (logs in %s): %w", dir, err)
	}
	if perColor > 0 {
		reg, err := c.Backend()
		if err == nil {
			err = waitUp(ctx, reg, zkstate.Blue, perColor, 2*perColor, time.Minute)
		}
		if err == nil {
			err = c.WaitServing(ctx, zkstate.Blue, time.Minute)
		}
		if err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// waitUp waits until the registry lists total instances of which want of
// color are UP and no other is.
func waitUp(ctx context.Context, reg registry.Backend, color zkstate.Color, want, total int, within time.Duration) error {
	var up, others, all int
	err := retry.Until(ctx, within, func() (bool, error) {
		snap, err := reg.Instances(ctx, "hello", 0, 0)
		if err != nil || !snap.Ready {
			return false, err
		}
		up, others, all = 0, 0, len(snap.Instances)
		for _, in := range snap.Instances {
			if in.Status == registry.StatusUp && zkstate.Color(in.Color) == color {
				up++
			} else if in.Status == registry.StatusUp {
				others++
			}
		}
		return up == want && others == 0 && all == total, nil
	})
	if err != nil {
		return fmt.Errorf("registry shows %d of %d %s instances UP and %d others among %d registered of %d: %w", up, want, color, others, all, total, err)
	}
	return nil
}

// flip writes /active_color with zkCli.sh, as CI does, and waits until the
// switch that write started has finished done.
func flip(ctx context.Context, c *local.Cluster, color zkstate.Color, within time.Duration) (zkstate.Switch, time.Time, error) {
	id, at, err := c.Flip(ctx, string(color))
	if err != nil {
		return zkstate.Switch{}, at, err
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	rec, err := zkstate.WaitSwitch(ctx, c.ZKConn(), c.Paths, id, color)
	return rec, at, err
}

// builtinCluster measures throughput, TLS and HTTP/2, and propagation on
// one cluster with the built-in registry: two blue backends that every
// proxy shares, and two green ones to switch to. For TLS its gateway also
// serves HTTPS, with the certificate nginx and Caddy get.
func (b *bencher) builtinCluster(ctx context.Context) error {
	var gwTLS string
	var cert certFiles
	var gwArgs []string
	if b.wants("tls") {
		dir := filepath.Join(b.dir, "tls")
		err := os.MkdirAll(dir, 0o755)
		if err == nil {
			cert, err = writeCert(dir, "127.0.0.1", "localhost")
		}
		if err == nil {
			gwTLS, err = freeAddr()
		}
		if err != nil {
			b.note("tls: no certificate: %v", err)
		} else {
			gwArgs = []string{"--tls-listen", gwTLS, "--tls-cert", cert.Cert, "--tls-key", cert.Key}
		}
	}
	c, err := b.startCluster(ctx, "builtin", "", 2, gwArgs...)
	if err != nil {
		return err
	}
	defer c.Stop()
	if b.wants("throughput") {
		b.section("gateway throughput", func() error { return b.throughput(ctx, c) })
	}
	if gwTLS != "" {
		b.section("tls (TLS and HTTP/2)", func() error { return b.tlsBench(ctx, c, gwTLS, cert) })
	}
	if b.wants("propagation") {
		b.section("switch propagation (built-in registry)", func() error {
			r := &SwitchRow{Method: "switchyard, built-in registry", Name: "built-in"}
			return b.propagation(ctx, c, r, "under the switch load, after the flips")
		})
	}
	return nil
}

// consulAgent starts a Consul server of its own, configured as in
// production (local.StartConsulServer), in the bench's dir name; building
// Consul the first time on a machine can take minutes.
func (b *bencher) consulAgent(ctx context.Context, name string) (*local.Consul, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	agent, err := local.StartConsulServer(sctx, dir)
	if err != nil {
		return nil, fmt.Errorf("consul agent: %w", err)
	}
	return agent, nil
}

// consul measures propagation with the Consul registry: two hello
// processes of each color, then each of ConsulSizes.
func (b *bencher) consul(ctx context.Context) error {
	agent, err := b.consulAgent(ctx, "consul-agent")
	if err != nil {
		return err
	}
	err = func() error {
		defer agent.Stop()
		c, err := b.startCluster(ctx, "consul", agent.URL(), 2)
		if err != nil {
			return err
		}
		defer c.Stop()
		r := &SwitchRow{Method: "switchyard, Consul registry", Name: "Consul"}
		return b.propagation(ctx, c, r, "under the switch load with Consul, after the flips")
	}()
	if err != nil {
		return err
	}
	return b.consulSizes(ctx)
}

// propagation flips /active_color Flips times under load through the
// gateway and measures each flip.
func (b *bencher) propagation(ctx context.Context, c *local.Cluster, r *SwitchRow, memWhen string) error {
	mem, err := b.flipUnderLoad(ctx, c, r, b.Flips)
	if err != nil {
		return err
	}
	b.addMem(memWhen, mem, "gateway", "registry", "controller (leader)", "controller (standby)")
	b.r.Switches = append(b.r.Switches, r)
	b.logf("%s: %d flips, %d requests, %d failed; propagation p50 %s p99 %s max %s",
		r.Name, r.Switches, r.Requests, r.Failed, pct(r.Propagation, 50), pct(r.Propagation, 99), pct(r.Propagation, 100))
	return nil
}

// flipUnderLoad flips /active_color n times under load through the
// gateway, measures each flip into r, and returns the cluster's memory
// while the load still ran.
func (b *bencher) flipUnderLoad(ctx context.Context, c *local.Cluster, r *SwitchRow, n int) (map[string]Mem, error) {
	ld := startLoad(ctx, strings.TrimPrefix(c.GatewayURL, "http://"), conns, loadPause)
	defer ld.Stop()
	_ = retry.Sleep(ctx, time.Second)
	var ws []window
	color := zkstate.Blue
	for i := range n {
		color = color.Other()
		rec, at, err := flip(ctx, c, color, 90*time.Second)
		if at.IsZero() {
			return nil, fmt.Errorf("flip %d: %w", i+1, err)
		}
		ph := phasesOf(rec, at)
		ws = append(ws, window{from: at, at: at, color: color, ok: err == nil, took: rec.Duration(), phases: &ph})
		if err != nil {
			b.logf("%s: flip %d to %s did not finish done: %v", r.Name, i+1, color, err)
			continue
		}
		b.logf("%s: flip %2d to %-5s switch %s", r.Name, i+1, color, rec.Duration().Round(time.Millisecond))
	}
	// Let the last flip's tail show in the results.
	_ = retry.Sleep(ctx, time.Second)
	mem := clusterMem(c)
	r.tally(ld.Stop(), ws)
	return mem, nil
}

// clusterMem reads the memory of the cluster's gateway, registry and
// controllers, by role.
func clusterMem(c *local.Cluster) map[string]Mem {
	got := map[string]Mem{}
	rec, _ := c.Record()
	procs := map[string]*local.Proc{"gateway": c.Gateway, "registry": c.Registry}
	for _, p := range c.Controllers {
		role := "controller (standby)"
		if p.Name == rec.Leader {
			role = "controller (leader)"
		}
		procs[role] = p
	}
	for name, p := range procs {
		if pid, err := pidOf(p); err == nil {
			got[name], _ = memOf(pid)
		}
	}
	return got
}

// addMem records processes' memory in the report, in the order named.
func (b *bencher) addMem(when string, mem map[string]Mem, names ...string) {
	for _, n := range names {
		b.r.addMem(n, when, mem[n])
	}
}

// window is one switch under load: from starts its window (the next one's
// from ends it), at is when the change was made, color the new one.
type window struct {
	from, at time.Time
	color    zkstate.Color
	ok       bool          // the switch finished as it should
	took     time.Duration // the switch's own duration
	phases   *Phases       // where its time went, when the record says
}

// tally fills r from the load's results and the switches.
func (r *SwitchRow) tally(rs []local.Result, ws []window) {
	fs := local.Failures(rs)
	r.Switches, r.Requests, r.Failed, r.FailKinds = len(ws), len(rs), len(fs), errorKinds(fs)
	for i, w := range ws {
		until := time.Now()
		if i+1 < len(ws) {
			until = ws[i+1].from
		}
		r.PerSwitch = append(r.PerSwitch, len(local.Failures(between(rs, w.from, until))))
		p, took := local.Propagation(rs, w.at, until, w.color)
		if !w.ok || !took {
			r.Unfinished++
			continue
		}
		r.Propagation = append(r.Propagation, p)
		r.Durations = append(r.Durations, w.took)
		if w.phases != nil {
			ph := *w.phases
			ph.Propagation = p
			r.Phases = append(r.Phases, ph)
		}
	}
}

// seed runs the seed's deploy script (000_ce5deee7d65dfb4a) Switches
// times: start the new version on the idle port, health-check it by
// grepping for "timestamp", rewrite the include, `nginx -s reload`, then
// `kill -15` the old process. Its sleeps (10 s before and between health
// checks, 5 s after the kill) only pace the script and are shortened;
// every action is the same.
func (b *bencher) seed(ctx context.Context) error {
	dir := filepath.Join(b.dir, "seed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var addrs [3]string // two app ports and nginx's
	for i := range addrs {
		var err error
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	// start is the script's `java -jar` and health check.
	start := func(addr string, color zkstate.Color) (*proc, error) {
		p, err := startProc(ctx, dir, "seedapp-"+string(color)+"-"+strings.ReplaceAll(addr, ":", "_"), "", nil,
			filepath.Join(b.bin, "seedapp"), "--listen", addr, "--color", string(color))
		if err == nil {
			if err = seedHealthCheck(ctx, addr); err != nil {
				p.stop(syscall.SIGKILL, time.Second)
			}
		}
		return p, err
	}
	current, err := start(addrs[0], zkstate.Blue)
	if err != nil {
		return err
	}
	defer func() { current.stop(syscall.SIGTERM, 5*time.Second) }()
	include := filepath.Join(dir, "service-url.inc")
	if err := os.WriteFile(include, []byte(seedInclude(addrs[0])), 0o644); err != nil {
		return err
	}
	nginxDir := filepath.Join(dir, "nginx")
	ng, err := startNginx(ctx, nginxDir, seedServer(addrs[2], include), addrs[2])
	if err != nil {
		return err
	}
	defer ng.stop(syscall.SIGQUIT, 5*time.Second)

	ld := startLoad(ctx, addrs[2], conns, loadPause)
	defer ld.Stop()
	_ = retry.Sleep(ctx, time.Second)
	var ws []window
	idle, color := 1, zkstate.Blue
	for i := range b.Switches {
		color = color.Other()
		w := window{from: time.Now(), color: color, ok: true}
		next, err := start(addrs[idle], color)
		if err != nil {
			return fmt.Errorf("switch %d: %w", i+1, err)
		}
		if err := os.WriteFile(include, []byte(seedInclude(addrs[idle])), 0o644); err != nil {
			return err
		}
		w.at = time.Now()
		// nginx starts new workers and retires the old ones on its own once
		// signalled; kill -15 follows at once, as in the script.
		if out, err := exec.CommandContext(ctx, nginxBin(), nginxArgs(nginxDir, "-s", "reload")...).CombinedOutput(); err != nil {
			return fmt.Errorf("nginx -s reload: %w: %s", err, out)
		}
		current.stop(syscall.SIGTERM, 35*time.Second)
		w.took = time.Since(w.from)
		current, idle = next, 1-idle
		ws = append(ws, w)
		b.logf("seed: switch %2d to %-5s new version up and old one gone in %s", i+1, color, w.took.Round(time.Millisecond))
		// The script sleeps 5 s here; a second is enough for the old
		// workers to finish.
		_ = retry.Sleep(ctx, time.Second)
	}
	_ = retry.Sleep(ctx, 500*time.Millisecond)
	r := &SwitchRow{Method: "seed: nginx include + `nginx -s reload` + `kill -15`", Name: "seed", Seed: true}
	r.tally(ld.Stop(), ws)
	b.r.Switches = append(b.r.Switches, r)
	b.logf("seed: %d switches, %d requests, %d failed (%s)", r.Switches, r.Requests, r.Failed, r.FailKinds)
	return nil
}

// seedInclude is the file the seed's script rewrites:
// /etc/nginx/conf.d/service-url.inc.
func seedInclude(addr string) string { return "set $service_url http://" + addr + ";\n" }

// seedServer is the seed's nginx site: proxy_pass to the variable the
// include sets, so every request opens a new connection to the backend.
func seedServer(listen, include string) string {
	return fmt.Sprintf(`  server {
    listen %s;
    include %s;
    location / {
      proxy_pass $service_url;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Host $http_host;
    }
  }
`, listen, include)
}

// seedHealthCheck is the script's check: GET the new version until its
// page holds "timestamp".
func seedHealthCheck(ctx context.Context, addr string) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	err := retry.Until(ctx, 5*time.Second, func() (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		page, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return bytes.Contains(page, []byte("timestamp")), err
	})
	if err != nil {
		return fmt.Errorf("health check of %s: no \"timestamp\": %w", addr, err)
	}
	return nil
}

// load is a keep-alive load generator that, unlike net/http's client,
// never retries a request on its own: http.Transport silently resends an
// idempotent request whose reused connection was closed under it, which
// would hide exactly the failures a switch is judged by. Each connection
// writes a request, reads the response, and counts every error, as wrk
// does; after an error or a "Connection: close" it dials again.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	rs     []local.Result
}

// startLoad sends GET / to addr over conns connections, each pausing
// after every response, until Stop.
func startLoad(ctx context.Context, addr string, conns int, pause time.Duration) *load {
	return startPacedLoad(ctx, addr, conns, pause, 0)
}

// startPacedLoad is startLoad whose connections together send rps
// requests a second when rps > 0: each sends one every conns/rps, on a
// schedule fixed from its start, falling behind (never bursting to catch
// up) when an answer takes longer.
func startPacedLoad(ctx context.Context, addr string, conns int, pause time.Duration, rps int) *load {
	var every time.Duration
	if rps > 0 {
		every = time.Duration(float64(time.Second) * float64(conns) / float64(rps))
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: switchyard-bench\r\nAccept: */*\r\n\r\n")
	for range conns {
		l.wg.Go(func() {
			mine := l.worker(ctx, addr, req, pause, every)
			l.mu.Lock()
			l.rs = append(l.rs, mine...)
			l.mu.Unlock()
		})
	}
	return l
}

func (l *load) worker(ctx context.Context, addr string, req []byte, pause, every time.Duration) (mine []local.Result) {
	var (
		conn   net.Conn
		br     *bufio.Reader
		reused bool
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	d := net.Dialer{Timeout: 2 * time.Second}
	next := time.Now()
	for ctx.Err() == nil {
		if every > 0 {
			next = next.Add(every)
			if wait := time.Until(next); wait > 0 {
				_ = retry.Sleep(ctx, wait)
			} else {
				next = time.Now()
			}
			if ctx.Err() != nil {
				break
			}
		}
		r := local.Result{Start: time.Now()}
		if conn == nil {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				if ctx.Err() != nil {
					return mine
				}
				r.End, r.Err = time.Now(), "dial: "+errText(err)
				mine = append(mine, r)
				_ = retry.Sleep(ctx, max(pause, time.Millisecond))
				continue
			}
			conn, br, reused = c, bufio.NewReaderSize(c, 8<<10), false
		}
		_ = conn.SetDeadline(r.Start.Add(10 * time.Second))
		_, err := conn.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		r.End = time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			return mine // the run ended, not the request
		case err != nil:
			where := "new connection"
			if reused {
				where = "reused connection"
			}
			r.Err = where + ": " + errText(err)
			conn.Close()
			conn = nil
		default:
			r.Color = zkstate.Color(resp.Header.Get("X-Switchyard-Color"))
			if resp.StatusCode != http.StatusOK {
				r.Err = "HTTP " + resp.Status
			}
			if resp.Close {
				conn.Close()
				conn = nil
			}
			reused = true
		}
		mine = append(mine, r)
		if pause > 0 {
			_ = retry.Sleep(ctx, pause)
		}
	}
	return mine
}

// errText shortens network errors to what tells them apart.
func errText(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "127.0.0.1") {
		s = s[i+2:]
	}
	return s
}

// Stop ends the run and returns every result ordered by start.
func (l *load) Stop() []local.Result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.rs, func(i, j int) bool { return l.rs[i].Start.Before(l.rs[j].Start) })
	return l.rs
}

// between returns the results that started in [from, to).
func between(rs []local.Result, from, to time.Time) []local.Result {
	i := sort.Search(len(rs), func(i int) bool { return !rs[i].Start.Before(from) })
	j := sort.Search(len(rs), func(i int) bool { return !rs[i].Start.Before(to) })
	return rs[i:j]
}

// errorKinds summarises failures as "n× kind", most common first.
func errorKinds(fs []local.Result) string {
	counts := map[string]int{}
	for _, f := range fs {
		counts[f.Err]++
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	for i, k := range kinds {
		kinds[i] = fmt.Sprintf("%d× %s", counts[k], k)
	}
	return strings.Join(kinds, "; ")
}

// Phases splits one switch's time by the step timestamps in its record.
// Each step's At is when its instruction came back, so a phase boundary
// includes the one instruction that ends it.
type Phases struct {
	React    time.Duration // the ZooKeeper write until the record's start: watch, members, registry list
	Prepare  time.Duration // record start until the first UP step: health checks, first instruction
	Up       time.Duration // first to last UP step
	UpSteps  int
	Gateways time.Duration // last UP step until the first OUT_OF_SERVICE step: the turn from make to break
	Out      time.Duration // first to last OUT_OF_SERVICE step
	OutSteps int
	Finish   time.Duration // last step until the record's end: the final gateway wait
	Total    time.Duration // the write until the record's end
	// Propagation is the flip's propagation as the load saw it, when
	// measured under load: what tells the slowest flip.
	Propagation time.Duration
	// Partial is set when the record kept only its newest steps (a large
	// switch): the step phases cannot be told apart, only the totals.
	Partial bool
}

// phasesOf reads rec, the switch that answers the ZooKeeper write at at.
func phasesOf(rec zkstate.Switch, at time.Time) (p Phases) {
	if rec.FinishedAt == nil {
		return p
	}
	p.React, p.Total = max(rec.StartedAt.Sub(at), 0), rec.FinishedAt.Sub(at)
	if p.Partial = rec.StepsTotal > len(rec.Steps); p.Partial {
		return p
	}
	var up, out []time.Time // when each done step's instruction came back
	for _, s := range rec.Steps {
		if s.State == zkstate.StepDone && !s.At.IsZero() && s.Action == registry.StatusUp {
			up = append(up, s.At)
		} else if s.State == zkstate.StepDone && !s.At.IsZero() && s.Action == registry.StatusOutOfService {
			out = append(out, s.At)
		}
	}
	p.UpSteps, p.OutSteps = len(up), len(out)
	last := rec.StartedAt
	if len(up) > 0 {
		p.Prepare, p.Up, last = up[0].Sub(last), up[len(up)-1].Sub(up[0]), up[len(up)-1]
	}
	if len(out) > 0 {
		p.Gateways, p.Out, last = out[0].Sub(last), out[len(out)-1].Sub(out[0]), out[len(out)-1]
	}
	p.Finish = rec.FinishedAt.Sub(last)
	return p
}
