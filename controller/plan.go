package controller

import (
	"sort"

	"github.com/switchyard/switchyard/registry"
)

// Member is an instance as the controller sees it: announced in ZooKeeper
// under its color, joined with its registry status.
type Member struct {
	ID         string
	Service    string
	Color      string
	Address    string
	Port       int
	Version    string
	Status     registry.Status // "" when not registered
	Registered bool
}

// Plan lists what moves the service set to target: the target color's
// registered instances that are not UP yet, to bring UP first, then the
// other instances that are not OUT_OF_SERVICE, to take out after. A DOWN
// or STARTING standby instance is taken out too: with a registry that runs
// health checks (Consul), it would otherwise turn UP on recovery, in the
// wrong color. Both lists are ordered by service and id so every leader
// walks them the same way.
func Plan(target string, members []Member) (ups, outs []Member) {
	for _, m := range members {
		switch {
		case !m.Registered:
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

// upCount counts, per service, the instances of color that are UP.
func upCount(members []Member, color string) map[string]int {
	n := map[string]int{}
	for _, m := range members {
		if m.Registered && m.Color == color && m.Status == registry.StatusUp {
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
