package bench

import (
	"strings"
	"testing"
	"time"
)

func TestRoutesTableAndGoal(t *testing.T) {
	builtin10 := &RouteRow{Registry: "built-in", Routes: 10, Instances: 15, AppliedServices: 10, Applied: 9 * time.Millisecond,
		Mem: Mem{RSS: 14 << 20, HWM: 14 << 20}, Goroutines: 19, Heap: 2 << 20, Change: 5 * time.Millisecond}
	consul10 := &RouteRow{Registry: "Consul", Routes: 10, Instances: 15, AppliedServices: 10, Mem: Mem{RSS: 20 << 20, HWM: 20 << 20}}
	r := &Report{Date: time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC), Routes: []*RouteRow{
		builtin10,
		{Registry: "built-in", Routes: 1000, Instances: 1500, AppliedServices: 1000, Applied: 53 * time.Millisecond,
			Mem: Mem{RSS: 14<<20 + 990*5<<10, HWM: 41 << 20}, Goroutines: 19, Heap: 3 << 20, Change: 10 * time.Millisecond, base: builtin10},
		consul10,
		{Registry: "Consul", Routes: 1000, Instances: 1500, AppliedServices: 200, Applied: 3 * time.Minute,
			Mem: Mem{RSS: 120 << 20, HWM: 130 << 20}, Goroutines: 800, base: consul10},
	}}
	got, err := r.Markdown()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| built-in | 10 (15) | 9.00 ms | 14.0 MB | 14.0 MB | — | 19 | 2.0 MB | 5.00 ms |",
		"| built-in | 1000 (1500) | 53.0 ms | 18.8 MB | 41.0 MB | 5.0 KB | 19 | 3.0 MB | 10.0 ms |",
		"| Consul | 1000 (1500) | only 200 services in 180.0 s | 120.0 MB | 130.0 MB | 103.4 KB | 800 | 0.0 MB | — |",
		// Judged on the peak, which is over the goal here.
		"| gateway ≤ 40 MB at 1,000 routes | 18.8 MB (peak 41.0 MB) | **missed** |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the report lacks\n%s\n--- report:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "at 1,000 routes"); n != 1 {
		t.Errorf("%d goal rows for 1,000 routes, want 1: the Consul row is not the goal's", n)
	}
}
