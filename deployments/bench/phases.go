package bench

import (
	"time"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/registry"
)

// Phases splits one switch's time by the step timestamps in its record.
// Each step's At is when its instruction came back, so a phase boundary
// includes the one instruction that ends it.
type Phases struct {
	React    time.Duration // the ZooKeeper write until the record's start: watch, members, registry list
	Prepare  time.Duration // record start until the first UP step: health checks, first instruction
	Up       time.Duration // first to last UP step
	UpSteps  int
	Gateways time.Duration // last UP step until the first OUT_OF_SERVICE step: the turn from make to break
	Out      time.Duration // first to last OUT_OF_SERVICE step
	OutSteps int
	Finish   time.Duration // last step until the record's end: the final gateway wait
	Total    time.Duration // the write until the record's end
	// Partial is set when the record kept only its newest steps (a large
	// switch): the step phases cannot be told apart, only the totals.
	Partial bool
}

// phasesOf reads rec; at is the ZooKeeper write it answers (zero if
// unknown).
func phasesOf(rec layout.Switch, at time.Time) Phases {
	var p Phases
	if rec.FinishedAt == nil {
		return p
	}
	if rec.StepsTotal > len(rec.Steps) {
		p.Partial = true
		p.Total = rec.FinishedAt.Sub(rec.StartedAt)
		if !at.IsZero() {
			p.React = max(rec.StartedAt.Sub(at), 0)
			p.Total = rec.FinishedAt.Sub(at)
		}
		return p
	}
	var firstUp, lastUp, firstOut, lastOut time.Time
	for _, s := range rec.Steps {
		if s.State != "done" || s.At.IsZero() {
			continue
		}
		switch s.Action {
		case string(registry.StatusUp):
			if firstUp.IsZero() {
				firstUp = s.At
			}
			lastUp = s.At
			p.UpSteps++
		case string(registry.StatusOutOfService):
			if firstOut.IsZero() {
				firstOut = s.At
			}
			lastOut = s.At
			p.OutSteps++
		}
	}
	if !at.IsZero() {
		p.React = max(rec.StartedAt.Sub(at), 0)
		p.Total = rec.FinishedAt.Sub(at)
	} else {
		p.Total = rec.FinishedAt.Sub(rec.StartedAt)
	}
	last := rec.StartedAt
	if !firstUp.IsZero() {
		p.Prepare = firstUp.Sub(rec.StartedAt)
		p.Up = lastUp.Sub(firstUp)
		last = lastUp
	}
	if !firstOut.IsZero() {
		p.Gateways = firstOut.Sub(last)
		p.Out = lastOut.Sub(firstOut)
		last = lastOut
	}
	p.Finish = rec.FinishedAt.Sub(last)
	return p
}

// perStep is the mean time of one step within a phase of n steps.
func perStep(d time.Duration, n int) time.Duration {
	if n < 2 {
		return 0
	}
	return d / time.Duration(n-1)
}
