package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// reconcile makes one pass toward /active_color: it observes, lets Decide
// choose, and acts.
func (c *Controller) reconcile(ctx context.Context) error {
	if err := c.sess.Wait(ctx); err != nil {
		return err
	}
	// The registry is read beside ZooKeeper: with Consul its read is the
	// longer one, and a flip waits for both before it starts. A snapshot
	// that started a moment before the ZooKeeper reads is no older than
	// one that follows a slow ZooKeeper read.
	type listing struct {
		snap registry.Snapshot
		err  error
	}
	listed := make(chan listing, 1)
	go func() {
		snap, err := c.cfg.Registry.Instances(ctx, "", 0, 0)
		listed <- listing{snap, err}
	}()
	raw, stat, err := c.conn.Get(c.paths.ActiveColor())
	if err != nil {
		return fmt.Errorf("read %s: %w", c.paths.ActiveColor(), err)
	}
	obs := Observed{Zxid: stat.Mzxid}
	obs.Asked, _ = zkstate.ParseColor(raw)
	if rec, ok, err := zkstate.ReadSwitch(c.conn, c.paths); err != nil {
		// A corrupt record must not stop the controller; it is rewritten.
		c.log.WithError(err).Warn("switch record unreadable; starting a fresh one")
	} else if ok {
		obs.Record = &rec
	}
	if Decide(obs).Action == RefuseValue {
		rec := c.refuseValue(ctx, raw, stat.Mzxid, obs.Record)
		obs.Record = &rec
	}
	l := <-listed
	snap, regErr := l.snap, l.err
	obs.Ready = regErr == nil && snap.Ready
	d := Decide(obs)
	if d.Action == Wait {
		if regErr != nil && d.Target != "" {
			return fmt.Errorf("list registry: %w", regErr)
		}
		return nil
	}
	members, quarantined, err := c.members(snap)
	if errors.Is(err, errPreserving) {
		return nil
	}
	if err != nil {
		return err
	}
	switch d.Action {
	case Acknowledge:
		c.acknowledge(ctx, d.Target, d.ID)
		c.maintain(ctx, d.Target, members)
	case Maintain:
		c.maintain(ctx, d.Target, members)
	case RetryRefused:
		if obs.Record.RefusedBy != "" {
			// Refused by the release's checks: not retried, since nothing
			// here tells when they would pass. A new write tries again.
			if obs.Record.Active != "" {
				c.maintain(ctx, obs.Record.Active, members)
			}
			return nil
		}
		if len(c.healthyTargets(ctx, d.Target, members, false)) == 0 {
			c.maintain(ctx, obs.Record.Active, members)
			return nil
		}
		c.log.WithFields(logrus.Fields{"target": d.Target, "switch": d.ID}).Info("a target instance is healthy now; retrying the refused switch")
		return c.runSwitch(ctx, d.Target, d.ID, obs.Record, members, quarantined)
	case Switch:
		return c.runSwitch(ctx, d.Target, d.ID, obs.Record, members, quarantined)
	}
	return nil
}

// ignorePreempted treats a switch that gave way to a newer target as
// finished: the next pass converges on that target.
func ignorePreempted(err error) error {
	if errors.Is(err, errPreempted) {
		return nil
	}
	return err
}

// maintain keeps the steady state: a new instance of the active color is
// health-checked and brought UP, a stray UP instance of the other color is
// taken out, but never the last UP instance of a service.
func (c *Controller) maintain(ctx context.Context, active zkstate.Color, members []Member) {
	ups, outs := Plan(active, members)
	if len(ups) == 0 && len(outs) == 0 {
		return
	}
	targetUp := upCount(members, active)
	for _, m := range ups {
		if !c.healthy(ctx, m) {
			continue
		}
		if _, _, err := c.instruct(ctx, active, m, registry.StatusUp, c.cfg.HealthTimeout); err != nil {
			c.log.WithError(err).WithField("instance", m.ID).Warn("could not bring a new active instance UP; will retry")
			continue
		}
		targetUp[m.Service]++
		c.log.WithFields(logrus.Fields{"instance": m.ID, "color": active}).Info("new instance of the active color is UP")
	}
	for _, m := range outs {
		if targetUp[m.Service] == 0 {
			continue
		}
		if _, _, err := c.instruct(ctx, active, m, registry.StatusOutOfService, c.cfg.HealthTimeout); err != nil {
			c.log.WithError(err).WithField("instance", m.ID).Warn("could not take a standby instance out; will retry")
			continue
		}
		c.log.WithFields(logrus.Fields{"instance": m.ID, "color": m.Color}).Info("standby instance taken OUT_OF_SERVICE")
	}
}
