package zkstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-zookeeper/zk"
)

// Request notes who asked for a switch. ZooKeeper keeps no identity with a
// write, so `switchyard switch` notes it beside its /active_color write,
// under the write's zxid, which is the ID of the switch record that
// answers it. A write made with zkCli has no note: its asker is unknown.
type Request struct {
	AskedBy string    `json:"asked_by"`
	At      time.Time `json:"at"`
}

// RequestsKept bounds the notes under Paths.Requests, as the controller
// bounds the history.
const RequestsKept = 200

// maxAskedBy bounds what a note says, in bytes.
const maxAskedBy = 128

// NoteRequest notes that askedBy made the /active_color write with zxid id,
// then drops the oldest notes beyond RequestsKept.
func NoteRequest(conn *zk.Conn, paths Paths, auth Auth, id int64, askedBy string) error {
	if len(askedBy) > maxAskedBy {
		askedBy = strings.ToValidUTF8(askedBy[:maxAskedBy], "")
	}
	b, err := json.Marshal(Request{AskedBy: askedBy, At: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("encode the request note: %w", err)
	}
	if err := EnsurePath(conn, paths.Requests(), auth.ACL()); err != nil {
		return err
	}
	if _, err := conn.Create(paths.Request(id), b, 0, auth.ACL()); err != nil {
		return fmt.Errorf("create %s: %w", paths.Request(id), err)
	}
	names, _, err := conn.Children(paths.Requests())
	if err != nil || len(names) <= RequestsKept {
		return nil // pruning is best effort; the next note prunes again
	}
	sort.Strings(names)
	for _, old := range names[:len(names)-RequestsKept] {
		if err := conn.Delete(paths.Requests()+"/"+old, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return fmt.Errorf("prune %s: %w", paths.Requests(), err)
		}
	}
	return nil
}

// ReadRequest reads the note of the /active_color write with zxid id; ok
// is false when there is none. Anyone who may write the node could have
// written anything, so an unprintable or oversized name is described, not
// passed on.
func ReadRequest(conn *zk.Conn, paths Paths, id int64) (r Request, ok bool, err error) {
	b, _, err := conn.Get(paths.Request(id))
	if errors.Is(err, zk.ErrNoNode) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("read %s: %w", paths.Request(id), err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("decode %s (%s): %w", paths.Request(id), Describe(b), err)
	}
	if len(r.AskedBy) > maxAskedBy || !printable(r.AskedBy) {
		r.AskedBy = Describe([]byte(r.AskedBy))
	}
	return r, r.AskedBy != "", nil
}

func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

// askedBy fills in rec.AskedBy from the request note of its write, when
// the record does not say.
func askedBy(conn *zk.Conn, paths Paths, rec *Switch) error {
	if rec.AskedBy != "" || rec.ID == 0 {
		return nil
	}
	r, ok, err := ReadRequest(conn, paths, rec.ID)
	if ok {
		rec.AskedBy = r.AskedBy
	}
	return err
}

// ReadHistory reads the newest n switches of the history (all that are
// kept when n <= 0), newest first, each with who asked for it when that is
// known. A node pruned while it is read is left out; one that cannot be
// read or decoded is left out and reported in err, with the others
// returned.
func ReadHistory(conn *zk.Conn, paths Paths, n int) ([]Switch, error) {
	names, _, err := conn.Children(paths.History())
	if errors.Is(err, zk.ErrNoNode) {
		return []Switch{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", paths.History(), err)
	}
	// Sequential names end in a fixed-width counter, so they sort in the
	// order the switches were filed.
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	if n > 0 && len(names) > n {
		names = names[:n]
	}
	out := make([]Switch, 0, len(names))
	var errs []error
	for _, name := range names {
		p := paths.History() + "/" + name
		b, _, err := conn.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		var rec Switch
		if err := json.Unmarshal(b, &rec); err != nil {
			errs = append(errs, fmt.Errorf("decode %s (%s): %w", p, Describe(b), err))
			continue
		}
		if err := askedBy(conn, paths, &rec); err != nil {
			errs = append(errs, err)
		}
		out = append(out, rec)
	}
	return out, errors.Join(errs...)
}
