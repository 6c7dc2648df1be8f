package controller

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// Member is an instance the controller may instruct and count: its
// ZooKeeper node and its registration agree.
type Member = zkstate.Member

// preservation is the leader's memory of how many instance nodes there
// were, to notice a mass disappearance.
type preservation struct {
	known     int       // nodes at the last pass outside a hold
	holdUntil time.Time // zero when not holding
}

// hold reports whether the leader must hold every status this pass: more
// than half of the nodes it knew vanished at once, which is what a
// ZooKeeper outage that expired every session looks like, not a fleet that
// left. It holds until the nodes are back to half or hold time passed.
func (p *preservation) hold(nodes int, now time.Time, holdFor time.Duration) (holding, started bool) {
	if !p.holdUntil.IsZero() {
		if nodes*2 >= p.known || now.After(p.holdUntil) {
			p.holdUntil, p.known = time.Time{}, nodes
			return false, false
		}
		return true, false
	}
	if p.known >= 2 && nodes*2 < p.known {
		p.holdUntil = now.Add(holdFor)
		return true, true
	}
	p.known = nodes
	return false, false
}

// members reads the instance nodes and joins them with the registry. A
// node whose identity does not check out is quarantined: it is never
// instructed nor counted, and it is logged once at warn.
func (c *Controller) members(snap registry.Snapshot) ([]Member, []zkstate.Quarantined, error) {
	byID := make(map[string]registry.Instance, len(snap.Instances))
	for _, in := range snap.Instances {
		byID[in.ID] = in
	}
	var nodes []zkstate.Announced
	seen := map[string]bool{}
	for _, color := range zkstate.Colors {
		ids, _, err := c.conn.Children(c.paths.Color(color))
		if err != nil {
			return nil, nil, fmt.Errorf("list %s: %w", c.paths.Color(color), err)
		}
		for _, id := range ids {
			p := c.paths.Instance(color, id)
			seen[p] = true
			a, ok := c.nodes[p]
			if in, reg := byID[id]; ok && reg && (in.Address != a.Node.Address || in.Port != a.Node.Port || in.ControlPort != a.Node.ControlPort) {
				ok = false // the node may have been made again with other data
			}
			if !ok {
				b, _, err := c.conn.Get(p)
				if errors.Is(err, zk.ErrNoNode) {
					continue
				}
				if err != nil {
					return nil, nil, fmt.Errorf("read %s: %w", p, err)
				}
				n, perr := zkstate.ParseInstanceNode(b)
				a = zkstate.Announced{Color: color, Name: id, Node: n, Err: perr}
				c.nodes[p] = a
			}
			nodes = append(nodes, a)
		}
	}
	for p := range c.nodes {
		if !seen[p] {
			delete(c.nodes, p)
		}
	}
	if holding, started := c.preserve.hold(len(nodes), time.Now(), c.cfg.PreservationHold); holding {
		if started {
			c.log.WithFields(logrus.Fields{"nodes": len(nodes), "known": c.preserve.known, "hold": c.cfg.PreservationHold}).
				Warn("self-preservation: more than half of the instance nodes vanished at once; holding every status until they return")
		}
		return nil, nil, errPreserving
	}
	members, quarantined := zkstate.Join(nodes, snap.Instances, zkstate.AddressPolicy(c.cfg.AllowLoopback))
	c.warnQuarantined(quarantined)
	return members, quarantined, nil
}

// errPreserving ends a pass that holds every status (self-preservation).
var errPreserving = errors.New("controller: holding statuses while instance nodes return")

// warnQuarantined logs each quarantined node when it first appears or its
// reason changes, not on every pass.
func (c *Controller) warnQuarantined(qs []zkstate.Quarantined) {
	now := make(map[string]string, len(qs))
	for _, q := range qs {
		now[q.Node] = q.Reason
		if c.quarantined[q.Node] != q.Reason {
			c.log.WithFields(logrus.Fields{"node": q.Node, "reason": q.Reason}).
				Warn("quarantined an instance node: it is never instructed nor counted until it checks out")
		}
	}
	c.quarantined = now
}

func countColor(members []Member, color zkstate.Color) int {
	n := 0
	for _, m := range members {
		if m.Color == color {
			n++
		}
	}
	return n
}
