package registry

import (
	"context"
	"errors"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

// GatewayWatcher is the part of a Backend that waits for gateway reports.
type GatewayWatcher interface {
	WatchGateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]GatewayReport, uint64, error)
}

// AwaitGateways reads the gateways' reports until done says they are what
// the caller waits for, or ctx ends. Each read after the first is a
// blocking query that answers as a report lands, so a confirmation is seen
// within a round trip of its report, not at the next poll. A registry
// whose index does not move (one without blocking queries) is read again
// after a pause of 2 ms, growing to 10 ms; one whose reads fail (a refused
// blocking query among them) after a pause of 10 ms, growing to 1 s, which
// only a blocking read that succeeds starts again from. It returns nil once
// done, otherwise ctx's error, joined with the last read's error if that
// failed.
func AwaitGateways(ctx context.Context, w GatewayWatcher, done func([]GatewayReport) bool) error {
	poll := retry.Backoff{Min: 2 * time.Millisecond, Max: 10 * time.Millisecond}
	failing := retry.Backoff{Min: 10 * time.Millisecond, Max: time.Second}
	var index uint64
	for {
		wait := 30 * time.Second
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		reports, idx, err := w.WatchGateways(ctx, index, wait)
		var pause time.Duration
		switch {
		case err != nil:
			index, pause = 0, failing.Next()
		case done(reports):
			return nil
		case idx > index:
			if index > 0 {
				failing.Reset()
				poll.Reset()
			}
			index = idx
			continue
		default:
			// The index did not move, or went back (a restart).
			index, pause = 0, poll.Next()
		}
		if serr := retry.Sleep(ctx, pause); serr != nil {
			if err != nil {
				return errors.Join(serr, err)
			}
			return serr
		}
	}
}
