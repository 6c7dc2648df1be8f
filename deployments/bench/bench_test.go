package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
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
		want := WrkResult{Requests: 111530, RPS: 22306.12, P50: 850 * time.Microsecond, P99: 12340 * time.Microsecond, Errors: 10}
		if r != want {
			t.Errorf("got %+v, want %+v", r, want)
		}
	})
	t.Run("a report without latencies is an error", func(t *testing.T) {
		if _, err := parseWrk("Requests/sec: 10\n"); err == nil {
			t.Error("want an error")
		}
	})
	for _, tc := range []struct {
		desc string
		in   string
		want time.Duration
	}{
		{desc: "microseconds", in: "850.00us", want: 850 * time.Microsecond},
		{desc: "milliseconds", in: "1.40ms", want: 1400 * time.Microsecond},
		{desc: "seconds", in: "1.20s", want: 1200 * time.Millisecond},
		{desc: "minutes", in: "2.00m", want: 2 * time.Minute},
	} {
		t.Run("latency in "+tc.desc, func(t *testing.T) {
			got, err := parseWrkDuration(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("parseWrkDuration(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkTableBuild10000/new-2         	     180	   6512345 ns/op	 1363456 B/op	   22551 allocs/op
BenchmarkTableBuild10000/apply-2       	     430	   2771234 ns/op	  838860 B/op	    7552 allocs/op
PASS
`
	got := parseGoBench(out)
	if len(got) != 2 || got[0].Name != "BenchmarkTableBuild10000/new" || got[0].NsPerOp != 6512345 || got[1].AllocsPerOp != 7552 {
		t.Errorf("got %+v", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 30; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		desc string
		p    float64
		want time.Duration
	}{
		{desc: "median of 30 is the 15th", p: 50, want: 15 * time.Millisecond},
		{desc: "p99 of 30 is the largest", p: 99, want: 30 * time.Millisecond},
		{desc: "p100 is the largest", p: 100, want: 30 * time.Millisecond},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := pct(ds, tc.p); got != tc.want {
				t.Errorf("pct(%v) = %s, want %s", tc.p, got, tc.want)
			}
		})
	}
	if pct(nil, 50) != 0 {
		t.Error("the percentile of nothing is 0")
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
	rec := layout.Switch{StartedAt: ms(10), FinishedAt: &fin, Steps: []layout.Step{
		{Action: string(registry.StatusUp), State: "done", At: ms(20)},
		{Action: string(registry.StatusUp), State: "done", At: ms(30)},
		{Action: string(registry.StatusUp), State: "skipped", At: ms(35)},
		{Action: string(registry.StatusOutOfService), State: "done", At: ms(60)},
		{Action: string(registry.StatusOutOfService), State: "done", At: ms(90)},
	}}
	got := phasesOf(rec, at)
	d := time.Millisecond
	want := Phases{React: 10 * d, Prepare: 10 * d, Up: 10 * d, UpSteps: 2, Gateways: 30 * d, Out: 30 * d, OutSteps: 2, Finish: 10 * d, Total: 100 * d}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
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
	ld := startLoad(context.Background(), LoadConfig{Addr: strings.TrimPrefix(srv.URL, "http://"), Conns: 4, MaxRequests: 400})
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < 400 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
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

func TestProcfsReadsThisProcess(t *testing.T) {
	m, err := memOf(os.Getpid())
	if err != nil || m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("memOf = %+v, %v", m, err)
	}
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Error(err)
	}
	if ppid, err := parentOf(os.Getpid()); err != nil || ppid != os.Getppid() {
		t.Errorf("parentOf = %d, %v; want %d", ppid, err, os.Getppid())
	}
}

func TestNginxConfigsPassNginxCheck(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		t.Skip("nginx is not installed; deployments/install/bench-deps.sh installs it")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		desc, server string
	}{
		{desc: "keep-alive upstream", server: nginxKeepaliveServer("127.0.0.1:1", []string{"127.0.0.1:2", "127.0.0.1:3"})},
		{desc: "the seed's include", server: seedServer("127.0.0.1:1", dir+"/service-url.inc")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := os.WriteFile(dir+"/service-url.inc", []byte(seedInclude("127.0.0.1:2")), 0o644); err != nil {
				t.Fatal(err)
			}
			n := &nginx{dir: dir, conf: dir + "/nginx.conf", errLog: dir + "/error.log"}
			if err := os.WriteFile(n.conf, []byte(nginxConf(dir, tc.server)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := execOutput("nginx", n.args("-t")...); err != nil {
				t.Fatalf("nginx -t: %v: %s", err, out)
			}
		})
	}
}
