package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/registry"
)

// errPreempted stops a switch whose target is no longer /active_color.
var errPreempted = errors.New("controller: switch superseded by a newer /active_color")

// historyKeep bounds /switchyard/history.
const historyKeep = 200

// reconcile makes one pass toward /active_color. It always acts on the
// target it reads, never on "the other color", so a new leader or a retry
// can only ever finish what was asked.
func (c *Controller) reconcile(ctx context.Context) error {
	raw, stat, err := c.conn.Get(c.paths.ActiveColor())
	if err != nil {
		return fmt.Errorf("read %s: %w", c.paths.ActiveColor(), err)
	}
	rec, hasRec, err := layout.ReadSwitch(c.conn, c.paths)
	if err != nil {
		// A corrupt record must not stop the controller; it is rewritten.
		c.log.WithError(err).Warn("switch record unreadable; starting a fresh one")
		hasRec = false
	}
	goal := ""
	if hasRec {
		goal = recordGoal(rec)
	}
	color, perr := layout.ParseColor(raw)
	if perr == nil {
		goal = color
	} else if !hasRec || rec.ID < stat.Mzxid {
		c.refuseValue(ctx, raw, stat.Mzxid, rec, hasRec, perr)
		rec, hasRec, _ = layout.ReadSwitch(c.conn, c.paths)
	}
	if goal == "" {
		return nil
	}
	snap, err := c.cfg.Registry.Instances(ctx, "", 0, 0)
	if err != nil {
		return fmt.Errorf("list registry: %w", err)
	}
	if !snap.Ready {
		c.log.Debug("registry is warming up after a restart; waiting before acting")
		return nil
	}
	members, err := c.members(snap)
	if err != nil {
		return err
	}
	switch {
	case hasRec && rec.Active == goal && rec.Phase != layout.PhaseSwitching:
		if perr == nil && rec.ID < stat.Mzxid {
			// The same color was written again: acknowledge the write.
			now := time.Now().UTC()
			rec = layout.Switch{ID: stat.Mzxid, Target: goal, Goal: goal, Active: goal, Phase: layout.PhaseDone,
				Reason: goal + " was already active", Leader: c.cfg.ID, Steps: []layout.Step{}, StartedAt: now, FinishedAt: &now}
			c.rec.Flush(ctx, c.writeRecord(rec))
		}
		c.maintain(ctx, goal, members)
		return nil
	case hasRec && rec.Phase == layout.PhaseRefused && rec.Goal == goal && rec.ID >= stat.Mzxid:
		// A refused switch stays wanted: go ahead once a target is healthy.
		if len(c.healthyTargets(ctx, goal, members, false)) == 0 {
			c.maintain(ctx, rec.Active, members)
			return nil
		}
		c.log.WithField("target", goal).Info("a target instance is healthy now; retrying the refused switch")
	}
	id := stat.Mzxid
	if perr != nil {
		id = rec.ID
	}
	err = c.runSwitch(ctx, goal, id, rec, hasRec, members)
	if errors.Is(err, errPreempted) {
		return nil
	}
	return err
}

// recordGoal is the valid color the record drives toward.
func recordGoal(rec layout.Switch) string {
	if rec.Goal != "" {
		return rec.Goal
	}
	return rec.Active
}

// refuseValue records that /active_color holds something other than blue
// or green. Routing is untouched: the controller keeps its last goal.
func (c *Controller) refuseValue(ctx context.Context, raw []byte, id int64, prev layout.Switch, hasPrev bool, perr error) {
	now := time.Now().UTC()
	rec := layout.Switch{
		ID: id, Target: layout.Describe(raw), Phase: layout.PhaseRefused, Leader: c.cfg.ID,
		Reason:    perr.Error() + "; routing is unchanged",
		StartedAt: now, FinishedAt: &now, Steps: []layout.Step{},
	}
	if hasPrev {
		rec.Active, rec.Goal = prev.Active, recordGoal(prev)
	}
	c.log.WithFields(logrus.Fields{"value": layout.Describe(raw), "serving": rec.Active, "goal": rec.Goal}).
		Warn("refused /active_color: not blue or green; keeping the current routing")
	c.finishRecord(ctx, rec)
}

// members joins the instances announced in ZooKeeper with the registry.
func (c *Controller) members(snap registry.Snapshot) ([]Member, error) {
	byID := make(map[string]registry.Instance, len(snap.Instances))
	for _, in := range snap.Instances {
		byID[in.ID] = in
	}
	var out []Member
	seen := map[string]bool{}
	for _, color := range []string{layout.Blue, layout.Green} {
		ids, _, err := c.conn.Children(c.paths.Color(color))
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", c.paths.Color(color), err)
		}
		for _, id := range ids {
			p := c.paths.Instance(color, id)
			seen[p] = true
			n, ok := c.nodes[p]
			if in, reg := byID[id]; ok && reg && (in.Address != n.Address || in.Port != n.Port) {
				ok = false // the instance came back elsewhere under the same id
			}
			if !ok {
				b, _, err := c.conn.Get(p)
				if errors.Is(err, zk.ErrNoNode) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("read %s: %w", p, err)
				}
				if n, err = layout.ParseInstanceNode(b); err != nil {
					c.log.WithError(err).WithField("node", p).Warn("ignoring malformed instance node")
					continue
				}
				c.nodes[p] = n
			}
			m := Member{ID: id, Service: n.Service, Color: color, Address: n.Address, Port: n.Port, Version: n.Version}
			if in, ok := byID[id]; ok {
				m.Registered, m.Status = true, in.Status
			}
			out = append(out, m)
		}
	}
	for p := range c.nodes {
		if !seen[p] {
			delete(c.nodes, p)
		}
	}
	return out, nil
}

// runSwitch moves traffic to target, make-before-break: first every healthy
// target instance is brought UP, one at a time; once the gateways have seen
// them, every other instance goes OUT_OF_SERVICE, one at a time, never the
// last UP one of a service. It resumes rec when that is the same switch.
func (c *Controller) runSwitch(ctx context.Context, target string, id int64, prev layout.Switch, hasPrev bool, members []Member) error {
	now := time.Now().UTC()
	rec := layout.Switch{ID: id, Target: target, Goal: target, Phase: layout.PhaseSwitching, Leader: c.cfg.ID, StartedAt: now, Steps: []layout.Step{}}
	if hasPrev {
		rec.Active, rec.From = prev.Active, prev.Active
		if prev.Phase == layout.PhaseSwitching && prev.Target == target {
			rec.From, rec.StartedAt, rec.Steps = prev.From, prev.StartedAt, prev.Steps
			c.log.WithFields(logrus.Fields{"target": target, "started": prev.StartedAt}).Info("resuming the switch in progress")
		} else if prev.Phase == layout.PhaseSwitching {
			old := prev
			old.Phase, old.Reason, old.FinishedAt = layout.PhaseFailed, "superseded by /active_color="+target, &now
			c.appendHistory(old)
			c.metrics.switches.WithLabelValues(string(layout.PhaseFailed)).Inc()
		}
	}
	if rec.From == target {
		rec.From = ""
	}
	log := c.log.WithFields(logrus.Fields{"target": target, "switch": id})
	log.Info("switch started")
	c.writeRecord(rec)

	healthy := c.healthyTargets(ctx, target, members, true)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := c.checkTarget(ctx, target); err != nil {
		return err
	}
	ups, outs := Plan(target, members)
	targetUp := upCount(members, target)
	for _, m := range ups {
		if healthy[m.ID] {
			targetUp[m.Service]++ // counted optimistically for the refusal check below
		}
	}
	if svcs := unservedServices(outs, targetUp); len(svcs) > 0 {
		return c.refuse(ctx, rec, log, fmt.Sprintf("no healthy %s instance of %s (%d %s instance(s) announced); %s stays UP",
			target, strings.Join(svcs, ", "), countColor(members, target), target, layout.Other(target)))
	}
	targetUp = upCount(members, target)

	indexes := map[string]uint64{}
	for _, m := range ups {
		step := layout.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: string(registry.StatusUp), State: "pending"}
		// Checked again right before: health may have changed since the pre-flight.
		if !healthy[m.ID] || !c.healthy(ctx, m) {
			step.State, step.Error, step.At = "skipped", "failed its health check", time.Now().UTC()
			rec.Steps = append(rec.Steps, step)
			log.WithField("instance", m.ID).Warn("instance failed its health check; it stays OUT_OF_SERVICE")
			continue
		}
		idx, attempts, err := c.instruct(ctx, target, m, registry.StatusUp, c.cfg.HealthTimeout)
		step.Attempts, step.At = attempts, time.Now().UTC()
		if err != nil {
			if errors.Is(err, errPreempted) || ctx.Err() != nil {
				return err
			}
			step.State, step.Error = "skipped", err.Error()
			log.WithError(err).WithField("instance", m.ID).Warn("could not bring instance UP; skipping it")
		} else {
			step.State = "done"
			targetUp[m.Service]++
			indexes[m.Service] = max(indexes[m.Service], idx)
			log.WithFields(logrus.Fields{"instance": m.ID, "attempts": attempts}).Info("instance UP")
		}
		rec.Steps = append(rec.Steps, step)
		c.writeRecord(rec)
	}
	if svcs := unservedServices(outs, targetUp); len(svcs) > 0 {
		return c.refuse(ctx, rec, log, fmt.Sprintf("no %s instance of %s could be brought UP; %s stays UP",
			target, strings.Join(svcs, ", "), layout.Other(target)))
	}
	// Break only after make: every OUT below has a higher registry index
	// than every UP above. Gateways apply whole snapshots in index order, so
	// none can see the old color gone before the new one is UP, and no wait
	// for them is needed here; "done" below waits for them.
	for _, m := range outs {
		if targetUp[m.Service] == 0 {
			continue // never take out the last UP instance
		}
		step := layout.Step{Instance: m.ID, Service: m.Service, Color: m.Color, Action: string(registry.StatusOutOfService), State: "pending"}
		idx, attempts, err := c.instruct(ctx, target, m, registry.StatusOutOfService, 0)
		step.Attempts, step.At = attempts, time.Now().UTC()
		switch {
		case errors.Is(err, errPreempted) || ctx.Err() != nil:
			return err
		case errors.Is(err, errGone):
			step.State, step.Error = "skipped", "instance left"
		case err != nil:
			return err
		default:
			step.State = "done"
			indexes[m.Service] = max(indexes[m.Service], idx)
			log.WithFields(logrus.Fields{"instance": m.ID, "attempts": attempts}).Info("instance OUT_OF_SERVICE")
		}
		rec.Steps = append(rec.Steps, step)
		c.writeRecord(rec)
	}
	if note := c.waitGateways(ctx, indexes); note != "" {
		rec.Reason = note
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	done := time.Now().UTC()
	rec.Phase, rec.Active, rec.FinishedAt = layout.PhaseDone, target, &done
	c.finishRecord(ctx, rec)
	log.WithField("took", done.Sub(rec.StartedAt).Round(time.Millisecond)).Info("switch done; gateways route to the target")
	return nil
}

func countColor(members []Member, color string) int {
	n := 0
	for _, m := range members {
		if m.Color == color {
			n++
		}
	}
	return n
}

func (c *Controller) refuse(ctx context.Context, rec layout.Switch, log logrus.FieldLogger, reason string) error {
	now := time.Now().UTC()
	rec.Phase, rec.Reason, rec.FinishedAt = layout.PhaseRefused, reason, &now
	c.finishRecord(ctx, rec)
	log.WithField("reason", reason).Warn("switch refused; routing is unchanged")
	return nil
}

// maintain keeps the steady state: a new instance of the active color is
// health-checked and brought UP, a stray UP instance of the other color is
// taken out, but never the last UP instance of a service.
func (c *Controller) maintain(ctx context.Context, active string, members []Member) {
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

// healthyTargets health-checks the target color's registered instances in
// parallel; with retry, each gets up to HealthTimeout to become healthy.
func (c *Controller) healthyTargets(ctx context.Context, target string, members []Member, retry bool) map[string]bool {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]bool{}
	for _, m := range members {
		if m.Color != target || !m.Registered {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := c.healthy(ctx, m)
			if retry {
				deadline := time.Now().Add(c.cfg.HealthTimeout)
				for backoff := 50 * time.Millisecond; !ok && time.Now().Before(deadline) && ctx.Err() == nil; backoff = min(backoff*2, time.Second) {
					sleep(ctx, backoff)
					ok = c.healthy(ctx, m)
				}
			}
			if ok {
				mu.Lock()
				out[m.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (c *Controller) healthy(ctx context.Context, m Member) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort(m)+"/_switchyard/health", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

var errGone = errors.New("controller: instance left")

// instruct tells an instance to set its status, retrying with backoff:
// until limit when limit > 0, otherwise until the instance leaves. It gives
// up early when target is no longer what /active_color asks for.
func (c *Controller) instruct(ctx context.Context, target string, m Member, st registry.Status, limit time.Duration) (uint64, int, error) {
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	body, _ := json.Marshal(map[string]registry.Status{"status": st})
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if err := c.checkTarget(ctx, target); err != nil {
			return 0, attempt - 1, err
		}
		idx, err := c.sendInstruction(ctx, m, body)
		if err == nil {
			c.metrics.instructions.WithLabelValues(string(st), "ok").Inc()
			return idx, attempt, nil
		}
		c.metrics.instructions.WithLabelValues(string(st), "error").Inc()
		if ctx.Err() != nil {
			return 0, attempt, ctx.Err()
		}
		if ok, _, zerr := c.conn.Exists(c.paths.Instance(m.Color, m.ID)); zerr == nil && !ok {
			return 0, attempt, errGone
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return 0, attempt, fmt.Errorf("instance did not apply %s after %d attempts: %w", st, attempt, err)
		}
		c.log.WithError(err).WithFields(logrus.Fields{"instance": m.ID, "status": st, "attempt": attempt, "retry_in": backoff}).
			Warn("instruction failed; retrying")
		sleep(ctx, backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (c *Controller) sendInstruction(ctx context.Context, m Member, body []byte) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+hostPort(m)+"/_switchyard/status", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Index uint64 `json:"index"`
		Error string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("instance answered %s: %s", resp.Status, out.Error)
	}
	return out.Index, nil
}

// checkTarget tells whether /active_color still asks for target, as the
// leader's watch last read it. A value that is not a color does not
// interrupt a switch.
func (c *Controller) checkTarget(ctx context.Context, target string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if asked := c.asked.Load(); asked != nil && *asked != target {
		c.log.WithFields(logrus.Fields{"target": target, "new_target": *asked}).Info("switch superseded; converging on the newest target")
		return errPreempted
	}
	return nil
}

// waitGateways waits until every live gateway has applied, for each
// service, at least the given index. It returns a note when some did not
// within GatewayTimeout; the switch goes on, since a lagging gateway still
// routes to instances that serve.
func (c *Controller) waitGateways(ctx context.Context, indexes map[string]uint64) string {
	if len(indexes) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.GatewayTimeout)
	defer cancel()
	var lagging []string
	for {
		reports, err := c.cfg.Registry.Gateways(ctx)
		if err == nil {
			lagging = lagging[:0]
			for _, r := range reports {
				for svc, idx := range indexes {
					if r.Applied[svc] < idx {
						lagging = append(lagging, r.ID)
						break
					}
				}
			}
			if len(lagging) == 0 {
				return ""
			}
		}
		select {
		case <-ctx.Done():
			sort.Strings(lagging)
			note := fmt.Sprintf("gateways %s did not confirm within %s", strings.Join(lagging, ", "), c.cfg.GatewayTimeout)
			c.log.Warn(note)
			return note
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// writeRecord queues rec for the background writer.
func (c *Controller) writeRecord(rec layout.Switch) uint64 { return c.rec.Queue(rec) }

// finishRecord writes an outcome and waits until it is in ZooKeeper, so a
// `switch --wait` learns it as soon as it is true.
func (c *Controller) finishRecord(ctx context.Context, rec layout.Switch) {
	c.rec.Flush(ctx, c.rec.Queue(rec))
	c.appendHistory(rec)
	c.metrics.switches.WithLabelValues(string(rec.Phase)).Inc()
	if rec.Phase == layout.PhaseDone {
		c.metrics.duration.Observe(rec.Duration().Seconds())
	}
}

func (c *Controller) appendHistory(rec layout.Switch) {
	b := encode(rec)
	if _, err := c.conn.Create(c.paths.History()+"/s_", b, zk.FlagSequence, c.cfg.ZKAuth.ACL()); err != nil {
		c.log.WithError(err).Warn("could not append to the switch history")
		return
	}
	children, _, err := c.conn.Children(c.paths.History())
	if err != nil || len(children) <= historyKeep {
		return
	}
	sort.Strings(children)
	for _, old := range children[:len(children)-historyKeep] {
		_ = c.conn.Delete(c.paths.History()+"/"+old, -1)
	}
}

func hostPort(m Member) string {
	return registry.Instance{Address: m.Address, Port: m.Port}.HostPort()
}
