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
// blocking query from the index the one before answered, so a confirmation
// is seen within a round trip of its report, not at the next poll. A read
// that fails is followed by a plain one (a registry that restarted may
// never reach the old index) after a pause that grows from 10 ms to 1 s
// until a blocking read succeeds: a registry refusing blocking queries is
// not hammered by plain reads that succeed in between. A registry whose
// index does not move (one without blocking queries) is read again after
// 2 ms, growing to 10 ms. It returns nil once done, otherwise ctx's error,
// joined with the last read's error if that failed.
func AwaitGateways(ctx context.Context, w GatewayWatcher, done func([]GatewayReport) bool) error {
	poll := retry.Backoff{Min: 2 * time.Millisecond, Max: 10 * time.Millisecond}
	failing := retry.Backoff{Min: 10 * time.Millisecond, Max: time.Second}
	var index uint64
	for {
		wait := 30 * time.Second
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		blocking := index > 0
		reports, idx, err := w.WatchGateways(ctx, index, wait)
		var pause time.Duration
		switch {
		case err != nil:
			index, pause = 0, failing.Next()
		case done(reports):
			return nil
		case idx != index:
			// Moved, or went back after a restart: block from it.
			if blocking {
				failing.Reset()
			}
			index = idx
			continue
		default:
			pause = poll.Next()
		}
		if serr := retry.Sleep(ctx, pause); serr != nil {
			if err != nil {
				return errors.Join(serr, err)
			}
			return serr
		}
	}
}
