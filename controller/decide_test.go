package controller

import (
	"testing"

	"github.com/switchyard/switchyard/zkstate"
)

func TestDecide(t *testing.T) {
	rec := func(id int64, phase zkstate.Phase, target, goal, active zkstate.Color) *zkstate.Switch {
		return &zkstate.Switch{ID: id, Phase: phase, Target: target, Goal: goal, Active: active}
	}
	for _, tc := range []struct {
		desc string
		obs  Observed
		want Decision
	}{
		{
			desc: "a first flip with no record starts a switch to the color asked for",
			obs:  Observed{Asked: zkstate.Green, Zxid: 7, Ready: true},
			want: Decision{Action: Switch, Target: zkstate.Green, ID: 7},
		},
		{
			desc: "a flip away from the live color switches to what was asked, never to the other color by toggling",
			obs:  Observed{Asked: zkstate.Green, Zxid: 9, Record: rec(7, zkstate.PhaseDone, zkstate.Blue, zkstate.Blue, zkstate.Blue), Ready: true},
			want: Decision{Action: Switch, Target: zkstate.Green, ID: 9},
		},
		{
			desc: "a new leader finds a switch in progress and resumes it toward the same target",
			obs:  Observed{Asked: zkstate.Green, Zxid: 9, Record: rec(9, zkstate.PhaseSwitching, zkstate.Green, zkstate.Green, zkstate.Blue), Ready: true},
			want: Decision{Action: Switch, Target: zkstate.Green, ID: 9},
		},
		{
			desc: "a new leader with the record already done for the asked color only maintains",
			obs:  Observed{Asked: zkstate.Green, Zxid: 9, Record: rec(9, zkstate.PhaseDone, zkstate.Green, zkstate.Green, zkstate.Green), Ready: true},
			want: Decision{Action: Maintain, Target: zkstate.Green, ID: 9},
		},
		{
			desc: "the live color written again is acknowledged as done",
			obs:  Observed{Asked: zkstate.Blue, Zxid: 12, Record: rec(9, zkstate.PhaseDone, zkstate.Blue, zkstate.Blue, zkstate.Blue), Ready: true},
			want: Decision{Action: Acknowledge, Target: zkstate.Blue, ID: 12},
		},
		{
			desc: "a value that is not a color is refused once",
			obs:  Observed{Zxid: 12, Record: rec(9, zkstate.PhaseDone, zkstate.Blue, zkstate.Blue, zkstate.Blue), Ready: true},
			want: Decision{Action: RefuseValue, ID: 12},
		},
		{
			desc: "after refusing a bad value the leader keeps the last valid goal",
			obs:  Observed{Zxid: 12, Record: rec(12, zkstate.PhaseRefused, "\"purple\"", zkstate.Blue, zkstate.Blue), Ready: true},
			want: Decision{Action: Maintain, Target: zkstate.Blue, ID: 12},
		},
		{
			desc: "after a bad value written during a switch, the switch stays wanted and goes on once a target is healthy",
			obs:  Observed{Zxid: 12, Record: rec(12, zkstate.PhaseRefused, "\"purple\"", zkstate.Green, zkstate.Blue), Ready: true},
			want: Decision{Action: RetryRefused, Target: zkstate.Green, ID: 12},
		},
		{
			desc: "a bad value before any valid color leaves nothing to do",
			obs:  Observed{Zxid: 3, Record: rec(3, zkstate.PhaseRefused, "\"\"", "", ""), Ready: true},
			want: Decision{Action: Wait, ID: 3},
		},
		{
			desc: "a refused switch stays wanted and is retried",
			obs:  Observed{Asked: zkstate.Green, Zxid: 9, Record: rec(9, zkstate.PhaseRefused, zkstate.Green, zkstate.Green, zkstate.Blue), Ready: true},
			want: Decision{Action: RetryRefused, Target: zkstate.Green, ID: 9},
		},
		{
			desc: "a flip back to the live color after a refusal acknowledges it",
			obs:  Observed{Asked: zkstate.Blue, Zxid: 11, Record: rec(9, zkstate.PhaseRefused, zkstate.Green, zkstate.Green, zkstate.Blue), Ready: true},
			want: Decision{Action: Acknowledge, Target: zkstate.Blue, ID: 11},
		},
		{
			desc: "a switch superseded mid-way by the other color starts a switch to the newest target",
			obs:  Observed{Asked: zkstate.Blue, Zxid: 11, Record: rec(9, zkstate.PhaseSwitching, zkstate.Green, zkstate.Green, zkstate.Blue), Ready: true},
			want: Decision{Action: Switch, Target: zkstate.Blue, ID: 11},
		},
		{
			desc: "a registry warming up after a restart drives nothing",
			obs:  Observed{Asked: zkstate.Green, Zxid: 9, Record: rec(7, zkstate.PhaseDone, zkstate.Blue, zkstate.Blue, zkstate.Blue), Ready: false},
			want: Decision{Action: Wait, Target: zkstate.Green, ID: 9},
		},
		{
			desc: "a bad value is refused even while the registry warms up",
			obs:  Observed{Zxid: 12, Record: rec(9, zkstate.PhaseDone, zkstate.Blue, zkstate.Blue, zkstate.Blue), Ready: false},
			want: Decision{Action: RefuseValue, ID: 12},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := Decide(tc.obs); got != tc.want {
				t.Fatalf("Decide = %+v (%s); want %+v (%s)", got, got.Action, tc.want, tc.want.Action)
			}
		})
	}
}

func TestActionNames(t *testing.T) {
	for a := Wait; a <= Switch; a++ {
		if s := a.String(); s == "" || s[0] == 'A' {
			t.Errorf("action %d has no name: %q", int(a), s)
		}
	}
}
