package controller

import (
	"testing"
	"time"
)

func TestSelfPreservation(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type pass struct {
		nodes   int
		at      time.Duration
		holding bool
	}
	for _, tc := range []struct {
		desc   string
		passes []pass
	}{
		{desc: "instances leaving one by one never hold", passes: []pass{
			{nodes: 4}, {nodes: 3}, {nodes: 2}, {nodes: 1}, {nodes: 0}}},
		{desc: "more than half vanishing at once holds until they are back", passes: []pass{
			{nodes: 4}, {nodes: 1, holding: true}, {nodes: 1, at: time.Second, holding: true}, {nodes: 2, at: 2 * time.Second}, {nodes: 4, at: 3 * time.Second}}},
		{desc: "the hold ends when its time is up, and the smaller fleet is accepted", passes: []pass{
			{nodes: 6}, {nodes: 0, holding: true}, {nodes: 0, at: 29 * time.Second, holding: true}, {nodes: 0, at: 31 * time.Second}, {nodes: 0, at: 32 * time.Second}}},
		{desc: "exactly half vanishing does not hold", passes: []pass{
			{nodes: 4}, {nodes: 2}}},
		{desc: "a single instance leaving never holds", passes: []pass{
			{nodes: 1}, {nodes: 0}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var p preservation
			for i, ps := range tc.passes {
				if holding, _ := p.hold(ps.nodes, t0.Add(ps.at), 30*time.Second); holding != ps.holding {
					t.Fatalf("pass %d with %d nodes: holding %v, want %v", i, ps.nodes, holding, ps.holding)
				}
			}
		})
	}
}
