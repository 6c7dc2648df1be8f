package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/command"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// This file guards a release (zkstate.Release): the pre-switch checks that
// run before any instance of the target goes UP, and the post-switch
// analysis that watches the new color for a window after the flip and
// switches back by itself when it answers worse than the old color did.

// AnalysisAsker is how the controller signs the /active_color write of a
// rollback it decided (zkstate.Request): such a switch runs no checks and
// no analysis of its own, since it returns to the color that served.
const AnalysisAsker = "switchyard analysis"

// checkOutput bounds what a check's answer or output the record keeps.
const checkOutput = 512

// guarded reports whether the switch answering write id is one the
// controller made to roll back, which goes ahead unguarded.
//
// The rollback's request note can only follow its write, since it is
// named by the write's zxid, and the pass may read it first. A rollback
// this leader is writing is known without the note: its write is marked
// before it is sent, with the version it makes.
func (c *Controller) guarded(ctx context.Context, p pass, id int64) bool {
	if w := c.rollback.Load(); w != nil && id == p.zxid && p.version == w.version {
		select {
		case <-w.done:
			if w.zxid == id {
				return false
			}
		case <-ctx.Done():
			return true
		}
	}
	r, err := p.request()
	if id != p.zxid {
		// A switch resumed for an older write than the pass read.
		r.Request, r.ok, err = zkstate.ReadRequest(c.conn, c.paths, id)
	}
	return err != nil || !r.ok || !strings.HasPrefix(r.AskedBy, AnalysisAsker)
}

// rollbackWrite is a rollback's write of /active_color.
type rollbackWrite struct {
	version int32         // the version of /active_color the write makes
	done    chan struct{} // closed once the write answered
	zxid    int64         // the write's, once done; 0 if it failed
}

// runChecks runs the checks in parallel, each within its timeout, and
// reports whether all passed.
func (c *Controller) runChecks(ctx context.Context, target zkstate.Color, id int64, checks []zkstate.Check) ([]zkstate.CheckResult, bool) {
	out := make([]zkstate.CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Go(func() {
			timeout := time.Duration(ch.Timeout)
			if timeout <= 0 {
				timeout = zkstate.DefaultCheckTimeout
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			began := time.Now()
			var err error
			if ch.HTTP != nil {
				err = c.httpCheck(cctx, *ch.HTTP)
			} else {
				err = c.commandCheck(cctx, ch.Command, target, id)
			}
			if cctx.Err() != nil && err != nil {
				err = fmt.Errorf("no answer within %s: %w", timeout, err)
			}
			out[i] = zkstate.CheckResult{Name: ch.Name, OK: err == nil, Took: zkstate.Duration(time.Since(began).Round(time.Millisecond))}
			if err != nil {
				out[i].Detail = err.Error()
			}
		})
	}
	wg.Wait()
	for _, r := range out {
		if !r.OK {
			return out, false
		}
	}
	return out, true
}

// httpCheck makes the check's request; it passes when the status (and
// body) are as asked. Redirects are answers, not followed: a check names
// exactly what it tests.
func (c *Controller) httpCheck(ctx context.Context, h zkstate.HTTPCheck) error {
	method := h.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, h.URL, nil)
	if err != nil {
		return err
	}
	for k, v := range h.Header {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Transport: c.http.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	want := h.Status
	if want == 0 {
		want = http.StatusOK
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s answered %d, want %d: %s", method, h.URL, resp.StatusCode, want, zkstate.Describe(command.Clip(body, checkOutput)))
	}
	if h.Body != "" && !bytes.Contains(body, []byte(h.Body)) {
		return fmt.Errorf("%s %s answered %d without %q: %s", method, h.URL, resp.StatusCode, h.Body, zkstate.Describe(command.Clip(body, checkOutput)))
	}
	return nil
}

// commandCheck runs argv; it passes when it exits 0. Whoever may write
// ZooKeeper could name any command, so the controller runs commands only
// when started with --allow-command-checks, and only with ZooKeeper locked
// to the switchyard identity.
func (c *Controller) commandCheck(ctx context.Context, argv []string, target zkstate.Color, id int64) error {
	switch {
	case !c.cfg.AllowCommandChecks:
		return errors.New("command checks are off on this controller: start it with --allow-command-checks")
	case c.cfg.ZKAuth == "":
		return errors.New("command checks need ZooKeeper locked to the switchyard identity (SWITCHYARD_ZK_AUTH): in open mode anyone could name the command")
	}
	env := append(os.Environ(), "SWITCHYARD_TARGET="+string(target), fmt.Sprintf("SWITCHYARD_SWITCH=%d", id))
	if out, err := command.Run(ctx, argv, env, checkOutput); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, zkstate.Describe(out))
	}
	return nil
}

// failedChecks names the checks that failed, with why.
func failedChecks(rs []zkstate.CheckResult) string {
	var out []string
	for _, r := range rs {
		if !r.OK {
			out = append(out, fmt.Sprintf("%s (%s)", r.Name, r.Detail))
		}
	}
	return strings.Join(out, "; ")
}

// trafficSample is what every gateway reported its colors answered, at
// one moment: cumulative counts, by gateway.
type trafficSample struct {
	at  time.Time
	gws map[string][]registry.ColorTraffic
}

// trafficLog keeps the leader's recent samples, so that a switch finds
// the old color's figures over the analysis window before its flip.
type trafficLog struct {
	mu      sync.Mutex
	samples []trafficSample // oldest first
}

const (
	sampleEvery = 2 * time.Second
	// sampleKeep bounds the log: every sample of the last two minutes,
	// then one per sampleSparse up to the longest window.
	sampleRecent = 2 * time.Minute
	sampleSparse = 30 * time.Second
	sampleKeep   = time.Hour + time.Minute
)

func (l *trafficLog) add(s trafficSample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.samples[:0]
	var last time.Time
	for _, o := range l.samples {
		age := s.at.Sub(o.at)
		if age > sampleKeep || (age > sampleRecent && !last.IsZero() && o.at.Sub(last) < sampleSparse) {
			continue
		}
		kept = append(kept, o)
		last = o.at
	}
	l.samples = append(kept, s)
}

// since returns the oldest sample taken at or after t, or the oldest one
// when none is that old; ok is false with no sample at all.
func (l *trafficLog) since(t time.Time) (trafficSample, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.samples {
		if !s.at.Before(t) {
			return s, true
		}
	}
	if len(l.samples) > 0 {
		return l.samples[len(l.samples)-1], true
	}
	return trafficSample{}, false
}

// sample reads every gateway's report now.
func (c *Controller) sample(ctx context.Context) (trafficSample, error) {
	gws, err := c.cfg.Registry.Gateways(ctx)
	if err != nil {
		return trafficSample{}, err
	}
	return sampleOf(gws, time.Now()), nil
}

// sampleOf is the traffic in reports read at at.
func sampleOf(gws []registry.GatewayReport, at time.Time) trafficSample {
	s := trafficSample{at: at, gws: make(map[string][]registry.ColorTraffic, len(gws))}
	for _, g := range gws {
		s.gws[g.ID] = g.Colors
	}
	return s
}

// recordTraffic samples the gateways while this controller leads.
func (c *Controller) recordTraffic(ctx context.Context) {
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		if s, err := c.sample(ctx); err == nil {
			c.traffic.add(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// figures sums what color answered between two samples over every
// gateway. A gateway missing from the first sample came up since, and one
// whose counts went down restarted: their counts are all new.
func figures(from, to trafficSample, color zkstate.Color) zkstate.Figures {
	f := zkstate.Figures{Color: color, Seconds: to.at.Sub(from.at).Seconds()}
	buckets := make([]uint64, registry.LatencyBuckets+1)
	for gw, cts := range to.gws {
		before := from.gws[gw]
		for _, ct := range cts {
			if ct.Color != string(color) {
				continue
			}
			var base registry.ColorTraffic
			for _, b := range before {
				if b.Service == ct.Service && b.Color == ct.Color {
					base = b
				}
			}
			if base.Requests > ct.Requests || base.Errors > ct.Errors {
				base = registry.ColorTraffic{}
			}
			f.Requests += ct.Requests - base.Requests
			f.Errors += ct.Errors - base.Errors
			for i := range min(len(ct.Latency), len(buckets)) {
				var b uint64
				if i < len(base.Latency) && base.Latency[i] <= ct.Latency[i] {
					b = base.Latency[i]
				}
				buckets[i] += ct.Latency[i] - b
			}
		}
	}
	f.P99 = quantile(buckets, 0.99)
	return f
}

// quantile estimates the q-quantile, in seconds, of answers counted by
// registry.LatencyBounds bucket, interpolating within the bucket; 0 with
// no answer.
func quantile(buckets []uint64, q float64) float64 {
	var n uint64
	for _, b := range buckets {
		n += b
	}
	if n == 0 {
		return 0
	}
	rank := math.Ceil(q * float64(n))
	var cum float64
	for i, b := range buckets {
		if b == 0 {
			continue
		}
		if cum+float64(b) >= rank {
			lo, hi := 0.0, 0.0
			if i > 0 {
				lo = registry.LatencyBounds[i-1]
			}
			if i < len(registry.LatencyBounds) {
				hi = registry.LatencyBounds[i]
			} else {
				hi = lo * math.Sqrt2 // slower than every bound: no upper edge
			}
			return lo + (hi-lo)*(rank-cum)/float64(b)
		}
		cum += float64(b)
	}
	return registry.LatencyBounds[len(registry.LatencyBounds)-1]
}

// minP99 is the p99 below which latency never fails an analysis: doubling
// a sub-millisecond p99 is noise, not a bad release.
const minP99 = 0.010

// minP99Seconds is how much of the new color's traffic a p99 is judged
// on at least. Its first fraction of a second is its slowest (new
// connections, cold caches, a JIT warming up), and a p99 over the first
// hundred requests is their slowest one: judged on that, a healthy but
// slower-starting release is rolled back. Errors need no such wait.
const minP99Seconds = 2.0

// judge says why the new color's figures fail the analysis, or "" when
// they pass so far.
func judge(a zkstate.Analysis, base, cur zkstate.Figures) string {
	if cur.Errors >= a.MinErrors && cur.ErrorRate() > a.MaxErrorRate {
		return fmt.Sprintf("error rate %.1f%% (%d of %d requests) over %.1f%% (old color before the flip: %.1f%%)",
			100*cur.ErrorRate(), cur.Errors, cur.Requests, 100*a.MaxErrorRate, 100*base.ErrorRate())
	}
	if cur.Requests >= a.MinRequests && base.Requests >= a.MinRequests && cur.Seconds >= minP99Seconds &&
		cur.P99 > minP99 && cur.P99 > a.MaxP99Ratio*base.P99 {
		return fmt.Sprintf("p99 %.1f ms over %.1f× the old color's %.1f ms (%d requests)",
			1000*cur.P99, a.MaxP99Ratio, 1000*base.P99, cur.Requests)
	}
	return ""
}

// startAnalysis marks rec, just done, as analyzed for the release's
// window, with the old color's baseline; the caller writes the record and
// then runs analyze.
func (c *Controller) startAnalysis(rec *zkstate.Switch, a zkstate.Analysis, baseline zkstate.Figures) {
	now := time.Now().UTC()
	rec.Verdict = zkstate.VerdictAnalyzing
	rec.Analysis = &zkstate.Analyzed{Window: a.Window, Until: now.Add(time.Duration(a.Window)), Baseline: baseline,
		New: zkstate.Figures{Color: rec.Target}}
}

// How often the analysis reads the gateways' reports. Each bad answer
// the analysis has not judged yet reaches a user, and gateways report
// every 200 ms for 10 s after a routing change (then every second), so
// for those first seconds it reads them as often, then once a second.
const (
	analysisFastTick = 200 * time.Millisecond
	analysisFastFor  = 10 * time.Second
	analysisTick     = time.Second
)

// analyze watches the new color of rec until its window ends, then files
// the verdict: verified, or rolled back when a bound was crossed. It
// stops, filing nothing, when this controller stops leading (the next
// leader resumes it from the record), and files superseded when a newer
// write came first.
func (c *Controller) analyze(ctx context.Context, rec zkstate.Switch, a zkstate.Analysis) {
	log := c.log.WithFields(logrus.Fields{"switch": rec.ID, "target": rec.Target})
	start, err := c.sample(ctx)
	for err != nil {
		if retryErr := retry.Sleep(ctx, time.Second); retryErr != nil {
			return
		}
		start, err = c.sample(ctx)
	}
	log.WithField("until", rec.Analysis.Until.Format(time.RFC3339)).Info("post-switch analysis started")
	tick := time.NewTicker(analysisFastTick)
	defer tick.Stop()
	slowAt := time.Now().Add(analysisFastFor)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if !slowAt.IsZero() && now.After(slowAt) {
				tick.Reset(analysisTick)
				slowAt = time.Time{}
			}
		}
		if c.current.Load() != rec.ID {
			c.fileVerdict(ctx, rec, zkstate.VerdictSuperseded, "")
			return
		}
		cur, err := c.sample(ctx)
		if err != nil {
			continue // the registry is away; the window goes on
		}
		rec.Analysis.New = figures(start, cur, rec.Target)
		if why := judge(a, rec.Analysis.Baseline, rec.Analysis.New); why != "" {
			c.rollBack(ctx, rec, why)
			return
		}
		if !cur.at.Before(rec.Analysis.Until) {
			c.fileVerdict(ctx, rec, zkstate.VerdictVerified, "")
			log.WithFields(logrus.Fields{"requests": rec.Analysis.New.Requests, "errors": rec.Analysis.New.Errors,
				"p99_ms": math.Round(1000 * rec.Analysis.New.P99)}).Info("post-switch analysis passed; switch verified")
			return
		}
	}
}

// fileVerdict writes rec's verdict into the record, if rec is still the
// current switch, and into its history entry.
func (c *Controller) fileVerdict(ctx context.Context, rec zkstate.Switch, v zkstate.Verdict, reason string) {
	rec.Verdict = v
	if reason != "" {
		rec.Analysis.Reason = reason
	}
	c.metrics.verdicts.WithLabelValues(string(v)).Inc()
	c.recMu.Lock()
	if c.current.Load() == rec.ID {
		seq := c.writeRecord(rec)
		c.recMu.Unlock()
		c.rec.Flush(ctx, seq)
	} else {
		c.recMu.Unlock()
	}
	c.updateHistory(rec)
}

// rollBack files rec as rolled back and writes its old color back to
// /active_color, so that ZooKeeper tells the truth; the usual switch
// then runs, make-before-break and never 0 UP. It writes only if
// /active_color is still the write rec answers: a newer one wins.
func (c *Controller) rollBack(ctx context.Context, rec zkstate.Switch, why string) {
	log := c.log.WithFields(logrus.Fields{"switch": rec.ID, "target": rec.Target, "back_to": rec.From, "reason": why})
	_, stat, err := c.conn.Get(c.paths.ActiveColor())
	if err != nil || stat.Mzxid != rec.ID || rec.From == "" {
		log.Warn("post-switch analysis failed, but /active_color changed since (or there is nothing to return to); not rolling back")
		c.fileVerdict(ctx, rec, zkstate.VerdictSuperseded, why)
		return
	}
	c.fileVerdict(ctx, rec, zkstate.VerdictRolledBack, why)
	c.metrics.rollbacks.Inc()
	w := &rollbackWrite{version: stat.Version + 1, done: make(chan struct{})}
	c.rollback.Store(w)
	st, err := c.conn.Set(c.paths.ActiveColor(), []byte(rec.From), stat.Version)
	if err == nil {
		w.zxid = st.Mzxid
	}
	close(w.done)
	if errors.Is(err, zk.ErrBadVersion) {
		log.Warn("post-switch analysis failed, but a newer /active_color write came first; it stands")
		return
	}
	if err != nil {
		log.WithError(err).Error("post-switch analysis failed and the rollback write failed; flip back by hand")
		return
	}
	note := fmt.Sprintf("%s: rolled back switch %d: %s", AnalysisAsker, rec.ID, why)
	if err := zkstate.NoteRequest(c.conn, c.paths, c.cfg.ZKAuth, st.Mzxid, note); err != nil {
		log.WithError(err).Warn("could not note the rollback's reason beside its write")
	}
	log.WithField("rollback", st.Mzxid).Warn("post-switch analysis failed; rolling back")
}

// resumeAnalysis continues the analysis of the record a previous leader
// left analyzing, for what is left of its window.
func (c *Controller) resumeAnalysis(ctx context.Context) {
	rec, ok, err := zkstate.ReadSwitch(c.conn, c.paths)
	if err != nil || !ok || rec.Verdict != zkstate.VerdictAnalyzing || rec.Phase != zkstate.PhaseDone || rec.Analysis == nil {
		return
	}
	rel, err := zkstate.ReadRelease(c.conn, c.paths)
	if err != nil {
		c.log.WithError(err).Warn("release settings unreadable; the analysis in progress stops")
		return
	}
	c.current.Store(rec.ID)
	if time.Now().After(rec.Analysis.Until) {
		c.fileVerdict(ctx, rec, zkstate.VerdictVerified, "")
		return
	}
	go c.analyze(ctx, rec, rel.Analysis.WithDefaults())
}
