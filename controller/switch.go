package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// runSwitch moves traffic to target, make-before-break: first the healthy
// target instances are brought UP, a canary of one and then in growing
// batches (batch.go); once the gateways confirmed them, every other
// instance goes OUT_OF_SERVICE in batches, never the last UP one of a
// service; the switch is done once every gateway confirmed. It resumes
// prev when that is the same switch.
func (c *Controller) runSwitch(ctx context.Context, p pass, target zkstate.Color, id int64, prev *zkstate.Switch, members []Member, quarantined []zkstate.Quarantined) error {
	log := c.log.WithFields(logrus.Fields{"target": target, "switch": id})
	log.Info("switch started")
	defer c.http.CloseIdleConnections()
	rec, flushed := c.startRecord(ctx, target, id, prev, quarantined)
	// The gateways' reports as the switch starts give the streams moved
	// so far and the analysis's baseline. They are read beside the checks
	// and the health pre-flight: with Consul a read of the reports takes
	// milliseconds that nothing before the first UP needs to wait for.
	before := c.readGateways(ctx)
	askedAt, asked := p.askedAt(target)

	// The release's guards: its checks before anything moves, and the old
	// color's figures before the flip, the analysis's baseline. A rollback
	// the analysis decided returns to what served, unguarded.
	guard := c.guarded(ctx, p, id)
	rel, err := p.release()
	if err != nil && guard {
		rec.RefusedBy = zkstate.RefusedByChecks
		c.refuse(ctx, rec, fmt.Sprintf("release settings unreadable (%v); fix them with switchyard release set or clear them; %s stays UP", err, target.Other()))
		return nil
	}
	analysis := rel.Analysis.WithDefaults()
	analyzed := guard && !rel.Analysis.Disabled && rec.From != ""
	// The baseline's first sample is taken from the log now: the log thins
	// its older samples while the switch runs.
	var from trafficSample
	var fromOK bool
	if analyzed {
		if !asked {
			askedAt = time.Now()
		}
		from, fromOK = c.traffic.since(askedAt.Add(-time.Duration(analysis.Window)))
	}
	if guard && len(rel.Checks) > 0 && !checksPassed(rec.Checks) {
		results, ok := c.runChecks(ctx, target, id, rel.Checks)
		rec.Checks = results
		if !ok {
			rec.RefusedBy = zkstate.RefusedByChecks
			c.refuse(ctx, rec, fmt.Sprintf("pre-switch check failed: %s; %s stays UP", failedChecks(results), target.Other()))
			return nil
		}
		log.WithField("checks", len(results)).Info("pre-switch checks passed")
		c.writeRecord(rec)
	}

	began := time.Now()
	healthy := c.healthyTargets(ctx, target, members, true)
	log.WithFields(logrus.Fields{"healthy": len(healthy), "took": time.Since(began).Round(time.Microsecond)}).Debug("health pre-flight done")
	if err := c.checkTarget(ctx, target); err != nil {
		return ignorePreempted(err)
	}
	ups, outs := Plan(target, members)
	optimistic := upCount(members, target)
	for _, m := range ups {
		if healthy[m.ID] {
			optimistic[m.Service]++
		}
	}
	if svcs := unservedServices(outs, optimistic); len(svcs) > 0 {
		c.refuse(ctx, rec, fmt.Sprintf("no healthy %s instance of %s (%d %s instance(s) announced and registered, %d node(s) quarantined); %s stays UP",
			target, strings.Join(svcs, ", "), countColor(members, target), target, len(quarantined), target.Other()))
		return nil
	}
	targetUp, indexes := upCount(members, target), map[string]uint64{}
	flushed()
	if err := c.bringUp(ctx, log, &rec, ups, healthy, targetUp, indexes); err != nil {
		return ignorePreempted(err)
	}
	if svcs := unservedServices(outs, targetUp); len(svcs) > 0 {
		c.refuse(ctx, rec, fmt.Sprintf("no %s instance of %s could be brought UP; %s stays UP",
			target, strings.Join(svcs, ", "), target.Other()))
		return nil
	}
	// Gateways apply snapshots in index order, so none could see an OUT
	// before the UPs anyway; waiting here makes the break phase start from
	// a target the gateways route to, as a rollout's "available" does.
	if note := c.waitGateways(ctx, indexes); note != "" {
		rec.Reason = note
	}
	// The reports as they were before anything moved: read long since.
	start := before()
	if err := c.takeOut(ctx, log, &rec, members, outs, targetUp, indexes); err != nil {
		return ignorePreempted(err)
	}
	final := c.waitGateways(ctx, indexes)
	if final != "" {
		rec.Reason = final
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.metrics.observePropagation(askedAt, asked && final == "")
	done := time.Now().UTC()
	rec.Phase, rec.Active, rec.FinishedAt = zkstate.PhaseDone, target, &done
	taken := map[string]bool{}
	for _, m := range outs {
		taken[m.ID] = true
	}
	moved := movedBaseline(start.reports)
	if sm, err := c.streamMoves(ctx, taken, moved); err == nil && (sm.Left > 0 || sm.Moved > 0) {
		rec.Streams = &sm
	}
	// The record ends with what stands quarantined as the switch ends: a
	// node cleaned up while it ran (or seen late by this ZooKeeper server)
	// no longer shows as if it still did.
	names := later(c.listNodes)
	if snap, err := c.cfg.Registry.Instances(ctx, "", 0, 0); err == nil {
		if _, q, err := c.members(snap, names); err == nil {
			rec.Quarantined = q
		}
	}
	if analyzed {
		c.startAnalysis(&rec, analysis, baseline(from, fromOK, start, rec.From))
	}
	c.finishRecord(ctx, rec)
	log.WithField("took", done.Sub(rec.StartedAt).Round(time.Millisecond)).Info("switch done; gateways route to the target")
	go c.followStreams(ctx, rec, taken, moved)
	if analyzed {
		go c.analyze(ctx, rec, analysis)
	}
	return nil
}

// checksPassed reports whether a resumed switch already passed its checks.
func checksPassed(rs []zkstate.CheckResult) bool {
	if len(rs) == 0 {
		return false
	}
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return true
}

// gatewaysRead is the gateways' reports read at a moment.
type gatewaysRead struct {
	reports []registry.GatewayReport
	at      time.Time
	err     error
}

// readGateways reads the gateways' reports in the background; the
// function returned waits for the read.
func (c *Controller) readGateways(ctx context.Context) func() gatewaysRead {
	at := time.Now()
	read := later(func() (gatewaysRead, error) {
		reports, err := c.cfg.Registry.Gateways(ctx)
		return gatewaysRead{reports: reports, at: at, err: err}, nil
	})
	return func() gatewaysRead { r, _ := read(); return r }
}

// baseline is what color answered from the leader's sample from, the
// first of the window before the flip, to the reports read as the switch
// started; empty when the leader has no sample from before the flip, as
// right after it took over.
func baseline(from trafficSample, ok bool, start gatewaysRead, color zkstate.Color) zkstate.Figures {
	if !ok || start.err != nil {
		return zkstate.Figures{Color: color}
	}
	to := sampleOf(start.reports, start.at)
	if !from.at.Before(to.at) {
		return zkstate.Figures{Color: color}
	}
	return figures(from, to, color)
}

// stepResult is one instruction of a batch.
type stepResult struct {
	step zkstate.Step
	idx  uint64
	err  error
}

// bringUp is the make phase: each healthy target instance is checked once
// more and told to go UP, a canary first, then in growing batches. One
// that fails is skipped, not fatal. It counts the UP instances per service
// in targetUp and the registry index of each service's last change in
// indexes.
func (c *Controller) bringUp(ctx context.Context, log logrus.FieldLogger, rec *zkstate.Switch, ups []Member, healthy map[string]bool, targetUp map[string]int, indexes map[string]uint64) error {
	var ready []Member
	for _, m := range ups {
		if !healthy[m.ID] {
			rec.Steps = append(rec.Steps, zkstate.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: registry.StatusUp,
				State: zkstate.StepSkipped, Error: "failed its health check", At: time.Now().UTC()})
			log.WithField("instance", m.ID).Warn("instance failed its health check; it stays OUT_OF_SERVICE")
			continue
		}
		ready = append(ready, m)
	}
	b, canary, n := upBatcher(c.cfg.MaxBatch), true, lastBatch(rec.Steps)
	for len(ready) > 0 {
		if err := c.checkTarget(ctx, rec.Target); err != nil {
			return err
		}
		var batch []Member
		batch, ready = b.take(ready)
		n++
		results := inParallel(batch, func(m Member) stepResult { return c.upOne(ctx, rec.Target, m) })
		upNow, skipped := map[string]uint64{}, 0
		var stop error
		steps := make([]zkstate.Step, 0, len(batch))
		for i, r := range results {
			m := batch[i]
			switch {
			case errors.Is(r.err, errPreempted) || ctx.Err() != nil:
				stop = cmp.Or(stop, r.err, ctx.Err())
				continue // not sent, or its outcome is for the next pass to read
			case r.step.State == zkstate.StepDone:
				targetUp[m.Service]++
				indexes[m.Service] = max(indexes[m.Service], r.idx)
				upNow[m.Service] = max(upNow[m.Service], r.idx)
				log.WithFields(logrus.Fields{"instance": m.ID, "attempts": r.step.Attempts, "batch": n}).Info("instance UP")
			default:
				skipped++
				log.WithError(r.err).WithField("instance", m.ID).Warn("could not bring instance UP; skipping it")
			}
			r.step.Batch = n
			steps = append(steps, r.step)
		}
		rec.Steps = appendByTime(rec.Steps, steps)
		c.writeRecord(*rec)
		if stop != nil {
			return stop
		}
		log.WithFields(logrus.Fields{"batch": n, "size": len(batch), "up": len(batch) - skipped, "skipped": skipped, "left": len(ready)}).Info("batch UP")
		if canary && len(upNow) > 0 {
			// The canary is in the gateways' routes before anything else.
			canary = false
			if note := c.waitGateways(ctx, upNow); note != "" {
				rec.Reason = note
			}
		}
		b.grow(len(upNow) > 0)
	}
	return nil
}

// upOne tells m to go UP. Health may have changed since the pre-flight:
// the instance checks its own right before it goes UP, and one that fails
// it is skipped.
func (c *Controller) upOne(ctx context.Context, target zkstate.Color, m Member) stepResult {
	step := zkstate.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: registry.StatusUp}
	idx, attempts, err := c.instruct(ctx, target, m, registry.StatusUp, c.cfg.HealthTimeout)
	step.Attempts, step.At = attempts, time.Now().UTC()
	if err != nil {
		step.State, step.Error = zkstate.StepSkipped, err.Error()
	} else {
		step.State = zkstate.StepDone
	}
	return stepResult{step: step, idx: idx, err: err}
}

// appendByTime appends a batch's steps in the order they finished, so that
// the record reads as a timeline, as it did one step at a time.
func appendByTime(steps, batch []zkstate.Step) []zkstate.Step {
	slices.SortStableFunc(batch, func(a, b zkstate.Step) int { return a.At.Compare(b.At) })
	return append(steps, batch...)
}

// lastBatch is the number of the newest batch in steps, so that a resumed
// switch numbers on.
func lastBatch(steps []zkstate.Step) int {
	if len(steps) == 0 {
		return 0
	}
	return steps[len(steps)-1].Batch
}

// recountUp reads service's registry view and counts the members of color
// it has UP. When the view cannot be read it answers 0, so that nothing is
// taken out on a count it cannot confirm.
func (c *Controller) recountUp(ctx context.Context, service string, color zkstate.Color, members []Member, had int) int {
	snap, err := c.cfg.Registry.Instances(ctx, service, 0, 0)
	if err != nil {
		c.log.WithError(err).WithFields(logrus.Fields{"service": service, "switch": c.current.Load()}).Warn("could not recount the UP instances before taking one out; keeping every instance UP this step")
		return 0
	}
	up := map[string]bool{}
	for _, in := range snap.Instances {
		up[in.ID] = in.Status == registry.StatusUp
	}
	n := 0
	for _, m := range members {
		if m.Service == service && m.Color == color && up[m.ID] {
			n++
		}
	}
	if n < had {
		c.log.WithFields(logrus.Fields{"service": service, "counted": had, "now": n, "switch": c.current.Load()}).Warn("target instances left UP since they were brought up; recounted")
	}
	return n
}

// takeOut is the break phase, after make: every OUT below has a higher
// registry index than every UP before it, and the gateways confirmed the
// UPs. The old color goes out in batches; each OUT keeps the last-UP
// guard, and an OUT of the old color never lowers the target's count, so
// a batch is as safe as the same OUTs one at a time.
//
// When a service has few target instances UP, their count is read again
// from the registry before each batch: one that failed since it came UP
// (and reported DOWN) must not be counted.
func (c *Controller) takeOut(ctx context.Context, log logrus.FieldLogger, rec *zkstate.Switch, members, outs []Member, targetUp map[string]int, indexes map[string]uint64) error {
	b, n, rest := outBatcher(c.cfg.MaxBatch), lastBatch(rec.Steps), outs
	for len(rest) > 0 {
		if err := c.checkTarget(ctx, rec.Target); err != nil {
			return err
		}
		var next []Member
		next, rest = b.take(rest)
		recounted := map[string]bool{}
		batch := make([]Member, 0, len(next))
		for _, m := range next {
			if targetUp[m.Service] <= 2 && !recounted[m.Service] {
				targetUp[m.Service] = c.recountUp(ctx, m.Service, rec.Target, members, targetUp[m.Service])
				recounted[m.Service] = true
			}
			if targetUp[m.Service] == 0 {
				continue // never take out the last UP instance
			}
			batch = append(batch, m)
		}
		if len(batch) == 0 {
			continue
		}
		n++
		results := inParallel(batch, func(m Member) stepResult { return c.outOne(ctx, rec.Target, m) })
		var stop error
		steps := make([]zkstate.Step, 0, len(batch))
		for i, r := range results {
			m := batch[i]
			switch {
			case errors.Is(r.err, errPreempted) || ctx.Err() != nil:
				stop = cmp.Or(stop, r.err, ctx.Err())
				continue
			case r.err != nil && !errors.Is(r.err, errGone):
				stop = cmp.Or(stop, r.err)
				continue
			case r.step.State == zkstate.StepDone:
				indexes[m.Service] = max(indexes[m.Service], r.idx)
				log.WithFields(logrus.Fields{"instance": m.ID, "attempts": r.step.Attempts, "batch": n}).Info("instance OUT_OF_SERVICE")
			}
			r.step.Batch = n
			steps = append(steps, r.step)
		}
		rec.Steps = appendByTime(rec.Steps, steps)
		c.writeRecord(*rec)
		if stop != nil {
			return stop
		}
		log.WithFields(logrus.Fields{"batch": n, "size": len(batch), "left": len(rest)}).Info("batch OUT_OF_SERVICE")
	}
	return nil
}

// outOne tells m to go OUT_OF_SERVICE, until it does or leaves.
func (c *Controller) outOne(ctx context.Context, target zkstate.Color, m Member) stepResult {
	step := zkstate.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: registry.StatusOutOfService}
	idx, attempts, err := c.instruct(ctx, target, m, registry.StatusOutOfService, 0)
	step.Attempts, step.At = attempts, time.Now().UTC()
	switch {
	case errors.Is(err, errGone):
		step.State, step.Error = zkstate.StepSkipped, "instance left"
	case err == nil:
		step.State = zkstate.StepDone
	}
	return stepResult{step: step, idx: idx, err: err}
}
