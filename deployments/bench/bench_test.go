package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

const wrkReport = `Running 5s test @ http://127.0.0.1:41234/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50ms    2.10ms  45.00ms   93.12%
    Req/Sec    11.20k     1.10k   13.50k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    2.80ms
     99%   12.34ms
  111530 requests in 5.00s, 20.10MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  22306.12
Transfer/sec:      4.02MB
`

func TestParseWrk(t *testing.T) {
	t.Run("reads throughput, percentiles and every kind of error", func(t *testing.T) {
		r, err := parseWrk(wrkReport)
		if err != nil {
			t.Fatal(err)
		}
		want := LoadResult{RPS: 22306.12, P50: 850 * time.Microsecond, P99: 12340 * time.Microsecond, Errors: 10}
		if r != want {
			t.Errorf("got %+v, want %+v", r, want)
		}
	})
	t.Run("a report without latencies is an error", func(t *testing.T) {
		if _, err := parseWrk("Requests/sec: 10\n"); err == nil {
			t.Error("want an error")
		}
	})
	t.Run("latencies in seconds and minutes", func(t *testing.T) {
		r, err := parseWrk(strings.NewReplacer("850.00us", "1.20s", "12.34ms", "2.00m").Replace(wrkReport))
		if err != nil || r.P50 != 1200*time.Millisecond || r.P99 != 2*time.Minute {
			t.Errorf("got %+v, %v", r, err)
		}
	})
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkTableBuild10000/new-2         	     180	   6512345 ns/op	 1363456 B/op	   22551 allocs/op
BenchmarkTableBuild10000/apply-2       	     430	   2771234 ns/op	  838860 B/op	    7552 allocs/op
PASS
`
	got := parseGoBench(out)
	if len(got) != 2 || got[0].Name != "BenchmarkTableBuild10000/new" || got[0].PerOp != 6512345 || got[1].AllocsPerOp != 7552 {
		t.Errorf("got %+v", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration // 30 down to 1: pct sorts a copy
	for i := 30; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	// Nearest rank: the median of 30 is the 15th, p99 and p100 the largest.
	for p, want := range map[float64]time.Duration{1: 1, 50: 15, 99: 30, 100: 30} {
		if got := pct(ds, p); got != want {
			t.Errorf("pct(%v) = %d, want %d", p, got, want)
		}
	}
	if pct(nil, 50) != 0 || ds[0] != 30 {
		t.Error("the percentile of nothing is 0, and ds stays as it was")
	}
}

func TestSpliceResults(t *testing.T) {
	t.Run("the text between the markers is replaced, the discussion kept", func(t *testing.T) {
		doc := "# Benchmarks\n\nintro\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Discussion\nkept\n"
		got := spliceResults(doc, "new")
		if !strings.Contains(got, beginMarker+"\nnew\n"+endMarker) || strings.Contains(got, "old") || !strings.HasSuffix(got, "## Discussion\nkept\n") {
			t.Errorf("got:\n%s", got)
		}
	})
	t.Run("a file without markers gets them appended", func(t *testing.T) {
		got := spliceResults("# Benchmarks\n", "new")
		if !strings.HasPrefix(got, "# Benchmarks\n") || !strings.Contains(got, beginMarker+"\nnew\n"+endMarker) {
			t.Errorf("got:\n%s", got)
		}
	})
}

func TestPhases(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
	fin := ms(100)
	rec := zkstate.Switch{StartedAt: ms(10), FinishedAt: &fin, Steps: []zkstate.Step{
		{Action: registry.StatusUp, State: zkstate.StepDone, At: ms(20)},
		{Action: registry.StatusUp, State: zkstate.StepDone, At: ms(30)},
		{Action: registry.StatusUp, State: zkstate.StepSkipped, At: ms(35)},
		{Action: registry.StatusOutOfService, State: zkstate.StepDone, At: ms(60)},
		{Action: registry.StatusOutOfService, State: zkstate.StepDone, At: ms(90)},
	}}
	got := phasesOf(rec, at)
	d := time.Millisecond
	want := Phases{React: 10 * d, Prepare: 10 * d, Up: 10 * d, UpSteps: 2, Gateways: 30 * d, Out: 30 * d, OutSteps: 2, Finish: 10 * d, Total: 100 * d}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A record that kept only its newest steps tells the totals alone.
	rec.StepsTotal = 300
	if got, want := phasesOf(rec, at), (Phases{React: 10 * d, Total: 100 * d, Partial: true}); got != want {
		t.Errorf("partial record: got %+v, want %+v", got, want)
	}
}

func TestLoadCountsEveryFailure(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch n.Add(1) % 10 {
		case 3:
			w.WriteHeader(http.StatusBadGateway)
		case 7:
			// A kept-alive connection closed under the client: net/http's
			// client would resend the request and hide this.
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
				return
			}
		}
		w.Header().Set("X-Switchyard-Color", "blue")
	}))
	defer srv.Close()
	ld := startLoad(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 4, 0)
	testutil.Eventually(t, 10*time.Second, "400 requests served", func() bool { return n.Load() >= 400 })
	rs := ld.Stop()
	fs := local.Failures(rs)
	if len(rs) < 390 {
		t.Fatalf("only %d results of 400 requests", len(rs))
	}
	// One in ten answers 502 and one in ten drops the connection.
	if len(fs) < len(rs)/5-8 || len(fs) > len(rs)/5+8 {
		t.Errorf("%d of %d requests failed, want about a fifth: %s", len(fs), len(rs), errorKinds(fs))
	}
	kinds := errorKinds(fs)
	if !strings.Contains(kinds, "HTTP 502") || !strings.Contains(kinds, "EOF") {
		t.Errorf("failure kinds %q lack the 502s or the dropped connections", kinds)
	}
	for _, r := range rs {
		if r.Err == "" && r.Color != "blue" {
			t.Fatalf("a success without its color: %+v", r)
		}
	}
}

func TestProcFindsAndMeasuresChildren(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if pid, err := pidOf(&local.Proc{Args: []string{"sleep", "60"}}); err != nil || pid != cmd.Process.Pid {
		t.Errorf("pidOf = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	if pid, err := childRunning("leep 6"); err != nil || pid != cmd.Process.Pid {
		t.Errorf("childRunning = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	if _, err := pidOf(&local.Proc{Args: []string{"sleep", "61"}}); err == nil {
		t.Error("pidOf found a process that does not run")
	}
	child, err := memOf(cmd.Process.Pid)
	if err != nil || child.RSS == 0 || child.HWM < child.RSS {
		t.Fatalf("memOf(child) = %+v, %v", child, err)
	}
	if self, err := memOf(os.Getpid()); err != nil || self.RSS <= child.RSS || self.HWM < self.RSS {
		t.Errorf("memOf(self) = %+v, %v; want more than the child's %d", self, err, child.RSS)
	}
	before, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "this process's CPU time to grow as it spins", func() bool {
		for start := time.Now(); time.Since(start) < 10*time.Millisecond; {
			_ = fmt.Sprint(start) // burn CPU
		}
		now, err := cpuTime(os.Getpid())
		return err == nil && now-before >= 50*time.Millisecond
	})
}

// sampleReport is a full run's report with every section but TLS.
func sampleReport() *Report {
	at := time.Date(2026, 11, 22, 3, 42, 0, 0, time.UTC)
	tg := func(name string, rps ...float64) *Target {
		x := &Target{Name: name, Config: name + " config"}
		for _, v := range rps {
			x.Runs = append(x.Runs, LoadResult{RPS: v, P50: msf(v / 10000), P99: msf(v / 1000)})
		}
		return x
	}
	d := msf
	return &Report{Date: at, Took: 232 * time.Second, Conns: 32, WrkTime: wrkTime, Pause: loadPause,
		Machine:    Machine{CPUs: 2, CPU: "Xeon", Kernel: "6.1", Go: "go1.26.8", Nginx: "nginx/1.22.1", Caddy: "v2.11.9", Wrk: "4.1", H2load: "nghttp2/1.52.0", ZooKeeper: "3.8"},
		TableBuild: []GoBench{{Name: "BenchmarkTableBuild10000/new", PerOp: d(3.03), BytesPerOp: 1363148, AllocsPerOp: 22551}},
		Throughput: &Throughput{Order: []string{"a → b", "b → a"}, Targets: []*Target{tg(TargetDirect, 55201, 53899), tg(TargetGateway, 14391, 12716), tg(TargetNginx, 25000)}},
		Switches: []*SwitchRow{
			{Method: "switchyard, built-in registry", Name: "built-in", Switches: 2, Requests: 1000, PerSwitch: []int{0, 0},
				Propagation: []time.Duration{d(20), d(40)}, Durations: []time.Duration{d(10), d(30)}, Phases: []Phases{{React: d(31), UpSteps: 2, OutSteps: 2, Propagation: d(20)}, {React: d(12), Gateways: d(5), UpSteps: 2, OutSteps: 2, Propagation: d(40)}}},
			{Method: "seed", Name: "seed", Seed: true, Switches: 2, Requests: 900, Failed: 10, FailKinds: "10× HTTP 502", PerSwitch: []int{4, 6}},
		},
		Scale: []*ScaleRow{
			{Instances: 10, Blue: 5, Green: 5, Durations: []time.Duration{d(14.7)}, Phases: []Phases{{Total: d(23.7), React: d(6.69), Up: d(6.64), UpSteps: 5}},
				Mem: map[string]Mem{"controller (leader)": {RSS: 17 << 20}}, Costs: StepCosts{RecordBytes: 1741, ZKSetSmall: d(1.15)}},
			{Instances: 1000, Blue: 500, Green: 500, Durations: []time.Duration{d(2887)}, Phases: []Phases{{Partial: true}},
				CPU: map[string]time.Duration{"gateway": d(1450), "registry": d(890)}, Wall: d(2900)},
		},
		Leases: &LeaseResult{Leases: 10000, Interval: time.Second, Run: d(15004), Heartbeats: 150000, CPU: d(9893), Mem: Mem{RSS: 25 << 20, HWM: 26 << 20}, Live: 10000, List: d(61.6)},
		Memory: []MemRow{{Process: "gateway", When: "under load", Mem: Mem{RSS: 21 << 20, HWM: 22 << 20}}},
		Notes:  []string{"consul: no agent"},
	}
}

// msf is ms milliseconds.
func msf(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// TestTallyGivesEachFlipsPhasesItsPropagation: the phases of each
// finished flip carry that flip's propagation, in step with Propagation;
// an unfinished flip has neither.
func TestTallyGivesEachFlipsPhasesItsPropagation(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	res := func(at time.Duration, c zkstate.Color) local.Result {
		return local.Result{Start: t0.Add(at), End: t0.Add(at + ms(1)), Color: c}
	}
	rs := []local.Result{
		res(ms(5), zkstate.Blue), res(ms(30), zkstate.Green), // flip 1: 30 ms
		res(time.Second+ms(20), zkstate.Blue),                                             // flip 2 does not finish
		res(2*time.Second+ms(10), zkstate.Blue), res(2*time.Second+ms(50), zkstate.Green), // flip 3: 50 ms
	}
	w := func(at time.Duration, c zkstate.Color, ok bool, react int) window {
		return window{from: t0.Add(at), at: t0.Add(at), color: c, ok: ok, took: ms(10), phases: &Phases{React: ms(react)}}
	}
	var r SwitchRow
	r.tally(rs, []window{w(0, zkstate.Green, true, 7), w(time.Second, zkstate.Blue, false, 8), w(2*time.Second, zkstate.Green, true, 9)})
	want := []Phases{{React: ms(7), Propagation: ms(30)}, {React: ms(9), Propagation: ms(50)}}
	if r.Unfinished != 1 || fmt.Sprint(r.Propagation) != fmt.Sprint([]time.Duration{ms(30), ms(50)}) || fmt.Sprint(r.Phases) != fmt.Sprint(want) {
		t.Fatalf("tally: unfinished %d, propagation %v, phases %+v; want 1, [30ms 50ms], %+v", r.Unfinished, r.Propagation, r.Phases, want)
	}
	if got := slowest(r.Phases); got != want[1] {
		t.Fatalf("slowest = %+v, want %+v", got, want[1])
	}
}

// TestMemoryGoalNamesTheSectionOfTheLargestRSS: a gateway that a later
// section reuses carries its lifetime peak (VmHWM) into that section's
// row; the goal is judged and named by the RSS each section sampled.
func TestMemoryGoalNamesTheSectionOfTheLargestRSS(t *testing.T) {
	r := sampleReport()
	r.Memory = []MemRow{
		{Process: TargetGateway, When: "under h2load, h2c (largest sample)", Mem: Mem{RSS: 54 << 20, HWM: 54 << 20}},
		{Process: "gateway", When: "under the switch load, after the flips", Mem: Mem{RSS: 44 << 20, HWM: 55 << 20}},
	}
	got, err := r.Markdown()
	if err != nil {
		t.Fatal(err)
	}
	if want := "| gateway RSS ≤ 40 MB under load | 54.0 MB (under h2load, h2c) | **missed** |"; !strings.Contains(got, want) {
		t.Fatalf("the report lacks\n%s\n--- report:\n%s", want, got)
	}
}

// TestMarkdownConsulTail: each Consul size names where the slowest
// flip's time went beside the median's.
func TestMarkdownConsulTail(t *testing.T) {
	d := msf
	r := sampleReport()
	r.ConsulSizes = []*SizeRow{{PerColor: 1, Row: &SwitchRow{Name: "Consul 1/color", Switches: 2, Requests: 800, PerSwitch: []int{0, 0},
		Propagation: []time.Duration{d(60), d(30)}, Durations: []time.Duration{d(50), d(25)},
		Phases: []Phases{{React: d(10), Prepare: d(8), UpSteps: 1, OutSteps: 1, Propagation: d(60)}, {React: d(25), Prepare: d(20), UpSteps: 1, OutSteps: 1, Propagation: d(30)}}}}}
	got, err := r.Markdown()
	if err != nil {
		t.Fatal(err)
	}
	want := "- 1 per color, where a flip's time goes (median over the flips): write→record start 10.0 ms, health checks and first UP 8.00 ms, 1 UP steps 0, last UP→first OUT 0, 1 OUT steps 0, final gateway wait 0; " +
		"in the slowest flip (60.0 ms): write→record start 10.0 ms, health checks and first UP 8.00 ms, 1 UP steps 0, last UP→first OUT 0, 1 OUT steps 0, final gateway wait 0\n"
	if !strings.Contains(got, want) {
		t.Fatalf("the report lacks\n%s\n--- report:\n%s", want, got)
	}
	// A record that kept only its newest steps has no phases to show.
	r.ConsulSizes = []*SizeRow{{PerColor: 200, Row: &SwitchRow{Name: "Consul 200/color", Switches: 1, Requests: 80, PerSwitch: []int{0},
		Propagation: []time.Duration{d(900)}, Durations: []time.Duration{d(850)}, Phases: []Phases{{Partial: true, Total: d(870), Propagation: d(900)}}}}}
	if got, err = r.Markdown(); err != nil {
		t.Fatal(err)
	}
	want = "- 200 per color, where a flip's time goes (median over the flips): the record kept too few steps to tell its phases apart, total 870 ms; " +
		"in the slowest flip (900 ms): the record kept too few steps to tell its phases apart, total 870 ms\n"
	if !strings.Contains(got, want) {
		t.Fatalf("the report lacks\n%s\n--- report:\n%s", want, got)
	}
}

func TestMarkdown(t *testing.T) {
	r := sampleReport()
	got, err := r.Markdown()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Measured 2026-11-22 03:42 UTC by `make bench` in 3m52s.\n\nMachine: 2 CPUs (Xeon), Linux 6.1, go1.26.8; nginx nginx/1.22.1, Caddy v2.11.9, wrk 4.1, h2load nghttp2/1.52.0, ZooKeeper 3.8.",
		"wrk `-t2 -c32 -d5s --latency`, keep-alive, the same two hello backends behind every target; 2 interleaved rounds (a → b; then b → a)",
		"|---|---:|---|---:|---:|---:|---:|---:|\n| backends directly | 54550 | 55201, 53899 | 5.46 ms | 54.5 ms | 0 | 1.00× | — |\n| switchyard gateway | 13554 | 14391, 12716 | 1.36 ms | 13.6 ms | 0 | 0.25× | — |",
		"| nginx | 25000 | 25000 | 2.50 ms | 25.0 ms | 0 | 0.46× | — |\n\n- backends directly: backends directly config\n",
		"- **gateway/nginx**: throughput 0.54×, p50 0.54×, p99 0.54× (below 1 is faster for latency)\n- CPU per 100k requests:",
		"| switchyard, built-in registry | 2 | 1000 | 0 | 0.0 / 0 | 20.0 ms | 40.0 ms | 40.0 ms | 10.0 ms | 30.0 ms | 30.0 ms |\n| seed | 2 | 900 | 10 | 5.0 / 6 |",
		"- built-in, where a flip's time goes (median over the flips): write→record start 12.0 ms, health checks and first UP 0, 2 UP steps 0, last UP→first OUT 0, 2 OUT steps 0, final gateway wait 0; in the slowest flip (40.0 ms): write→record start 12.0 ms, health checks and first UP 0, 2 UP steps 0, last UP→first OUT 5.00 ms, 2 OUT steps 0, final gateway wait 0\n",
		"- seed: propagation is measured from `nginx -s reload`; its switch duration is from starting the new process to the old one's exit. Failures per switch: [4 6]; kinds: 10× HTTP 502\n\n### 4. Scale",
		"| 10 (5 → 5) | 14.7 ms | 23.7 ms | 1.47 ms | 6.69 ms | 0 | 6.64 ms (5) | 0 | 0 (0) | 0 | 17.0 MB | 0.0 MB | 0.0 MB |\n| 1000 (500 → 500) | 2887 ms | 0 | 2.89 ms | 0 | — | — | — | — | — |",
		"|---|---:|---:|---:|---:|---:|---:|---:|\n| 10 | 1.7 KB | 1.15 ms | 0 |",
		"- CPU used during the 1000-instance switch (2.9 s of wall time, 2 cores = 5.8 CPU-seconds available): gateway 1.45 s, registry 0.89 s; 2.3 CPU-seconds in all (40% of the machine).\n- Gateway routing-table rebuild, `BenchmarkTableBuild10000/new` (gateway/bench_test.go): 3.03 ms per table, 22551 allocations, 1.3 MB\n",
		"10000 leases, each heartbeating every 1s through the SDK's registry client: 9997 heartbeats/s for 15s, 0 failed, 10000 leases live at the end. Registry CPU (utime+stime from /proc/<pid>/stat): 9.89s = **66% of one core** (33% of the machine); RSS 25.0 MB (peak 26.0 MB); listing all 10000 takes 61.6 ms.\n\n### 5. Memory",
		"| gateway | under load | 21.0 MB | 22.0 MB |\n\n### 6. TLS and HTTP/2\n\nNot measured in this run.\n\n### 7. Gateway memory per route\n\nNot measured in this run.\n\n### 8. Fleet: many services behind many gateways\n\nNot measured in this run.\n\n### 9. Automatic rollback: what a bad release costs\n\nNot measured in this run.\n\n### Targets",
		"| gateway throughput ≥ 1.0× nginx | 0.54× | **missed** |\n| gateway p99 ≤ nginx p99 | 13.6 ms vs 25.0 ms | **met** |\n| propagation p99 ≤ 50 ms (built-in) | 40.0 ms over 2 flips | **met** |\n| 0 failed requests across every flip (built-in) | 0 of 1000 | **met** |\n| 1,000-instance switch ≤ 1 s | 2887 ms | **missed** |\n| 0 failed requests during the 1,000-instance switch | 0 of 0 | **missed** |\n| linear growth | 1.47 ms per instance at 10, 2.89 ms per instance at 1000 | |\n| gateway RSS ≤ 40 MB under load | 21.0 MB (under load) | **met** |",
		"\n\n#### Sections that did not complete\n\n- consul: no agent",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("the report lacks\n%s\n--- report:\n%s", want, got)
		}
	}
	r.Rollbacks = []*RollbackRow{{Bad: "green answers 500 to 0.5 of its requests", Rate: 998.4, Requests: 3120, BadAnswers: 14, Other: 1, OtherKinds: "1× HTTP 502",
		Decided: 1180 * time.Millisecond, Done: 1203 * time.Millisecond, Reason: "error rate 50.0% > 5.0%"}}
	got, err = r.Markdown()
	if want := "| green answers 500 to 0.5 of its requests | 3120 | 998/s | 14 | 1 (1× HTTP 502) | 1180 ms | 1203 ms | error rate 50.0% > 5.0% |"; err != nil || !strings.Contains(got, want) {
		t.Errorf("the rollback section lacks %q (%v):\n%s", want, err, got)
	}
	empty, err := (&Report{Date: r.Date}).Markdown()
	if err != nil || strings.Count(empty, "Not measured in this run.") != 8 {
		t.Errorf("an empty report = %v:\n%s", err, empty)
	}
}

func TestNginxConfigsPassNginxCheck(t *testing.T) {
	// deployments/install/deps.sh (make deps, make test) installs nginx.
	if _, err := os.Stat(nginxBin()); err != nil {
		t.Fatalf("nginx is missing (%v); deployments/install/nginx.sh installs it", err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		desc, server string
	}{
		{desc: "keep-alive upstream", server: nginxKeepaliveServer([]string{"127.0.0.1:2", "127.0.0.1:3"}, "listen 127.0.0.1:1")},
		{desc: "the seed's include", server: seedServer("127.0.0.1:1", dir+"/service-url.inc")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := os.WriteFile(dir+"/service-url.inc", []byte(seedInclude("127.0.0.1:2")), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir+"/nginx.conf", []byte(nginxConf(dir, tc.server)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(nginxBin(), nginxArgs(dir, "-t")...).CombinedOutput(); err != nil {
				t.Fatalf("nginx -t: %v: %s", err, out)
			}
		})
	}
}
