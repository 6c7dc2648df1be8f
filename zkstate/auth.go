package zkstate

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/go-zookeeper/zk"
)

// Auth is ZooKeeper digest credentials, "user:password". Empty means an
// open ensemble, where anyone who reaches ZooKeeper may switch.
type Auth string

// ParseAuth checks credentials from SWITCHYARD_ZK_AUTH.
func ParseAuth(s string) (Auth, error) {
	if s == "" {
		return "", nil
	}
	if user, pass, ok := strings.Cut(s, ":"); !ok || user == "" || pass == "" {
		return "", errors.New("zkstate: zk auth must be user:password")
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
