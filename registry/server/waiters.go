package server

import (
	"fmt"
	"sync"
)

// waiters counts the blocking queries held, in total and per client, so
// that no client, authenticated or not, can make the registry hold an
// unbounded number of them.
type waiters struct {
	max, perClient int

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

func newWaiters(max, perClient int) *waiters {
	return &waiters{max: max, perClient: perClient, byClient: map[string]int{}}
}

// acquire takes a place for client, or says which cap is reached.
func (w *waiters) acquire(client string) (release func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.total >= w.max:
		return nil, fmt.Errorf("registry holds its maximum of %d blocking queries; retry", w.max)
	case w.byClient[client] >= w.perClient:
		return nil, fmt.Errorf("client %s holds its maximum of %d blocking queries; retry", client, w.perClient)
	}
	w.total++
	w.byClient[client]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.total--
		if w.byClient[client]--; w.byClient[client] == 0 {
			delete(w.byClient, client)
		}
	}, nil
}

// held is how many blocking queries are held now.
func (w *waiters) held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.total
}
