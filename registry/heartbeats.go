package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// heartbeats coalesces a Client's heartbeats as a database's group commit
// does: the first goes out at once, and those that callers send while a
// request is on the wire queue up and then go out together, in one
// request per MaxHeartbeatBatch ids. A process with one instance never has
// two heartbeats at once and sends each alone, as ever. A process whose
// instances share one Client (the SDK beats them at the same moment)
// sends a few requests per interval instead of one per instance: the
// registry's CPU goes on requests, not on leases. Nothing waits longer
// than the request already on the wire.
type heartbeats struct {
	c *Client

	mu      sync.Mutex
	sending bool        // a request is on the wire; new heartbeats queue
	queue   []*beat     // waiting for the request after it
	old     atomic.Bool // the registry predates batches: send each alone
}

type beat struct {
	ctx  context.Context
	id   string
	done chan error // buffered: the sender never waits for the caller
}

// maxBatchesInFlight caps the batch requests of one Client at once.
const maxBatchesInFlight = 4

// errNoBatches asks a queued caller to send its heartbeat alone.
var errNoBatches = errors.New("registry: the registry does not take heartbeat batches")

// beat renews id's lease, alone or in the next batch.
func (h *heartbeats) beat(ctx context.Context, id string) error {
	// An instance token renews one instance, which has nothing to batch
	// with; an id too long to be registered must not fill a batch.
	if h.old.Load() || !h.c.BatchesHeartbeats() || len(id) > MaxNameLen {
		return h.c.heartbeat(ctx, id)
	}
	h.mu.Lock()
	if !h.sending {
		h.sending = true
		h.mu.Unlock()
		err := h.c.heartbeat(ctx, id)
		h.next()
		return err
	}
	b := &beat{ctx: ctx, id: id, done: make(chan error, 1)}
	h.queue = append(h.queue, b)
	h.mu.Unlock()
	select {
	case err := <-b.done:
		if errors.Is(err, errNoBatches) {
			return h.c.heartbeat(ctx, id)
		}
		return err
	case <-ctx.Done():
		// The batch may still carry it; a late renewal does no harm.
		return ctx.Err()
	}
}

// next sends what queued up during the request that just ended, or ends
// the sending.
func (h *heartbeats) next() {
	h.mu.Lock()
	q := h.queue
	h.queue = nil
	h.sending = len(q) > 0
	h.mu.Unlock()
	if len(q) == 0 {
		return
	}
	go func() {
		// A few requests at a time keep a large queue within the
		// connections the client keeps alive.
		var wg sync.WaitGroup
		slots := make(chan struct{}, maxBatchesInFlight)
		for chunk := range slices.Chunk(q, MaxHeartbeatBatch) {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				h.send(chunk)
			})
		}
		wg.Wait()
		h.next()
	}()
}

// send renews the leases of q in one request and tells each caller its
// outcome.
func (h *heartbeats) send(q []*beat) {
	// Callers that gave up have had their answer.
	q = slices.DeleteFunc(q, func(b *beat) bool { return b.ctx.Err() != nil })
	switch len(q) {
	case 0:
		return
	case 1:
		q[0].done <- h.c.heartbeat(q[0].ctx, q[0].id)
		return
	}
	// The request is every caller's: it may take as long as the most
	// patient of them waits, and no single caller's cancel ends it.
	var deadline time.Time
	ids := make([]string, len(q))
	for i, b := range q {
		ids[i] = b.id
		d, ok := b.ctx.Deadline()
		if !ok {
			d = time.Now().Add(10 * time.Second) // as do's default
		}
		if d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	missing, err := h.c.heartbeatBatch(ctx, ids)
	var se *statusError
	if errors.As(err, &se) && (se.code == http.StatusNotFound || se.code == http.StatusMethodNotAllowed) {
		// No registry answers 404 to a batch: this one has no such route.
		h.old.Store(true)
		err = errNoBatches
	}
	for _, b := range q {
		switch {
		case err != nil:
			b.done <- err
		case slices.Contains(missing, b.id):
			b.done <- fmt.Errorf("%w: %s", ErrNotFound, b.id)
		default:
			b.done <- nil
		}
	}
}
