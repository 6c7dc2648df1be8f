package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Report is everything one run measured.
type Report struct {
	Date        time.Time
	Command     string
	Took        time.Duration
	Machine     Machine
	TableBuild  []GoBench
	Throughput  *ThroughputResult
	Propagation []*PropagationResult
	Seed        *SeedResult
	Scale       []*ScaleRow
	Leases      *LeaseResult
	Memory      []MemRow
	Notes       []string
}

// MemRow is one memory reading.
type MemRow struct {
	Process, When string
	Mem           Mem
}

// addMem keeps the larger reading for the same process and moment.
func (r *Report) addMem(process, when string, m Mem) {
	if m.RSS == 0 && m.HWM == 0 {
		return
	}
	for i := range r.Memory {
		if r.Memory[i].Process == process && r.Memory[i].When == when {
			r.Memory[i].Mem.RSS = max(r.Memory[i].Mem.RSS, m.RSS)
			r.Memory[i].Mem.HWM = max(r.Memory[i].Mem.HWM, m.HWM)
			return
		}
	}
	r.Memory = append(r.Memory, MemRow{process, when, m})
}

// pct is the nearest-rank percentile p (0 to 100) of ds; with 30 values
// p99 is the largest.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(k, 1), len(s))-1]
}

// ms renders a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case d == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	case v < 10000:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func mbs(n int64) string { return fmt.Sprintf("%.1f MB", mb(n)) }

func yesNo(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// Markdown renders the report as the tables `make bench` prints and
// commits.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := r.Machine
	w("Measured %s by `%s` in %s.\n\n", r.Date.Format("2006-01-02 15:04 MST"), r.Command, r.Took.Round(time.Second))
	w("Machine: %d CPUs (%s), Linux %s, %s; nginx %s, Caddy %s, wrk %s, ZooKeeper %s. Every process, load generator included, shares those cores.\n\n",
		m.CPUs, m.CPU, m.Kernel, m.Go, m.Nginx, m.Caddy, m.Wrk, m.ZooKeeper)

	r.throughputMarkdown(w)
	r.propagationMarkdown(w)
	r.scaleMarkdown(w)
	r.memoryMarkdown(w)
	r.targetsMarkdown(w)
	if len(r.Notes) > 0 {
		w("\n#### Sections that did not complete\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func (r *Report) throughputMarkdown(w func(string, ...any)) {
	t := r.Throughput
	w("### 1. Gateway throughput and latency\n\n")
	if t == nil {
		w("Not measured in this run.\n\n")
		return
	}
	w("wrk `-t%d -c%d -d%s --latency`, keep-alive, the same two hello backends behind every target; %d interleaved rounds (%s); figures are the mean of the rounds.\n\n",
		t.Threads, t.Conns, t.Duration, t.Rounds, strings.Join(t.Order, "; then "))
	w("| target | requests/s | rounds (requests/s) | p50 | p99 | errors | vs direct |\n|---|---:|---|---:|---:|---:|---:|\n")
	direct := t.target(TargetDirect)
	for _, tr := range t.Targets {
		if len(tr.Runs) == 0 {
			reason := tr.Missing
			if reason == "" {
				reason = "no run completed"
			}
			w("| %s | not available: %s | | | | | |\n", tr.Name, reason)
			continue
		}
		var rounds []string
		for _, run := range tr.Runs {
			rounds = append(rounds, fmt.Sprintf("%.0f", run.RPS))
		}
		vs := ""
		if direct != nil && len(direct.Runs) > 0 {
			vs = fmt.Sprintf("%.2f×", tr.MeanRPS()/direct.MeanRPS())
		}
		w("| %s | %.0f | %s | %s | %s | %d | %s |\n", tr.Name, tr.MeanRPS(), strings.Join(rounds, ", "), ms(tr.MeanP50()), ms(tr.MeanP99()), tr.Errors(), vs)
	}
	w("\n")
	for _, tr := range t.Targets {
		if len(tr.Runs) > 0 {
			w("- %s: %s\n", tr.Name, tr.Config)
		}
	}
	gw := t.target(TargetGateway)
	for _, other := range []string{TargetNginx, TargetCaddy} {
		o := t.target(other)
		if gw == nil || o == nil || len(gw.Runs) == 0 || len(o.Runs) == 0 {
			continue
		}
		w("- **gateway/%s**: throughput %.2f×, p50 %.2f×, p99 %.2f× (below 1 is faster for latency)\n",
			other, gw.MeanRPS()/o.MeanRPS(), float64(gw.MeanP50())/float64(o.MeanP50()), float64(gw.MeanP99())/float64(o.MeanP99()))
	}
	w("\n")
}

func (r *Report) propagationMarkdown(w func(string, ...any)) {
	w("### 2. Switch propagation under load, and 3. the seed's nginx reload as the baseline\n\n")
	if len(r.Propagation) == 0 && r.Seed == nil {
		w("Not measured in this run.\n\n")
		return
	}
	conns, pause := 0, time.Duration(0)
	for _, p := range r.Propagation {
		if p.Conns > 0 {
			conns, pause = p.Conns, p.Pause
		}
	}
	if conns > 0 {
		w("Load: %d keep-alive connections, each sending GET / and pausing %s after every response; a client that never retries on its own (net/http's would silently resend a request whose reused connection closed), so every failure counts. Propagation is the time from the ZooKeeper write (its mtime) to the first response of the new color after the last response of the old one; switch duration is the controller's switch record (started to finished). Flips are `zkCli.sh set /active_color` from a separate JVM, as CI does.\n\n", conns, pause)
	}
	w("| method | switches | requests | failed | failed per switch (mean / max) | propagation p50 | p99 | max | switch duration p50 | p99 | max |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Propagation {
		name := "switchyard, " + p.Backend + " registry"
		if p.Missing != "" {
			w("| %s | %s: not available (%s) | | | | | | | | | |\n", name, strings.ToLower(p.Backend), p.Missing)
			continue
		}
		maxPer := 0
		for _, n := range p.PerFlip {
			maxPer = max(maxPer, n)
		}
		w("| %s | %d | %d | %d | %.1f / %d | %s | %s | %s | %s | %s | %s |\n", name, p.Flips, p.Requests, p.Failed,
			float64(p.Failed)/float64(max(p.Flips, 1)), maxPer, ms(pct(p.Propagation, 50)), ms(pct(p.Propagation, 99)), ms(pct(p.Propagation, 100)),
			ms(pct(p.Durations, 50)), ms(pct(p.Durations, 99)), ms(pct(p.Durations, 100)))
	}
	if s := r.Seed; s != nil {
		if s.Missing != "" {
			w("| seed: nginx include + `nginx -s reload` + `kill -15` | not available (%s) | | | | | | | | | |\n", s.Missing)
		} else {
			maxPer := 0
			for _, n := range s.PerSwitch {
				maxPer = max(maxPer, n)
			}
			w("| seed: nginx include + `nginx -s reload` + `kill -15` | %d | %d | %d | %.1f / %d | %s | %s | %s | %s | %s | %s |\n", s.Switches, s.Requests, s.Failed,
				float64(s.Failed)/float64(max(s.Switches, 1)), maxPer, ms(pct(s.Propagation, 50)), ms(pct(s.Propagation, 99)), ms(pct(s.Propagation, 100)),
				ms(pct(s.Durations, 50)), ms(pct(s.Durations, 99)), ms(pct(s.Durations, 100)))
		}
	}
	w("\n")
	for _, p := range r.Propagation {
		if p.Missing == "" && p.Failed > 0 {
			w("- %s failures: %s\n", p.Backend, p.FailKinds)
		}
		if p.Unfinished > 0 {
			w("- %s: %d flips did not finish done or never reached every response\n", p.Backend, p.Unfinished)
		}
		if p.Missing == "" && len(p.Phases) > 0 {
			w("- %s, where a flip's time goes (median over the flips): %s\n", p.Backend, phaseSummary(p.Phases))
		}
	}
	if s := r.Seed; s != nil && s.Missing == "" {
		w("- seed: propagation is measured from `nginx -s reload`; its switch duration is from starting the new process to the old one's exit. Failures per switch: %v", s.PerSwitch)
		if s.Failed > 0 {
			w("; kinds: %s", s.FailKinds)
		}
		w("\n")
	}
	w("\n")
}

// phaseSummary renders the median of each phase.
func phaseSummary(ps []Phases) string {
	med := func(f func(Phases) time.Duration) string {
		var ds []time.Duration
		for _, p := range ps {
			ds = append(ds, f(p))
		}
		return ms(pct(ds, 50))
	}
	up, out := ps[0].UpSteps, ps[0].OutSteps
	return fmt.Sprintf("write→record start %s, health checks and first UP %s, %d UP steps %s, last UP→first OUT %s, %d OUT steps %s, final gateway wait %s",
		med(func(p Phases) time.Duration { return p.React }), med(func(p Phases) time.Duration { return p.Prepare }),
		up, med(func(p Phases) time.Duration { return p.Up }), med(func(p Phases) time.Duration { return p.Gateways }),
		out, med(func(p Phases) time.Duration { return p.Out }), med(func(p Phases) time.Duration { return p.Finish }))
}

func (r *Report) scaleMarkdown(w func(string, ...any)) {
	w("### 4. Scale\n\n")
	if len(r.Scale) > 0 {
		w("Each instance is a real `sdk.Instance` (own loopback listener, own ZooKeeper session and ephemeral node, registry lease with a 1 s heartbeat), all in the bench process; the registry, two controllers and the gateway are the real processes and do all their work. One flip per size at 1,000 and more, two (to green and back) below; the phases come from the step timestamps in the switch record.\n\n")
		w("| instances (blue → green) | switch duration (record) | write → done | per instance | write → record start | health checks + 1st UP | UP steps | last UP → first OUT | OUT steps | final gateway wait | controller RSS | registry RSS | gateway RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Scale {
			label := fmt.Sprintf("%d (%d → %d)", row.Instances, row.Blue, row.Green)
			if len(row.Durations) == 0 {
				reason := row.Missing
				if reason == "" {
					reason = "no switch finished"
				}
				w("| %s | not measured: %s | | | | | | | | | | | |\n", label, reason)
				continue
			}
			d := pct(row.Durations, 50)
			var tot []time.Duration
			for _, p := range row.Phases {
				tot = append(tot, p.Total)
			}
			p := medianPhases(row.Phases)
			if slices.ContainsFunc(row.Phases, func(p Phases) bool { return p.Partial }) {
				// The record keeps only its newest steps: no step phases.
				w("| %s | %s | %s | %s | %s | — | — | — | — | — | %s | %s | %s |\n", label, ms(d), ms(pct(tot, 50)),
					ms(d/time.Duration(max(row.Instances, 1))), ms(p.React),
					mbs(row.LeaderMem.RSS), mbs(row.RegistryMem.RSS), mbs(row.GatewayMem.RSS))
				continue
			}
			w("| %s | %s | %s | %s | %s | %s | %s (%d) | %s | %s (%d) | %s | %s | %s | %s |\n", label, ms(d), ms(pct(tot, 50)),
				ms(d/time.Duration(max(row.Instances, 1))), ms(p.React), ms(p.Prepare), ms(p.Up), p.UpSteps, ms(p.Gateways), ms(p.Out), p.OutSteps, ms(p.Finish),
				mbs(row.LeaderMem.RSS), mbs(row.RegistryMem.RSS), mbs(row.GatewayMem.RSS))
		}
		w("\n")
		w("— : the switch record keeps only its newest 256 steps (ZooKeeper refuses nodes over 1 MB), so the phases of a larger switch are not in it.\n\n")
		w("Where a step's time goes: each part of a step timed on its own right after the switch, median of 20 (the controller's step is: check that /active_color still asks for the target, health check (UP steps), instruction through the SDK to the registry; the switch record is written in the background, newest state only).\n\n")
		w("| instances | final record | ZooKeeper write 200 B | write ½ record | write full record | ZooKeeper read | health check | instruction (no change) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Scale {
			c := row.Costs
			if c.RecordBytes == 0 {
				continue
			}
			w("| %d | %.1f KB | %s | %s | %s | %s | %s | %s |\n", row.Instances, float64(c.RecordBytes)/1024, ms(c.ZKSetSmall), ms(c.ZKSetHalf), ms(c.ZKSetFull), ms(c.ZKGet), ms(c.Health), ms(c.Instruct))
		}
		w("\n")
	}
	for _, row := range r.Scale {
		if row.Wall < time.Second || len(row.CPU) == 0 {
			continue
		}
		names := make([]string, 0, len(row.CPU))
		var total time.Duration
		for n, d := range row.CPU {
			names = append(names, n)
			total += d
		}
		slices.SortFunc(names, func(a, b string) int { return int(row.CPU[b] - row.CPU[a]) })
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.2f s", n, row.CPU[n].Seconds()))
		}
		w("- CPU used during the %d-instance switch (%.1f s of wall time, %d cores = %.1f CPU-seconds available): %s; %.1f CPU-seconds in all (%.0f%% of the machine).\n",
			row.Instances, row.Wall.Seconds(), r.Machine.CPUs, row.Wall.Seconds()*float64(r.Machine.CPUs), strings.Join(parts, ", "),
			total.Seconds(), 100*total.Seconds()/(row.Wall.Seconds()*float64(max(r.Machine.CPUs, 1))))
	}
	for _, g := range r.TableBuild {
		w("- Gateway routing-table rebuild, `%s` (gateway/bench_test.go): %s per table, %d allocations, %s\n", g.Name, ms(time.Duration(g.NsPerOp)), g.AllocsPerOp, mbs(g.BytesPerOp))
	}
	if l := r.Leases; l != nil {
		if l.Missing != "" {
			w("- Registry with %d leases: not measured (%s)\n", l.Leases, l.Missing)
		} else if l.Run > 0 {
			w("- Built-in registry holding %d leases, each heartbeating every %s through the SDK's registry client: %.0f heartbeats/s for %s, %d failed, %d leases live at the end. Registry CPU (utime+stime from /proc/<pid>/stat): %s = **%.0f%% of one core** (%.0f%% of the machine); RSS %s (peak %s); listing all %d takes %s.\n",
				l.Leases, l.Interval, float64(l.Heartbeats)/l.Run.Seconds(), l.Run.Round(time.Second), l.Errors, l.Live,
				l.CPU.Round(10*time.Millisecond), 100*l.CPUShare(), 100*l.CPUShare()/float64(max(r.Machine.CPUs, 1)), mbs(l.Mem.RSS), mbs(l.Mem.HWM), l.Live, ms(l.List))
		}
	}
	if len(r.Scale) == 0 && len(r.TableBuild) == 0 && r.Leases == nil {
		w("Not measured in this run.\n")
	}
	w("\n")
}

func medianPhases(ps []Phases) Phases {
	get := func(f func(Phases) time.Duration) time.Duration {
		var ds []time.Duration
		for _, p := range ps {
			ds = append(ds, f(p))
		}
		return pct(ds, 50)
	}
	var out Phases
	if len(ps) > 0 {
		out.UpSteps, out.OutSteps = ps[0].UpSteps, ps[0].OutSteps
	}
	out.React = get(func(p Phases) time.Duration { return p.React })
	out.Prepare = get(func(p Phases) time.Duration { return p.Prepare })
	out.Up = get(func(p Phases) time.Duration { return p.Up })
	out.Gateways = get(func(p Phases) time.Duration { return p.Gateways })
	out.Out = get(func(p Phases) time.Duration { return p.Out })
	out.Finish = get(func(p Phases) time.Duration { return p.Finish })
	out.Total = get(func(p Phases) time.Duration { return p.Total })
	return out
}

func (r *Report) memoryMarkdown(w func(string, ...any)) {
	w("### 5. Memory\n\n")
	if len(r.Memory) == 0 {
		w("Not measured in this run.\n\n")
		return
	}
	w("VmRSS and VmHWM (peak RSS over the process's life) from /proc/<pid>/status of the processes the bench started; nginx counts its master and workers.\n\n")
	w("| process | when | RSS | peak (VmHWM) |\n|---|---|---:|---:|\n")
	for _, m := range r.Memory {
		w("| %s | %s | %s | %s |\n", m.Process, m.When, mbs(m.Mem.RSS), mbs(m.Mem.HWM))
	}
	w("\n")
}

func (r *Report) targetsMarkdown(w func(string, ...any)) {
	w("### Targets\n\n| target | measured | |\n|---|---|---|\n")
	if t := r.Throughput; t != nil {
		gw, ng := t.target(TargetGateway), t.target(TargetNginx)
		if gw != nil && ng != nil && len(gw.Runs) > 0 && len(ng.Runs) > 0 {
			ratio := gw.MeanRPS() / ng.MeanRPS()
			w("| gateway throughput ≥ 1.0× nginx | %.2f× | %s |\n", ratio, yesNo(ratio >= 1))
			w("| gateway p99 ≤ nginx p99 | %s vs %s | %s |\n", ms(gw.MeanP99()), ms(ng.MeanP99()), yesNo(gw.MeanP99() <= ng.MeanP99()))
		}
	}
	for _, p := range r.Propagation {
		if p.Missing != "" {
			w("| propagation p99 ≤ 50 ms, 0 failed (%s) | %s: not available | |\n", p.Backend, strings.ToLower(p.Backend))
			continue
		}
		p99 := pct(p.Propagation, 99)
		w("| propagation p99 ≤ 50 ms (%s) | %s over %d flips | %s |\n", p.Backend, ms(p99), len(p.Propagation), yesNo(p99 <= 50*time.Millisecond && p.Unfinished == 0 && len(p.Propagation) > 0))
		w("| 0 failed requests across every flip (%s) | %d of %d | %s |\n", p.Backend, p.Failed, p.Requests, yesNo(p.Failed == 0))
	}
	var at1000 *ScaleRow
	for _, row := range r.Scale {
		if row.Instances == 1000 && len(row.Durations) > 0 {
			at1000 = row
		}
	}
	if at1000 != nil {
		d := pct(at1000.Durations, 50)
		w("| 1,000-instance switch ≤ 5 s | %s | %s |\n", ms(d), yesNo(d <= 5*time.Second))
	}
	if g := growth(r.Scale); g != "" {
		w("| linear growth | %s | |\n", g)
	}
	var gwPeak int64
	for _, m := range r.Memory {
		if m.Process == "gateway" || m.Process == TargetGateway {
			gwPeak = max(gwPeak, m.Mem.HWM)
		}
	}
	if gwPeak > 0 {
		w("| gateway RSS ≤ 40 MB under load | peak %s | %s |\n", mbs(gwPeak), yesNo(gwPeak <= 40<<20))
	}
}

// growth describes the time per instance across the scale sizes.
func growth(rows []*ScaleRow) string {
	var parts []string
	for _, row := range rows {
		if len(row.Durations) == 0 || row.Instances == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s per instance at %d", ms(pct(row.Durations, 50)/time.Duration(row.Instances)), row.Instances))
	}
	return strings.Join(parts, ", ")
}

// Markers delimit the generated part of BENCHMARKS.md; the rest of the
// file (the discussion) is kept as written.
const (
	beginMarker = "<!-- make bench: generated results begin -->"
	endMarker   = "<!-- make bench: generated results end -->"
)

// writeResults puts text between the markers of the file at path,
// creating the file or the markers when missing.
func writeResults(path, text string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(spliceResults(string(old), text)), 0o644)
}

func spliceResults(doc, text string) string {
	block := beginMarker + "\n" + text + "\n" + endMarker
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(endMarker):]
	}
	if doc == "" {
		doc = "# Benchmarks\n\n"
	}
	return strings.TrimRight(doc, "\n") + "\n\n## Results\n\n" + block + "\n"
}
