package zkstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/registry"
)

// View is the whole state a person asks about: `switchyard status` and the
// controller's GET /v1/status both show it.
type View struct {
	ActiveColor string                   `json:"active_color"`
	Valid       bool                     `json:"active_color_valid"`
	Serving     Color                    `json:"serving,omitempty"`
	Leader      *Candidate               `json:"leader,omitempty"`
	Switch      *Switch                  `json:"switch,omitempty"`
	Instances   []InstanceView           `json:"instances"`
	Gateways    []registry.GatewayReport `json:"gateways"`
	Errors      []string                 `json:"errors,omitempty"`
}

// InstanceView is one instance in a View: a member (in ZooKeeper and
// registered, in agreement), a quarantined node, or a registration without
// a node.
type InstanceView struct {
	ID       string          `json:"id"`
	Service  string          `json:"service"`
	Color    Color           `json:"color"`
	Status   registry.Status `json:"status"`
	Address  string          `json:"address"`
	Version  string          `json:"version,omitempty"`
	InZK     bool            `json:"in_zookeeper"`
	Registry bool            `json:"registered"`
	// Quarantine says why a node is not trusted; empty for a member.
	Quarantine string `json:"quarantined,omitempty"`
}

// RegistryReader is what a view reads from the registry.
type RegistryReader interface {
	Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error)
	Gateways(ctx context.Context) ([]registry.GatewayReport, error)
}

// ReadAnnounced reads every instance node of both colors. A node that
// vanishes while it is read is left out; its unusable data is kept as Err.
func ReadAnnounced(conn *zk.Conn, paths Paths) ([]Announced, error) {
	var out []Announced
	for _, color := range Colors {
		ids, _, err := conn.Children(paths.Color(color))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("list %s: %w", paths.Color(color), err)
		}
		for _, id := range ids {
			b, _, err := conn.Get(paths.Instance(color, id))
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return out, fmt.Errorf("read %s: %w", paths.Instance(color, id), err)
			}
			n, perr := ParseInstanceNode(b)
			out = append(out, Announced{Color: color, Name: id, Node: n, Err: perr})
		}
	}
	return out, nil
}

// ReadView reads the state from ZooKeeper and the registry. A part that
// cannot be read is reported in Errors, not fatal.
func ReadView(ctx context.Context, conn *zk.Conn, paths Paths, reg RegistryReader) View {
	v := View{Instances: []InstanceView{}, Gateways: []registry.GatewayReport{}}
	if raw, _, err := conn.Get(paths.ActiveColor()); err != nil {
		v.Errors = append(v.Errors, fmt.Sprintf("read %s: %v", paths.ActiveColor(), err))
	} else if color, err := ParseColor(raw); err == nil {
		v.ActiveColor, v.Valid = string(color), true
	} else {
		v.ActiveColor = Describe(raw)
	}
	if c, ok, err := ReadLeader(conn, paths); err != nil {
		v.Errors = append(v.Errors, "read leader: "+err.Error())
	} else if ok {
		v.Leader = &c
	}
	if rec, ok, err := ReadSwitch(conn, paths); err != nil {
		v.Errors = append(v.Errors, err.Error())
	} else if ok {
		if err := askedBy(conn, paths, &rec); err != nil {
			v.Errors = append(v.Errors, err.Error())
		}
		v.Switch, v.Serving = &rec, rec.Active
	}
	nodes, err := ReadAnnounced(conn, paths)
	if err != nil {
		v.Errors = append(v.Errors, err.Error())
	}
	snap, err := reg.Instances(ctx, "", 0, 0)
	if err != nil {
		v.Errors = append(v.Errors, "read registry: "+err.Error())
	}
	members, quarantined := Join(nodes, snap.Instances, nil)
	inView := map[string]bool{}
	for _, m := range members {
		inView[m.ID] = true
		v.Instances = append(v.Instances, InstanceView{ID: m.ID, Service: m.Service, Color: m.Color, Status: m.Status,
			Address: m.HostPort(), Version: m.Version, InZK: true, Registry: true})
	}
	byPath := map[string]Announced{}
	for _, a := range nodes {
		byPath[a.Path()] = a
	}
	regByID := map[string]registry.Instance{}
	for _, in := range snap.Instances {
		regByID[in.ID] = in
	}
	for _, q := range quarantined {
		a := byPath[q.Node]
		inView[a.Name] = true
		iv := InstanceView{ID: a.Name, Service: a.Node.Service, Color: a.Color, Version: a.Node.Version, InZK: true, Quarantine: q.Reason}
		if a.Err == nil {
			iv.Address = registry.Instance{Address: a.Node.Address, Port: a.Node.Port}.HostPort()
		}
		if in, ok := regByID[a.Name]; ok {
			iv.Registry, iv.Status = true, in.Status
		}
		v.Instances = append(v.Instances, iv)
	}
	for _, in := range snap.Instances {
		if !inView[in.ID] {
			v.Instances = append(v.Instances, InstanceView{ID: in.ID, Service: in.Service, Color: Color(in.Color), Status: in.Status,
				Address: in.HostPort(), Version: in.Version, Registry: true})
		}
	}
	if gws, err := reg.Gateways(ctx); err != nil {
		v.Errors = append(v.Errors, "read gateways: "+err.Error())
	} else if gws != nil {
		v.Gateways = gws
	}
	sort.SliceStable(v.Instances, func(i, j int) bool {
		a, b := v.Instances[i], v.Instances[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Color != b.Color {
			return a.Color < b.Color
		}
		return a.ID < b.ID
	})
	return v
}

// CandidateSeq is the sequence number ZooKeeper appended to a candidate
// node's name; candidates lead in its order.
func CandidateSeq(name string) string {
	if i := strings.LastIndex(name, "-"); i >= 0 {
		return name[i+1:]
	}
	return name
}

// SortCandidates orders candidate node names by their sequence.
func SortCandidates(names []string) {
	sort.Slice(names, func(i, j int) bool { return CandidateSeq(names[i]) < CandidateSeq(names[j]) })
}

// ReadLeader reads the current leader's candidate data; ok is false when
// nobody campaigns.
func ReadLeader(conn *zk.Conn, paths Paths) (Candidate, bool, error) {
	children, _, err := conn.Children(paths.Leader())
	if errors.Is(err, zk.ErrNoNode) || (err == nil && len(children) == 0) {
		return Candidate{}, false, nil
	}
	if err != nil {
		return Candidate{}, false, fmt.Errorf("list %s: %w", paths.Leader(), err)
	}
	SortCandidates(children)
	p := paths.Leader() + "/" + children[0]
	b, _, err := conn.Get(p)
	if err != nil {
		return Candidate{}, false, fmt.Errorf("read %s: %w", p, err)
	}
	var c Candidate
	if err := json.Unmarshal(b, &c); err != nil {
		return Candidate{}, false, fmt.Errorf("decode %s (%s): %w", p, Describe(b), err)
	}
	return c, true, nil
}
