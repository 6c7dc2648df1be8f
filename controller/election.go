package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/zkstate"
)

// ErrElectionSessionLost ends a campaign whose ZooKeeper session went away.
var ErrElectionSessionLost = errors.New("election: session lost")

// election is a leader election on ephemeral sequential nodes in which each
// candidate watches only its predecessor, so a leader's death wakes one
// controller, not all of them.
type election struct {
	conn *zk.Conn
	sess *session
	dir  string
	acl  []zk.ACL
	me   zkstate.Candidate
	node string // our current node, "" when none
}

// Campaign blocks until this candidate leads. It returns
// ErrElectionSessionLost when the session goes while it waits.
func (e *election) Campaign(ctx context.Context) error {
	lost := e.sess.Lost()
	// A node from an earlier campaign may outlive a short disconnect; start
	// clean so we never hold two places in the queue.
	e.Resign()
	data, _ := json.Marshal(e.me)
	node, err := e.conn.CreateProtectedEphemeralSequential(e.dir+"/n_", data, e.acl)
	if err != nil {
		return fmt.Errorf("election: create candidate node: %w", err)
	}
	e.node = node
	mine := path.Base(node)
	for {
		children, _, err := e.conn.Children(e.dir)
		if err != nil {
			return fmt.Errorf("election: list candidates: %w", err)
		}
		zkstate.SortCandidates(children)
		pos := -1
		for i, c := range children {
			if c == mine {
				pos = i
			}
		}
		switch pos {
		case -1:
			return ErrElectionSessionLost // our ephemeral node is gone with its session
		case 0:
			return nil
		}
		ok, _, watch, err := e.conn.ExistsW(e.dir + "/" + children[pos-1])
		if err != nil {
			return fmt.Errorf("election: watch predecessor: %w", err)
		}
		if !ok {
			continue
		}
		select {
		case <-watch:
		case <-lost:
			return ErrElectionSessionLost
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Epoch is the creation zxid of the candidate node that won: a later leader
// always has a higher one.
func (e *election) Epoch() (int64, error) {
	ok, stat, err := e.conn.Exists(e.node)
	if err != nil {
		return 0, fmt.Errorf("election: read own node: %w", err)
	}
	if !ok {
		return 0, ErrElectionSessionLost
	}
	return stat.Czxid, nil
}

// Resign gives up the candidate node, if any.
func (e *election) Resign() {
	if e.node != "" {
		_ = e.conn.Delete(e.node, -1)
		e.node = ""
	}
}
