package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/signing"
	"github.com/switchyard/switchyard/zkstate"
)

var (
	// errPreempted stops a switch whose target is no longer /active_color.
	errPreempted = errors.New("controller: switch superseded by a newer /active_color")
	// errGone means the instance's node went away while it was instructed.
	errGone = errors.New("controller: instance left")
	// errUnhealthy means the instance refused to go UP: its own health
	// check, which it runs right before, failed, or it is draining.
	errUnhealthy = errors.New("failed its health check")
)

// instruct tells an instance to set its status, retrying with backoff:
// until limit when limit > 0, otherwise until the instance leaves. It gives
// up early when target is no longer what /active_color asks for.
func (c *Controller) instruct(ctx context.Context, target zkstate.Color, m Member, st registry.Status, limit time.Duration) (uint64, int, error) {
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	body, err := json.Marshal(map[string]registry.Status{"status": st})
	if err != nil {
		return 0, 0, fmt.Errorf("encode instruction: %w", err)
	}
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; ; attempt++ {
		if err := c.onTarget(ctx, target); err != nil {
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
		if errors.Is(err, errUnhealthy) {
			return 0, attempt, err // an answer, not a failure to retry
		}
		if c.left(m) {
			return 0, attempt, errGone
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return 0, attempt, fmt.Errorf("instance did not apply %s after %d attempts: %w", st, attempt, err)
		}
		wait := backoff.Next()
		c.log.WithError(err).WithFields(logrus.Fields{"instance": m.ID, "status": st, "attempt": attempt, "retry_in": wait, "switch": c.current.Load()}).
			Warn("instruction failed; retrying")
		if err := retry.Sleep(ctx, wait); err != nil {
			return 0, attempt, err
		}
	}
}

// left reports whether m's node is gone, or was made again for an
// instance at another address: either way the instance instructed left.
func (c *Controller) left(m Member) bool {
	b, _, err := c.conn.Get(c.paths.Instance(m.Color, m.ID))
	if errors.Is(err, zk.ErrNoNode) {
		return true
	}
	if err != nil {
		return false // cannot tell; keep trying
	}
	n, perr := zkstate.ParseInstanceNode(b)
	return perr == nil && (n.Address != m.Address || n.Port != m.Port || n.ControlPort != m.ControlPort)
}

// sendInstruction makes one PUT /_switchyard/status to the instance. The
// instance answers only once the registry confirmed, with the index at
// which the change is visible.
func (c *Controller) sendInstruction(ctx context.Context, m Member, body []byte) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+m.ControlHostPort()+"/_switchyard/status", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	// The switch this instruction belongs to, for the instance's log only:
	// one grep for the id finds the switch on every side.
	if id := c.current.Load(); id != 0 {
		req.Header.Set(registry.SwitchHeader, strconv.FormatInt(id, 10))
	}
	// Each instance verifies with its own key, derived from the token, so
	// an instance can forge nothing for another.
	keys, err := signing.ParseKeys(registry.InstanceToken(c.cfg.Token, m.ID))
	if err != nil {
		return 0, err
	}
	if err := keys.Sign(req, body, signing.Claims{Subject: m.ID, Epoch: c.epoch.Load()}); err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Index  uint64 `json:"index"`
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	derr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	if resp.StatusCode == http.StatusServiceUnavailable && (out.Status == "unhealthy" || out.Status == "draining") {
		return 0, fmt.Errorf("%w: %s: %s", errUnhealthy, out.Status, out.Error)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("instance answered %s: %s", resp.Status, out.Error)
	}
	if derr != nil {
		return 0, fmt.Errorf("instance answered 200 with an unreadable body: %w", derr)
	}
	return out.Index, nil
}

// checkTarget tells whether /active_color still asks for target, and logs
// when it does not; a batch checks it before it starts.
func (c *Controller) checkTarget(ctx context.Context, target zkstate.Color) error {
	paused := !c.sess.Connected()
	if paused {
		c.log.WithField("switch", c.current.Load()).Warn("ZooKeeper connection lost; pausing leader actions until it is back on the same session")
	}
	err := c.onTarget(ctx, target)
	switch {
	case errors.Is(err, errPreempted):
		c.log.WithFields(logrus.Fields{"target": target, "new_target": *c.asked.Load(), "switch": c.current.Load()}).Info("switch superseded; converging on the newest target")
	case paused && err == nil:
		c.log.WithField("switch", c.current.Load()).Info("ZooKeeper connection back on the same session; resuming")
	}
	return err
}

// onTarget is checkTarget without the logs, for every attempt of every
// instruction of a batch; the batch logs once.
//
// It reads the leader's /active_color watch (c.asked), not ZooKeeper. That
// is as fresh as a read: the watch fires once the write is committed, and
// a read on this session, served by whichever server it is connected to
// and without a sync, may lag as much. Nor does safety rest on freshness:
// an instruction a superseded switch still sends is an UP of a healthy
// instance or an OUT under the last-UP guard, which no pass relies on not
// happening, and the next pass plans from the registry after the whole
// batch returned. The model (model/switch.pml, preempted()) checks the
// switch with exactly this check.
//
// While the ZooKeeper connection is down the leader cannot know whether it
// still leads, so it waits here, before every instruction, until it is back
// on its session; if the session is over instead, ctx ends.
func (c *Controller) onTarget(ctx context.Context, target zkstate.Color) error {
	if !c.sess.Connected() {
		if err := c.sess.Wait(ctx); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if asked := c.asked.Load(); asked != nil && *asked != target {
		return errPreempted
	}
	return nil
}
