package zkstate

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/registry"
)

func TestJoin(t *testing.T) {
	node := func(color Color, name, id, addr string, port int) Announced {
		return Announced{Color: color, Name: name, Node: InstanceNode{Service: "hello", ID: id, Address: addr, Port: port}}
	}
	reg := func(id string, color Color, addr string, port int, st registry.Status) registry.Instance {
		return registry.Instance{ID: id, Service: "hello", Color: string(color), Address: addr, Port: port, Status: st}
	}
	b1 := reg("b1", Blue, "127.0.0.1", 1001, registry.StatusUp)
	g1 := reg("g1", Green, "127.0.0.1", 2001, registry.StatusOutOfService)
	for _, tc := range []struct {
		desc        string
		nodes       []Announced
		regs        []registry.Instance
		members     []string
		quarantined map[string]string // node -> a word of the reason
	}{
		{
			desc:    "nodes that agree with their registrations are members",
			nodes:   []Announced{node(Blue, "b1", "b1", "127.0.0.1", 1001), node(Green, "g1", "g1", "127.0.0.1", 2001)},
			regs:    []registry.Instance{b1, g1},
			members: []string{"b1", "g1"},
		},
		{
			desc:        "a planted node that duplicates a live id under the other color quarantines both, so neither is instructed or counted",
			nodes:       []Announced{node(Blue, "b1", "b1", "127.0.0.1", 1001), node(Green, "b1", "b1", "10.9.9.9", 80)},
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"blue/b1": "both blue and green", "green/b1": "both blue and green"},
		},
		{
			desc:        "a node whose address differs from the registration is quarantined: the token never goes there",
			nodes:       []Announced{node(Blue, "b1", "b1", "169.254.169.254", 80)},
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"blue/b1": "points at 169.254.169.254:80"},
		},
		{
			desc: "a node whose control port differs from the registration's is quarantined: instructions never go to a port the registration did not name",
			nodes: func() []Announced {
				a := node(Blue, "b1", "b1", "127.0.0.1", 1001)
				a.Node.ControlPort = 22
				return []Announced{a}
			}(),
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"blue/b1": "control port 22"},
		},
		{
			desc:        "a node without a registration is quarantined",
			nodes:       []Announced{node(Green, "ghost", "ghost", "127.0.0.1", 9)},
			quarantined: map[string]string{"green/ghost": "no registration"},
		},
		{
			desc:        "a node under a color its registration does not have is quarantined",
			nodes:       []Announced{node(Green, "b1", "b1", "127.0.0.1", 1001)},
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"green/b1": "registration says color"},
		},
		{
			desc:        "a node named for one id with data of another is quarantined",
			nodes:       []Announced{node(Blue, "b1", "b2", "127.0.0.1", 1001)},
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"blue/b1": "differs from the id"},
		},
		{
			desc:        "malformed node data is quarantined",
			nodes:       []Announced{{Color: Blue, Name: "b1", Err: errors.New("not JSON")}},
			regs:        []registry.Instance{b1},
			quarantined: map[string]string{"blue/b1": "malformed"},
		},
		{
			desc:        "a node and registration that agree on a metadata address are still refused",
			nodes:       []Announced{node(Blue, "m1", "m1", "169.254.169.254", 80)},
			regs:        []registry.Instance{reg("m1", Blue, "169.254.169.254", 80, registry.StatusUp)},
			quarantined: map[string]string{"blue/m1": "link-local"},
		},
		{
			desc:    "a registration without a node is not a member: the controller only instructs what is announced",
			regs:    []registry.Instance{b1},
			members: nil,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			members, quarantined := Join(tc.nodes, tc.regs, AddressPolicy(true))
			var ids []string
			for _, m := range members {
				ids = append(ids, m.ID)
			}
			if !slices.Equal(ids, tc.members) {
				t.Errorf("members %v; want %v", ids, tc.members)
			}
			if len(quarantined) != len(tc.quarantined) {
				t.Fatalf("quarantined %+v; want %v", quarantined, tc.quarantined)
			}
			for _, q := range quarantined {
				if want, ok := tc.quarantined[q.Node]; !ok || !strings.Contains(q.Reason, want) {
					t.Errorf("quarantined %s because %q; want a reason with %q", q.Node, q.Reason, want)
				}
			}
		})
	}
}

func TestAddressPolicy(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		loopback bool
		refused  bool
	}{
		{addr: "10.1.2.3"}, {addr: "hello-blue-1"}, {addr: "2001:db8::1"},
		{addr: "127.0.0.1", loopback: true}, {addr: "localhost", loopback: true},
		{addr: "127.0.0.1", refused: true}, {addr: "::1", refused: true}, {addr: "LOCALHOST", refused: true},
		{addr: "169.254.169.254", loopback: true, refused: true}, {addr: "fe80::1", loopback: true, refused: true},
		{addr: "0.0.0.0", loopback: true, refused: true}, {addr: "::ffff:169.254.169.254", loopback: true, refused: true},
	} {
		if err := AddressPolicy(tc.loopback)(tc.addr); (err != nil) != tc.refused {
			t.Errorf("address %s (loopback allowed: %v): %v; want refused %v", tc.addr, tc.loopback, err, tc.refused)
		}
	}
}
