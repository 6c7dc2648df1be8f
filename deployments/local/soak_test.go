//go:build soak

package local

// The soak (`make soak`, never part of `make test`): a whole cluster under
// steady GET+POST load, flipped every five seconds for ten minutes with the
// real zkCli.sh. Every process is sampled after a warm-up minute, every
// minute after it and at the end; the run fails on a single failed request,
// on a switch that does not finish done, and on a process whose goroutines,
// RSS or open files grow beyond GC noise. docs/reliability.md holds the
// figures of a run and explains the tolerances.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/procfs"

	"github.com/switchyard/switchyard/zkstate"
)

const (
	soakFlipEvery = 5 * time.Second
	soakWorkers   = 4
	soakPause     = 2 * time.Millisecond
	soakMiB       = 1 << 20
)

// Flatness: the end-of-run sample against the post-warm-up one.
//
// Goroutines may grow by 10% plus 20: a sample catches whatever is in flight
// (the load's requests, a blocking query being renewed, a switch's
// instruction fan-out), which is a handful, while a leak of one goroutine per
// flip adds about a hundred over the run, and one per request thousands.
//
// RSS may grow by 30% or 20 MiB, whichever is larger: with GOGC=100 a Go heap
// runs up to twice its live size before a collection and the scavenger hands
// pages back lazily, so two instants of a healthy 20-40 MiB process differ by
// several MiB; a leak of even 100 bytes per request (hundreds of thousands of
// requests) exceeds the bound, while per-flip leaks, too small to see in RSS
// over ~110 flips, are what the goroutine and file bounds catch.
//
// Open files may grow by 10% plus 10: keep-alive connections come and go
// with the load; a leaked connection or watch per flip adds a hundred.
//
// ZooKeeper is a JVM (-Xmx256m): its RSS follows the heap it has touched, not
// live data, so it is reported, and its leaks are checked where switchyard
// could cause them: znodes, ephemerals, watches and connections (mntr). The
// one node switchyard adds per switch, a /switchyard/history entry, is kept
// to the newest soakHistoryBound; the soak seeds the history to just under the
// bound, so pruning runs on every switch after the first few and the znode
// count must be flat.
var (
	soakGoroutines = soakTolerance{rel: 0.10, abs: 20}
	soakFDs        = soakTolerance{rel: 0.10, abs: 10}
	soakZNodes     = soakTolerance{abs: 10}
	soakWatches    = soakTolerance{rel: 0.10, abs: 10}
	soakConns      = soakTolerance{abs: 5}
)

// soakRSSLimit is the RSS bound: 30% or 20 MiB over start, whichever is more.
func soakRSSLimit(start uint64) uint64 {
	return max(start+start*3/10, start+20*soakMiB)
}

// soakHistoryBound is how many /switchyard/history entries the leader keeps
// (controller.historyKeep; README, "ZooKeeper layout").
const soakHistoryBound = 200

type soakTolerance struct {
	rel float64
	abs int
}

func (tol soakTolerance) limit(start int) int { return start + int(float64(start)*tol.rel) + tol.abs }

func TestSoak(t *testing.T) {
	dur := 10 * time.Minute
	if s := os.Getenv("SWITCHYARD_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 30*time.Second {
			t.Fatalf("SWITCHYARD_SOAK_DURATION=%q: want a duration of at least 30s (%v)", s, err)
		}
		dur = d
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < dur+5*time.Minute {
		t.Fatalf("go test -timeout leaves %s; the soak needs %s plus 5m", time.Until(dl).Round(time.Second), dur)
	}
	warmup := min(time.Minute, dur/5)
	b := builtin()
	if os.Getenv("SWITCHYARD_SOAK_REGISTRY") == "consul" {
		b = consul()
	}
	// Production timings, not the suite's fast ones: the soak is about what
	// an operator runs, and a shared machine must not expire 2s sessions for
	// it. (The 10s session timeout asked for is capped at 5s by the
	// harness's ZooKeeper, whose tickTime is 250ms; leases are 10s.)
	c, _ := startCluster(t, b, 2, 2, func(o *Options) { o.Fast = false; o.Controllers = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	procs := soakProcesses(c)
	soakSeedHistory(t, c, soakHistoryBound-2)

	load := StartLoad(ctx, c.GatewayURL+"/", soakWorkers, soakPause)
	waitSent(t, load, 100)
	start := time.Now()
	logsFrom := soakLogSizes(c.opts.Dir) // complaints count from here: start-up warnings are not the soak's
	end := start.Add(dur)
	samples := []soakSample{takeSoakSample(ctx, c, procs, 0)}

	var flips []soakFlip
	base := -1 // index of the first sample after the warm-up
	nextSample := start.Add(warmup)
	tick := time.NewTicker(soakFlipEvery)
	defer tick.Stop()
	failedInARow := 0
	for i := 0; ; i++ {
		color := []zkstate.Color{zkstate.Green, zkstate.Blue}[i%2]
		f := soakFlipOnce(ctx, c, color)
		flips = append(flips, f)
		if f.err != nil {
			t.Errorf("flip %d to %s: %v", i+1, color, f.err)
			if failedInARow++; failedInARow == 3 {
				t.Errorf("three flips in a row failed; the soak stops at %s", time.Since(start).Round(time.Second))
				break
			}
		} else {
			failedInARow = 0
		}
		now := time.Now()
		if !now.Before(end) {
			break
		}
		// Samples are taken right after a switch has finished and the
		// gateway serves only its color, under load: every sample is of
		// the same moment of the cycle.
		if !now.Before(nextSample) {
			s := takeSoakSample(ctx, c, procs, now.Sub(start))
			if base < 0 {
				base = len(samples)
			}
			samples = append(samples, s)
			for !nextSample.After(now) {
				nextSample = nextSample.Add(time.Minute)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the soak ran out of time: %v", ctx.Err())
		}
	}
	last := takeSoakSample(ctx, c, procs, time.Since(start))
	samples = append(samples, last)
	if base < 0 {
		base = 0
	}
	results := load.Stop()

	for _, p := range procs {
		if p.proc != nil && !p.proc.Alive() {
			t.Errorf("%s died during the soak", p.name)
		}
	}
	for _, s := range samples {
		for _, e := range s.errs {
			t.Errorf("sample at %s: %s", s.at.Round(time.Second), e)
		}
	}
	assertServed(t, results, "during the soak")
	if dir := os.Getenv("SWITCHYARD_SOAK_LOGS"); dir != "" {
		if err := soakCopyLogs(c.opts.Dir, dir); err != nil {
			t.Errorf("keep the logs: %v", err)
		}
	}
	report, grew := soakReport(c, procs, results, flips, samples, samples[base], last, dur, warmup, logsFrom)
	for _, g := range grew {
		t.Errorf("not flat: %s", g)
	}
	t.Logf("soak report:\n%s", report)
	if path := os.Getenv("SWITCHYARD_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
}

// soakSeedHistory fills /switchyard/history up to n entries with copies of the
// current record, as a cluster that has switched for a while would have.
func soakSeedHistory(t *testing.T, c *Cluster, n int) {
	t.Helper()
	rec, err := c.Record()
	if err != nil {
		t.Fatal(err)
	}
	rec.Reason = "seeded by the soak"
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	have, _, err := c.ZKConn().Children(c.Paths.History())
	if err != nil {
		t.Fatal(err)
	}
	for range n - len(have) {
		if _, err := c.ZKConn().Create(c.Paths.History()+"/s_", data, zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
}

// soakCopyLogs copies every process's log from the cluster's directory (a
// t.TempDir, removed when the test ends) to dir.
func soakCopyLogs(from, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(from, "*.log"))
	files = append(files, filepath.Join(from, "zookeeper", "zookeeper.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// soakLogSizes is the length of every process's log now, by process name.
func soakLogSizes(dir string) map[string]int64 {
	out := map[string]int64{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			out[strings.TrimSuffix(filepath.Base(f), ".log")] = fi.Size()
		}
	}
	return out
}

// soakLogComplaints counts the warning and error lines a process logged after
// its log's first from bytes.
func soakLogComplaints(dir, name string, from int64) (warnings, errors int) {
	b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
	b = b[min(from, int64(len(b))):]
	for line := range strings.Lines(string(b)) {
		switch {
		case strings.Contains(line, "level=warning"):
			warnings++
		case strings.Contains(line, "level=error"), strings.Contains(line, "level=fatal"), strings.HasPrefix(line, "panic:"):
			errors++
		}
	}
	return warnings, errors
}

// soakFlip is one flip of the soak.
type soakFlip struct {
	color zkstate.Color
	at    time.Time // ZooKeeper's time of the /active_color write
	rec   zkstate.Switch
	cycle time.Duration // zkCli write to the gateway serving only color
	err   error
}

// soakFlipOnce flips to color with zkCli.sh, waits for the leader's record
// of that write to finish done and for the gateway to serve only color.
func soakFlipOnce(ctx context.Context, c *Cluster, color zkstate.Color) (f soakFlip) {
	began := time.Now()
	f.color = color
	defer func() { f.cycle = time.Since(began) }()
	id, at, err := c.Flip(ctx, string(color))
	if err != nil {
		f.err = err
		return f
	}
	f.at = at
	f.rec, err = c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool {
		return r.ID >= id && r.Target == color && r.Phase.Finished()
	})
	if err != nil {
		f.err = err
		return f
	}
	if f.rec.Phase != zkstate.PhaseDone {
		f.err = fmt.Errorf("switch ended %s: %s", f.rec.Phase, f.rec.Reason)
		return f
	}
	f.err = c.WaitServing(ctx, color, 15*time.Second)
	return f
}

// soakProcess is one process the soak samples.
type soakProcess struct {
	name    string
	pid     int
	proc    *Proc  // nil for ZooKeeper
	metrics string // a Prometheus /metrics URL, or ""
}

// soakProcesses lists every process of c: the package's own handles give
// their PIDs.
func soakProcesses(c *Cluster) []soakProcess {
	ps := []soakProcess{{name: "zookeeper (JVM)", pid: c.ZK.cmd.Process.Pid}}
	if c.Registry != nil {
		ps = append(ps, soakProcess{name: "registry", pid: c.Registry.cmd.Process.Pid, proc: c.Registry, metrics: c.RegistryURL + "/metrics"})
	}
	for i, p := range c.Controllers {
		ps = append(ps, soakProcess{name: p.Name, pid: p.cmd.Process.Pid, proc: p, metrics: c.ControllerAPIs[i] + "/metrics"})
	}
	ps = append(ps, soakProcess{name: "gateway", pid: c.Gateway.cmd.Process.Pid, proc: c.Gateway, metrics: c.GatewayAdminURL + "/metrics"})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.Instances {
		ps = append(ps, soakProcess{name: in.ID, pid: in.cmd.Process.Pid, proc: in.Proc})
	}
	return ps
}

// soakProcSample is one process at one instant.
type soakProcSample struct {
	goroutines int // -1 without a /metrics endpoint
	threads    int
	rss        uint64
	fds        int
}

type soakSample struct {
	at    time.Duration // since the load started
	procs map[string]soakProcSample
	zk    map[string]int // mntr figures
	errs  []string
}

// soakHistoryKey is the sample's count of /switchyard/history entries.
const soakHistoryKey = "switchyard_history"

// soakZKFigures are the ZooKeeper figures the soak follows (mntr's, and the
// history's length) and the bound each must keep to at the end.
var soakZKFigures = []struct {
	key, label string
	limit      func(start int) int
}{
	{"zk_znode_count", "znodes", soakZNodes.limit},
	{"zk_ephemerals_count", "ephemerals", soakZNodes.limit},
	{"zk_watch_count", "watches", soakWatches.limit},
	{"zk_num_alive_connections", "connections", soakConns.limit},
	{soakHistoryKey, "/switchyard/history entries", func(int) int { return soakHistoryBound }},
}

// soakScrape is a client that keeps no connection open between samples, so
// sampling itself adds no goroutine or file to what it measures.
var soakScrape = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func takeSoakSample(ctx context.Context, c *Cluster, procs []soakProcess, at time.Duration) soakSample {
	s := soakSample{at: at, procs: map[string]soakProcSample{}}
	for _, p := range procs {
		ps, err := soakSampleProcess(ctx, p)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s: %v", p.name, err))
		}
		s.procs[p.name] = ps
	}
	zk, err := soakMntr(c.ZK.Addr)
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("zookeeper mntr: %v", err))
	}
	if history, _, err := c.ZKConn().Children(c.Paths.History()); err != nil {
		s.errs = append(s.errs, fmt.Sprintf("zookeeper history: %v", err))
	} else if zk != nil {
		zk[soakHistoryKey] = len(history)
	}
	s.zk = zk
	return s
}

func soakSampleProcess(ctx context.Context, p soakProcess) (soakProcSample, error) {
	s := soakProcSample{goroutines: -1}
	pr, err := procfs.NewProc(p.pid)
	if err != nil {
		return s, err
	}
	st, err := pr.NewStatus()
	if err != nil {
		return s, err
	}
	stat, err := pr.Stat()
	if err != nil {
		return s, err
	}
	s.rss, s.threads = st.VmRSS, stat.NumThreads
	if s.fds, err = pr.FileDescriptorsLen(); err != nil {
		return s, err
	}
	if p.metrics == "" {
		return s, nil
	}
	g, err := soakGauge(ctx, p.metrics, "go_goroutines")
	if err != nil {
		return s, err
	}
	s.goroutines = int(g)
	return s, nil
}

// soakGauge reads one unlabelled gauge from a Prometheus text exposition.
func soakGauge(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := soakScrape.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no %s", url, name)
}

// soakMntr asks ZooKeeper for its monitoring figures (the four-letter word is
// whitelisted by StartZooKeeper).
func soakMntr(addr string) (map[string]int, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("mntr")); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil {
			out[k] = n
		}
	}
	for _, f := range soakZKFigures {
		if _, ok := out[f.key]; !ok && f.key != soakHistoryKey {
			return out, fmt.Errorf("mntr has no %s: %q", f.key, b)
		}
	}
	return out, nil
}

// soakReport renders the run as markdown and lists what grew beyond its
// tolerance.
func soakReport(c *Cluster, procs []soakProcess, results []Result, flips []soakFlip, samples []soakSample, base, last soakSample, dur, warmup time.Duration, logsFrom map[string]int64) (string, []string) {
	var grew []string
	var w strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&w, "Run %s on %s (%d CPUs, %s/%s, %s): %s of load, a flip every %s; start = first sample after a %s warm-up (t=%s), end = t=%s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(),
		dur, soakFlipEvery, warmup, base.at.Round(time.Second), last.at.Round(time.Second))

	var durs, props, cycles []time.Duration
	done, leaders := 0, map[string]int{}
	for i, f := range flips {
		cycles = append(cycles, f.cycle)
		if f.err != nil {
			continue
		}
		done++
		leaders[f.rec.Leader]++
		durs = append(durs, f.rec.Duration())
		until := time.Now()
		if i+1 < len(flips) && !flips[i+1].at.IsZero() {
			until = flips[i+1].at
		}
		if p, ok := Propagation(results, f.at, until, f.color); ok {
			props = append(props, p)
		}
	}
	var leaderNames []string
	for _, p := range c.Controllers {
		if n := leaders[p.Name]; n > 0 {
			leaderNames = append(leaderNames, fmt.Sprintf("%s (%d)", p.Name, n))
		}
	}
	changes, prev := 0, ""
	for _, f := range flips {
		if f.err == nil && f.rec.Leader != "" {
			if prev != "" && f.rec.Leader != prev {
				changes++
			}
			prev = f.rec.Leader
		}
	}
	pct := func(ds []time.Duration) string {
		return fmt.Sprintf("%s / %s / %s", soakMs(percentile(ds, 0.5)), soakMs(percentile(ds, 0.99)), soakMs(percentile(ds, 1)))
	}
	fmt.Fprintf(&w, "| requests sent | failed | GET | POST | flips | done | switch duration p50 / p99 / max | propagation p50 / p99 / max | flip cycle p50 / p99 / max |\n")
	fmt.Fprintf(&w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&w, "| %d | %d | %d | %d | %d | %d | %s | %s | %s |\n\n",
		len(results), len(Failures(results)), Count(results, http.MethodGet), Count(results, http.MethodPost),
		len(flips), done, pct(durs), pct(props), pct(cycles))
	fmt.Fprintf(&w, "Switches led by %s; %d leader change(s) between consecutive switches. Switch duration is the leader's record (started to finished); propagation is the ZooKeeper write to the first request after which every answer came from the new color; a flip cycle is zkCli.sh's write (a JVM start) to the gateway serving only the new color.\n\n",
		strings.Join(leaderNames, ", "), changes)

	fmt.Fprintf(&w, "| process | goroutines start | end | threads start | end | RSS start | end | fds start | end | warnings / errors logged | flat |\n")
	fmt.Fprintf(&w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, p := range procs {
		s, e := base.procs[p.name], last.procs[p.name]
		var bad []string
		check := func(what string, start, end, limit int) {
			if end > limit {
				bad = append(bad, fmt.Sprintf("%s %d -> %d (limit %d)", what, start, end, limit))
			}
		}
		if s.goroutines >= 0 {
			check("goroutines", s.goroutines, e.goroutines, soakGoroutines.limit(s.goroutines))
		}
		if p.proc != nil { // ZooKeeper's RSS and files are the JVM's, checked through mntr instead
			if lim := soakRSSLimit(s.rss); e.rss > lim {
				bad = append(bad, fmt.Sprintf("RSS %s -> %s (limit %s)", soakMB(s.rss), soakMB(e.rss), soakMB(lim)))
			}
			check("fds", s.fds, e.fds, soakFDs.limit(s.fds))
		}
		verdict := "yes"
		if p.proc == nil {
			verdict = "reported (see mntr)"
		}
		if len(bad) > 0 {
			verdict = "**NO**: " + strings.Join(bad, ", ")
			grew = append(grew, p.name+": "+strings.Join(bad, ", "))
		}
		complaints := "-"
		if p.proc != nil {
			warnings, errors := soakLogComplaints(c.opts.Dir, p.proc.Name, logsFrom[p.proc.Name])
			complaints = fmt.Sprintf("%d / %d", warnings, errors)
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %d | %d | %s | %s | %d | %d | %s | %s |\n", p.name,
			soakGor(s.goroutines), soakGor(e.goroutines), s.threads, e.threads, soakMB(s.rss), soakMB(e.rss), s.fds, e.fds, complaints, verdict)
	}

	fmt.Fprintf(&w, "\n| ZooKeeper | start | end | flat |\n|---|---:|---:|---|\n")
	for _, f := range soakZKFigures {
		s, e := base.zk[f.key], last.zk[f.key]
		verdict := "yes"
		if lim := f.limit(s); e > lim {
			verdict = fmt.Sprintf("**NO** (limit %d)", lim)
			grew = append(grew, fmt.Sprintf("zookeeper %s %d -> %d (limit %d)", f.label, s, e, lim))
		}
		fmt.Fprintf(&w, "| %s | %d | %d | %s |\n", f.label, s, e, verdict)
	}

	fmt.Fprintf(&w, "\nCurve (goroutines, or threads for processes without /metrics; RSS in MiB; open fds):\n\n| process |")
	for _, s := range samples {
		fmt.Fprintf(&w, " t=%s |", s.at.Round(time.Second))
	}
	fmt.Fprintf(&w, "\n|---|%s\n", strings.Repeat("---:|", len(samples)))
	for _, p := range procs {
		fmt.Fprintf(&w, "| %s |", p.name)
		for _, s := range samples {
			ps := s.procs[p.name]
			n := ps.goroutines
			if n < 0 {
				n = ps.threads
			}
			fmt.Fprintf(&w, " %d / %.1f / %d |", n, float64(ps.rss)/soakMiB, ps.fds)
		}
		fmt.Fprintln(&w)
	}
	for _, f := range soakZKFigures {
		fmt.Fprintf(&w, "| zookeeper: %s |", f.label)
		for _, s := range samples {
			fmt.Fprintf(&w, " %d |", s.zk[f.key])
		}
		fmt.Fprintln(&w)
	}
	return w.String(), grew
}

func soakMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64) + " ms"
}

func soakMB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/soakMiB) }

func soakGor(n int) string {
	if n < 0 {
		return "-"
	}
	return strconv.Itoa(n)
}
