package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/registry"
)

// View is the whole state a person asks about: `switchyard status` and the
// controller's GET /v1/status both show it.
type View struct {
	ActiveColor string                   `json:"active_color"`
	Valid       bool                     `json:"active_color_valid"`
	Serving     string                   `json:"serving,omitempty"`
	Leader      *Candidate               `json:"leader,omitempty"`
	Switch      *layout.Switch           `json:"switch,omitempty"`
	Instances   []InstanceView           `json:"instances"`
	Gateways    []registry.GatewayReport `json:"gateways"`
	Errors      []string                 `json:"errors,omitempty"`
}

// InstanceView is one instance in a View.
type InstanceView struct {
	ID       string          `json:"id"`
	Service  string          `json:"service"`
	Color    string          `json:"color"`
	Status   registry.Status `json:"status"`
	Address  string          `json:"address"`
	Version  string          `json:"version,omitempty"`
	InZK     bool            `json:"in_zookeeper"`
	Registry bool            `json:"registered"`
}

// ReadView reads the state from ZooKeeper and the registry. A part that
// cannot be read is reported in Errors, not fatal.
func ReadView(ctx context.Context, conn *zk.Conn, paths layout.Paths, reg Registry) View {
	v := View{Instances: []InstanceView{}, Gateways: []registry.GatewayReport{}}
	if raw, _, err := conn.Get(paths.ActiveColor()); err != nil {
		v.Errors = append(v.Errors, fmt.Sprintf("read %s: %v", paths.ActiveColor(), err))
	} else if color, err := layout.ParseColor(raw); err == nil {
		v.ActiveColor, v.Valid = color, true
	} else {
		v.ActiveColor = layout.Describe(raw)
	}
	if c, ok, err := Leader(conn, paths.Leader()); err != nil {
		v.Errors = append(v.Errors, "read leader: "+err.Error())
	} else if ok {
		v.Leader = &c
	}
	if rec, ok, err := layout.ReadSwitch(conn, paths); err != nil {
		v.Errors = append(v.Errors, err.Error())
	} else if ok {
		v.Switch, v.Serving = &rec, rec.Active
	}
	byID := map[string]*InstanceView{}
	for _, color := range []string{layout.Blue, layout.Green} {
		ids, _, err := conn.Children(paths.Color(color))
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			v.Errors = append(v.Errors, fmt.Sprintf("list %s: %v", paths.Color(color), err))
		}
		for _, id := range ids {
			iv := &InstanceView{ID: id, Color: color, InZK: true}
			if b, _, err := conn.Get(paths.Instance(color, id)); err == nil {
				if n, err := layout.ParseInstanceNode(b); err == nil {
					iv.Service, iv.Version = n.Service, n.Version
					iv.Address = registry.Instance{Address: n.Address, Port: n.Port}.HostPort()
				}
			}
			byID[id] = iv
		}
	}
	if snap, err := reg.Instances(ctx, "", 0, 0); err != nil {
		v.Errors = append(v.Errors, "read registry: "+err.Error())
	} else {
		for _, in := range snap.Instances {
			iv, ok := byID[in.ID]
			if !ok {
				iv = &InstanceView{ID: in.ID, Color: in.Color}
				byID[in.ID] = iv
			}
			iv.Registry, iv.Status, iv.Service, iv.Address, iv.Version = true, in.Status, in.Service, in.HostPort(), in.Version
		}
	}
	if gws, err := reg.Gateways(ctx); err != nil {
		v.Errors = append(v.Errors, "read gateways: "+err.Error())
	} else if gws != nil {
		v.Gateways = gws
	}
	for _, iv := range byID {
		v.Instances = append(v.Instances, *iv)
	}
	sort.Slice(v.Instances, func(i, j int) bool {
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

// ErrSuperseded means a later write to /active_color replaced the one
// being waited for.
var ErrSuperseded = errors.New("switch superseded by a later write to /active_color")

// RequestSwitch writes color to /active_color, as zkCli.sh set would, and
// returns the write's zxid to wait on. A bad color is refused before
// anything is written.
func RequestSwitch(conn *zk.Conn, paths layout.Paths, auth layout.Auth, color string) (int64, error) {
	if _, err := layout.ParseColor([]byte(color)); err != nil {
		return 0, err
	}
	stat, err := conn.Set(paths.ActiveColor(), []byte(color), -1)
	if errors.Is(err, zk.ErrNoAuth) {
		return 0, fmt.Errorf("write %s: %w (set SWITCHYARD_ZK_AUTH to the switchyard identity)", paths.ActiveColor(), err)
	}
	if errors.Is(err, zk.ErrNoNode) {
		if err := layout.EnsurePath(conn, paths.Root(), auth.ACL()); err != nil {
			return 0, err
		}
		if _, err := conn.Create(paths.ActiveColor(), []byte(color), 0, auth.ACL()); err != nil {
			return 0, fmt.Errorf("create %s: %w", paths.ActiveColor(), err)
		}
		_, stat, err = conn.Get(paths.ActiveColor())
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", paths.ActiveColor(), err)
	}
	return stat.Mzxid, nil
}

// WaitSwitch waits for the leader's outcome of the write with zxid id to
// target. It returns the finished record; a refused or failed switch is
// returned with an error that carries its reason.
func WaitSwitch(ctx context.Context, conn *zk.Conn, paths layout.Paths, id int64, target string) (layout.Switch, error) {
	for {
		_, _, watch, err := conn.GetW(paths.Switch())
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return layout.Switch{}, fmt.Errorf("watch %s: %w", paths.Switch(), err)
		}
		rec, ok, err := layout.ReadSwitch(conn, paths)
		if err != nil {
			return rec, err
		}
		if ok && rec.ID >= id {
			switch {
			case rec.Target != target && rec.ID > id && rec.Goal != target:
				return rec, fmt.Errorf("%w (now %s)", ErrSuperseded, rec.Target)
			case rec.Target == target && rec.Phase == layout.PhaseDone:
				return rec, nil
			case rec.Target == target && rec.Phase.Finished():
				return rec, fmt.Errorf("switch to %s %s: %s", target, rec.Phase, rec.Reason)
			}
		}
		select {
		case <-ctx.Done():
			return rec, fmt.Errorf("waiting for the switch to %s: %w", target, ctx.Err())
		case <-watch:
		case <-time.After(time.Second): // a watch may be lost with a reconnect
		}
	}
}
