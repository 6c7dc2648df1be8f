package controller

import (
	"errors"
	"fmt"
	"slices"
	"sync"
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

// nodeNames is the instance nodes' names by color, as listed at once.
type nodeNames map[zkstate.Color][]string

// listNodes lists the instance nodes of both colors, both reads at once:
// go-zookeeper pipelines the requests of concurrent calls on its one
// connection, so this takes one round trip, not two.
func (c *Controller) listNodes() (nodeNames, error) {
	var mu sync.Mutex
	var errs []error
	out := nodeNames{}
	var wg sync.WaitGroup
	for _, color := range zkstate.Colors {
		wg.Go(func() {
			ids, _, err := c.conn.Children(c.paths.Color(color))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("list %s: %w", c.paths.Color(color), err))
				return
			}
			out[color] = ids
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// maxNodeReads bounds the instance nodes read at once: a leader that just
// took over reads every node, a thousand or more.
const maxNodeReads = 32

// members joins the instance nodes listed (names waits for the listing)
// with the registry. A node whose identity does not check out is
// quarantined: it is never instructed nor counted, and it is logged once at
// warn. Node data never changes, so only nodes not seen before, or made
// again at another address, are read, and those at once.
func (c *Controller) members(snap registry.Snapshot, names func() (nodeNames, error)) ([]Member, []zkstate.Quarantined, error) {
	byID := make(map[string]registry.Instance, len(snap.Instances))
	for _, in := range snap.Instances {
		byID[in.ID] = in
	}
	listed, err := names()
	if err != nil {
		return nil, nil, err
	}
	var nodes []zkstate.Announced
	var unread []int // indexes into nodes
	seen := map[string]bool{}
	for _, color := range zkstate.Colors {
		for _, id := range listed[color] {
			p := c.paths.Instance(color, id)
			seen[p] = true
			a, ok := c.nodes[p]
			if in, reg := byID[id]; ok && reg && (in.Address != a.Node.Address || in.Port != a.Node.Port || in.ControlPort != a.Node.ControlPort) {
				ok = false // the node may have been made again with other data
			}
			if !ok {
				a = zkstate.Announced{Color: color, Name: id}
				unread = append(unread, len(nodes))
			}
			nodes = append(nodes, a)
		}
	}
	if err := c.readNodes(nodes, unread); err != nil {
		return nil, nil, err
	}
	nodes = slices.DeleteFunc(nodes, func(a zkstate.Announced) bool { return a.Name == "" })
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

// readNodes reads the data of nodes[i] for each i in unread, up to
// maxNodeReads at once, and caches it. A node gone meanwhile is left with
// an empty Name.
func (c *Controller) readNodes(nodes []zkstate.Announced, unread []int) error {
	errs := make([]error, len(unread))
	sem := make(chan struct{}, maxNodeReads)
	var wg sync.WaitGroup
	for k, i := range unread {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			a := &nodes[i]
			p := c.paths.Instance(a.Color, a.Name)
			b, _, err := c.conn.Get(p)
			switch {
			case errors.Is(err, zk.ErrNoNode):
				a.Name = ""
			case err != nil:
				errs[k] = fmt.Errorf("read %s: %w", p, err)
			default:
				a.Node, a.Err = zkstate.ParseInstanceNode(b)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, i := range unread {
		if a := nodes[i]; a.Name != "" {
			c.nodes[c.paths.Instance(a.Color, a.Name)] = a
		}
	}
	return nil
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
