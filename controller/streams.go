package controller

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// Following the streams of a switch: gateways end the WebSocket, SSE and
// gRPC streams of the instances a switch took out after their grace period
// (30 s by default), well after the switch itself is done. The record says
// how many there were and keeps count as gateways report them moved, until
// none is left or streamFollow passes.

// streamFollow bounds how long a finished switch's streams are followed.
const streamFollow = 2 * time.Minute

// streamPoll is how often gateway reports are read while following.
const streamPoll = 500 * time.Millisecond

// movedBaseline is how many streams each gateway had moved by reports.
func movedBaseline(reports []registry.GatewayReport) map[string]uint64 {
	base := make(map[string]uint64, len(reports))
	for _, r := range reports {
		base[r.ID] = r.Moved
	}
	return base
}

// streamMoves sums what the gateways report: the streams open on the
// instances in out, and those moved since base. A gateway that restarted
// counts from zero.
func (c *Controller) streamMoves(ctx context.Context, out map[string]bool, base map[string]uint64) (zkstate.StreamMoves, error) {
	reports, err := c.cfg.Registry.Gateways(ctx)
	if err != nil {
		return zkstate.StreamMoves{}, err
	}
	var m zkstate.StreamMoves
	for _, r := range reports {
		for id, n := range r.Streams {
			if out[id] && n > 0 {
				m.Left += n
			}
		}
		if b := base[r.ID]; r.Moved >= b {
			m.Moved += int(r.Moved - b)
		} else {
			m.Moved += int(r.Moved)
		}
	}
	m.Open = m.Left
	return m, nil
}

// followStreams updates the finished record rec as gateways move the
// streams of the instances in out, until none is left, streamFollow
// passes, leadership ends, or a newer switch starts (whose record must
// never be overwritten by this one).
func (c *Controller) followStreams(ctx context.Context, rec zkstate.Switch, out map[string]bool, base map[string]uint64) {
	if rec.Streams == nil || rec.Streams.Left == 0 {
		return
	}
	log := c.log.WithFields(logrus.Fields{"switch": rec.ID, "streams": rec.Streams.Open})
	log.Info("switch done; following the streams left on the old color until gateways move them")
	deadline := time.Now().Add(streamFollow)
	t := time.NewTicker(streamPoll)
	defer t.Stop()
	last := *rec.Streams
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := c.streamMoves(ctx, out, base)
		if err != nil {
			continue
		}
		m.Open = rec.Streams.Open
		if m == last {
			continue
		}
		last = m
		next := rec
		next.Streams = &m
		if !c.rewriteRecord(next) {
			return
		}
		if m.Left == 0 {
			log.WithField("moved", m.Moved).Info("every stream of the old color moved")
			return
		}
	}
	log.WithField("left", last.Left).Warn("streams still open on the old color after following them; gateways end them after their grace")
}

// rewriteRecord queues rec again when it is still the newest switch, under
// the lock a new switch takes to start its record.
func (c *Controller) rewriteRecord(rec zkstate.Switch) bool {
	c.recMu.Lock()
	defer c.recMu.Unlock()
	if c.current.Load() != rec.ID {
		return false
	}
	c.rec.Queue(rec)
	return true
}
