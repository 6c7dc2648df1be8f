package consul

import "testing"

func TestASignatureChangesWithEveryChangeToAServicesChecks(t *testing.T) {
	base := []checkRef{
		{Node: "n1", ModifyIndex: 5},                                      // n1's serfHealth
		{Node: "n2", ModifyIndex: 6},                                      // n2's serfHealth
		{Node: "n1", ServiceID: "a-1", ServiceName: "a", ModifyIndex: 10}, // a-1's health
		{Node: "n1", ServiceID: "a-1", ServiceName: "a", ModifyIndex: 12}, // a-1's maintenance
		{Node: "n2", ServiceID: "a-2", ServiceName: "a", ModifyIndex: 11},
		{Node: "n2", ServiceID: "b-1", ServiceName: "b", ModifyIndex: 9},
	}
	was := signatures(base)
	with := func(change func([]checkRef) []checkRef) map[string]signature {
		return signatures(change(append([]checkRef(nil), base...)))
	}
	for _, tc := range []struct {
		desc    string
		change  func([]checkRef) []checkRef
		changed map[string]bool
	}{
		{"nothing", func(c []checkRef) []checkRef { return c }, nil},
		{"a check modified", func(c []checkRef) []checkRef { c[2].ModifyIndex = 20; return c }, map[string]bool{"a": true}},
		{"the check with the highest index deleted", func(c []checkRef) []checkRef { return append(c[:3], c[4:]...) }, map[string]bool{"a": true}},
		{"a check added", func(c []checkRef) []checkRef {
			return append(c, checkRef{Node: "n2", ServiceID: "b-2", ServiceName: "b", ModifyIndex: 20})
		}, map[string]bool{"b": true}},
		{"a check deleted and another added", func(c []checkRef) []checkRef {
			return append(c[:5], checkRef{Node: "n2", ServiceID: "b-2", ServiceName: "b", ModifyIndex: 20})
		}, map[string]bool{"b": true}},
		{"the last check deleted", func(c []checkRef) []checkRef { return c[:5] }, map[string]bool{"b": true}},
		{"a node's check modified changes every service on it", func(c []checkRef) []checkRef { c[1].ModifyIndex = 20; return c }, map[string]bool{"a": true, "b": true}},
		{"a node's maintenance added", func(c []checkRef) []checkRef {
			return append(c, checkRef{Node: "n1", ModifyIndex: 20})
		}, map[string]bool{"a": true}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			now := with(tc.change)
			for _, svc := range []string{"a", "b"} {
				if changed := now[svc] != was[svc]; changed != tc.changed[svc] {
					t.Errorf("%s changed: %v, want %v (%+v, was %+v)", svc, changed, tc.changed[svc], now[svc], was[svc])
				}
			}
		})
	}
}
