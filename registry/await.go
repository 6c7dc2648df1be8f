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
// whose index did not move (one without blocking queries, or one that
// restarted) is read again after a pause of 2 ms, growing to 10 ms. It
// returns nil once done, otherwise ctx's error, joined with the last read's
// error if that failed.
func AwaitGateways(ctx context.Context, w GatewayWatcher, done func([]GatewayReport) bool) error {
	poll := retry.Backoff{Min: 2 * time.Millisecond, Max: 10 * time.Millisecond}
	var index uint64
	var lastErr error
	for {
		wait := 30 * time.Second
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		reports, idx, err := w.WatchGateways(ctx, index, wait)
		lastErr = err
		if err == nil && done(reports) {
			return nil
		}
		if err == nil && idx > index {
			index = idx
			poll.Reset()
			continue
		}
		index = 0
		if err := retry.Sleep(ctx, poll.Next()); err != nil {
			if lastErr != nil {
				return errors.Join(err, lastErr)
			}
			return err
		}
	}
}
