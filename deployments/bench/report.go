package bench

import (
	"cmp"
	_ "embed"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Report is everything one run measured; report.md.tmpl renders it.
type Report struct {
	Date                 time.Time
	Took, WrkTime, Pause time.Duration
	Conns                int
	Machine              Machine
	TableBuild           []GoBench
	Throughput           *Throughput
	Switches             []*SwitchRow // the registry backends', then the seed's
	ConsulSizes          []*SizeRow   // propagation with Consul by instances per color
	Scale                []*ScaleRow
	Leases               *LeaseResult
	Routes               []*RouteRow // the gateway's memory at each route count
	Fleet                []*FleetRow // many services behind many gateways, simulated instances
	Rollbacks            []*RollbackRow
	TLS                  *TLS
	Memory               []MemRow
	Notes                []string // sections, or parts of them, that did not complete
	// Only names the sections of a partial run (cmd/bench -only); its
	// results are merged into the ones already written.
	Only []string
}

// Throughput is the wrk table: the targets in their first round's order.
type Throughput struct {
	Order   []string // each round's order of targets
	Targets []*Target
}

// Target is every wrk run against one target.
type Target struct {
	Name, Config string
	Runs         []LoadResult
	url, script  string
	pid          int // whose memory is sampled under load
}

// SwitchRow is one way of switching under the same load: the controller
// with one registry backend, or the seed's nginx reload.
type SwitchRow struct {
	Method, Name               string // in the table and in the notes
	Seed                       bool
	Switches, Requests, Failed int
	FailKinds                  string
	PerSwitch                  []int           // failed requests from each switch to the next
	Propagation, Durations     []time.Duration // the change until every response is the new color; the switch's own time
	Unfinished                 int             // switches that did not finish or never took over
	Phases                     []Phases        // where each switch's time went
}

// ScaleRow is one size of the scale tables.
type ScaleRow struct {
	Instances, Blue, Green int
	Durations              []time.Duration // each switch record's duration
	Phases                 []Phases
	Mem                    map[string]Mem // the leader's, registry's and gateway's after the switches
	Costs                  StepCosts
	CPU                    map[string]time.Duration // each process's CPU time during the first switch, over Wall
	Wall                   time.Duration
	// Requests through the gateway across the switches, and those that
	// failed (FailKinds says how).
	Requests, Failed int
	FailKinds        string
}

// StepCosts are the parts of a switch step, each timed on its own right
// after the switch: the final record's size, ZooKeeper writes of 200 B,
// half and all of it, a read of /active_color, an instance's health check
// and an instruction that changes nothing.
type StepCosts struct {
	RecordBytes                                               int
	ZKSetSmall, ZKSetHalf, ZKSetFull, ZKGet, Health, Instruct time.Duration
}

// LeaseResult is the registry holding many heartbeating leases for Run.
type LeaseResult struct {
	Leases, Live        int
	Interval, Run, List time.Duration // heartbeat interval, window, one full listing
	CPU                 time.Duration // the registry's CPU time in the window
	Heartbeats, Errors  int64
	Mem                 Mem
	// Way is how the instances heartbeat; Others are the same leases
	// heartbeating in the other ways, each on a registry of its own.
	Way    string
	Others []*LeaseResult
	// Streams is how many heartbeat streams the registry held at the end.
	Streams int
}

// leaseGoal is the registry's CPU, in percent of one core, that 10,000
// leases at a 1 s heartbeat may cost.
const leaseGoal = 15.0

// Driven reports whether the bench sent nearly every heartbeat due: on a
// loaded machine its own clients may not keep up, and a registry that
// got fewer heartbeats spent less.
func (l *LeaseResult) Driven() bool {
	return l.Rate() >= 0.95*float64(l.Leases)/l.Interval.Seconds()
}

// ShareAtFull is Share scaled to every heartbeat due, an estimate where
// the bench did not drive them all.
func (l *LeaseResult) ShareAtFull() float64 {
	if l.Heartbeats == 0 {
		return 0
	}
	return l.Share() * float64(l.Leases) / l.Interval.Seconds() / l.Rate()
}

// MemRow is one memory reading.
type MemRow struct {
	Process, When string
	Mem           Mem
}

// addMem keeps the larger reading for the same process and moment.
func (r *Report) addMem(process, when string, m Mem) {
	if m.RSS == 0 {
		return
	}
	for i, old := range r.Memory {
		if old.Process == process && old.When == when {
			r.Memory[i].Mem = Mem{max(old.Mem.RSS, m.RSS), max(old.Mem.HWM, m.HWM)}
			return
		}
	}
	r.Memory = append(r.Memory, MemRow{process, when, m})
}

//go:embed report.md.tmpl
var reportText string

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms": ms, "mb": mb, "us": us, "pct": pct, "median": median, "slowest": slowest, "join": strings.Join,
	"rollbackRPS": func() int { return rollbackRPS }, "rollbackConns": func() int { return rollbackConns },
	"kb": func(n int) float64 { return float64(n) / 1024 },
}).Parse(reportText))

// Markdown renders the report as the tables `make bench` prints and
// commits.
func (r *Report) Markdown() (string, error) {
	var b strings.Builder
	err := reportTmpl.Execute(&b, r)
	return strings.TrimRight(b.String(), "\n"), err
}

// pct is the nearest-rank percentile p (0 to 100) of ds; with 30 values
// p99 is the largest.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[min(max(int(math.Ceil(p/100*float64(len(s)))), 1), len(s))-1]
}

// median is the median of each phase; Partial if any is.
func median(ps []Phases) Phases {
	get := func(f func(Phases) time.Duration) time.Duration {
		var ds []time.Duration
		for _, p := range ps {
			ds = append(ds, f(p))
		}
		return pct(ds, 50)
	}
	return Phases{
		React: get(func(p Phases) time.Duration { return p.React }), Prepare: get(func(p Phases) time.Duration { return p.Prepare }),
		Up: get(func(p Phases) time.Duration { return p.Up }), Gateways: get(func(p Phases) time.Duration { return p.Gateways }),
		Out: get(func(p Phases) time.Duration { return p.Out }), Finish: get(func(p Phases) time.Duration { return p.Finish }),
		Total: get(func(p Phases) time.Duration { return p.Total }), UpSteps: ps[0].UpSteps, OutSteps: ps[0].OutSteps,
		Partial: slices.ContainsFunc(ps, func(p Phases) bool { return p.Partial }),
	}
}

// slowest is the phases of the flip whose propagation was the longest:
// where the tail's time went, beside the median's.
func slowest(ps []Phases) Phases {
	return slices.MaxFunc(ps, func(a, b Phases) int { return cmp.Compare(a.Propagation, b.Propagation) })
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

// us renders a duration in microseconds; none is "—".
func us(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func mb(n uint64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func (t *Target) mean(f func(LoadResult) float64) float64 {
	var s float64
	for _, w := range t.Runs {
		s += f(w)
	}
	return s / float64(max(len(t.Runs), 1))
}

// MeanRPS, P50, P99 and CPUPerRequest average the runs; Errors adds them
// up.
func (t *Target) MeanRPS() float64 { return t.mean(func(w LoadResult) float64 { return w.RPS }) }
func (t *Target) P50() time.Duration {
	return time.Duration(t.mean(func(w LoadResult) float64 { return float64(w.P50) }))
}
func (t *Target) P99() time.Duration {
	return time.Duration(t.mean(func(w LoadResult) float64 { return float64(w.P99) }))
}
func (t *Target) CPUPerRequest() time.Duration {
	return time.Duration(t.mean(func(w LoadResult) float64 { return float64(w.CPUPerRequest) }))
}

// CPUPer100k is the target's CPU seconds per 100,000 requests, "—" when
// its process is not known.
func (t *Target) CPUPer100k() string {
	if d := t.CPUPerRequest(); d > 0 {
		return fmt.Sprintf("%.2f s", (d * 100_000).Seconds())
	}
	return "—"
}

func (t *Target) Errors() (n int64) {
	for _, w := range t.Runs {
		n += w.Errors
	}
	return n
}

// RoundsRPS lists each run's requests per second.
func (t *Target) RoundsRPS() string {
	var s []string
	for _, w := range t.Runs {
		s = append(s, fmt.Sprintf("%.0f", w.RPS))
	}
	return strings.Join(s, ", ")
}

func (t *Throughput) get(name string) *Target {
	for _, tg := range t.Targets {
		if tg.Name == name && len(tg.Runs) > 0 {
			return tg
		}
	}
	return nil
}

// VsDirect is tg's throughput over the backends' own.
func (t *Throughput) VsDirect(tg *Target) string {
	if d := t.get(TargetDirect); d != nil {
		return fmt.Sprintf("%.2f×", tg.MeanRPS()/d.MeanRPS())
	}
	return ""
}

// Versus is the gateway's throughput, p50 and p99 over a proxy's.
type Versus struct {
	Proxy         string
	RPS, P50, P99 float64
	CPU           float64 // CPU per request, gateway over proxy; 0 when unknown
}

// Versus compares the gateway with each proxy.
func (t *Throughput) Versus() []Versus {
	var out []Versus
	gw := t.get(TargetGateway)
	for _, name := range []string{TargetNginx, TargetCaddy} {
		if o := t.get(name); gw != nil && o != nil {
			v := Versus{Proxy: name, RPS: gw.MeanRPS() / o.MeanRPS(), P50: float64(gw.P50()) / float64(o.P50()), P99: float64(gw.P99()) / float64(o.P99())}
			if g, p := gw.CPUPerRequest(), o.CPUPerRequest(); g > 0 && p > 0 {
				v.CPU = float64(g) / float64(p)
			}
			out = append(out, v)
		}
	}
	return out
}

// FailedMean and FailedMax are the failures per switch.
func (s *SwitchRow) FailedMean() float64 { return float64(s.Failed) / float64(max(s.Switches, 1)) }
func (s *SwitchRow) FailedMax() int      { return slices.Max(append([]int{0}, s.PerSwitch...)) }

// Duration is the median switch duration, PerInstance that per instance.
func (s *ScaleRow) Duration() time.Duration    { return pct(s.Durations, 50) }
func (s *ScaleRow) PerInstance() time.Duration { return s.Duration() / time.Duration(s.Instances) }

// CPUNote tells where the CPU went during a switch long enough for the
// samples to tell.
func (s *ScaleRow) CPUNote(cpus int) string {
	if s.Wall < 500*time.Millisecond || len(s.CPU) == 0 {
		return ""
	}
	names := slices.SortedFunc(maps.Keys(s.CPU), func(a, b string) int { return cmp.Compare(s.CPU[b], s.CPU[a]) })
	var total time.Duration
	for i, n := range names {
		total += s.CPU[n]
		names[i] = fmt.Sprintf("%s %.2f s", n, s.CPU[n].Seconds())
	}
	avail := s.Wall.Seconds() * float64(cpus)
	return fmt.Sprintf("CPU used during the %d-instance switch (%.1f s of wall time, %d cores = %.1f CPU-seconds available): %s; %.1f CPU-seconds in all (%.0f%% of the machine).",
		s.Instances, s.Wall.Seconds(), cpus, avail, strings.Join(names, ", "), total.Seconds(), 100*total.Seconds()/avail)
}

// Rate is heartbeats per second; Share the registry's CPU in percent of
// one core, MachineShare of every core.
func (l *LeaseResult) Rate() float64                 { return float64(l.Heartbeats) / l.Run.Seconds() }
func (l *LeaseResult) Share() float64                { return 100 * l.CPU.Seconds() / l.Run.Seconds() }
func (l *LeaseResult) MachineShare(cpus int) float64 { return l.Share() / float64(cpus) }

// Goal is one row of the targets table.
type Goal struct{ Goal, Measured, Verdict string }

func met(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// Goals sets the figures against the targets of the issue.
func (r *Report) Goals() []Goal {
	var gs []Goal
	if t := r.Throughput; t != nil {
		if gw, ng := t.get(TargetGateway), t.get(TargetNginx); gw != nil && ng != nil {
			ratio := gw.MeanRPS() / ng.MeanRPS()
			gs = append(gs, Goal{"gateway throughput ≥ 1.0× nginx", fmt.Sprintf("%.2f×", ratio), met(ratio >= 1)},
				Goal{"gateway p99 ≤ nginx p99", ms(gw.P99()) + " vs " + ms(ng.P99()), met(gw.P99() <= ng.P99())})
			if g, n := gw.CPUPerRequest(), ng.CPUPerRequest(); g > 0 && n > 0 {
				gs = append(gs, Goal{"gateway CPU per request ≤ nginx's (a win by using more cores is no win)", fmt.Sprintf("%s vs %s per 100k requests (%.2f×)", gw.CPUPer100k(), ng.CPUPer100k(), float64(g)/float64(n)), met(g <= n)})
			}
		}
	}
	for _, s := range r.Switches {
		if !s.Seed {
			p99 := pct(s.Propagation, 99)
			gs = append(gs, Goal{"propagation p99 ≤ 50 ms (" + s.Name + ")", fmt.Sprintf("%s over %d flips", ms(p99), len(s.Propagation)),
				met(p99 <= 50*time.Millisecond && s.Unfinished == 0 && len(s.Propagation) > 0)},
				Goal{"0 failed requests across every flip (" + s.Name + ")", fmt.Sprintf("%d of %d", s.Failed, s.Requests), met(s.Failed == 0)})
		}
	}
	gs = append(gs, r.sizeGoals()...)
	var growth []string
	for _, row := range r.Scale {
		if row.Instances == 1000 {
			gs = append(gs, Goal{"1,000-instance switch ≤ 1 s", ms(row.Duration()), met(row.Duration() <= time.Second)},
				Goal{"0 failed requests during the 1,000-instance switch", fmt.Sprintf("%d of %d", row.Failed, row.Requests), met(row.Failed == 0 && row.Requests > 0)})
		}
		growth = append(growth, fmt.Sprintf("%s per instance at %d", ms(row.PerInstance()), row.Instances))
	}
	if len(growth) > 0 {
		gs = append(gs, Goal{"linear growth", strings.Join(growth, ", "), ""})
	}
	for _, row := range r.Routes {
		if row.Routes == 1000 && row.Registry == "built-in" {
			gs = append(gs, Goal{"gateway ≤ 40 MB at 1,000 routes", fmt.Sprintf("%s (peak %s)", mb(row.Mem.RSS), mb(row.Mem.HWM)), met(row.Mem.HWM <= 40<<20)})
		}
	}
	// By the RSS sampled in each section: VmHWM is the process's peak over
	// its life, so a section that reuses a gateway (the switch load runs on
	// the one that served HTTP/2 before) would be named for another's peak.
	var peak MemRow
	for _, m := range r.Memory {
		if (m.Process == "gateway" || m.Process == TargetGateway) && m.Mem.RSS > peak.Mem.RSS {
			peak = m
		}
	}
	if peak.Mem.RSS > 0 {
		gs = append(gs, Goal{"gateway RSS ≤ 40 MB under load", mb(peak.Mem.RSS) + " (" + strings.TrimSuffix(peak.When, " (largest sample)") + ")", met(peak.Mem.RSS <= 40<<20)})
	}
	if l := r.Leases; l != nil {
		for _, w := range append([]*LeaseResult{l}, l.Others...) {
			goal := fmt.Sprintf("registry CPU for %d leases at a %s heartbeat ≤ %.0f%% of one core", w.Leases, w.Interval, leaseGoal)
			if w.Way != "" {
				goal += " (" + w.Way + ")"
			}
			measured := fmt.Sprintf("%.1f%% (%.0f heartbeats/s, %d failed)", w.Share(), w.Rate(), w.Errors)
			if !w.Driven() {
				measured = fmt.Sprintf("%.1f%% at only %.0f heartbeats/s, the bench's clients could not send more: ~%.0f%% at all of them; %d failed", w.Share(), w.Rate(), w.ShareAtFull(), w.Errors)
			}
			gs = append(gs, Goal{goal, measured, met(w.Driven() && w.Share() <= leaseGoal && w.Errors == 0)})
		}
	}
	return gs
}

// Markers delimit the generated part of BENCHMARKS.md; the rest of the
// file (the discussion) is kept as written.
const (
	beginMarker = "<!-- make bench: generated results begin -->"
	endMarker   = "<!-- make bench: generated results end -->"
)

// writeResults puts text between the markers of the file at path, or
// appends them with it.
func writeResults(path, text string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(spliceResults(string(old), text)), 0o644)
}

func spliceResults(doc, text string) string {
	block := beginMarker + "\n" + text + "\n" + endMarker
	if i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker); i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(endMarker):]
	}
	return strings.TrimRight(cmp.Or(doc, "# Benchmarks\n"), "\n") + "\n\n## Results\n\n" + block + "\n"
}
