package registry

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
)

// Lister is the part of a Backend a watch needs.
type Lister interface {
	Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (Snapshot, error)
}

// AllLister is a Lister that may say its view of all services (service
// "") costs about what one service's does: one blocking query on one
// index, however many services there are. A watcher of many services
// then holds one Watch of that view instead of one per service, each of
// which would hold a connection of its own.
type AllLister interface {
	Lister
	ListsAllAtOnce() bool
}

// ListsAllAtOnce tells whether l's view of all services is one query
// (see AllLister).
func ListsAllAtOnce(l Lister) bool {
	al, ok := l.(AllLister)
	return ok && al.ListsAllAtOnce()
}

// ManyLister is a Lister whose view of all services is one blocking query
// and then a read of each service that changed. That costs a watcher more
// on each change than one service's watch does, but it holds one
// connection, where a watch per service holds one each and a registry
// limits how many one client may hold (Consul's agent: 200 by default).
// A watcher of more than AllAbove services watches that view.
type ManyLister interface {
	Lister
	AllAbove() int
}

// WatchesAll tells whether a watcher of n services holds one watch of all
// services (service "") rather than one per service: always when l lists
// all at once, and past its AllAbove when l is a ManyLister.
func WatchesAll(l Lister, n int) bool {
	if ListsAllAtOnce(l) {
		return true
	}
	ml, ok := l.(ManyLister)
	return ok && n > ml.AllAbove()
}

// WatchOptions tune Watch; the zero value is sensible.
type WatchOptions struct {
	Wait       time.Duration // blocking-query wait; default 30s
	MinBackoff time.Duration // first retry delay after an error; default 50ms
	MaxBackoff time.Duration // retry delay cap; default 5s
	Log        logrus.FieldLogger
}

func (o WatchOptions) withDefaults() WatchOptions {
	if o.Wait <= 0 {
		o.Wait = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	return o
}

// Watch streams service's snapshots ("" for all services) by blocking
// queries. It sends the first snapshot at once and then one per change,
// skipping answers whose index did not move, starting over when the index
// goes backwards, and backing off with a cap while the registry fails. A
// slow reader only ever gets the newest snapshot. The channel closes when
// ctx ends.
func Watch(ctx context.Context, l Lister, service string, o WatchOptions) <-chan Snapshot {
	o = o.withDefaults()
	return follow(ctx, o, service, func(_ Snapshot, index uint64) (Snapshot, error) {
		return l.Instances(ctx, service, index, o.Wait)
	})
}

// watched is what follow needs of what it follows: where an answer
// stands, and what a reader gets in its place when it never got the one
// before (dropped).
type watched[T any] interface {
	at() (index uint64, ready bool, epoch string)
	after(dropped T) T
}

func (s Snapshot) at() (uint64, bool, string) { return s.Index, s.Ready, "" }
func (s Snapshot) after(Snapshot) Snapshot    { return s }

// follow is the loop of Watch and WatchView: ask answers the next T after
// last (the zero T before the first), blocking from index.
func follow[T watched[T]](ctx context.Context, o WatchOptions, service string, ask func(last T, index uint64) (T, error)) <-chan T {
	out := make(chan T, 1)
	go func() {
		defer close(out)
		var last T
		var have, ready bool
		var index uint64
		var epoch string
		backoff := retry.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff}
		for ctx.Err() == nil {
			next, err := ask(last, index)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				wait := backoff.Next()
				o.Log.WithError(err).WithFields(logrus.Fields{"service": service, "retry_in": wait}).
					Warn("registry watch failed; keeping the last view and retrying")
				if retry.Sleep(ctx, wait) != nil {
					return
				}
				continue
			}
			backoff.Reset()
			i, r, e := next.at()
			if have && i == index && r == ready && e == epoch {
				continue
			}
			if i < index {
				o.Log.WithFields(logrus.Fields{"service": service, "was": index, "now": i}).
					Info("registry index went backwards; starting the watch over")
			}
			last, have, index, ready, epoch = next, true, i, r, e
			// Keep only the newest answer for a slow reader, standing in
			// for the one it replaces.
			select {
			case dropped := <-out:
				next = next.after(dropped)
			default:
			}
			out <- next
		}
	}()
	return out
}
