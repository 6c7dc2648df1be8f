package controller

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// bucketOf is the LatencyBounds bucket a duration in seconds falls in.
func bucketOf(secs float64) int {
	for i, b := range registry.LatencyBounds {
		if secs <= b {
			return i
		}
	}
	return len(registry.LatencyBounds)
}

func TestQuantile(t *testing.T) {
	b := make([]uint64, registry.LatencyBuckets+1)
	if q := quantile(b, 0.99); q != 0 {
		t.Fatalf("p99 of nothing = %v, want 0", q)
	}
	// 990 fast answers (1 ms) and 10 slow ones (100 ms): the p99 is at the
	// edge of the fast ones, and moves to the slow ones with one more.
	b[bucketOf(0.001)] = 990
	b[bucketOf(0.1)] = 10
	p99 := quantile(b, 0.99)
	if hi := registry.LatencyBounds[bucketOf(0.001)]; p99 > hi || p99 < hi/math.Sqrt2 {
		t.Fatalf("p99 = %v, want within the 1 ms bucket (up to %v)", p99, hi)
	}
	b[bucketOf(0.1)] = 20
	p99 = quantile(b, 0.99)
	if hi := registry.LatencyBounds[bucketOf(0.1)]; p99 > hi || p99 < hi/math.Sqrt2 {
		t.Fatalf("p99 with 2%% slow = %v, want within the 100 ms bucket (up to %v)", p99, hi)
	}
}

func sampleAt(at time.Time, gws map[string][]registry.ColorTraffic) trafficSample {
	return trafficSample{at: at, gws: gws}
}

func ct(color string, req, errs uint64, slow uint64) registry.ColorTraffic {
	lat := make([]uint64, registry.LatencyBuckets+1)
	lat[bucketOf(0.002)] = req - slow
	lat[bucketOf(0.5)] = slow
	return registry.ColorTraffic{Service: "hello", Color: color, Requests: req, Errors: errs, Latency: lat}
}

func TestFigures(t *testing.T) {
	t0 := time.Now()
	from := sampleAt(t0, map[string][]registry.ColorTraffic{
		"gw1": {ct("green", 100, 1, 0), ct("blue", 1000, 0, 0)},
		"gw2": {ct("green", 500, 50, 0)},
	})
	to := sampleAt(t0.Add(10*time.Second), map[string][]registry.ColorTraffic{
		"gw1": {ct("green", 300, 21, 0), ct("blue", 1000, 0, 0)},
		// gw2 restarted: its counts went down, so all of them are new.
		"gw2": {ct("green", 40, 4, 0)},
		// gw3 came up since: all of its counts are new.
		"gw3": {ct("green", 1000, 100, 0)},
	})
	f := figures(from, to, zkstate.Green)
	if f.Requests != 200+40+1000 || f.Errors != 20+4+100 || f.Seconds != 10 {
		t.Fatalf("figures = %+v, want 1240 requests, 124 errors over 10 s", f)
	}
	if b := figures(from, to, zkstate.Blue); b.Requests != 0 || b.P99 != 0 {
		t.Fatalf("blue answered nothing in between, got %+v", b)
	}
}

func TestJudge(t *testing.T) {
	a := zkstate.Analysis{}.WithDefaults()
	base := zkstate.Figures{Requests: 1000, Errors: 1, P99: 0.020}
	for _, tc := range []struct {
		desc string
		cur  zkstate.Figures
		says string // "" for a pass
	}{
		{"healthy", zkstate.Figures{Requests: 1000, Errors: 5, P99: 0.025}, ""},
		{"a high rate on few errors is not enough", zkstate.Figures{Requests: 30, Errors: 19, P99: 0.020}, ""},
		{"5xx over 5% with 20 errors", zkstate.Figures{Requests: 300, Errors: 30, P99: 0.020}, "error rate 10.0% (30 of 300 requests)"},
		{"p99 over twice the old one", zkstate.Figures{Requests: 200, P99: 0.050, Seconds: 2}, "p99 50.0 ms over 2.0× the old color's 20.0 ms"},
		{"a slow p99 over the first second decides nothing yet", zkstate.Figures{Requests: 200, P99: 0.050, Seconds: 0.8}, ""},
		{"a slow p99 on too few requests decides nothing", zkstate.Figures{Requests: 50, P99: 0.500, Seconds: 5}, ""},
		{"a p99 under 10 ms never fails", zkstate.Figures{Requests: 500, P99: 0.008, Seconds: 5}, ""},
	} {
		b := base
		if strings.Contains(tc.desc, "10 ms") {
			b.P99 = 0.001
		}
		got := judge(a, b, tc.cur)
		if (tc.says == "") != (got == "") || !strings.Contains(got, tc.says) {
			t.Errorf("%s: judge = %q, want %q", tc.desc, got, tc.says)
		}
	}
	if got := judge(a, zkstate.Figures{}, zkstate.Figures{Requests: 500, P99: 1, Seconds: 5}); got != "" {
		t.Errorf("without a baseline, latency decides nothing; got %q", got)
	}
}

func TestTrafficLogKeepsRecentSamplesAndThinsOldOnes(t *testing.T) {
	var l trafficLog
	t0 := time.Now()
	for i := range 1000 {
		l.add(trafficSample{at: t0.Add(time.Duration(i) * sampleEvery)})
	}
	last := t0.Add(999 * sampleEvery)
	recent := 0
	for _, s := range l.samples {
		if last.Sub(s.at) <= sampleRecent {
			recent++
		}
	}
	if recent != int(sampleRecent/sampleEvery)+1 {
		t.Fatalf("%d samples in the last %s, want every one (%d)", recent, sampleRecent, int(sampleRecent/sampleEvery)+1)
	}
	if len(l.samples) > recent+int(sampleKeep/sampleSparse)+1 {
		t.Fatalf("%d samples kept, want older ones thinned to one per %s", len(l.samples), sampleSparse)
	}
	s, ok := l.since(last.Add(-time.Minute))
	if !ok || s.at.Before(last.Add(-time.Minute)) || s.at.After(last.Add(-time.Minute+sampleEvery)) {
		t.Fatalf("since(a minute ago) = %v, want the first sample from then", s.at)
	}
}

// A rollback's request note follows its write, so a pass may look for it
// first: a rollback this leader is writing is known by its marker.
func TestAWriteTheLeaderMadeToRollBackGoesUnguarded(t *testing.T) {
	noNote := func() (request, error) { return request{}, nil }
	analysisNote := func() (request, error) {
		return request{Request: zkstate.Request{AskedBy: AnalysisAsker + ": rolled back switch 4"}, ok: true}, nil
	}
	written := func(version int32, zxid int64) *rollbackWrite {
		w := &rollbackWrite{version: version, zxid: zxid, done: make(chan struct{})}
		close(w.done)
		return w
	}
	for _, tc := range []struct {
		desc    string
		marker  *rollbackWrite
		note    func() (request, error)
		guarded bool
	}{
		{desc: "no marker and no note: a write like any other", note: noNote, guarded: true},
		{desc: "the note says the analysis asked", note: analysisNote, guarded: false},
		{desc: "the leader's own rollback, before its note is written", marker: written(3, 5), note: noNote, guarded: false},
		{desc: "another writer won the version the rollback wanted", marker: written(3, 0), note: noNote, guarded: true},
		{desc: "a marker for another version", marker: written(2, 4), note: noNote, guarded: true},
		{desc: "a rollback write still on its way when the switch ends", marker: &rollbackWrite{version: 3, done: make(chan struct{})}, note: noNote, guarded: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := &Controller{}
			if tc.marker != nil {
				c.rollback.Store(tc.marker)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			p := pass{zxid: 5, version: 3, request: tc.note}
			if got := c.guarded(ctx, p, 5); got != tc.guarded {
				t.Fatalf("guarded = %v, want %v", got, tc.guarded)
			}
		})
	}
}
