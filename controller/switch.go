package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// runSwitch moves traffic to target, make-before-break: first every healthy
// target instance is brought UP, one at a time; then every other instance
// goes OUT_OF_SERVICE, one at a time, never the last UP one of a service;
// the switch is done once every gateway confirmed. It resumes prev when
// that is the same switch.
func (c *Controller) runSwitch(ctx context.Context, target zkstate.Color, id int64, prev *zkstate.Switch, members []Member, quarantined []zkstate.Quarantined) error {
	log := c.log.WithFields(logrus.Fields{"target": target, "switch": id})
	log.Info("switch started")
	rec := c.startRecord(ctx, target, id, prev, quarantined)
	moved := c.movedBaseline(ctx)

	healthy := c.healthyTargets(ctx, target, members, true)
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
	if err := c.bringUp(ctx, log, &rec, ups, healthy, targetUp, indexes); err != nil {
		return ignorePreempted(err)
	}
	if svcs := unservedServices(outs, targetUp); len(svcs) > 0 {
		c.refuse(ctx, rec, fmt.Sprintf("no %s instance of %s could be brought UP; %s stays UP",
			target, strings.Join(svcs, ", "), target.Other()))
		return nil
	}
	if err := c.takeOut(ctx, log, &rec, members, outs, targetUp, indexes); err != nil {
		return ignorePreempted(err)
	}
	if note := c.waitGateways(ctx, indexes); note != "" {
		rec.Reason = note
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	done := time.Now().UTC()
	rec.Phase, rec.Active, rec.FinishedAt = zkstate.PhaseDone, target, &done
	taken := map[string]bool{}
	for _, m := range outs {
		taken[m.ID] = true
	}
	if sm, err := c.streamMoves(ctx, taken, moved); err == nil && (sm.Left > 0 || sm.Moved > 0) {
		rec.Streams = &sm
	}
	c.finishRecord(ctx, rec)
	log.WithField("took", done.Sub(rec.StartedAt).Round(time.Millisecond)).Info("switch done; gateways route to the target")
	go c.followStreams(ctx, rec, taken, moved)
	return nil
}

// bringUp is the make phase: each healthy target instance is checked once
// more and told to go UP. One that fails is skipped, not fatal. It counts
// the UP instances per service in targetUp and the registry index of each
// service's last change in indexes.
func (c *Controller) bringUp(ctx context.Context, log logrus.FieldLogger, rec *zkstate.Switch, ups []Member, healthy map[string]bool, targetUp map[string]int, indexes map[string]uint64) error {
	for _, m := range ups {
		step := zkstate.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: registry.StatusUp}
		// Checked again right before: health may have changed since the pre-flight.
		if !healthy[m.ID] || !c.healthy(ctx, m) {
			step.State, step.Error, step.At = zkstate.StepSkipped, "failed its health check", time.Now().UTC()
			rec.Steps = append(rec.Steps, step)
			log.WithField("instance", m.ID).Warn("instance failed its health check; it stays OUT_OF_SERVICE")
			continue
		}
		idx, attempts, err := c.instruct(ctx, rec.Target, m, registry.StatusUp, c.cfg.HealthTimeout)
		step.Attempts, step.At = attempts, time.Now().UTC()
		switch {
		case errors.Is(err, errPreempted) || ctx.Err() != nil:
			return err
		case err != nil:
			step.State, step.Error = zkstate.StepSkipped, err.Error()
			log.WithError(err).WithField("instance", m.ID).Warn("could not bring instance UP; skipping it")
		default:
			step.State = zkstate.StepDone
			targetUp[m.Service]++
			indexes[m.Service] = max(indexes[m.Service], idx)
			log.WithFields(logrus.Fields{"instance": m.ID, "attempts": attempts}).Info("instance UP")
		}
		rec.Steps = append(rec.Steps, step)
		c.writeRecord(*rec)
	}
	return nil
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
// registry index than every UP before it. Gateways apply whole snapshots
// in index order, so none can see the old color gone before the new one is
// UP, and no wait for them is needed in between.
//
// When a service has few target instances UP, their count is read again
// from the registry before each OUT: one that failed since it came UP
// (and reported DOWN) must not be counted.
func (c *Controller) takeOut(ctx context.Context, log logrus.FieldLogger, rec *zkstate.Switch, members, outs []Member, targetUp map[string]int, indexes map[string]uint64) error {
	for _, m := range outs {
		if targetUp[m.Service] <= 2 {
			targetUp[m.Service] = c.recountUp(ctx, m.Service, rec.Target, members, targetUp[m.Service])
		}
		if targetUp[m.Service] == 0 {
			continue // never take out the last UP instance
		}
		step := zkstate.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: registry.StatusOutOfService}
		idx, attempts, err := c.instruct(ctx, rec.Target, m, registry.StatusOutOfService, 0)
		step.Attempts, step.At = attempts, time.Now().UTC()
		switch {
		case errors.Is(err, errPreempted) || ctx.Err() != nil:
			return err
		case errors.Is(err, errGone):
			step.State, step.Error = zkstate.StepSkipped, "instance left"
		case err != nil:
			return err
		default:
			step.State = zkstate.StepDone
			indexes[m.Service] = max(indexes[m.Service], idx)
			log.WithFields(logrus.Fields{"instance": m.ID, "attempts": attempts}).Info("instance OUT_OF_SERVICE")
		}
		rec.Steps = append(rec.Steps, step)
		c.writeRecord(*rec)
	}
	return nil
}
