package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// recorder writes the switch record in the background. Every ZooKeeper
// write is an fsync, and a switch must not wait on one per step: steps
// queue the newest record, which replaces any older one not yet written.
// Only outcomes are flushed. A stale record is harmless: a new leader
// re-plans from the registry, not from the steps.
type recorder struct {
	conn *zk.Conn
	path string
	log  logrus.FieldLogger

	mu      sync.Mutex
	pending *zkstate.Switch
	queued  uint64
	written uint64
	wrote   chan struct{} // closed and replaced after each write
	kick    chan struct{}
}

func newRecorder(conn *zk.Conn, path string, log logrus.FieldLogger) *recorder {
	return &recorder{conn: conn, path: path, log: log, wrote: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Queue makes rec the next record to write and returns its sequence. Its
// steps are only ever appended to, so the writer may encode it later.
func (r *recorder) Queue(rec zkstate.Switch) uint64 {
	r.mu.Lock()
	r.pending = &rec
	r.queued++
	seq := r.queued
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return seq
}

// Flush waits until the record with sequence seq, or a newer one, is written.
func (r *recorder) Flush(ctx context.Context, seq uint64) {
	for {
		r.mu.Lock()
		done, wrote := r.written >= seq, r.wrote
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-wrote:
		case <-ctx.Done():
			return
		}
	}
}

// Run writes queued records until ctx ends; what is still queued then is
// dropped, since a controller that lost leadership must not write.
func (r *recorder) Run(ctx context.Context) {
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.mu.Lock()
		rec, seq := r.pending, r.queued
		r.mu.Unlock()
		if rec == nil || ctx.Err() != nil {
			continue
		}
		if _, err := r.conn.Set(r.path, encode(*rec), -1); err != nil {
			// A switch may be waiting for this write before it instructs
			// anyone: the newest record is tried again after a pause, or at
			// once when a newer one is queued.
			wait := backoff.Next()
			r.log.WithError(err).WithFields(logrus.Fields{"switch": rec.ID, "retry_in": wait}).Warn("could not write the switch record; retrying")
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-r.kick:
			case <-t.C:
			}
			t.Stop()
			select {
			case r.kick <- struct{}{}:
			default:
			}
			continue
		}
		backoff.Reset()
		r.mu.Lock()
		r.written = seq
		close(r.wrote)
		r.wrote = make(chan struct{})
		r.mu.Unlock()
	}
}

// historyKeep bounds /switchyard/history.
const historyKeep = 200

// maxRecordSteps bounds the steps kept in a record: ZooKeeper refuses nodes
// over 1 MB, and a switch of thousands of instances would pass that.
const maxRecordSteps = 256

// encode renders rec with at most its newest maxRecordSteps steps; the
// record keeps the full count.
func encode(rec zkstate.Switch) []byte {
	rec.StepsTotal = len(rec.Steps)
	if n := len(rec.Steps); n > maxRecordSteps {
		rec.Steps = rec.Steps[n-maxRecordSteps:]
	}
	b, err := json.Marshal(rec)
	if err != nil {
		// Every field is a plain value; this is a programming error.
		panic(fmt.Sprintf("controller: encode switch record: %v", err))
	}
	return b
}

// writeRecord queues rec for the background writer.
func (c *Controller) writeRecord(rec zkstate.Switch) uint64 { return c.rec.Queue(rec) }

// finishRecord writes an outcome and waits until it is in ZooKeeper, so a
// `switch --wait` learns it as soon as it is true, then appends it to the
// history.
func (c *Controller) finishRecord(ctx context.Context, rec zkstate.Switch) {
	c.rec.Flush(ctx, c.rec.Queue(rec))
	c.appendHistory(rec)
	c.metrics.switches.WithLabelValues(string(rec.Phase)).Inc()
	if rec.Phase == zkstate.PhaseDone {
		c.metrics.duration.Observe(rec.Duration().Seconds())
	}
}

func (c *Controller) appendHistory(rec zkstate.Switch) {
	node, err := c.conn.Create(c.paths.History()+"/s_", encode(rec), zk.FlagSequence, c.cfg.ZKAuth.ACL())
	if err != nil {
		c.log.WithError(err).WithField("switch", rec.ID).Warn("could not append to the switch history")
		return
	}
	c.history.put(rec.ID, node)
	children, _, err := c.conn.Children(c.paths.History())
	if err != nil || len(children) <= historyKeep {
		return
	}
	sort.Strings(children)
	for _, old := range children[:len(children)-historyKeep] {
		if err := c.conn.Delete(c.paths.History()+"/"+old, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			c.log.WithError(err).WithField("node", old).Warn("could not prune the switch history")
		}
	}
}

// historyNodes remembers the history nodes of the newest switches, so
// that a verdict filed after a switch finished updates its entry.
type historyNodes struct {
	mu    sync.Mutex
	nodes map[int64]string
}

func (h *historyNodes) put(id int64, node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nodes == nil || len(h.nodes) > 64 {
		h.nodes = map[int64]string{}
	}
	h.nodes[id] = node
}

func (h *historyNodes) get(id int64) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.nodes[id]
	return n, ok
}

// updateHistory rewrites rec's history entry; a leader that did not file
// it looks for it among the newest entries.
func (c *Controller) updateHistory(rec zkstate.Switch) {
	node, ok := c.history.get(rec.ID)
	if !ok {
		names, _, err := c.conn.Children(c.paths.History())
		if err != nil {
			return
		}
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
		for _, n := range names[:min(len(names), 20)] {
			b, _, err := c.conn.Get(c.paths.History() + "/" + n)
			var old zkstate.Switch
			if err == nil && json.Unmarshal(b, &old) == nil && old.ID == rec.ID && old.Phase == rec.Phase {
				node, ok = c.paths.History()+"/"+n, true
				break
			}
		}
	}
	if !ok {
		c.appendHistory(rec)
		return
	}
	if _, err := c.conn.Set(node, encode(rec), -1); err != nil {
		c.log.WithError(err).WithField("switch", rec.ID).Warn("could not file the verdict in the switch history")
	}
}

// startRecord opens the record of a switch to target answering write id.
// It resumes prev when prev is the same switch still in progress, and
// files prev as failed when a new target supersedes it.
func (c *Controller) startRecord(ctx context.Context, target zkstate.Color, id int64, prev *zkstate.Switch, quarantined []zkstate.Quarantined) (rec zkstate.Switch, flushed func()) {
	now := time.Now().UTC()
	rec = zkstate.Switch{ID: id, Target: target, Goal: target, Phase: zkstate.PhaseSwitching, Leader: c.cfg.ID, StartedAt: now,
		Steps: []zkstate.Step{}, Quarantined: quarantined}
	if prev != nil {
		rec.Active, rec.From = prev.Active, prev.Active
		switch {
		case prev.Phase == zkstate.PhaseSwitching && prev.Target == target:
			rec.From, rec.StartedAt, rec.Steps, rec.Checks = prev.From, prev.StartedAt, prev.Steps, prev.Checks
			c.log.WithFields(logrus.Fields{"target": target, "switch": id, "started": prev.StartedAt}).Info("resuming the switch in progress")
		case prev.Phase == zkstate.PhaseSwitching:
			old := *prev
			old.Phase, old.Reason, old.FinishedAt = zkstate.PhaseFailed, "superseded by /active_color="+string(target), &now
			if target == prev.From {
				old.Reason = "aborted: /active_color set back to " + string(target) + "; every instance returns to where it was"
			}
			c.appendHistory(old)
			c.metrics.switches.WithLabelValues(string(zkstate.PhaseFailed)).Inc()
		}
	}
	if rec.From == target {
		rec.From = ""
	}
	// Flushed before the first instruction, not only queued: a next leader
	// must find this switch before any instruction of it can have landed,
	// or it could undo it. The recorder writes it while the switch reads
	// its settings and health-checks the target, which change nothing; the
	// caller waits for it with flushed before it instructs anyone.
	c.recMu.Lock()
	c.current.Store(id)
	seq := c.writeRecord(rec)
	c.recMu.Unlock()
	return rec, func() { c.rec.Flush(ctx, seq) }
}

// refuse finishes rec as refused: routing is unchanged.
func (c *Controller) refuse(ctx context.Context, rec zkstate.Switch, reason string) {
	now := time.Now().UTC()
	rec.Phase, rec.Reason, rec.FinishedAt = zkstate.PhaseRefused, reason, &now
	c.finishRecord(ctx, rec)
	c.log.WithFields(logrus.Fields{"target": rec.Target, "switch": rec.ID, "reason": reason}).Warn("switch refused; routing is unchanged")
}

// refuseValue records that /active_color holds something other than blue
// or green, and returns the record. Routing is untouched: the controller
// keeps its last goal.
func (c *Controller) refuseValue(ctx context.Context, raw []byte, id int64, prev *zkstate.Switch) zkstate.Switch {
	_, perr := zkstate.ParseColor(raw)
	now := time.Now().UTC()
	rec := zkstate.Switch{
		ID: id, Target: zkstate.Color(zkstate.Describe(raw)), Phase: zkstate.PhaseRefused, Leader: c.cfg.ID,
		Reason:    fmt.Sprintf("%v; routing is unchanged", perr),
		StartedAt: now, FinishedAt: &now, Steps: []zkstate.Step{},
	}
	if prev != nil {
		rec.Active, rec.Goal = prev.Active, prev.GoalColor()
	}
	// A valid value the watch read but no pass acted on is the newest goal.
	if asked := c.asked.Load(); asked != nil {
		rec.Goal = *asked
	}
	c.log.WithFields(logrus.Fields{"value": zkstate.Describe(raw), "switch": id, "serving": rec.Active, "goal": rec.Goal}).
		Warn("refused /active_color: not blue or green; keeping the current routing")
	c.finishRecord(ctx, rec)
	return rec
}

// acknowledge records a write of the color that is already active as done.
func (c *Controller) acknowledge(ctx context.Context, color zkstate.Color, id int64) {
	now := time.Now().UTC()
	c.rec.Flush(ctx, c.writeRecord(zkstate.Switch{ID: id, Target: color, Goal: color, Active: color, Phase: zkstate.PhaseDone,
		Reason: string(color) + " was already active", Leader: c.cfg.ID, Steps: []zkstate.Step{}, StartedAt: now, FinishedAt: &now}))
}
