package controller

import (
	"sync"
)

// Batches of a switch. A switch brings the target UP as a canary and then
// in growing batches, as a Kubernetes rolling update with maxSurge or an
// Argo Rollouts canary does: the first instance alone (health-checked,
// made UP and confirmed by the gateways before anything else), then 2, 4,
// 8 … at once, up to MaxBatch. Only once every target instance the plan
// counts is UP and the gateways confirmed it, the old color goes out in
// batches of MaxBatch: each is as safe as one instruction, since an OUT
// of the old color never lowers the target's UP count the last-UP guard
// reads.

// DefaultMaxBatch is the largest batch when Config.MaxBatch is unset,
// chosen by measurement (BENCHMARKS.md, scale: 500 blue → 500 green on two
// shared cores): a cap of 16 took 1.7 s, 64 took 0.67–1.1 s, 128 took
// 0.75–0.77 s and 256 0.54–0.89 s. Past 128 the switch hardly shortens,
// while the registry and the gateways absorb bursts twice as large.
const DefaultMaxBatch = 128

// batcher sizes the batches of one phase.
type batcher struct {
	size, max int
}

// upBatcher starts with a canary of one. Its batches double once an
// instance of a batch came UP; a batch in which none did is not grown, so
// the next instance is the canary again.
func upBatcher(maxBatch int) *batcher { return &batcher{size: 1, max: max(maxBatch, 1)} }

// outBatcher takes the old color out maxBatch at a time: the target is UP
// and confirmed by then, and each OUT keeps the last-UP guard.
func outBatcher(maxBatch int) *batcher {
	maxBatch = max(maxBatch, 1)
	return &batcher{size: maxBatch, max: maxBatch}
}

// take splits the next batch off rest.
func (b *batcher) take(rest []Member) (batch, left []Member) {
	n := min(b.size, len(rest))
	return rest[:n], rest[n:]
}

// grow doubles the next batch, up to max, after a batch in which something
// succeeded.
func (b *batcher) grow(succeeded bool) {
	if succeeded {
		b.size = min(2*b.size, b.max)
	}
}

// batchSizes is the sequence of batches for n instructions that all
// succeed: what `switchyard history` shows for a clean switch.
func batchSizes(b *batcher, n int) []int {
	var out []int
	for n > 0 {
		k := min(b.size, n)
		out = append(out, k)
		n -= k
		b.grow(true)
	}
	return out
}

// inParallel runs do for each member of batch at once and returns the
// results in batch order. Batches are at most MaxBatch long, which bounds
// the goroutines and the connections to instances. It returns only when
// every call has: no instruction of a batch is still on its way when the
// caller moves on, ends the pass, or gives way to a newer target, so the
// next pass plans from a registry no instruction of this one can still
// change (the model's assumption E1, as for a single instruction).
func inParallel[R any](batch []Member, do func(Member) R) []R {
	out := make([]R, len(batch))
	if len(batch) == 1 {
		out[0] = do(batch[0])
		return out
	}
	var wg sync.WaitGroup
	for i, m := range batch {
		wg.Go(func() { out[i] = do(m) })
	}
	wg.Wait()
	return out
}
