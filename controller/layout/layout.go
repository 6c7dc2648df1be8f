// Package layout names switchyard's ZooKeeper nodes and the data they hold.
// The SDK, the controller and the CLI all read and write through it.
package layout

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-zookeeper/zk"
)

// The two colors.
const (
	Blue  = "blue"
	Green = "green"
)

// ErrBadColor is wrapped by every refusal of a color value.
var ErrBadColor = errors.New("layout: bad color")

// ParseColor accepts the data of /active_color: "blue" or "green", with
// surrounding whitespace ignored. Anything else is refused with a reason
// that quotes a bounded, printable prefix of the value.
func ParseColor(b []byte) (string, error) {
	s := strings.TrimSpace(string(b))
	switch s {
	case Blue, Green:
		return s, nil
	}
	return "", fmt.Errorf("%w: %s is not blue or green", ErrBadColor, Describe(b))
}

// Other returns the color that is not c.
func Other(c string) string {
	if c == Blue {
		return Green
	}
	return Blue
}

// Describe renders untrusted node data for a log line or a reason: empty,
// binary and oversized values stay short and readable.
func Describe(b []byte) string {
	switch {
	case len(b) == 0:
		return "an empty value"
	case !utf8.Valid(b):
		return fmt.Sprintf("%d bytes of binary data", len(b))
	case len(b) > 32:
		return fmt.Sprintf("%q... (%d bytes)", b[:32], len(b))
	}
	return strconv.Quote(string(b))
}

// Paths are the node paths under one root, so several services can share
// an ensemble. The root "/" keeps the paths literal.
type Paths struct{ root string }

// NewPaths validates root ("/" or an absolute path without a trailing slash).
func NewPaths(root string) (Paths, error) {
	if root == "" {
		root = "/"
	}
	if !strings.HasPrefix(root, "/") || (root != "/" && strings.HasSuffix(root, "/")) || path.Clean(root) != root {
		return Paths{}, fmt.Errorf("layout: zk root %q must be \"/\" or an absolute path like /team/service", root)
	}
	return Paths{root: root}, nil
}

func (p Paths) join(elem ...string) string { return path.Join(append([]string{p.root}, elem...)...) }

// Root is the prefix of every path.
func (p Paths) Root() string { return p.root }

// ActiveColor is the node CI flips.
func (p Paths) ActiveColor() string { return p.join("active_color") }

// Color is the parent of a color's ephemeral instance nodes.
func (p Paths) Color(c string) string { return p.join(c) }

// Instance is one instance's ephemeral node.
func (p Paths) Instance(color, id string) string { return p.join(color, id) }

// Leader is the parent of the election's candidates.
func (p Paths) Leader() string { return p.join("switchyard", "leader") }

// Switch holds the current switch record.
func (p Paths) Switch() string { return p.join("switchyard", "switch") }

// History holds one sequential node per finished or refused switch.
func (p Paths) History() string { return p.join("switchyard", "history") }

// Persistent lists the persistent parents every component may rely on.
func (p Paths) Persistent() []string {
	return []string{p.Color(Blue), p.Color(Green), p.Leader(), p.History()}
}

// InstanceNode is the JSON an instance writes into its ephemeral node.
type InstanceNode struct {
	Service   string    `json:"service"`
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Port      int       `json:"port"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// ParseInstanceNode decodes and checks an instance node's data.
func ParseInstanceNode(b []byte) (InstanceNode, error) {
	var n InstanceNode
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("layout: instance node is not JSON: %s", Describe(b))
	}
	if n.Service == "" || n.ID == "" || n.Address == "" || n.Port <= 0 || n.Port > 65535 {
		return n, fmt.Errorf("layout: instance node lacks service, id, address or a valid port: %s", Describe(b))
	}
	return n, nil
}

// Phase is where a switch is.
type Phase string

// The phases of a switch.
const (
	PhaseSwitching Phase = "switching"
	PhaseDone      Phase = "done"
	PhaseRefused   Phase = "refused"
	PhaseFailed    Phase = "failed"
)

// Finished reports whether the phase is final.
func (p Phase) Finished() bool { return p != PhaseSwitching }

// Step is one instruction of a switch.
type Step struct {
	Instance string    `json:"instance"`
	Service  string    `json:"service"`
	Color    string    `json:"color"`
	Action   string    `json:"action"` // UP or OUT_OF_SERVICE
	State    string    `json:"state"`  // pending, done, skipped
	Attempts int       `json:"attempts,omitempty"`
	Error    string    `json:"error,omitempty"`
	At       time.Time `json:"at,omitzero"`
}

// Switch is the record the leader keeps in /switchyard/switch.
type Switch struct {
	// ID is the zxid of the /active_color write this switch answers, so a
	// writer can wait for the outcome of its own write.
	ID     int64  `json:"id"`
	Target string `json:"target"`
	// Goal is the last valid color asked for, which the controller keeps
	// driving toward when /active_color holds a bad value.
	Goal string `json:"goal,omitempty"`
	// Active is the color that serves: the target once done, the previous
	// color while switching or after a refusal.
	Active string `json:"active,omitempty"`
	From   string `json:"from,omitempty"`
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason,omitempty"`
	Leader string `json:"leader,omitempty"`
	// Steps are the newest steps, at most a few hundred; StepsTotal counts
	// them all.
	Steps      []Step     `json:"steps"`
	StepsTotal int        `json:"steps_total,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Duration is how long the switch took, or has taken so far.
func (s Switch) Duration() time.Duration {
	if s.FinishedAt != nil {
		return s.FinishedAt.Sub(s.StartedAt)
	}
	return time.Since(s.StartedAt)
}

// Locked lists the nodes whose ACL switchyard sets in digest mode: every
// write below them needs the switchyard identity.
func (p Paths) Locked() []string {
	return []string{p.ActiveColor(), p.Color(Blue), p.Color(Green), p.join("switchyard"), p.Leader(), p.Switch(), p.History()}
}

// Auth is ZooKeeper digest credentials, "user:password". Empty means an
// open ensemble, where anyone who reaches ZooKeeper may switch.
type Auth string

// ParseAuth checks credentials from SWITCHYARD_ZK_AUTH.
func ParseAuth(s string) (Auth, error) {
	if s == "" {
		return "", nil
	}
	if user, pass, ok := strings.Cut(s, ":"); !ok || user == "" || pass == "" {
		return "", errors.New("layout: zk auth must be user:password")
	}
	return Auth(s), nil
}

// ACL is the ACL of every node switchyard creates: all permissions for the
// switchyard identity and read for everyone in digest mode, open otherwise.
func (a Auth) ACL() []zk.ACL {
	if a == "" {
		return zk.WorldACL(zk.PermAll)
	}
	user, pass, _ := strings.Cut(string(a), ":")
	return append(zk.DigestACL(zk.PermAll, user, pass), zk.WorldACL(zk.PermRead)...)
}

// Login adds the credentials to a session; the library sends them again
// after every reconnect.
func (a Auth) Login(c *zk.Conn) error {
	if a == "" {
		return nil
	}
	if err := c.AddAuth("digest", []byte(a)); err != nil {
		return fmt.Errorf("zookeeper digest login: %w", err)
	}
	return nil
}

// EnsurePath creates p and its parents as persistent nodes when missing.
func EnsurePath(c *zk.Conn, p string, acl []zk.ACL) error {
	if p == "/" {
		return nil
	}
	if ok, _, err := c.Exists(p); err != nil {
		return fmt.Errorf("check %s: %w", p, err)
	} else if ok {
		return nil
	}
	if err := EnsurePath(c, path.Dir(p), acl); err != nil {
		return err
	}
	if _, err := c.Create(p, nil, 0, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("create %s: %w", p, err)
	}
	return nil
}

// ReadSwitch reads the switch record; ok is false when there is none yet.
func ReadSwitch(c *zk.Conn, p Paths) (rec Switch, ok bool, err error) {
	b, _, err := c.Get(p.Switch())
	if errors.Is(err, zk.ErrNoNode) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("read %s: %w", p.Switch(), err)
	}
	if len(b) == 0 {
		return rec, false, nil
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("decode %s: %w", p.Switch(), err)
	}
	return rec, true, nil
}
