package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	xtrace "golang.org/x/exp/trace"
)

// Where does the gateway's latency tail come from? The usual suspects in a
// Go proxy are garbage-collection pauses and assists, scheduler latency
// when more goroutines are runnable than there are cores, lock convoys and
// buffer growth. Rather than argue from one profile, the tail mode runs
// the same load against nginx and against the gateway with one suspect
// removed at a time (GOGC=off: no collection at all; GOMAXPROCS=1: no
// cross-core hand-offs, one core as nginx's one worker), interleaved, and
// prints for each the latency distribution of every request (h2load's
// per-request log, not a sample), its CPU per request, and for the
// gateway the collections that fell into the run (GODEBUG=gctrace=1).
// What changes the tail when removed is where it comes from; the
// in-process runtime/trace of -mode pprof then shows the scheduler side
// (traceSummary).

// tailVariant is one proxy configuration of the tail mode.
type tailVariant struct {
	name, target string
	env          []string
}

var tailVariants = []tailVariant{
	{"nginx", "nginx", nil},
	{"gateway", "gateway", nil},
	{"gateway GOGC=off", "gateway", []string{"GOGC=off"}},
	{"gateway GOGC=400", "gateway", []string{"GOGC=400"}},
	{"gateway GOMAXPROCS=1", "gateway", []string{"GOMAXPROCS=1"}},
}

// latencyBuckets are the histogram's upper bounds.
var latencyBuckets = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	4 * time.Millisecond, 8 * time.Millisecond, 16 * time.Millisecond, 32 * time.Millisecond,
}

type tailRun struct {
	lat       []time.Duration
	took, cpu time.Duration
	gcs       int
	stw, mark time.Duration // summed stop-the-world and concurrent mark wall time
}

func (o PerRequestOptions) tail(ctx context.Context, env, backends []string, tw io.Writer) error {
	type running struct {
		tailVariant
		p    *proc
		addr string
		log  string
		runs []tailRun
	}
	var rs []*running
	for _, v := range tailVariants {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		o2 := o
		o2.Env = slices.Concat(o.Env, v.env, []string{"GODEBUG=gctrace=1"})
		dir := strings.NewReplacer(" ", "-", "=", "-").Replace(v.name)
		p, err := o2.startTarget(ctx, v.target, addr, env, backends, nil, dir)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		defer p.stop(syscall.SIGTERM, 10*time.Second)
		if _, err := o.load(ctx, addr, o.Warmup); err != nil {
			return fmt.Errorf("%s: warm-up: %w", v.name, err)
		}
		rs = append(rs, &running{tailVariant: v, p: p, addr: addr, log: filepath.Join(o.Dir, dir, v.target+".log")})
	}
	for round := range max(o.Runs, 1) {
		order := slices.Clone(rs)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, r := range order {
			// h2load appends to its log: one file per run.
			logPath := filepath.Join(filepath.Dir(r.log), fmt.Sprintf("requests-%d.log", len(r.runs)))
			_ = os.Remove(logPath)
			gcFrom := fileSize(r.log)
			cpu := treeCPU(r.p.pid())
			took, err := o.loadLogged(ctx, r.addr, o.Requests, logPath)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			run := tailRun{took: took, cpu: treeCPU(r.p.pid()) - cpu}
			if run.lat, err = readH2loadLog(logPath); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			if r.target == "gateway" {
				run.gcs, run.stw, run.mark = gcTraceSince(r.log, gcFrom)
			}
			r.runs = append(r.runs, run)
		}
	}
	fmt.Fprintf(tw, "variant\trequests/s\tCPU/request\tp50\tp90\tp99\tp99.9\tmax\tGCs/s\tSTW/GC\tmark/GC\t\n")
	for _, r := range rs {
		var all []time.Duration
		var took, cpu, stw, mark time.Duration
		gcs := 0
		for _, run := range r.runs {
			all = append(all, run.lat...)
			took, cpu, stw, mark, gcs = took+run.took, cpu+run.cpu, stw+run.stw, mark+run.mark, gcs+run.gcs
		}
		slices.Sort(all)
		gc := "—\t—\t—"
		if r.target == "gateway" {
			gc = fmt.Sprintf("%.1f\t%s\t%s", float64(gcs)/took.Seconds(), us(stw/time.Duration(max(gcs, 1))), us(mark/time.Duration(max(gcs, 1))))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, float64(len(all))/took.Seconds(),
			us(cpu/time.Duration(max(len(all), 1))), us(pct(all, 50)), us(pct(all, 90)), us(pct(all, 99)), us(pct(all, 99.9)), us(all[len(all)-1]), gc)
	}
	fmt.Fprintf(tw, "\nlatency histogram (share of requests)\t")
	for i, b := range latencyBuckets {
		lo := "0"
		if i > 0 {
			lo = us(latencyBuckets[i-1])
		}
		fmt.Fprintf(tw, "%s–%s\t", lo, us(b))
	}
	fmt.Fprintf(tw, "> %s\t\n", us(latencyBuckets[len(latencyBuckets)-1]))
	for _, r := range rs {
		counts := make([]int, len(latencyBuckets)+1)
		n := 0
		for _, run := range r.runs {
			for _, d := range run.lat {
				i, _ := slices.BinarySearch(latencyBuckets, d)
				counts[i]++
				n++
			}
		}
		fmt.Fprintf(tw, "%s\t", r.name)
		for _, c := range counts {
			fmt.Fprintf(tw, "%.2f%%\t", 100*float64(c)/float64(max(n, 1)))
		}
		fmt.Fprintln(tw)
	}
	return nil
}

// loadLogged is load with h2load's per-request log written to logPath.
func (o PerRequestOptions) loadLogged(ctx context.Context, addr string, n int, logPath string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "h2load", o.h2loadArgs(addr, n, "--log-file", logPath)...).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("h2load: %w: %s", err, out)
	}
	if m := h2loadOK.FindSubmatch(out); m == nil || string(m[1]) != strconv.Itoa(n) {
		return took, fmt.Errorf("h2load: not every request was answered 2xx:\n%s", out)
	}
	return took, nil
}

// readH2loadLog reads each request's time from h2load's --log-file (start,
// status, microseconds); a failed request is an error.
func readH2loadLog(path string) ([]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ds []time.Duration
	err = eachH2loadRequest(b, func(status int, d time.Duration) error {
		if status < 200 || status > 399 {
			return fmt.Errorf("h2load log: a request answered %d", status)
		}
		ds = append(ds, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("h2load log %s has no request", path)
	}
	return ds, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// gcTrace matches a GODEBUG=gctrace=1 line: "gc 12 @3.1s 2%: a+b+c ms
// clock, ...", a and c being the two stop-the-world phases and b the
// concurrent mark.
var gcTrace = regexp.MustCompile(`(?m)^gc \d+ @[\d.]+s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock`)

// gcTraceSince sums the collections the log at path reports after offset.
func gcTraceSince(path string, offset int64) (n int, stw, mark time.Duration) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, 0, 0
	}
	b, _ := io.ReadAll(f)
	msd := func(s string) time.Duration {
		v, _ := strconv.ParseFloat(s, 64)
		return time.Duration(v * float64(time.Millisecond))
	}
	for _, m := range gcTrace.FindAllStringSubmatch(string(b), -1) {
		n++
		stw += msd(m[1]) + msd(m[3])
		mark += msd(m[2])
	}
	return n, stw, mark
}

// traceSummary reads a runtime/trace and sums up the scheduler's side of
// the tail: how long goroutines waited runnable for a core (scheduler
// latency), and how long they waited blocked, by reason (a lock convoy
// shows as sync waits, a slow backend as network waits).
func traceSummary(r io.Reader, tw io.Writer) error {
	tr, err := xtrace.NewReader(r)
	if err != nil {
		return err
	}
	runnable := map[xtrace.GoID]xtrace.Time{}
	type wait struct {
		since  xtrace.Time
		reason string
	}
	waiting := map[xtrace.GoID]wait{}
	var sched []time.Duration
	blocked := map[string]time.Duration{}
	blockedN := map[string]int{}
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if ev.Kind() != xtrace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != xtrace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		if from == xtrace.GoRunnable && to == xtrace.GoRunning {
			if t0, ok := runnable[id]; ok {
				sched = append(sched, ev.Time().Sub(t0))
			}
		}
		if from == xtrace.GoWaiting {
			if w, ok := waiting[id]; ok {
				blocked[w.reason] += ev.Time().Sub(w.since)
				blockedN[w.reason]++
			}
		}
		delete(runnable, id)
		delete(waiting, id)
		switch to {
		case xtrace.GoRunnable:
			runnable[id] = ev.Time()
		case xtrace.GoWaiting:
			waiting[id] = wait{ev.Time(), st.Reason}
		}
	}
	if len(sched) == 0 {
		return errors.New("the trace has no goroutine scheduled")
	}
	slices.Sort(sched)
	over := func(d time.Duration) float64 {
		i, _ := slices.BinarySearch(sched, d)
		return 100 * float64(len(sched)-i) / float64(len(sched))
	}
	fmt.Fprintf(tw, "gateway\truntime/trace: scheduler latency (runnable → running) over %d wake-ups\tp50 %s, p90 %s, p99 %s, p99.9 %s, max %s; %.2f%% over 1 ms, %.3f%% over 4 ms\t\n",
		len(sched), us(pct(sched, 50)), us(pct(sched, 90)), us(pct(sched, 99)), us(pct(sched, 99.9)), us(sched[len(sched)-1]), over(time.Millisecond), over(4*time.Millisecond))
	reasons := make([]string, 0, len(blocked))
	for r := range blocked {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(a, b string) int { return int(blocked[b] - blocked[a]) })
	var top []string
	for _, r := range reasons[:min(len(reasons), 6)] {
		name := r
		if name == "" {
			name = "(no reason)"
		}
		top = append(top, fmt.Sprintf("%s %s in %d waits", name, blocked[r].Round(time.Millisecond), blockedN[r]))
	}
	fmt.Fprintf(tw, "gateway\truntime/trace: blocked time by reason\t%s\t\n", strings.Join(top, "; "))
	return nil
}
