package sdk

import (
	"context"
	"sync"

	"github.com/switchyard/switchyard/registry"
)

// States tells the host program the instance's status: the status the
// registry last confirmed at once, then each status the registry confirms
// after a change (UP on the controller's instruction, OUT_OF_SERVICE on
// its instruction or at a drain, DOWN while Health fails). It is how a
// program that is not only an HTTP server learns when to take work, for
// instance to start or stop consuming a queue.
//
// A reader that falls behind gets the newest status, never a backlog: the
// channel holds one value, and a newer status replaces one not yet read.
// The channel closes when ctx ends; a status published before that is
// still delivered.
func (i *Instance) States(ctx context.Context) <-chan registry.Status {
	ch := make(chan registry.Status, 1)
	i.states.add(ch)
	go func() {
		<-ctx.Done()
		i.states.remove(ch)
	}()
	return ch
}

// watchers are the channels States returned. Publishing under one lock
// keeps every reader's sequence in the order the registry confirmed.
type watchers struct {
	mu   sync.Mutex
	last registry.Status // what the instance starts as until published
	chs  map[chan registry.Status]struct{}
}

// add registers ch and gives it the status last published to start from.
func (w *watchers) add(ch chan registry.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.chs == nil {
		w.chs = map[chan registry.Status]struct{}{}
	}
	w.chs[ch] = struct{}{}
	ch <- w.last
}

func (w *watchers) remove(ch chan registry.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.chs[ch]; ok {
		delete(w.chs, ch)
		close(ch)
	}
}

// publish sends st to every reader when it differs from the status last
// published; a value still unread is replaced, so publish never blocks.
func (w *watchers) publish(st registry.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st == w.last {
		return
	}
	w.last = st
	for ch := range w.chs {
		select {
		case ch <- st:
		default:
			// Only readers take values out, and publishers hold the lock,
			// so after taking the stale one out the send cannot block.
			select {
			case <-ch:
			default:
			}
			ch <- st
		}
	}
}
