package controller

import (
	"slices"
	"testing"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

func m(id, svc string, color zkstate.Color, st registry.Status) Member {
	return Member{ID: id, Service: svc, Color: color, Status: st}
}

func ids(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestPlan(t *testing.T) {
	up, out := registry.StatusUp, registry.StatusOutOfService
	for _, tc := range []struct {
		desc     string
		target   zkstate.Color
		members  []Member
		ups      []string
		outs     []string
		unserved []string
	}{
		{
			desc:   "blue to green brings green up first, then takes blue out, each in id order",
			target: "green",
			members: []Member{
				m("b2", "hello", "blue", up), m("g2", "hello", "green", out),
				m("b1", "hello", "blue", up), m("g1", "hello", "green", out),
			},
			ups: []string{"g1", "g2"}, outs: []string{"b1", "b2"},
		},
		{
			desc:    "a settled system needs nothing",
			target:  "blue",
			members: []Member{m("b1", "hello", "blue", up), m("g1", "hello", "green", out)},
		},
		{
			desc:    "no target instance at all leaves the service unserved",
			target:  "green",
			members: []Member{m("b1", "hello", "blue", up), m("b2", "hello", "blue", up)},
			outs:    []string{"b1", "b2"}, unserved: []string{"hello"},
		},
		{
			desc:   "a DOWN target instance is brought up only through the health gate",
			target: "green",
			members: []Member{
				m("b1", "hello", "blue", up), m("g1", "hello", "green", registry.StatusDown),
			},
			ups: []string{"g1"}, outs: []string{"b1"},
		},
		{
			desc:   "services are planned together, ordered by service",
			target: "green",
			members: []Member{
				m("x", "web", "blue", up), m("y", "web", "green", out),
				m("a", "api", "blue", up), m("c", "api", "green", up),
			},
			ups: []string{"y"}, outs: []string{"a", "x"},
		},
		{
			desc:   "DOWN and STARTING standby instances are taken out, so they cannot recover into UP",
			target: "green",
			members: []Member{
				m("b1", "hello", "blue", registry.StatusDown), m("b2", "hello", "blue", registry.StatusStarting),
				m("g1", "hello", "green", up),
			},
			outs: []string{"b1", "b2"},
		},
		{
			desc:    "a DOWN standby instance does not make an unserved service",
			target:  "green",
			members: []Member{m("b1", "hello", "blue", registry.StatusDown)},
			outs:    []string{"b1"},
		},
		{
			desc:    "a stray UP instance of the standby color is taken out",
			target:  "blue",
			members: []Member{m("b1", "hello", "blue", up), m("g1", "hello", "green", up)},
			outs:    []string{"g1"},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ups, outs := Plan(tc.target, tc.members)
			if got := ids(ups); !slices.Equal(got, tc.ups) {
				t.Errorf("ups = %v, want %v", got, tc.ups)
			}
			if got := ids(outs); !slices.Equal(got, tc.outs) {
				t.Errorf("outs = %v, want %v", got, tc.outs)
			}
			// The refusal check counts target instances that are or will be UP.
			targetUp := upCount(tc.members, tc.target)
			for _, u := range ups {
				targetUp[u.Service]++
			}
			if got := unservedServices(outs, targetUp); !slices.Equal(got, tc.unserved) {
				t.Errorf("unserved = %v, want %v", got, tc.unserved)
			}
		})
	}
}
