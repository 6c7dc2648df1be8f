package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseFleetSizes(t *testing.T) {
	for _, tc := range []struct {
		desc, in string
		want     []FleetSize
		err      string
	}{
		{desc: "sizes in order", in: "1000/10, 10000/100", want: []FleetSize{{1000, 10}, {10000, 100}}},
		{desc: "one blue and one green per service", in: "20/10", want: []FleetSize{{20, 10}}},
		{desc: "no services", in: "1000", err: "want INSTANCES/SERVICES"},
		{desc: "not a number", in: "many/10", err: "want INSTANCES/SERVICES"},
		{desc: "colors of a service would differ", in: "1010/10", err: "multiple of twice the services"},
		{desc: "fewer instances than services", in: "10/10", err: "multiple of twice the services"},
		{desc: "zero services", in: "10/0", err: "1 to 1000 services"},
		{desc: "more instances than loopback ports", in: "40000/100", err: "at most 30000"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ParseFleetSizes(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || got != nil {
					t.Fatalf("ParseFleetSizes(%q) = %v, %v; want no sizes and an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("ParseFleetSizes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("ParseFleetSizes(%q) = %v; want %v", tc.in, got, tc.want)
				}
			}
		})
	}
}

func TestAppliedLogKeepsChangesAndFindsTheFirstCoveringPoll(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	l := appliedLog{}
	l.note(t0, map[string]uint64{"a": 5, "b": 5})
	l.note(t0.Add(time.Second), map[string]uint64{"a": 5, "b": 7})
	l.note(t0.Add(2*time.Second), map[string]uint64{"a": 9, "b": 7})
	if len(l["a"]) != 2 || len(l["b"]) != 2 {
		t.Fatalf("log keeps a reading that did not change: %+v", l)
	}
	for _, tc := range []struct {
		service string
		want    uint64
		at      time.Time
		ok      bool
	}{
		{"a", 5, t0, true},
		{"a", 6, t0.Add(2 * time.Second), true}, // a later index covers an earlier one
		{"b", 7, t0.Add(time.Second), true},
		{"b", 8, time.Time{}, false},
		{"c", 1, time.Time{}, false},
	} {
		at, ok := l.firstAt(tc.service, tc.want)
		if ok != tc.ok || !at.Equal(tc.at) {
			t.Errorf("firstAt(%s, %d) = %s, %v; want %s, %v", tc.service, tc.want, at, ok, tc.at, tc.ok)
		}
	}
}

func TestFleetMarkdown(t *testing.T) {
	done := &FleetRow{FleetSize: FleetSize{1000, 10}, Gateways: 20, Switch: 6111 * time.Millisecond, Total: 6172 * time.Millisecond,
		Pairs: 200, Propagation: Dist{200, 5071 * time.Millisecond, 6173 * time.Millisecond, 6174 * time.Millisecond},
		Lag: Dist{200, 99 * time.Millisecond, 383 * time.Millisecond, 626 * time.Millisecond}, Probes: 200, ProbesNew: 200,
		Wall: 2 * time.Second, CPU: map[string]time.Duration{roleLeader: time.Second, roleGateways: 2 * time.Second}, GatewayMax: 260 * time.Millisecond,
		Busy: 1.9, Idle: map[string]float64{roleRegistry: 0.25}, IdleBusy: 0.5,
		Mem: map[string]Mem{roleGateways: {RSS: 20 << 20}}, GatewayMem: Mem{RSS: 1 << 20},
		FDs: map[string]int{roleLeader: 1013, roleFakes: 1319}, Waiters: 20, Beats: 16000}
	unfinished := &FleetRow{FleetSize: FleetSize{10000, 100}, Gateways: 20, Unfinished: "context deadline exceeded", StepsDone: 2500}
	got, err := (&Report{Date: time.Now(), Machine: Machine{CPUs: 2}, Fleet: []*FleetRow{done, unfinished}}).Markdown()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"and 20 real `switchyard gateway` processes",
		"| 1000 (10) | 20 | 6111 ms | 6172 ms | 5071 ms | 6173 ms | 6174 ms | 99.0 ms | 383 ms | 626 ms | 0 of 200 | 200 of 200 |",
		"| 10000 (100) | 20 | **not done**: 2500 of 10000 steps |",
		"| 1000 | 2000 ms | 1.00 s (0.50) | 0.00 s (0.00) | 0.00 s (0.00) | 2.00 s (1.00) | 0.26 s | 0.00 s (0.00) | 75% | 1.90 |",
		"| 1000 | 0.00 / 0.25 / 0.00 / 0.00 / 0.00 (0.50) | 0.0 MB / 0.0 MB / 0.0 MB | 20.0 MB / 1.0 MB | 1013 / 0 / 1319 | 20 | 0 | 16000 (0) | 0 |",
		"- 10000 instances: the switch did not finish within the limit (context deadline exceeded); its record counts 2500 of 10000 steps",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("the report lacks\n%s\n--- report:\n%s", want, got)
		}
	}
}

func TestRollUpSumsGatewaysAndLeavesTheStandbyOut(t *testing.T) {
	r := &FleetRow{}
	s := time.Second
	r.rollUp(map[string]time.Duration{"gateway-1": 2 * s, "gateway-2": 3 * s, "controller-1": s, "controller-2": 7 * s, machine: 4 * s, roleRegistry: s},
		2*s, map[string]time.Duration{"gateway-1": s, machine: 2 * s}, 4*s, "controller-1")
	if r.CPU[roleGateways] != 5*s || r.GatewayMax != 3*s || r.CPU[roleLeader] != s || r.CPU[roleRegistry] != s || len(r.CPU) != 3 {
		t.Errorf("CPU by role = %v, busiest gateway %s; want gateways 5s (busiest 3s), leader 1s, registry 1s and nothing else", r.CPU, r.GatewayMax)
	}
	if r.Busy != 2 || r.IdleBusy != 0.5 || r.Idle[roleGateways] != 0.25 {
		t.Errorf("busy %.2f, before %.2f, gateways before %.2f cores; want 2, 0.5, 0.25", r.Busy, r.IdleBusy, r.Idle[roleGateways])
	}
}
