package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// reconcile makes one pass toward /active_color: it observes, lets Decide
// choose, and acts.
//
// A flip waits for this pass's reads before anything moves, so they are
// issued at once rather than one after another: go-zookeeper pipelines the
// requests of concurrent calls on its one connection, and the registry is
// read beside ZooKeeper. What a write of /active_color is judged with waits
// for its read, so that it is never older than the write: the record (a
// rollback files its verdict there before it writes /active_color) and the
// release settings (a deploy sets them, then flips).
func (c *Controller) reconcile(ctx context.Context) error {
	if err := c.sess.Wait(ctx); err != nil {
		return err
	}
	listed := later(func() (registry.Snapshot, error) { return c.cfg.Registry.Instances(ctx, "", 0, 0) })
	names := later(c.listNodes)
	var p pass
	raw, stat, err := c.conn.Get(c.paths.ActiveColor())
	if err != nil {
		return fmt.Errorf("read %s: %w", c.paths.ActiveColor(), err)
	}
	obs := Observed{Zxid: stat.Mzxid}
	obs.Asked, _ = zkstate.ParseColor(raw)
	p.asked, p.written, p.zxid, p.version = obs.Asked, time.UnixMilli(stat.Mtime), stat.Mzxid, stat.Version
	p.request = later(func() (request, error) {
		r, ok, err := zkstate.ReadRequest(c.conn, c.paths, stat.Mzxid)
		return request{r, ok}, err
	})
	p.release = later(func() (zkstate.Release, error) { return zkstate.ReadRelease(c.conn, c.paths) })
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
	snap, regErr := listed()
	obs.Ready = regErr == nil && snap.Ready
	d := Decide(obs)
	if d.Action == Wait {
		if regErr != nil && d.Target != "" {
			return fmt.Errorf("list registry: %w", regErr)
		}
		return nil
	}
	members, quarantined, err := c.members(snap, names)
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
		return c.runSwitch(ctx, p, d.Target, d.ID, obs.Record, members, quarantined)
	case Switch:
		return c.runSwitch(ctx, p, d.Target, d.ID, obs.Record, members, quarantined)
	}
	return nil
}

// pass is what a reconcile pass read as it began that a switch it starts
// needs too.
type pass struct {
	asked   zkstate.Color // what /active_color held, "" when not a color
	written time.Time     // when it was written
	zxid    int64         // the write
	version int32         // the version it made
	request func() (request, error)
	release func() (zkstate.Release, error)
}

// request is the request note of a write, when there is one.
type request struct {
	zkstate.Request
	ok bool
}

// askedAt is when /active_color was written, if it asks for target: the
// start of a switch's propagation. A switch resumed by a new leader keeps
// the original write, so a failover counts in its propagation.
func (p pass) askedAt(target zkstate.Color) (time.Time, bool) {
	if p.asked != target || p.written.IsZero() {
		return time.Time{}, false
	}
	return p.written, true
}

// later starts f and returns a function that waits for its result.
func later[T any](f func() (T, error)) func() (T, error) {
	var v T
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err = f()
	}()
	return func() (T, error) {
		<-done
		return v, err
	}
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
