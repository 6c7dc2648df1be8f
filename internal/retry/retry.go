// Package retry is the one way switchyard waits between attempts: a capped
// exponential backoff, a context-aware sleep, and a poll until a condition
// holds. Every retry loop uses it, so they all behave alike.
package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Backoff doubles a delay from Min up to Max. The zero value waits 50ms
// first and at most 5s.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the delay to wait now and doubles the one after it.
func (b *Backoff) Next() time.Duration {
	if b.Min <= 0 {
		b.Min = 50 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	b.next = min(b.next*2, b.Max)
	return d
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for Next, or until ctx ends; it returns ctx's error then.
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep waits d, or until ctx ends; it returns ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrTimeout is wrapped by Until when the condition did not hold in time.
var ErrTimeout = errors.New("retry: condition not met in time")

// Until polls cond, from every 2ms up to every 100ms, until it
// reports done, fails, within passes or ctx ends. On a timeout the error
// wraps ErrTimeout and the last error cond returned with done false, if any.
func Until(ctx context.Context, within time.Duration, cond func() (done bool, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	b := Backoff{Min: 2 * time.Millisecond, Max: 100 * time.Millisecond}
	var last error
	for {
		done, err := cond()
		if done {
			return err
		}
		if err != nil {
			last = err
		}
		if Sleep(ctx, b.Next()) != nil {
			if last != nil {
				return fmt.Errorf("%w within %s: %w", ErrTimeout, within, last)
			}
			return fmt.Errorf("%w within %s", ErrTimeout, within)
		}
	}
}
