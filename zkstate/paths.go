package zkstate

import (
	"fmt"
	"path"
	"strings"
)

// Paths are the node paths under one root, so several deployments can share
// an ensemble. The root "/" keeps the paths literal.
type Paths struct{ root string }

// NewPaths validates root ("/" or an absolute path without a trailing slash).
func NewPaths(root string) (Paths, error) {
	if root == "" {
		root = "/"
	}
	if !strings.HasPrefix(root, "/") || (root != "/" && strings.HasSuffix(root, "/")) || path.Clean(root) != root {
		return Paths{}, fmt.Errorf("zkstate: zk root %q must be \"/\" or an absolute path like /team/service", root)
	}
	return Paths{root: root}, nil
}

func (p Paths) join(elem ...string) string { return path.Join(append([]string{p.root}, elem...)...) }

// Root is the prefix of every path.
func (p Paths) Root() string { return p.root }

// ActiveColor is the node CI flips.
func (p Paths) ActiveColor() string { return p.join("active_color") }

// Color is the parent of a color's ephemeral instance nodes.
func (p Paths) Color(c Color) string { return p.join(string(c)) }

// Instance is one instance's ephemeral node.
func (p Paths) Instance(c Color, id string) string { return p.join(string(c), id) }

// Leader is the parent of the election's candidates.
func (p Paths) Leader() string { return p.join("switchyard", "leader") }

// Switch holds the current switch record.
func (p Paths) Switch() string { return p.join("switchyard", "switch") }

// History holds one sequential node per finished or refused switch.
func (p Paths) History() string { return p.join("switchyard", "history") }

// Requests holds who asked for each switch: one node per /active_color
// write that `switchyard switch` made, named after the write's zxid.
func (p Paths) Requests() string { return p.join("switchyard", "requests") }

// Request is the node that notes who made the /active_color write with
// zxid id. The zero padding keeps the names in zxid order.
func (p Paths) Request(id int64) string {
	return p.join("switchyard", "requests", fmt.Sprintf("%019d", id))
}

// Release holds the release settings (Release): pre-switch checks and
// post-switch analysis, beside /active_color.
func (p Paths) Release() string { return p.join("release") }

// Persistent lists the persistent nodes every component may rely on.
func (p Paths) Persistent() []string {
	return []string{p.Color(Blue), p.Color(Green), p.Leader(), p.History(), p.Release()}
}

// Locked lists the nodes whose ACL switchyard sets in digest mode: every
// write below them needs the switchyard identity.
func (p Paths) Locked() []string {
	return []string{p.ActiveColor(), p.Release(), p.Color(Blue), p.Color(Green), p.join("switchyard"), p.Leader(), p.Switch(), p.History()}
}
