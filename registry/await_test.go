package registry

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// scriptedWatcher answers WatchGateways from a script and records the
// index each call waited from.
type scriptedWatcher struct {
	answers []scripted
	waited  []uint64
}

type scripted struct {
	applied uint64
	index   uint64
	err     error
}

func (s *scriptedWatcher) WatchGateways(_ context.Context, waitIndex uint64, _ time.Duration) ([]GatewayReport, uint64, error) {
	s.waited = append(s.waited, waitIndex)
	a := s.answers[min(len(s.waited), len(s.answers))-1]
	if a.err != nil {
		return nil, 0, a.err
	}
	return []GatewayReport{{ID: "gw", Applied: map[string]uint64{"hello": a.applied}}}, a.index, nil
}

func TestAwaitGatewaysBlocksFromTheIndexItRead(t *testing.T) {
	down := errors.New("registry down")
	for _, tc := range []struct {
		desc    string
		answers []scripted
		want    error
		waited  []uint64
	}{
		{desc: "each read after the first blocks from the index the one before answered",
			answers: []scripted{{applied: 1, index: 10}, {applied: 2, index: 11}, {applied: 5, index: 12}},
			waited:  []uint64{0, 10, 11}},
		{desc: "an index that went back (a registry restarted) is waited from",
			answers: []scripted{{applied: 1, index: 10}, {applied: 1, index: 3}, {applied: 5, index: 4}},
			waited:  []uint64{0, 10, 3}},
		{desc: "a failed read is followed by a plain one",
			answers: []scripted{{applied: 1, index: 10}, {err: down}, {applied: 5, index: 12}},
			waited:  []uint64{0, 10, 0}},
		{desc: "a registry whose index does not move is read again",
			answers: []scripted{{applied: 1}, {applied: 1}, {applied: 5}},
			waited:  []uint64{0, 0, 0}},
		{desc: "reads that keep failing end with the context's error and the read's",
			answers: []scripted{{err: down}}, want: down},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			w := &scriptedWatcher{answers: tc.answers}
			err := AwaitGateways(ctx, w, func(rs []GatewayReport) bool { return rs[0].Applied["hello"] >= 5 })
			if tc.want == nil {
				if err != nil || !slices.Equal(w.waited, tc.waited) {
					t.Fatalf("err %v, waited from %v; want nil, %v", err, w.waited, tc.waited)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v; want %v joined with the deadline", err, tc.want)
			}
		})
	}
}

// refusingWatcher answers reads without an index and refuses blocking
// ones, as a registry past its cap of blocking queries does (429).
type refusingWatcher struct{ reads, refused int }

func (r *refusingWatcher) WatchGateways(_ context.Context, waitIndex uint64, _ time.Duration) ([]GatewayReport, uint64, error) {
	r.reads++
	if waitIndex > 0 {
		r.refused++
		return nil, 0, errors.New("429: registry holds its maximum of blocking queries")
	}
	return []GatewayReport{{ID: "gw", Applied: map[string]uint64{"hello": 1}}}, 10, nil
}

func TestAwaitGatewaysBacksOffFromARegistryThatRefusesToBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	w := &refusingWatcher{}
	err := AwaitGateways(ctx, w, func([]GatewayReport) bool { return false })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline", err)
	}
	// Pauses of 10, 20, 40, 80, 160 ms after each refusal: a handful of
	// reads in 300 ms, where going back to a plain read that succeeds, and
	// starting the pause over, made hundreds.
	if w.refused == 0 || w.reads > 20 {
		t.Fatalf("%d reads (%d refused) in 300 ms; want a few, backing off", w.reads, w.refused)
	}
}
