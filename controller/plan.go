package controller

import (
	"fmt"
	"sort"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// Action is what the leader does next on one reconcile pass.
type Action int

// The actions of a reconcile pass, as Decide chooses them.
const (
	// Wait: nothing valid was ever asked for, or the registry is warming
	// up after a restart and its view must not drive anything yet.
	Wait Action = iota
	// RefuseValue: /active_color holds something other than a color. The
	// refusal is recorded and routing stays as it is.
	RefuseValue
	// Acknowledge: the active color was written again; the write is
	// recorded as done, then the steady state is kept.
	Acknowledge
	// Maintain: the goal is live; keep its instances UP and the others OUT.
	Maintain
	// RetryRefused: a refused switch stays wanted; it goes ahead once a
	// target instance is healthy, and until then the old color is kept.
	RetryRefused
	// Switch: start a switch to the target, or resume the one in progress.
	Switch
)

var actionNames = [...]string{Wait: "wait", RefuseValue: "refuse-value", Acknowledge: "acknowledge",
	Maintain: "maintain", RetryRefused: "retry-refused", Switch: "switch"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Observed is what a reconcile pass reads before it decides.
type Observed struct {
	// Asked is /active_color when it holds a color, "" when it does not.
	Asked zkstate.Color
	// Zxid is the zxid of the last write to /active_color.
	Zxid int64
	// Record is the switch record, nil when there is none or it is unreadable.
	Record *zkstate.Switch
	// Ready is false while the registry warms up after a restart.
	Ready bool
}

// Decision is the next action and the switch it is about.
type Decision struct {
	Action Action
	Target zkstate.Color // the color to serve
	ID     int64         // the /active_color write the action answers
}

// Decide chooses the next action. It never toggles: the target is always
// what /active_color asks for, or the last valid goal when it holds a bad
// value, so a new leader or a retry can only finish what was asked.
func Decide(o Observed) Decision {
	rec := o.Record
	if o.Asked == "" && (rec == nil || rec.ID < o.Zxid) {
		return Decision{Action: RefuseValue, ID: o.Zxid}
	}
	goal, id := o.Asked, o.Zxid
	if goal == "" {
		goal, id = rec.GoalColor(), rec.ID
	}
	if goal == "" || !o.Ready {
		return Decision{Action: Wait, Target: goal, ID: id}
	}
	switch {
	case rec != nil && rec.Active == goal && rec.Phase != zkstate.PhaseSwitching:
		if o.Asked != "" && rec.ID < o.Zxid {
			return Decision{Action: Acknowledge, Target: goal, ID: id}
		}
		return Decision{Action: Maintain, Target: goal, ID: rec.ID}
	case rec != nil && rec.Phase == zkstate.PhaseRefused && rec.Goal == goal && rec.ID >= o.Zxid:
		return Decision{Action: RetryRefused, Target: goal, ID: rec.ID}
	}
	return Decision{Action: Switch, Target: goal, ID: id}
}

// Plan lists what moves the members to target: the target color's
// instances that are not UP yet, to bring UP first, then the other
// instances that are not OUT_OF_SERVICE, to take out after. Members are
// only instances whose node and registration agree (zkstate.Join). A DOWN
// or STARTING standby instance is taken out too: with a registry that runs
// health checks (Consul), it would otherwise turn UP on recovery, in the
// wrong color. Both lists are ordered by service and id so every leader
// walks them the same way.
func Plan(target zkstate.Color, members []Member) (ups, outs []Member) {
	for _, m := range members {
		switch {
		case m.Color == target && m.Status != registry.StatusUp:
			ups = append(ups, m)
		case m.Color != target && m.Status != registry.StatusOutOfService:
			outs = append(outs, m)
		}
	}
	byServiceID := func(s []Member) func(i, j int) bool {
		return func(i, j int) bool {
			if s[i].Service != s[j].Service {
				return s[i].Service < s[j].Service
			}
			return s[i].ID < s[j].ID
		}
	}
	sort.Slice(ups, byServiceID(ups))
	sort.Slice(outs, byServiceID(outs))
	return ups, outs
}

// upCount counts, per service, the instances of color that the registry
// has UP. Only members count: a quarantined node never satisfies a guard.
func upCount(members []Member, color zkstate.Color) map[string]int {
	n := map[string]int{}
	for _, m := range members {
		if m.Color == color && m.Status == registry.StatusUp {
			n[m.Service]++
		}
	}
	return n
}

// unservedServices lists the services that have UP instances outside the
// target but would have none left once those are taken out: taking them
// out would leave zero instances UP.
func unservedServices(outs []Member, targetUp map[string]int) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range outs {
		if m.Status == registry.StatusUp && targetUp[m.Service] == 0 && !seen[m.Service] {
			seen[m.Service] = true
			out = append(out, m.Service)
		}
	}
	sort.Strings(out)
	return out
}
