package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/go-zookeeper/zk"
)

// ErrElectionSessionLost ends a campaign whose ZooKeeper session went away.
var ErrElectionSessionLost = errors.New("election: session lost")

// Candidate is what a controller publishes in its election node.
type Candidate struct {
	ID  string `json:"id"`
	API string `json:"api,omitempty"`
}

// election is a leader election on ephemeral sequential nodes in which each
// candidate watches only its predecessor, so a leader's death wakes one
// controller, not all of them.
type election struct {
	conn *zk.Conn
	sess *session
	dir  string
	acl  []zk.ACL
	me   Candidate
	node string // our current node, "" when none
}

func seq(name string) string {
	if i := strings.LastIndex(name, "-"); i >= 0 {
		return name[i+1:]
	}
	return name
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
		sort.Slice(children, func(i, j int) bool { return seq(children[i]) < seq(children[j]) })
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

// Resign gives up the candidate node, if any.
func (e *election) Resign() {
	if e.node != "" {
		_ = e.conn.Delete(e.node, -1)
		e.node = ""
	}
}

// Leader reads the current leader's candidate data.
func Leader(conn *zk.Conn, dir string) (Candidate, bool, error) {
	children, _, err := conn.Children(dir)
	if errors.Is(err, zk.ErrNoNode) || (err == nil && len(children) == 0) {
		return Candidate{}, false, nil
	}
	if err != nil {
		return Candidate{}, false, err
	}
	sort.Slice(children, func(i, j int) bool { return seq(children[i]) < seq(children[j]) })
	b, _, err := conn.Get(dir + "/" + children[0])
	if err != nil {
		return Candidate{}, false, err
	}
	var c Candidate
	_ = json.Unmarshal(b, &c)
	return c, true, nil
}
