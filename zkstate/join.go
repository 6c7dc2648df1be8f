package zkstate

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/registry"
)

// Announced is one instance node as read from ZooKeeper: its color, its
// name (which must be the instance id), and its data or why the data is
// unusable.
type Announced struct {
	Color Color
	Name  string
	Node  InstanceNode
	Err   error
}

// Path names the node relative to the root, as "green/<id>".
func (a Announced) Path() string { return string(a.Color) + "/" + a.Name }

// Member is an instance whose ZooKeeper node and registration agree on
// service, id, color and address: the only kind the controller instructs
// or counts.
type Member struct {
	ID      string
	Service string
	Color   Color
	Address string
	Port    int
	Version string
	Status  registry.Status
	// ControlPort is where on Address its /_switchyard/ endpoints answer
	// when not on Port: a `switchyard agent` beside the application.
	ControlPort int
}

// HostPort is the member's dialable address, where its traffic goes.
func (m Member) HostPort() string {
	return registry.Instance{Address: m.Address, Port: m.Port}.HostPort()
}

// ControlHostPort is where the controller health-checks and instructs it.
func (m Member) ControlHostPort() string {
	return registry.Instance{Address: m.Address, Port: m.Port, ControlPort: m.ControlPort}.ControlHostPort()
}

// Quarantined is a node that is not trusted: never instructed, never
// counted toward a guard, and shown with the reason.
type Quarantined struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// Join pairs the announced nodes with the registry's instances. A node is a
// member only when its name, its data and its registration name the same
// id, service, color and address. Anything else is quarantined: malformed
// data, the same id under both colors, no registration, or a registration
// that says something else. Planted or duplicated nodes therefore can
// neither receive an instruction nor stand in for a real instance. Both
// results are sorted by service and id (quarantine by node).
//
// allowed, when not nil, vets each node's address; an address it refuses
// (see AddressPolicy) quarantines the node with its reason.
func Join(nodes []Announced, regs []registry.Instance, allowed func(address string) error) (members []Member, quarantined []Quarantined) {
	byID := make(map[string]registry.Instance, len(regs))
	for _, in := range regs {
		byID[in.ID] = in
	}
	colorsOf := map[string]int{}
	for _, a := range nodes {
		colorsOf[a.Name]++
	}
	quarantine := func(a Announced, format string, args ...any) {
		quarantined = append(quarantined, Quarantined{Node: a.Path(), Reason: fmt.Sprintf(format, args...)})
	}
	for _, a := range nodes {
		n := a.Node
		in, registered := byID[a.Name]
		switch {
		case a.Err != nil:
			quarantine(a, "malformed node data: %v", a.Err)
		case colorsOf[a.Name] > 1:
			quarantine(a, "instance id %q is announced under both blue and green", a.Name)
		case n.ID != a.Name:
			quarantine(a, "node name differs from the id %q in its data", n.ID)
		case !registered:
			quarantine(a, "no registration for instance %q", a.Name)
		case in.Service != n.Service:
			quarantine(a, "node says service %q, registration says %q", n.Service, in.Service)
		case Color(in.Color) != a.Color:
			quarantine(a, "node is under %s, registration says color %q", a.Color, in.Color)
		case in.Address != n.Address || in.Port != n.Port:
			quarantine(a, "node points at %s, registration at %s",
				registry.Instance{Address: n.Address, Port: n.Port}.HostPort(), in.HostPort())
		case in.ControlPort != n.ControlPort:
			quarantine(a, "node says control port %d, registration says %d", n.ControlPort, in.ControlPort)
		case allowed != nil && allowed(n.Address) != nil:
			quarantine(a, "%v", allowed(n.Address))
		default:
			members = append(members, Member{ID: a.Name, Service: n.Service, Color: a.Color,
				Address: n.Address, Port: n.Port, Version: n.Version, Status: in.Status, ControlPort: n.ControlPort})
		}
	}
	sort.Slice(members, func(i, j int) bool {
		if members[i].Service != members[j].Service {
			return members[i].Service < members[j].Service
		}
		return members[i].ID < members[j].ID
	})
	sort.Slice(quarantined, func(i, j int) bool { return quarantined[i].Node < quarantined[j].Node })
	return members, quarantined
}

// AddressPolicy refuses the addresses no instance of a deployment should
// have, so that nobody can point the controller at a metadata service or a
// local port: link-local (169.254.0.0/16, fe80::/10, which hold cloud
// metadata endpoints such as 169.254.169.254), unspecified and multicast
// addresses, and loopback unless allowLoopback (a single-host deployment,
// as in tests and the demo). Host names other than localhost are allowed:
// their registration must match the node anyway.
func AddressPolicy(allowLoopback bool) func(address string) error {
	return func(address string) error {
		if strings.EqualFold(address, "localhost") {
			address = "127.0.0.1"
		}
		ip, err := netip.ParseAddr(address)
		if err != nil {
			return nil
		}
		ip = ip.Unmap()
		switch {
		case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
			return fmt.Errorf("address %s is link-local (cloud metadata lives there); refused", address)
		case ip.IsUnspecified() || ip.IsMulticast():
			return fmt.Errorf("address %s cannot be an instance's; refused", address)
		case ip.IsLoopback() && !allowLoopback:
			return fmt.Errorf("address %s is loopback and this deployment does not allow it (--allow-loopback); refused", address)
		}
		return nil
	}
}
